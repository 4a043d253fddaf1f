#!/usr/bin/env bash
# `make cluster` / `make cluster-stop` (issue #16): a scaled-out relay on loopback, no systemd.
# start: installs PostgreSQL, Redis and HAProxy from Debian packages when missing, then
#        xchat.ops.cluster starts them, three relay nodes and HAProxy (pid files: DIR/NAME.pid).
# stop:  stops exactly the processes named by DIR/*.pid.
set -euo pipefail
ACTION="${1:?start|stop}"; DIR="${2:-data/cluster}"; PORT="${3:-8480}"
BIN=".venv/bin"
if [ "$ACTION" = "start" ]; then
  missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
    echo "cluster: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian packages start system-wide services; this cluster runs its own copies.
    $SUDO service postgresql stop >/dev/null 2>&1 || true
    $SUDO service redis-server stop >/dev/null 2>&1 || true
    $SUDO service haproxy stop >/dev/null 2>&1 || true
  fi
  mkdir -p "$DIR"
  exec "$BIN/python" -m xchat.ops.cluster start "$DIR" --port "$PORT"
else
  exec "$BIN/python" -m xchat.ops.cluster stop "$DIR"
fi
