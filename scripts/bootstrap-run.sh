#!/usr/bin/env bash
# `make run`'s bootstrap: .venv with only the base dependencies, as fast as pip allows.
# - The venv is created without its own pip when the interpreter has one (ensurepip alone
#   takes seconds); the interpreter's pip installs into it with --python. `make test`
#   adds pip to the venv later if it needs it.
# - --no-compile: bytecode is written lazily on first import instead of for every file of
#   every dependency up front.
set -euo pipefail
PYTHON="${1:-python3}"; VENV="${2:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m venv --without-pip "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  PIP=("$VENV/bin/python" -m pip)
else
  PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
fi
"${PIP[@]}" install --quiet --disable-pip-version-check --no-compile -e . 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
test "${PIPESTATUS[0]}" -eq 0
