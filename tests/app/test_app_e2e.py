"""End to end in a real browser: two ``xchat app`` processes, two Chromium pages, one relay,
and a CLI user as the third member of a group.

Onboarding on both (create + confirm 3 words of the phrase), live messages both ways with
delivered state, files (image preview after local decryption on both sides, Save gives the
exact bytes, into the profile's downloads directory too), safety numbers (same 60 digits
on both pages), a three-member group created in the page with a CLI member (messages both
ways, group file, members dialog for admin and non-admin, rename, removal), theme toggle,
1200-px and 360-px pages in light and dark, screenshots in test-artifacts/app/, and no
request leaving 127.0.0.1.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from _app_helpers import TIMEOUT_MS, AppProcess, cli, onboard, start_app

from _cli_helpers import xchat_argv


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


def check_no_overflow(page: Any, width: int) -> None:
    """Nothing sticks out sideways (the page, the bars, an open dialog)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    right = page.evaluate(
        "Math.max(0, ...[...document.querySelectorAll("
        "'.topbar > *, .conv-header > *, dialog[open] *, .msg')]"
        ".filter(e => e.offsetParent).map(e => e.getBoundingClientRect().right))"
    )
    assert right <= width, right


def set_theme(page: Any, theme: str) -> None:
    page.evaluate(
        "t => { localStorage.setItem('xchat-theme', t);"
        " document.documentElement.setAttribute('data-theme', t); }",
        theme,
    )


def save_and_compare(page: Any, file_name: str, expected: bytes, downloads: Path) -> None:
    """Save the last received file ``file_name``: the browser gets the exact bytes, and so
    does <profile>/downloads (decrypted there by the app process)."""
    msg = page.locator(f".msg.in:has(.file-name:has-text('{file_name}'))").last
    with page.expect_download() as info:
        msg.locator(".save-btn").click()
    assert Path(info.value.path()).read_bytes() == expected
    assert info.value.suggested_filename == file_name
    saved = msg.locator(".saved")
    saved.wait_for()
    saved_as = saved.inner_text().removeprefix("Saved as ")
    assert (downloads / saved_as).read_bytes() == expected


