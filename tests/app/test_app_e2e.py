"""End to end in a real browser: two ``xchat app`` processes, two Chromium pages, one relay.

Onboarding on both (create + confirm 3 words of the phrase), live messages both ways with
delivered state, a file with an image preview, safety numbers (same 60 digits on both
pages), theme toggle, a 360-px-wide page, screenshots in test-artifacts/app/, and no
request leaving 127.0.0.1.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from _app_helpers import AppProcess, start_app

TIMEOUT_MS = 15_000


def tiny_png(w: int = 24, h: int = 24) -> bytes:
    """A valid RGB PNG (a gradient) made without any imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 10 % 256, y * 10 % 256, 200)) for x in range(w))
        for y in range(h)
    )
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Recorder:
    """Every request and console error a page produces."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.console_errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.urls.append(r.url))
        page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )

    def foreign(self) -> list[str]:
        bad = []
        for u in self.urls:
            parts = urlsplit(u)
            if parts.scheme in ("blob", "data"):
                continue
            if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
                bad.append(u)
        return bad


def onboard(page: Any, app: AppProcess, handle: str, shots: Path, shoot: bool) -> None:
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


def cli_base(profile: Path) -> list[str]:
    return [sys.executable, "-m", "xchat", "--profile", str(profile)]


def test_two_users_in_the_browser(
    browser: Any, relay: Any, apps: list[AppProcess], artifacts: Path, tmp_path: Path
) -> None:
    a_app, b_app = apps
    rec_a, rec_b = Recorder(), Recorder()
    ctx_a = browser.new_context(viewport={"width": 1200, "height": 800})
    ctx_b = browser.new_context(viewport={"width": 360, "height": 740})  # narrowest target
    try:
        a = ctx_a.new_page()
        b = ctx_b.new_page()
        rec_a.attach(a)
        rec_b.attach(b)
        a.set_default_timeout(TIMEOUT_MS)
        b.set_default_timeout(TIMEOUT_MS)

        onboard(a, a_app, "alice", artifacts, shoot=True)
        onboard(b, b_app, "bob", artifacts, shoot=False)
        a.screenshot(path=str(artifacts / "04-empty-app.png"))

        # A starts a chat by @handle; a peer's markup must arrive as text.
        a.fill("#newchat-input", "@bob")
        a.press("#newchat-input", "Enter")
        a.wait_for_selector("#conv-title:has-text('@bob')")
        hostile = "Hello Bob <b>not bold</b> <img src=x onerror=alert(1)>"
        a.fill("#composer-input", hostile)
        a.press("#composer-input", "Enter")
        a.wait_for_selector(".msg.out .bubble:has-text('Hello Bob')")

        # B sees it arrive live: a conversation with an unread count, then the message.
        b.wait_for_selector(".conv-item:has-text('@alice') .unread:has-text('1')")
        assert "Hello Bob" in b.inner_text(".conv-item:has-text('@alice') .conv-last")
        b.screenshot(path=str(artifacts / "05-mobile-list-unread.png"))
        b.click(".conv-item:has-text('@alice')")
        bubble = b.locator(".msg.in .bubble").first
        bubble.wait_for()
        assert bubble.inner_text() == hostile
        assert b.locator("#messages b, #messages img").count() == 0
        assert b.evaluate("document.getElementById('live').textContent").find("alice") >= 0

        # B replies; A, with the conversation open, sees it without reloading.
        b.fill("#composer-input", "Hi Alice! 👋\nsecond line")
        b.click("#btn-send")
        a.wait_for_selector(".msg.in .bubble:has-text('Hi Alice!')")
        # A's first message reached B's device: delivered (receipt), shown live.
        a.wait_for_selector(".msg.out .status[data-status='delivered']")
        b.wait_for_selector(".msg.out .status[data-status='delivered']")
        b.screenshot(path=str(artifacts / "06-mobile-conversation.png"))
        # Nothing overflows sideways at 360 px.
        assert b.evaluate("document.documentElement.scrollWidth") <= 360
        assert (
            b.evaluate(
                "Math.max(...[...document.querySelectorAll('.topbar > *, .conv-header > *')]"
                ".filter(e => e.offsetParent).map(e => e.getBoundingClientRect().right))"
            )
            <= 360
        )

        # A file with progress and an image preview (files are client/files.py's).
        png = tmp_path / "photo.png"
        png.write_bytes(tiny_png())
        a.set_input_files("#file-input", str(png))
        a.wait_for_selector(".msg.out .file-name:has-text('photo.png')")
        img = a.locator(".msg.out .file-box img").first
        img.wait_for()
        a.wait_for_function(
            "() => { const i = document.querySelector('.msg.out .file-box img');"
            " return i && i.complete && i.naturalWidth === 24; }"
        )
        a.screenshot(path=str(artifacts / "07-desktop-conversation.png"))

        # Safety numbers: both pages show the same 60 digits, with a QR code.
        digits = []
        for page, name in ((a, "08-safety-number.png"), (b, "11-mobile-safety-number.png")):
            page.click("#btn-safety")
            page.wait_for_selector("#dlg-safety[open] .digit-group")
            groups = page.locator("#safety-digits .digit-group").all_inner_texts()
            assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
            digits.append("".join(groups))
            page.wait_for_function(
                "() => { const q = document.getElementById('safety-qr');"
                " return q.complete && q.naturalWidth > 0; }"
            )
            if name:
                page.screenshot(path=str(artifacts / name))
        assert digits[0] == digits[1] and len(digits[0]) == 60
        a.click("#btn-mark-verified")
        a.wait_for_selector("#safety-state:has-text('Verified')")
        a.click("#btn-safety-close")
        a.wait_for_selector("#conv-verified", state="visible")
        b.keyboard.press("Escape")  # dialogs close from the keyboard
        b.wait_for_selector("#dlg-safety", state="hidden")

        # Settings: server, handle, address; theme toggle (dark).
        a.click("#btn-settings")
        a.wait_for_selector("#dlg-settings[open]")
        assert a.inner_text("#set-address").startswith("xc1")
        a.click("#btn-show-address-qr")
        a.wait_for_function("() => document.getElementById('address-qr').naturalWidth > 0")
        a.check("input[name='theme'][value='dark']")
        assert a.evaluate("document.documentElement.dataset.theme") == "dark"
        a.screenshot(path=str(artifacts / "09-settings-dark.png"))
        a.click("#btn-settings-close")
        a.screenshot(path=str(artifacts / "10-desktop-dark.png"))
        a.click("#btn-theme")  # dark -> system
        assert a.evaluate("document.documentElement.dataset.theme") is None

        # Mobile back button returns to the list, keyboard focus lands somewhere useful.
        b.click("#btn-back")
        b.wait_for_selector("#conv-list", state="visible")

        # B renames itself in Settings; a CLI account then takes the handle "@bob".
        b.click("#btn-settings")
        b.fill("#set-handle", "bobby")
        b.click("#form-handle button[type=submit]")
        b.wait_for_selector("#handle-status:has-text('@bobby')")
        b.click("#btn-settings-close")
        cli = subprocess.run(
            [
                *cli_base(tmp_path / "third"),
                "account",
                "create",
                "--server",
                relay.url,
                "--handle",
                "bob",
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        # A, who verified @bob, asks for @bob again: an identity-change warning, and
        # sending is blocked until the new safety number is verified.
        a.fill("#newchat-input", "@bob")
        a.press("#newchat-input", "Enter")
        a.wait_for_selector("#identity-warning:has-text('blocked')")
        a.fill("#composer-input", "are you still bob?")
        a.press("#composer-input", "Enter")
        a.wait_for_selector("#composer-error:has-text('Not sent')")
        a.screenshot(path=str(artifacts / "12-identity-warning.png"))

        # Groups: only when the Client has a group API (else the button stays hidden).
        state = httpx.get(
            a_app.base + "/api/state", headers={"X-XChat-Secret": a_app.secret}
        ).json()
        assert a.locator("#btn-newgroup").is_visible() == bool(state["features"]["groups"])

        for rec in (rec_a, rec_b):
            assert rec.urls, "no requests recorded"
            assert rec.foreign() == []
            assert not [e for e in rec.console_errors if "Content Security Policy" in e]
    finally:
        ctx_a.close()
        ctx_b.close()


@pytest.mark.parametrize("path", ["/"])
def test_page_without_secret_shows_how_to_open_it(
    browser: Any, apps: list[AppProcess], artifacts: Path, path: str
) -> None:
    ctx = browser.new_context(viewport={"width": 360, "height": 640})
    try:
        page = ctx.new_page()
        page.goto(apps[0].base + path)
        page.wait_for_selector("#view-locked", state="visible", timeout=TIMEOUT_MS)
        assert "xchat app" in page.inner_text("#view-locked")
    finally:
        ctx.close()


def test_restore_from_phrase_in_the_browser(
    browser: Any, relay: Any, artifacts: Path, tmp_path: Path
) -> None:
    """A CLI-created account restored in a fresh ``xchat app`` profile keeps its address."""
    created = subprocess.run(
        [*cli_base(tmp_path / "cli"), "account", "create", "--server", relay.url, "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    app = start_app(tmp_path / "restored", relay.url)
    ctx = browser.new_context(viewport={"width": 800, "height": 800})
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.click("#tab-restore")
        page.fill("#restore-phrase", " ".join(["abandon"] * 24))  # bad checksum
        page.click("#btn-restore")
        page.wait_for_selector("#onboarding-error:has-text('recovery phrase')")
        page.screenshot(path=str(artifacts / "13-restore-error.png"))
        page.fill("#restore-phrase", info["recovery_phrase"].upper())
        page.click("#btn-restore")
        page.wait_for_selector("#view-app", state="visible")
        page.click("#btn-settings")
        page.wait_for_selector("#dlg-settings[open]")
        assert page.inner_text("#set-address") == info["address"]
    finally:
        ctx.close()
        app.stop()
