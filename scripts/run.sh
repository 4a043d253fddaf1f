#!/usr/bin/env bash
# `make run`: start a relay server with embedded SQLite and the web app for a first profile.
# Ctrl-C stops everything. Logs go to files under the data directory, so the terminal keeps
# only what a person needs, the URL to open last.
#
# Extending it (calls, backup realms, ...): append relay flags to RELAY_ARGS, start extra
# services in the "extra services" section (in the background, logging under $DATA), and add
# a line to NOTES if the user should know about them.
set -euo pipefail
DATA="${1:-data}"; PORT="${2:-8470}"; APP_PORT="${3:-8471}"
BIN=".venv/bin"
SERVER="http://127.0.0.1:${PORT}"
PROFILE="${XCHAT_HOME:-profiles/first}"
mkdir -p "$DATA" profiles
RELAY_LOG="$DATA/relay.log"
APP_LOG="$DATA/app.log"
RELAY_ARGS=(--host 127.0.0.1 --port "$PORT" --data "$DATA")
NOTES=()

cleanup() { kill $(jobs -p) 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# --- extra services (before the relay, which may point at them) --------------------------
# Backup realm (PROTOCOL Part X): one local realm so that `xchat backup enable` works on one
# machine. Real deployments use realms run by other parties (README "Backup and recovery").
REALM_PORT="${REALM_PORT:-8480}"
"$BIN/xchat" realm serve --port "$REALM_PORT" --data "$DATA/realm" --name local-realm \
  >>"$DATA/realm.log" 2>&1 &
RELAY_ARGS+=(--realm "http://127.0.0.1:${REALM_PORT}")
NOTES+=("realm:    http://127.0.0.1:${REALM_PORT} (one local backup realm; log in $DATA/realm.log)")

# TURN for calls (PROTOCOL Part IX §6): coturn on loopback when installed, sharing a secret
# with the relay, which hands out short-lived credentials; without it calls use host
# candidates only (and "relay only" calls are refused).
TURN_PORT="${TURN_PORT:-3478}"
if command -v turnserver >/dev/null 2>&1; then
  TURN_SECRET="$DATA/turn-secret"
  [ -s "$TURN_SECRET" ] || (umask 077; "$BIN/python" -c 'import secrets; print(secrets.token_hex(24))' >"$TURN_SECRET")
  # the secret goes in a 0600 config file, not on the command line (ps shows that to all)
  (umask 077; printf '%s\n' listening-ip=127.0.0.1 relay-ip=127.0.0.1 "listening-port=$TURN_PORT" \
    use-auth-secret "static-auth-secret=$(cat "$TURN_SECRET")" realm=xchat.local fingerprint \
    no-tls no-dtls no-cli allow-loopback-peers no-software-attribute \
    "log-file=$DATA/turnserver.log" simple-log >"$DATA/turnserver.conf")
  turnserver -c "$DATA/turnserver.conf" >/dev/null 2>&1 &
  RELAY_ARGS+=(--turn-url "turn:127.0.0.1:${TURN_PORT}" --turn-secret-file "$TURN_SECRET")
  NOTES+=("turn:     turn:127.0.0.1:${TURN_PORT} (coturn for calls; log in $DATA/turnserver.log)")
else
  NOTES+=("turn:     not installed (apt-get install coturn): calls use direct connections only")
fi

# --- the relay and the web app, started together (the app connects to the relay when
# it is up); the app's one stdout line is the URL (with the per-launch secret) ------------
"$BIN/xchat" serve "${RELAY_ARGS[@]}" >>"$RELAY_LOG" 2>&1 &
coproc APP { exec "$BIN/xchat" --profile "$PROFILE" app --server "$SERVER" --port "$APP_PORT" 2>>"$APP_LOG"; }
"$BIN/python" - "$SERVER/healthz" "$RELAY_LOG" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 60  # well under a second when idle; first start compiles
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"the relay did not start: see {sys.argv[2]}")
        time.sleep(0.1)
PY

URL=""
if ! read -r -t 60 URL <&"${APP[0]}" || [ -z "$URL" ]; then
  echo "the web app did not start: see $APP_LOG" >&2
  exit 1
fi

echo "relay:    $SERVER (data in $DATA; request log in $RELAY_LOG, app log in $APP_LOG)"
for note in "${NOTES[@]+"${NOTES[@]}"}"; do echo "$note"; done
echo "a second person on this machine (another terminal):"
echo "  .venv/bin/xchat --profile profiles/second app --server $SERVER --port $((APP_PORT + 1))"
echo "  then open the URL it prints in another browser profile or a private window."
echo "later visits: http://127.0.0.1:$APP_PORT/ opens XChat in this browser without this URL."
echo
echo "open XChat for $PROFILE: $URL"
wait