def test_two_users_in_the_browser(
    browser: Any, relay: Any, apps: list[AppProcess], artifacts: Path, tmp_path: Path
) -> None:
    a_app, b_app = apps
    # The CLI group member signs up while the pages onboard.
    carol_profile = tmp_path / "carol"
    carol_signup = subprocess.Popen(
        xchat_argv(carol_profile, "account", "create", "--server", relay.url, "--handle", "carol"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    rec_a, rec_b = Recorder(), Recorder()
    ctx_a = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    ctx_b = browser.new_context(viewport={"width": 360, "height": 740}, accept_downloads=True)
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

        # A stranger's first message waits in Requests (PROTOCOL Part VIII §7): B accepts.
        b.click("#btn-requests:has-text('Requests (1)')")
        b.click(".request-item:has-text('@alice') button:has-text('Accept')")
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
        check_no_overflow(b, 360)

        # Files: an image (previewed after local decryption on both sides) and a binary.
        png_bytes = tiny_png()
        png = tmp_path / "photo.png"
        png.write_bytes(png_bytes)
        blob = bytes(range(256)) * 1200  # 300 KiB, not an image
        binary = tmp_path / "notes.bin"
        binary.write_bytes(blob)
        a.set_input_files("#file-input", str(png))
        a.wait_for_selector(".msg.out .file-name:has-text('photo.png')")
        a.wait_for_function(
            "() => { const i = document.querySelector('.msg.out .file-box img');"
            " return i && i.complete && i.naturalWidth === 24; }"
        )
        a.set_input_files("#file-input", str(binary))
        a.wait_for_selector(".msg.out .file-name:has-text('notes.bin')")
        a.screenshot(path=str(artifacts / "07-desktop-conversation.png"))
        # B, with the conversation open: name, size, preview; Save gives identical bytes.
        b.wait_for_selector(".msg.in .file-name:has-text('photo.png')")
        b.wait_for_function(
            "() => { const i = document.querySelector('.msg.in .file-box img');"
            " return i && i.complete && i.naturalWidth === 24; }"
        )
        notes = b.locator(".msg.in:has(.file-name:has-text('notes.bin'))")
        notes.wait_for()
        assert notes.locator(".file-size").inner_text() == "300.0 KB"
        assert notes.locator("img").count() == 0  # no preview for a non-image
        b_downloads = b_app.profile / "downloads"
        save_and_compare(b, "photo.png", png_bytes, b_downloads)
        save_and_compare(b, "notes.bin", blob, b_downloads)
        assert b.locator(".file-progress:visible").count() == 0  # finished downloads
        b.locator(".msg.in:has(.file-name:has-text('notes.bin'))").scroll_into_view_if_needed()
        b.screenshot(path=str(artifacts / "07b-mobile-received-files.png"))
        check_no_overflow(b, 360)

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

        group_flow(a, b, a_app, b_app, carol_signup, carol_profile, png, png_bytes, artifacts)

        # B renames itself in Settings; a CLI account then takes the handle "@bob".
        b.click("#btn-settings")
        b.fill("#set-handle", "bobby")
        b.click("#form-handle button[type=submit]")
        b.wait_for_selector("#handle-status:has-text('@bobby')")
        b.click("#btn-settings-close")
        cli(tmp_path / "third", "account", "create", "--server", relay.url, "--handle", "bob")
        # A, who verified @bob, asks for @bob again: an identity-change warning, and
        # sending is blocked until the new safety number is verified.
        a.fill("#newchat-input", "@bob")
        a.press("#newchat-input", "Enter")
        a.wait_for_selector("#identity-warning:has-text('blocked')")
        a.fill("#composer-input", "are you still bob?")
        a.press("#composer-input", "Enter")
        a.wait_for_selector("#composer-error:has-text('Not sent')")
        a.screenshot(path=str(artifacts / "12-identity-warning.png"))

        for rec in (rec_a, rec_b):
            assert rec.urls, "no requests recorded"
            assert rec.foreign() == []
            assert not [e for e in rec.console_errors if "Content Security Policy" in e]
    finally:
        if carol_signup.poll() is None:
            carol_signup.kill()
        carol_signup.communicate()
        ctx_a.close()
        ctx_b.close()


def group_flow(
    a: Any,
    b: Any,
    a_app: AppProcess,
    b_app: AppProcess,
    carol_signup: subprocess.Popen[str],
    carol: Path,
    png: Path,
    png_bytes: bytes,
    artifacts: Path,
) -> None:
    """A creates "Weekend" with B and the CLI user carol; messages go every way."""
    _, err = carol_signup.communicate(timeout=60)
    assert carol_signup.returncode == 0, err

    # A: New group (name + members by @handle); it opens at once.
    a.click("#btn-newgroup")
    a.wait_for_selector("#dlg-group[open]")
    a.fill("#group-name", "Weekend")
    a.fill("#group-members", "@bob, @carol")
    a.screenshot(path=str(artifacts / "13b-new-group.png"))
    a.click("#btn-group-create")
    a.wait_for_selector("#dlg-group", state="hidden")
    a.wait_for_selector("#conv-title:has-text('Weekend')")
    assert "3 members" in a.inner_text("#conv-subtitle")
    assert a.locator("#btn-safety").is_hidden() and a.locator("#btn-members").is_visible()
    conv = a.get_attribute(".conv-item.group[aria-current='true']", "data-conv")
    assert conv is not None and conv.startswith("group:")
    gid = conv.removeprefix("group:")

    # B: the group appears live in the list; B opens it.
    b.click(f".conv-item[data-conv='{conv}']")
    b.wait_for_selector("#conv-title:has-text('Weekend')")

    # A -> group: B sees it live with A's handle; carol with `xchat recv --json`.
    a.fill("#composer-input", "Hello group! <i>plain</i>")
    a.press("#composer-input", "Enter")
    a.wait_for_selector(".msg.out .status[data-status='sent']")
    incoming = b.locator(".msg.in:has(.bubble:has-text('Hello group!'))")
    incoming.wait_for()
    assert incoming.locator(".sender").inner_text() == "@alice"
    assert b.locator("#messages i").count() == 0
    lines = cli(carol, "recv", "--json").stdout.splitlines()
    got = [json.loads(line) for line in lines if line.strip()]
    mine = [m for m in got if m.get("text") == "Hello group! <i>plain</i>"]
    assert mine and mine[0]["group"] == {"id": gid, "name": "Weekend"}, got

    # carol -> group from the terminal: both pages show it, with carol's handle.
    cli(carol, "group", "send", "Weekend", "Hi from the terminal")
    for page in (a, b):
        m = page.locator(".msg.in:has(.bubble:has-text('Hi from the terminal'))")
        m.wait_for()
        assert m.locator(".sender").inner_text() == "@carol"

    # A group file: B gets name, size and preview in the group view.
    a.set_input_files("#file-input", str(png))
    a.wait_for_selector(".msg.out .file-name:has-text('photo.png')")
    b.wait_for_function(
        "() => { const i = document.querySelector('.msg.in .file-box img');"
        " return i && i.complete && i.naturalWidth === 24; }"
    )
    save_and_compare(b, "photo.png", png_bytes, b_app.profile / "downloads")
    a.screenshot(path=str(artifacts / "14-group-desktop.png"))
    b.screenshot(path=str(artifacts / "15-mobile-group.png"))
    check_no_overflow(b, 360)

    # Members: A (admin) sees badges and controls, B (member) a read-only list.
    a.click("#btn-members")
    a.wait_for_selector("#dlg-members[open] #members-list li")
    assert a.locator("#members-list li").count() == 3
    admin_row = a.locator("#members-list li:has-text('You')")
    assert admin_row.locator(".badge.admin").count() == 1
    assert a.locator("#members-admin").is_visible()
    assert a.locator("#members-list li:has-text('@carol') button:has-text('Remove')").count() == 1
    a.screenshot(path=str(artifacts / "16-members-admin.png"))
    b.click("#btn-members")
    b.wait_for_selector("#dlg-members[open] #members-list li")
    assert b.locator("#members-list li").count() == 3
    assert b.locator("#members-admin").is_hidden()
    assert b.locator("#members-list button").count() == 0
    assert "Only admins" in b.inner_text("#members-note")
    b.screenshot(path=str(artifacts / "17-mobile-members-readonly.png"))
    check_no_overflow(b, 360)

    # Dark theme at both widths, with the dialogs open.
    set_theme(a, "dark")
    set_theme(b, "dark")
    a.screenshot(path=str(artifacts / "18-members-admin-dark.png"))
    b.screenshot(path=str(artifacts / "19-mobile-members-dark.png"))
    b.keyboard.press("Escape")
    b.wait_for_selector("#dlg-members", state="hidden")
    b.screenshot(path=str(artifacts / "20-mobile-group-dark.png"))

    # Admin: rename, then remove carol; B's open dialog and header follow live.
    b.click("#btn-members")
    b.wait_for_selector("#dlg-members[open]")
    a.fill("#rename-input", "Weekend trip")
    a.click("#form-rename button[type=submit]")
    b.wait_for_selector("#members-title:has-text('Weekend trip')")
    a.click("#members-list li:has-text('@carol') button:has-text('Remove')")
    a.click("#dlg-confirm[open] #btn-confirm-ok")  # asked first (issue #19)
    a.wait_for_function("() => document.querySelectorAll('#members-list li').length === 2")
    b.wait_for_function("() => document.querySelectorAll('#members-list li').length === 2")
    a.click("#btn-members-close")
    b.click("#btn-members-close")
    b.wait_for_selector("#conv-title:has-text('Weekend trip')")
    assert "2 members" in b.inner_text("#conv-subtitle")
    a.screenshot(path=str(artifacts / "21-group-desktop-dark.png"))
    # The admin dialog at 360 px too.
    a.set_viewport_size({"width": 360, "height": 740})
    a.click("#btn-members")
    a.wait_for_selector("#dlg-members[open] #members-admin")
    a.screenshot(path=str(artifacts / "22-mobile-members-admin-dark.png"))
    check_no_overflow(a, 360)
    a.keyboard.press("Escape")
    a.set_viewport_size({"width": 1200, "height": 800})
    set_theme(a, "system")
    set_theme(b, "system")
    b.click("#btn-back")
    b.wait_for_selector("#conv-list", state="visible")
    # carol is B's fellow group member, not a 1:1 chat of B's.
    assert b.locator(".conv-item:has-text('@carol')").count() == 0
    assert b.locator(".conv-item.group:has-text('Weekend trip')").count() == 1


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
        xchat_argv(tmp_path / "cli", "account", "create", "--server", relay.url, "--json"),
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
