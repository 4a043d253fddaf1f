#!/usr/bin/env bash
# Install the OS packages the test suite needs, non-interactively, only when missing.
# chromium: the browser the web-app tests drive through Playwright (never `playwright install`).
# tcpdump: the privacy scan captures the relay's loopback traffic.
# coturn: the TURN server the relay-only call test starts (and `make run` uses for calls).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v tcpdump >/dev/null 2>&1 || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || missing+=(tcpdump)
# postgresql, redis-server, haproxy: the scale-out tests and `make cluster` (issue #16).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || missing+=(coturn)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "os-packages: need root to install: ${missing[*]} (web-app tests will be skipped)" >&2
    exit 0
  fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
