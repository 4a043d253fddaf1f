"""Rich messaging in a real browser (PROTOCOL.md Part VIII; rich.js): two ``xchat app``
processes, two Chromium pages, one relay.

The Requests folder (accept), the message menu (reply with its quote, react, edit,
delete for everyone, info), reaction chips, "edited"/"deleted" marks, read ticks, the
typing indicator, the disappearing timer in the header, block in the contact menu,
leave in the group menu, the search box — and XSS attempts in a reply, a reaction and an
edit, which must render as text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _app_helpers import AppProcess, start_app

from _cli_helpers import account

TIMEOUT_MS = 15_000
XSS_REPLY = "<img src=x onerror=window.pwned=1> reply"
XSS_REACTION = "<b>x</b>"
XSS_EDIT = "<script>window.pwned=2</script>edited"


@pytest.fixture(scope="module")
def pair(relay: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AppProcess]]:
    base = tmp_path_factory.mktemp("rich-profiles")
    tag = os.getpid() % 10000
    account(base / "ann", relay.url, f"ann{tag}")
    account(base / "ben", relay.url, f"ben{tag}")
    os.environ["XCHAT_NO_KEYRING"] = "1"
    started = [start_app(base / "ann", None), start_app(base / "ben", None)]
    try:
        yield started
    finally:
        for a in started:
            a.stop()


def api(page: Any, method: str, path: str, body: dict | None = None) -> Any:
    """Call the app's API from inside the page (same origin, the page's own secret)."""
    return page.evaluate(
        """async ([method, path, body]) => {
            const h = {'X-XChat-Secret': sessionStorage.getItem('xchat-secret')};
            if (body) h['Content-Type'] = 'application/json';
            const opts = {method, headers: h, body: body ? JSON.stringify(body) : undefined};
            const r = await fetch(path, opts);
            return {status: r.status, body: await r.json()};
        }""",
        [method, path, body],
    )


def no_markup(page: Any) -> None:
    assert page.locator("#messages img, #messages b, #messages script").count() == 0
    assert page.evaluate("window.pwned") is None


def menu(page: Any, li: Any, item: str) -> None:
    li.hover()
    li.locator(".msg-menu-btn").click()
    li.locator(f".msg-menu {item}").click()


def test_rich_messaging_in_the_browser(
    browser: Any, pair: list[AppProcess], artifacts: Path
) -> None:
    ann_app, ben_app = pair
    ctx_a = browser.new_context(viewport={"width": 1200, "height": 800})
    ctx_b = browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        a = ctx_a.new_page()
        b = ctx_b.new_page()
        for p in (a, b):
            p.set_default_timeout(TIMEOUT_MS)
            p.on("dialog", lambda d: d.accept())
        a.goto(ann_app.url)
        b.goto(ben_app.url)
        a.wait_for_selector("#view-app", state="visible")
        b.wait_for_selector("#view-app", state="visible")
        ben = api(b, "GET", "/api/state")["body"]["account"]
        ann = api(a, "GET", "/api/state")["body"]["account"]

        # ann writes first: ben gets a request, not an inbox entry, and sends nothing back
        a.fill("#newchat-input", f"@{ben['handle']}")
        a.press("#newchat-input", "Enter")
        a.wait_for_selector(f"#conv-title:has-text('@{ben['handle']}')")
        a.fill("#composer-input", "Hello Ben, dinner at 8?")
        a.press("#composer-input", "Enter")
        a.wait_for_selector(".msg.out .status[data-status='sent']")
        b.wait_for_selector("#btn-requests:has-text('Requests (1)')")
        assert b.locator(f"#conv-list .conv-item:has-text('@{ann['handle']}')").is_hidden()
        b.click("#btn-requests")
        b.click(".request-item .request-open")
        b.wait_for_selector("#request-banner:not([hidden])")
        assert a.locator(".msg.out .status[data-status='delivered']").count() == 0
        b.screenshot(path=str(artifacts / "rich-01-request.png"))
        b.click("#request-banner button:has-text('Accept')")
        b.wait_for_selector("#request-banner", state="hidden")
        a.wait_for_selector(".msg.out .status[data-read='true']")  # delivered, then read (open)

        # ben replies through the menu, with markup that must stay text
        first = b.locator(".msg.in").first
        menu(b, first, ".menu-reply")
        b.wait_for_selector("#reply-bar:not([hidden])")
        b.fill("#composer-input", XSS_REPLY)
        b.press("#composer-input", "Enter")
        quote = a.locator(".msg.in .quote").first
        quote.wait_for()
        assert quote.get_attribute("data-status") == "ok"
        assert quote.locator(".quote-text").inner_text() == "Hello Ben, dinner at 8?"
        a.wait_for_selector(f".msg.in .bubble:has-text('{XSS_REPLY[:20]}')")
        no_markup(a)

        # reactions: from the menu, and a hostile one through the API
        menu(b, b.locator(".msg.in").first, ".emoji-btn >> nth=0")
        a.wait_for_selector(".msg.out .reaction-chip:has-text('👍')")
        mid = a.locator(".msg.out").first.get_attribute("data-id")
        r = api(
            b, "POST", "/api/rich/react", {"conv": ann["address"], "id": mid, "emoji": XSS_REACTION}
        )
        assert r["status"] == 200, r
        chip = a.locator(".msg.out .reaction-chip .emoji").first
        a.wait_for_selector(".msg.out .reaction-chip:has-text('x')")
        assert chip.inner_text() == XSS_REACTION  # replaced 👍: one per person
        no_markup(a)

        # ann edits her message (markup again); ben sees the mark and the versions
        menu(a, a.locator(".msg.out").first, ".menu-edit")
        a.fill("#composer-input", XSS_EDIT)
        a.press("#composer-input", "Enter")
        b.wait_for_selector(".msg.in .edited-mark")
        assert b.locator(".msg.in .bubble").first.inner_text().endswith(XSS_EDIT)
        no_markup(b)
        b.locator(".msg.in .edited-mark").first.click()
        b.wait_for_selector("#dlg-info[open] .version-text")
        assert b.locator("#dlg-info .version-text").all_inner_texts() == [
            "Hello Ben, dinner at 8?",
            XSS_EDIT,
        ]
        b.click("#btn-info-close")
        # ben cannot edit ann's message (the API refuses: 403)
        r = api(b, "POST", "/api/rich/edit", {"conv": ann["address"], "id": mid, "text": "hijack"})
        assert r["status"] == 403

        # typing indicator and the disappearing timer in the header
        a.type("#composer-input", "typing...")
        b.wait_for_selector("#typing-indicator:has-text('typing')")
        a.fill("#composer-input", "")
        a.select_option("#rich-timer", "3600")
        b.wait_for_selector("#rich-timer option[value='3600']:checked", state="attached")
        b.wait_for_selector(".notice-line:has-text('disappearing messages set to 1h')")
        a.select_option("#rich-timer", "0")

        # info dialog shows ann's receipt from ben; delete for everyone leaves a tombstone
        menu(a, a.locator(".msg.out").first, ".menu-info")
        a.wait_for_selector("#dlg-info[open] .receipt-list li")
        a.click("#btn-info-close")
        menu(a, a.locator(".msg.out").first, ".menu-delete-all")
        b.wait_for_selector(".msg.in .deleted-mark:has-text('deleted')")
        a.screenshot(path=str(artifacts / "rich-02-conversation.png"))

        # search box finds the reply, respects the delete
        b.fill("#search-input", "reply")
        b.wait_for_selector("#search-results .search-hit")
        b.fill("#search-input", "dinner")
        b.wait_for_selector("#search-results:has-text('No messages found')")

        # block in the contact header, then unblock
        b.click("#btn-block")
        b.wait_for_selector("#blocked-banner:not([hidden])")
        assert b.is_disabled("#composer-input")
        b.click("#btn-block")
        b.wait_for_selector("#blocked-banner", state="hidden")

        # leave in the group header
        g = api(
            a, "POST", "/api/groups/create", {"name": "supper", "members": [f"@{ben['handle']}"]}
        )
        assert g["status"] == 200, g
        gconv = (
            g["body"]["group"]["conv"]
            if "conv" in g["body"]["group"]
            else "group:" + g["body"]["group"]["id"]
        )
        b.wait_for_selector(f".conv-item[data-conv='{gconv}']")
        b.click(f".conv-item[data-conv='{gconv}']")
        b.click("#btn-leave")
        a.click(f".conv-item[data-conv='{gconv}']")
        a.wait_for_selector(".notice-line:has-text('left')")
        no_markup(a)
        no_markup(b)
    finally:
        ctx_a.close()
        ctx_b.close()
