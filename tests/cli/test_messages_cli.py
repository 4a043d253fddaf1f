"""The rich-messaging commands through the real ``xchat`` command and a real relay
(PROTOCOL.md Part VIII §11): names, flags and ``--json`` keys are a stable interface.

Every rule is tested end to end through the SDK in tests/client/test_rich_e2e.py; here
the quick test pins the command surface, and the two long walk-throughs of every
command (each ``xchat`` run is a process start) run with ``make soak``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from _cli_helpers import account, ok, one_error_line, xchat
from xchat.testing import ServerProcess


def _lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_rich_commands_smoke(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    tag = os.getpid() % 10000
    ha, hb = f"sa{tag}", f"sb{tag}"
    addr_a = account(a, server.url, ha)
    account(b, server.url, hb)
    first = ok(xchat(a, "send", f"@{hb}", "hi <b>ben</b>")).strip()
    got = _lines(ok(xchat(b, "recv", "--json")))
    assert got[0]["id"] == first and got[0]["request"] is True
    for key in ("reply_to", "quote", "edited", "deleted", "reactions", "expires_at", "read"):
        assert key in got[0]
    assert ok(xchat(b, "accept", addr_a)).strip() == addr_a
    ok(xchat(b, "react", f"@{ha}", first, "👍"))
    r = xchat(b, "edit", f"@{ha}", first, "hijacked")  # not b's message: exit 9
    assert r.returncode == 9 and "author" in one_error_line(r)
    assert xchat(b, "disappear", f"@{ha}", "1s").returncode == 2  # below 5 s: refused input
    kinds = {x["type"]: x for x in _lines(ok(xchat(a, "recv", "--json")))}
    assert kinds["reaction"]["emoji"] == "👍" and kinds["reaction"]["target"] == first
    assert kinds["receipt"]["kind"] == "delivered" and first in kinds["receipt"]["ids"]
    hits = _lines(ok(xchat(b, "search", "ben", "--in", f"@{ha}", "--json")))
    assert [(h["id"], h["text"]) for h in hits] == [(first, "hi <b>ben</b>")]


@pytest.mark.slow
def test_message_commands_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    tag = os.getpid() % 10000
    ha, hb = f"ra{tag}", f"rb{tag}"
    addr_a = account(a, server.url, ha)
    account(b, server.url, hb)

    # a stranger's first message waits in Requests; no receipt goes back
    first = ok(xchat(a, "send", f"@{hb}", "hi, it's ann")).strip()
    got = _lines(ok(xchat(b, "recv", "--json")))
    assert got[0]["id"] == first and got[0]["request"] is True
    reqs = _lines(ok(xchat(b, "requests", "--json")))
    assert [(r["address"], r["messages"]) for r in reqs] == [(addr_a, 1)]
    assert [x for x in _lines(ok(xchat(a, "recv", "--json"))) if x["type"] == "receipt"] == []
    ok(xchat(b, "accept", addr_a))
    assert _lines(ok(xchat(b, "requests", "--json"))) == []
    receipts = [x for x in _lines(ok(xchat(a, "recv", "--json"))) if x["type"] == "receipt"]
    assert receipts and receipts[0]["kind"] == "delivered" and first in receipts[0]["ids"]

    # reply (quote), react, edit, read, delete
    reply = ok(xchat(b, "send", f"@{ha}", "hello <b>ann</b>", "--reply-to", first)).strip()
    got = {x["id"]: x for x in _lines(ok(xchat(a, "recv", "--json"))) if x["type"] == "text"}
    assert got[reply]["reply_to"] == first and got[reply]["quote"]["status"] == "ok"
    assert (
        got[reply]["quote"]["text"] == "hi, it's ann" and got[reply]["text"] == "hello <b>ann</b>"
    )
    for key in ("edited", "deleted", "reactions", "expires_at", "read"):
        assert key in got[reply]
    ok(xchat(a, "react", f"@{hb}", reply, "👍"))
    ok(xchat(a, "react", f"@{hb}", reply, "🎉"))
    kinds = _lines(ok(xchat(b, "recv", "--json")))
    assert [(x["type"], x["emoji"]) for x in kinds if x["type"] == "reaction"] == [
        ("reaction", "👍"),
        ("reaction", "🎉"),
    ]
    ok(xchat(a, "react", f"@{hb}", reply, "--remove"))
    assert [x["removed"] for x in _lines(ok(xchat(b, "recv", "--json")))] == [True]
    assert one_error_line(xchat(a, "react", f"@{hb}", reply, "a b")).startswith("xchat: error:")
    assert xchat(a, "react", f"@{hb}", reply, "a b").returncode == 2

    ok(xchat(a, "edit", f"@{hb}", first, "hi, it's Ann"))
    edits = [x for x in _lines(ok(xchat(b, "recv", "--json"))) if x["type"] == "edit"]
    assert edits == [{**edits[0], "target": first, "text": "hi, it's Ann", "version": 1}]
    r = xchat(b, "edit", f"@{ha}", first, "hijacked")  # not b's message
    assert r.returncode == 9 and "author" in one_error_line(r)
    assert xchat(b, "delete", f"@{ha}", first, "--for-everyone").returncode == 9
    hist = {h["id"]: h for h in _lines(ok(xchat(b, "history", f"@{ha}", "--json")))}
    assert hist[first]["edited"] is True and hist[first]["text"] == "hi, it's Ann"
    assert [v["text"] for v in hist[first]["versions"]] == ["hi, it's ann", "hi, it's Ann"]

    ok(xchat(b, "read", f"@{ha}"))
    got = _lines(ok(xchat(a, "recv", "--json")))
    assert any(x["type"] == "receipt" and x["kind"] == "read" for x in got)
    hist = {h["id"]: h for h in _lines(ok(xchat(a, "history", f"@{hb}", "--json")))}
    assert hist[first]["read"] is True

    ok(xchat(a, "delete", f"@{hb}", first, "--for-everyone"))
    deletes = [x for x in _lines(ok(xchat(b, "recv", "--json"))) if x["type"] == "delete"]
    assert [x["target"] for x in deletes] == [first]
    hist = {h["id"]: h for h in _lines(ok(xchat(b, "history", f"@{ha}", "--json")))}
    assert hist[first]["deleted"] is True and hist[first]["text"] is None

    # search finds by text and person, respects the delete
    hits = _lines(ok(xchat(b, "search", "hello", "--json")))
    assert [h["id"] for h in hits] == [reply]
    assert _lines(ok(xchat(b, "search", "Ann", "--in", f"@{ha}", "--json"))) == [
        {**hits[0], "text": "hello <b>ann</b>"}
    ]
    assert _lines(ok(xchat(b, "search", "hi", "--json"))) == []  # the deleted one

    # settings
    assert ok(xchat(b, "settings", "set", "read-receipts", "off")).strip() == "read-receipts off"
    assert json.loads(ok(xchat(b, "settings", "show", "--json")))["read-receipts"] is False
    assert xchat(b, "settings", "set", "colour", "on").returncode == 2


@pytest.mark.slow
def test_disappear_block_and_group_leave(server: ServerProcess, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tag = os.getpid() % 10000
    ha, hb, hc = f"da{tag}", f"db{tag}", f"dc{tag}"
    account(a, server.url, ha)
    addr_b = account(b, server.url, hb)
    account(c, server.url, hc)
    ok(xchat(b, "accept", f"@{ha}"))  # b knows a: no request
    assert xchat(a, "disappear", f"@{hb}", "3s").returncode == 2  # below 5 s
    assert xchat(a, "disappear", f"@{hb}", "soon").returncode == 2
    ok(xchat(a, "disappear", f"@{hb}", "5s"))
    got = _lines(ok(xchat(b, "recv", "--json")))
    assert [(x["type"], x["seconds"]) for x in got] == [("disappear", 5)]
    mid = ok(xchat(a, "send", f"@{hb}", "gone soon")).strip()
    got = [x for x in _lines(ok(xchat(b, "recv", "--json"))) if x["type"] == "text"]
    assert got[0]["id"] == mid and got[0]["timer"] == 5 and got[0]["expires_at"] is None
    ok(xchat(b, "read", f"@{ha}"))
    deadline = time.monotonic() + 30

    def rows(p: Path) -> int:
        db = sqlite3.connect(p / "store.sqlite")
        try:
            return int(
                db.execute("SELECT COUNT(*) FROM messages WHERE id = ?", (mid,)).fetchone()[0]
            )
        finally:
            db.close()

    # each command sweeps on open: run one until the timer has passed on both sides
    while (rows(a) or rows(b)) and time.monotonic() < deadline:
        ok(xchat(a, "settings", "show"))
        ok(xchat(b, "settings", "show"))
    assert rows(a) == 0 and rows(b) == 0
    assert _lines(ok(xchat(b, "search", "gone", "--json"))) == []
    ok(xchat(a, "disappear", f"@{hb}", "off"))
    hist = _lines(ok(xchat(a, "history", f"@{hb}", "--json")))
    assert [h["text"] for h in hist if h["type"] == "disappear"] == [
        "disappearing messages set to 5s",
        "disappearing messages off",
    ]

    # block: a's messages are dropped, a gets no receipts, b cannot send
    ok(xchat(b, "recv"))
    ok(xchat(b, "block", f"@{ha}"))
    ok(xchat(a, "send", f"@{hb}", "hello?"))
    assert [x for x in _lines(ok(xchat(b, "recv", "--json"))) if x["type"] == "text"] == []
    assert xchat(b, "send", f"@{ha}", "x").returncode == 9
    ok(xchat(b, "unblock", f"@{ha}"))

    # group: --group on the message commands, leave, notices
    gid = ok(xchat(a, "group", "create", "trio", f"@{hb}", f"@{hc}")).strip()
    ok(xchat(b, "recv"))
    ok(xchat(c, "recv"))
    gmid = ok(xchat(a, "send", "--group", "trio", "hello trio")).strip()
    ok(xchat(b, "recv"))
    ok(xchat(c, "recv"))
    ok(xchat(b, "react", "--group", "trio", gmid, "❤️"))
    got = _lines(ok(xchat(a, "recv", "--json")))
    assert any(x["type"] == "reaction" and x["group"] == gid for x in got)
    assert sum(1 for x in got if x["type"] == "receipt" and x["group"] == gid) >= 2
    hist = {h["id"]: h for h in _lines(ok(xchat(a, "history", "--group", "trio", "--json")))}
    assert hist[gmid]["receipts"]["delivered"] == 2 and hist[gmid]["receipts"]["members"] == 2
    assert hist[gmid]["reactions"][0]["emoji"] == "❤️"
    ok(xchat(c, "group", "leave", "trio"))
    notices = [x for x in _lines(ok(xchat(a, "recv", "--json"))) if x["type"] == "group_notice"]
    assert notices and notices[0]["kind"] == "left" and notices[0]["group"] == gid
    assert addr_b
