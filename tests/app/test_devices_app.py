"""Linked devices in the web app (PROTOCOL.md Part VII), in Chromium against two real
``xchat app`` processes and a real relay: "Link a device" on the first screen of an empty
profile shows a code and its QR, Settings → Linked devices on the existing one approves it,
the new page enters the app with the old conversation, and a message sent from the other
device appears live."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _app_helpers import AppProcess, start_app

from xchat.testing import ServerProcess

TIMEOUT_MS = 30_000


def api(app: AppProcess, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(
        method,
        app.base + path,
        headers={"X-XChat-Secret": app.secret},
        json=body if method == "POST" else None,
        timeout=60,
    )
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


@pytest.fixture
def pair(relay: ServerProcess, tmp_path: Path) -> Iterator[tuple[AppProcess, AppProcess]]:
    old, new = start_app(tmp_path / "old", relay.url), start_app(tmp_path / "new", relay.url)
    try:
        yield old, new
    finally:
        old.stop()
        new.stop()


def test_link_a_device_in_the_browser(
    pair: tuple[AppProcess, AppProcess], relay: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    from xchat.client.client import Client

    old, new = pair
    r = api(old, "POST", "/api/account/create", {"server": relay.url, "handle": "devapp_a"})
    words = r["recovery_phrase"]
    api(
        old, "POST", "/api/account/confirm", {"words": [words[i - 1] for i in r["confirm_indices"]]}
    )

    # a contact with some history (a real SDK client on the same relay)
    async def make_peer() -> str:
        async with Client(tmp_path / "peer") as peer:
            await peer.create_account(relay.url, "devapp_p")
            await peer.send_text("@devapp_a", "history from before")
            return peer.address

    # Playwright's sync API owns this thread's event loop: the peer runs in its own thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        peer_address = pool.submit(asyncio.run, make_peer()).result(timeout=120)
    ctx = browser.new_context()
    p_new, p_old = ctx.new_page(), ctx.new_page()
    try:
        p_new.goto(new.url)
        p_new.click("#btn-link-device")
        p_new.fill("#link-name", "work browser")
        p_new.click("#btn-link-start")
        p_new.wait_for_selector("#link-code:not(:empty)", timeout=TIMEOUT_MS)
        code = p_new.text_content("#link-code") or ""
        assert len(code.replace("-", "")) == 24
        assert p_new.get_attribute("#link-qr", "src", timeout=TIMEOUT_MS).startswith("blob:")
        p_old.goto(old.url)
        p_old.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
        p_old.click("#btn-settings")
        p_old.fill("#device-code", code)
        p_old.click("#btn-device-add")
        p_old.wait_for_selector("#device-list li >> nth=1", timeout=TIMEOUT_MS)
        names = p_old.locator("#device-list li").all_text_contents()
        assert any("work browser" in n for n in names)
        # the new page enters the app and shows the old conversation
        p_new.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
        p_new.click(f"#conv-list [data-conv='{peer_address}']", timeout=TIMEOUT_MS)
        p_new.wait_for_selector("text=history from before", timeout=TIMEOUT_MS)
        # sent from the other device: appears here live
        api(old, "POST", "/api/messages/send", {"to": peer_address, "text": "sent on the old one"})
        p_new.wait_for_selector("text=sent on the old one", timeout=TIMEOUT_MS)

        # read on the old device: no longer unread on the new one (sync kind "read")
        def unread(app: AppProcess) -> int:
            convs = api(app, "GET", "/api/conversations")["conversations"]
            return sum(c.get("unread", 0) for c in convs if c.get("conv") == peer_address)

        async def more_from_peer() -> None:
            async with Client(tmp_path / "peer") as peer:
                await peer.send_text("@devapp_a", "unread until read elsewhere")

        p_new.goto("about:blank")  # no page marks anything read on the new device now
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, more_from_peer()).result(timeout=120)
        deadline = time.monotonic() + 30
        while (unread(old) == 0 or unread(new) == 0) and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for both apps to receive it (a condition)
        assert unread(new) >= 1
        api(old, "POST", "/api/conversations/read", {"peer": peer_address})
        while unread(new) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert unread(new) == 0
        devices = api(new, "GET", "/api/devices")["devices"]
        assert [(d["id"], d["current"]) for d in devices] == [(1, False), (2, True)]

        # blocked on the old device: blocked on the new one (sync kind "conversation")
        def state(app: AppProcess) -> Any:
            r = httpx.get(
                app.base + "/api/rich/conversation",
                params={"peer": peer_address},
                headers={"X-XChat-Secret": app.secret},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            return r.json()["state"]

        api(old, "POST", "/api/rich/block", {"conv": peer_address})
        assert state(old) == "blocked"
        while state(new) != "blocked" and time.monotonic() < deadline + 30:
            time.sleep(0.1)
        assert state(new) == "blocked"

        # typing off in the old page's Settings: the new page shows it off after a reload
        # (sync kind "settings"); read receipts stay on, which only the fetched value checks
        if not p_old.locator("#set-typing").is_visible():
            p_old.click("#btn-settings")
        with p_old.expect_response("**/api/rich/settings"):
            p_old.uncheck("#set-typing")
        while api(new, "GET", "/api/rich/settings")["typing"] and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        p_new.goto(new.url)
        p_new.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
        p_new.click("#btn-settings")
        p_new.wait_for_selector("#set-read-receipts:checked", timeout=TIMEOUT_MS)
        assert not p_new.is_checked("#set-typing")
        # and live, with Settings open here: switched back on in the old page
        with p_old.expect_response("**/api/rich/settings"):
            p_old.check("#set-typing")
        p_new.wait_for_selector("#set-typing:checked", timeout=TIMEOUT_MS)
    finally:
        ctx.close()


def test_approve_screen_attachment_limit(
    pair: tuple[AppProcess, AppProcess], relay: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    """Settings → Linked devices has the attachment limit of ``xchat device add
    --max-attachments``: a value outside 0-256 is refused on the page (and by the route),
    and 1 MB copies the newest of two 600 kB attachments only."""
    from xchat.client import files as xf
    from xchat.client.client import Client

    old, new = pair
    r = api(old, "POST", "/api/account/create", {"server": relay.url, "handle": "devapp_m"})
    words = r["recovery_phrase"]
    api(
        old, "POST", "/api/account/confirm", {"words": [words[i - 1] for i in r["confirm_indices"]]}
    )
    blobs = {name: bytes([i + 1]) * 600_000 for i, name in enumerate(("older.bin", "newer.bin"))}

    async def send_files() -> tuple[str, list[str]]:
        async with Client(tmp_path / "peer") as peer:
            await peer.create_account(relay.url, "devapp_mp")
            ids = []
            for name, data in blobs.items():
                (tmp_path / name).write_bytes(data)
                async with xf.BlobClient.from_api(peer.api) as bc:
                    manifest = await xf.send_file(bc, tmp_path / name)
                ids.append(await peer.send_file_manifest("@devapp_m", manifest.to_json()))
            return peer.address, ids

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        peer_address, ids = pool.submit(asyncio.run, send_files()).result(timeout=120)
    deadline = time.monotonic() + 30
    for msg_id in ids:  # the old app holds both files (downloaded, so recorded)
        while True:
            r = httpx.post(
                old.base + "/api/files/fetch",
                headers={"X-XChat-Secret": old.secret},
                json={"message_id": msg_id, "peer": peer_address},
                timeout=60,
            )
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # until the app received the message (a condition)
        assert r.status_code == 200, r.text
    bad = httpx.post(
        old.base + "/api/devices/add",
        headers={"X-XChat-Secret": old.secret},
        json={"code": "aaaa", "max_attachments": 300},
        timeout=30,
    )
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "'max_attachments' must be 0 to 256 (MB)"},
    )
    ctx = browser.new_context()
    p_new, p_old = ctx.new_page(), ctx.new_page()
    try:
        p_new.goto(new.url)
        p_new.click("#btn-link-device")
        p_new.click("#btn-link-start")
        p_new.wait_for_selector("#link-code:not(:empty)", timeout=TIMEOUT_MS)
        code = p_new.text_content("#link-code") or ""
        p_old.goto(old.url)
        p_old.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
        p_old.click("#btn-settings")
        field = p_old.get_by_label("Attachments to copy with the history", exact=False)
        assert field.input_value() == "25"
        p_old.fill("#device-code", code)
        field.fill("300")
        p_old.click("#btn-device-add")
        p_old.wait_for_selector("#devices-status:has-text('from 0 to 256')", timeout=TIMEOUT_MS)
        assert field.get_attribute("aria-invalid") == "true"
        assert p_new.is_visible("#link-pending")  # nothing was approved
        field.fill("1")
        p_old.click("#btn-device-add")
        p_old.wait_for_selector("#device-list li >> nth=1", timeout=TIMEOUT_MS)
        p_new.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
    finally:
        ctx.close()
    copied = sorted(p.read_bytes() for p in xf.downloads_dir(new.profile).iterdir())
    assert copied == [blobs["newer.bin"]]
