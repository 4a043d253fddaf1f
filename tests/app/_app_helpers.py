"""Helpers for the web-app tests: a real relay, real ``xchat app`` processes, Chromium.

The browser is Debian's Chromium (``apt-get install chromium``) driven by the Python
``playwright`` package; ``playwright install`` is never needed. Tests that need the
browser skip with a clear reason when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "app"
URL_RE = re.compile(r"^http://127\.0\.0\.1:(\d+)/#secret=([A-Za-z0-9_-]{43})$")


@dataclass
class AppProcess:
    proc: subprocess.Popen[str]
    url: str
    port: int
    secret: str
    profile: Path
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def app_command(profile: Path) -> list[str]:
    """``xchat --profile P app`` once mounted in the main CLI, else the standalone module."""
    from xchat.cli.main import cli

    if "app" in cli.commands:
        return [sys.executable, "-m", "xchat", "--profile", str(profile), "app"]
    return [sys.executable, "-m", "xchat.app", "--profile", str(profile), "app"]


def start_app(profile: Path, server_url: str | None, port: int = 0) -> AppProcess:
    cmd = [*app_command(profile), "--port", str(port)]
    if server_url is not None:
        cmd += ["--server", server_url]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    stderr = proc.stderr

    def pump() -> None:
        with stderr:
            for line in stderr:
                lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    m = URL_RE.match(line)
    if m is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"xchat app printed {line!r}; stderr: {''.join(lines)}")
    return AppProcess(proc, line, int(m.group(1)), m.group(2), profile, lines)
