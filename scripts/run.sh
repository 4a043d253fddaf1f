#!/usr/bin/env bash
# `make run`: start a relay server with embedded SQLite and, if the web app is installed, the
# app for a first profile. Ctrl-C stops everything.
set -euo pipefail
DATA="${1:-data}"; PORT="${2:-8470}"; APP_PORT="${3:-8471}"
BIN=".venv/bin"
SERVER="http://127.0.0.1:${PORT}"
PROFILE="${XCHAT_HOME:-profiles/first}"
mkdir -p "$DATA" profiles

cleanup() { kill $(jobs -p) 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN/xchat" serve --host 127.0.0.1 --port "$PORT" --data "$DATA" &
"$BIN/python" - "$SERVER/healthz" <<'PY'
import sys, time, urllib.request
for _ in range(100):  # the relay is ready in well under a second
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
PY
echo "server: $SERVER (data in $DATA)"

if "$BIN/xchat" app --help >/dev/null 2>&1; then
  echo "web app for $PROFILE: open the http://127.0.0.1:$APP_PORT/#secret=... URL printed below"
  echo "a second person on this machine: .venv/bin/xchat --profile profiles/second app --server $SERVER --port $((APP_PORT + 1))"
  "$BIN/xchat" --profile "$PROFILE" app --server "$SERVER" --port "$APP_PORT" &
else
  echo "try it: .venv/bin/xchat --profile profiles/alice account create --server $SERVER --handle alice"
fi
wait
