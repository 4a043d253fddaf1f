#!/usr/bin/env bash
# Run the same-port WebSocket fast-path tests against the LOWER bounds of the uvicorn and
# websockets ranges in pyproject.toml (server/wsfast.py subclasses uvicorn's private
# HttpToolsProtocol, so a range is only a promise once both of its ends have been tested).
# The upper ends are what `make test` resolves to. Uses its own venv: .venv-bounds/. The
# sans-I/O parser's differential test runs too: its reference is websockets' own parser.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-bounds
lower() {  # the ">=X" of a dependency in pyproject.toml
  "$PYTHON" - "$1" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
name = sys.argv[1]
spec = next(d for d in deps if re.match(rf"{re.escape(name)}(\[|>|=|<|$)", d))
print(re.search(r">=\s*([0-9][^,\s]*)", spec).group(1))
PY
}
UVICORN=$(lower uvicorn)
WEBSOCKETS=$(lower websockets)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]' "uvicorn[standard]==$UVICORN" "websockets==$WEBSOCKETS"
"$VENV/bin/python" - "$UVICORN" "$WEBSOCKETS" <<'PY'
import sys
from importlib.metadata import version
from packaging.version import Version  # pytest's own dependency
got = (Version(version("uvicorn")), Version(version("websockets")))
assert got == (Version(sys.argv[1]), Version(sys.argv[2])), f"bounds not installed: {got}"
print(f"test-bounds: uvicorn {version('uvicorn')}, websockets {version('websockets')}")
PY
"$VENV/bin/pytest" -q -p no:cacheprovider tests/server/test_wsfast.py tests/protocol/test_ws_connection.py
