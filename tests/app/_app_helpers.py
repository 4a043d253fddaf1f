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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _cli_helpers import xchat_argv

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
TIMEOUT_MS = 15_000  # a page step: onboarding, a message arriving
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


def start_app(profile: Path, server_url: str | None, port: int = 0) -> AppProcess:
    cmd = xchat_argv(profile, "app", "--port", str(port))
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


def onboard(page: Any, app: AppProcess, handle: str, shots: Path, shoot: bool) -> None:
    """Create an account in the page: handle, the phrase shown, 3 words confirmed (a wrong
    one refused first); screenshots into ``shots`` when ``shoot``."""
    page.goto(app.url)
    page.wait_for_selector("#form-create", state="visible", timeout=TIMEOUT_MS)
    # The secret moved from the URL into sessionStorage.
    assert "secret" not in page.url
    assert page.evaluate("sessionStorage.getItem('xchat-secret')") == app.secret
    assert page.input_value("#create-server").startswith("http://127.0.0.1:")
    if shoot:
        page.screenshot(path=str(shots / "01-onboarding.png"))
    page.fill("#create-handle", handle)
    page.click("#btn-create")
    page.wait_for_selector("#phrase-show", state="visible", timeout=TIMEOUT_MS)
    words = page.locator("#phrase-words li").all_inner_texts()
    assert len(words) == 24
    if shoot:
        page.screenshot(path=str(shots / "02-recovery-phrase.png"))
    page.click("#btn-phrase-next")
    labels = page.locator("#confirm-fields label").all_inner_texts()
    positions = [int(t.split("#")[1]) for t in labels]
    assert len(positions) == 3
    # A wrong word is refused...
    for i, n in enumerate(positions):
        page.fill(f"#confirm-word-{i}", "wrong" if i == 0 else words[n - 1])
    page.click("#btn-confirm")
    page.wait_for_selector("#onboarding-error:has-text('do not match')", timeout=TIMEOUT_MS)
    # ...the right ones are accepted.
    page.fill("#confirm-word-0", words[positions[0] - 1])
    if shoot:
        page.screenshot(path=str(shots / "03-confirm-phrase.png"))
    page.click("#btn-confirm")
    page.wait_for_selector("#view-app", state="visible", timeout=TIMEOUT_MS)


def cli(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``xchat`` on a profile (the app's environment, no key-file override); must succeed."""
    done = subprocess.run(
        xchat_argv(profile, *args),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done
