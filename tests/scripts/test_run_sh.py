"""`make run` (scripts/run.sh): the relay's request log goes to a file under the data
directory, and the terminal ends with the URL to open, after how to start a second
profile (issue #19 "First run")."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/#secret=[A-Za-z0-9_-]{43}$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_prints_the_url_last_and_logs_to_files(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out.txt"
    port, app_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "XCHAT_HOME": str(tmp_path / "profile"),
        "REALM_PORT": str(_free_port()),
        "TURN_PORT": str(_free_port()),
    }
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh", str(data), str(port), str(app_port)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as one below
        )
    try:
        deadline = time.monotonic() + 60
        while "#secret=" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        lines = [line for line in out.read_text().splitlines() if line.strip()]
        m = URL_RE.search(lines[-1])
        assert m is not None and int(m.group(1)) == app_port, lines
        text = "\n".join(lines)
        assert "--profile profiles/second app" in text  # how to open a second profile
        assert '"event"' not in text and "{" not in text  # no JSON log lines here
        log = data / "relay.log"
        deadline = time.monotonic() + 10
        while '"/healthz"' not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
