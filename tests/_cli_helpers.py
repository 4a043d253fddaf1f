"""The real ``xchat`` command as a subprocess, for every test that drives it.

At the top of tests/ (which the root conftest puts on ``sys.path``) so that the CLI tests
and the web-app tests share one way of running the command and of creating an account
with it, instead of each building the command line by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"


def xchat_argv(profile: Path, *args: str) -> list[str]:
    """``python -m xchat --profile PROFILE ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "xchat", "--profile", str(profile), *args]


def xchat(
    profile: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "XCHAT_NO_KEYRING": "1", **(env or {})}
    full_env["PYTHONPATH"] = str(SRC) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        xchat_argv(profile, *args),
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("xchat: error: ")
    return lines[0]


def account(profile: Path, server_url: str, handle: str) -> str:
    """``xchat account create`` with ``handle`` on ``server_url``; the new address."""
    out = ok(xchat(profile, "account", "create", "--server", server_url, "--handle", handle,
                   "--json"))  # fmt: skip
    return str(json.loads(out)["address"])
