"""Rich messaging end to end through a real relay (PROTOCOL.md Part VIII).

Every kind in a 1:1 chat and in a group; the attacks the issue names are performed with
hand-crafted content from a real client (a non-author's edit and delete, a forged quote);
a disappearing message is checked gone from both SQLite stores; a stranger's message
waits in Requests with no receipt; a blocked sender is dropped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from _crowd import Crowd

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.client import Client
from xchat.errors import NotAllowed


def of(events: list[ev.Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def _rows(c: Client, table: str, msg_id: str) -> int:
    db = sqlite3.connect(c.profile.store_path)
    try:
        return int(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE id = ?", (msg_id,)).fetchone()[0]
        )
    finally:
        db.close()


async def _friends(a: Client, b: Client) -> None:
    """a and b know each other (b accepted a), and both hold each other's tokens."""
    await a.send_text(b.address, "hi")
    await b.receive()
    await b.messaging.accept(a.address)
    await b.send_text(a.address, "hello")
    await a.receive()
    await b.receive()


async def test_stranger_lands_in_requests_with_no_receipt_until_accepted(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    mid = await a.send_text(f"@{b.whoami().handle}", "hello stranger")
    got = await b.receive()
    assert [e.text for e in of(got, ev.MessageReceived)] == ["hello stranger"]
    assert [e.address for e in of(got, rev.MessageRequest)] == [a.address]
    assert [r.address for r in b.messaging.requests()] == [a.address]
    await b.messaging.mark_read(a.address)  # reading a request sends nothing either
    await a.messaging.typing(b.address, True)
    got_a = await a.receive()  # the round trip: anything b sent has arrived by now
    assert of(got_a, ev.ReceiptReceived) == [] and of(got_a, rev.RichReceipt) == []
    contact = a.find_contact(b.address)
    assert contact is not None and [h.status for h in a.history(contact)] == ["sent"]
    # a stranger's typing is not shown
    assert of(await b.receive(), rev.TypingChanged) == []
    # accept: the owed delivery receipt goes out now
    await b.messaging.accept(a.address)
    assert b.messaging.requests() == []
    got_a = await a.receive()
    assert any(mid in e.message_ids for e in of(got_a, ev.ReceiptReceived))
    assert [h.status for h in a.history(contact)] == ["delivered"]


async def test_reply_quote_checked_and_forgery_shown(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    await _friends(a, b)
    orig = await a.send_text(b.address, "meet at noon")
    await b.receive()
    good = await b.send_text(a.address, "ok", reply_to=orig)
    # a modified client forges a quote of something a never said
    forged = ct.Content(
        id=ct.new_message_id(),
        type="text",
        ts=int(time.time() * 1000),
        text="as agreed",
        reply_to=orig,
        rich=rc.text_rich(quote=rc.Quote(a.address, "I owe you 1000"), timer_s=None),
    )
    # Private on purpose: Bob sends a forged quote that the public API would not build.
    await b._send_content(await b.contact(a.address), forged, store_as_message=True)
    await a.receive()
    rows = {m.id: m for m in a.store.history(b.address, 10)}
    st = a.messaging.state
    assert st.describe(rows[good])["quote"]["status"] == "ok"
    q = st.describe(rows[forged.id])["quote"]
    assert q["status"] == "forged" and q["text"] == "meet at noon"
    assert q["claimed"]["text"] == "I owe you 1000"


async def test_reactions_edits_deletes_1to1(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    await _friends(a, b)
    mid = await a.send_text(b.address, "lunch at 1?")
    await b.receive()
    await b.messaging.react(a.address, mid, "👍")
    await b.messaging.react(a.address, mid, "🎉")  # replaces
    got = await a.receive()
    assert [e.emoji for e in of(got, rev.ReactionChanged)] == ["👍", "🎉"]
    assert a.messaging.state.rs.reactions(b.address, mid) == [(b.address, "🎉")]
    await b.messaging.react(a.address, mid, "", remove=True)
    await a.receive()
    assert a.messaging.state.rs.reactions(b.address, mid) == []

    await a.messaging.edit(b.address, mid, "lunch at 2?")
    got = await b.receive()
    assert [e.text for e in of(got, rev.MessageEdited)] == ["lunch at 2?"]
    assert [v["text"] for v in b.messaging.state.versions(a.address, mid)] == [
        "lunch at 1?",
        "lunch at 2?",
    ]
    assert [h.text for h in b.history(b.find_contact(a.address))][-1] == "lunch at 2?"  # type: ignore[arg-type]

    # b may not edit or delete a's message: the SDK refuses...
    with pytest.raises(NotAllowed):
        await b.messaging.edit(a.address, mid, "lunch cancelled")
    with pytest.raises(NotAllowed):
        await b.messaging.delete(a.address, mid, for_everyone=True)
    # ...and a modified client that sends it anyway is refused by a's client
    contact = await b.contact(a.address)
    for crafted in (
        rc.edit_content(
            rc.Target(mid, a.address), "lunch cancelled", group=None, now_ms=int(time.time() * 1000)
        ),
        rc.delete_content(rc.Target(mid, a.address), group=None, now_ms=int(time.time() * 1000)),
    ):
        await b._send_content(contact, crafted, store_as_message=False)  # bypasses NotAllowed
    got = await a.receive()
    assert {e.kind for e in of(got, rev.RichRejected)} == {"edit", "delete"}
    assert ct.Content.decode(a.store.get_message(b.address, mid).body).text == "lunch at 2?"  # type: ignore[union-attr]

    await a.messaging.delete(b.address, mid, for_everyone=True)
    got = await b.receive()
    assert [e.target_id for e in of(got, rev.MessageDeleted)] == [mid]
    m = b.store.get_message(a.address, mid)
    assert m is not None and ct.Content.decode(m.body).text is None  # a tombstone
    assert b.messaging.search("lunch") == []
    # delete for me: gone from this store only
    other = await b.send_text(a.address, "see you")
    await a.receive()
    await b.messaging.delete(a.address, other)
    assert b.store.get_message(a.address, other) is None
    assert a.store.get_message(b.address, other) is not None


async def test_read_receipts_typing_and_switching_them_off(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    await _friends(a, b)
    mid = await a.send_text(b.address, "read me")
    await b.receive()
    await b.messaging.mark_read(a.address)
    got = await a.receive()
    assert any(e.kind == "read" and mid in e.message_ids for e in of(got, rev.RichReceipt))
    assert a.messaging.state.describe(a.store.get_message(b.address, mid))["read"] is True  # type: ignore[arg-type]
    assert await b.messaging.typing(a.address, True)
    got = await a.receive()
    assert [e.started for e in of(got, rev.TypingChanged)] == [True]
    # typing is never stored
    assert all(ct.Content.decode(m.body).type != "typing" for m in a.store.history(b.address, 50))

    await b.messaging.set_setting("read-receipts", False)
    await b.messaging.set_setting("typing", False)
    mid2 = await a.send_text(b.address, "and this?")
    await b.receive()
    await b.messaging.mark_read(a.address)
    assert not await b.messaging.typing(a.address, True)
    await a.messaging.typing(b.address, True)
    assert of(await b.receive(), rev.TypingChanged) == []  # off: b sees none either
    got = await a.receive()
    assert of(got, rev.RichReceipt) == [] and of(got, rev.TypingChanged) == []
    assert a.messaging.state.describe(a.store.get_message(b.address, mid2))["read"] is False  # type: ignore[arg-type]


async def test_disappearing_message_gone_from_both_stores(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    await _friends(a, b)
    await a.messaging.set_timer(b.address, 5)
    got = await b.receive()
    assert [e.seconds for e in of(got, rev.TimerChanged)] == [5]
    assert b.messaging.timer(a.address) == 5
    mid = await a.send_text(b.address, "this will self-destruct")
    await b.receive()
    assert b.messaging.state.describe(b.store.get_message(a.address, mid))["expires_at"] is None  # type: ignore[arg-type]
    await b.messaging.mark_read(a.address)
    assert _rows(a, "messages", mid) == 1 and _rows(b, "messages", mid) == 1
    await a.start()
    await b.start()
    deadline = time.monotonic() + 30
    while (_rows(a, "messages", mid) or _rows(b, "messages", mid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for c in (a, b):
        for table in ("messages", "rich_messages", "rich_reactions", "rich_versions"):
            assert _rows(c, table, mid) == 0, (c.address, table)
        assert c.messaging.search("self-destruct") == []
    await a.messaging.set_timer(b.address, None)
    assert a.messaging.timer(b.address) is None
    notes = [n["text"] for n in b.messaging.state.notices(a.address)]
    assert "disappearing messages set to 5s" in notes


async def test_blocked_sender_dropped_and_gets_no_receipts(crowd: Crowd) -> None:
    a, b = await crowd.make("ann", "ben")
    await _friends(a, b)
    await b.messaging.block(a.address)
    mid = await a.send_text(b.address, "are you there?")
    await a.messaging.typing(b.address, True)
    got = await b.receive()
    assert of(got, ev.MessageReceived) == [] and of(got, rev.TypingChanged) == []
    assert b.store.get_message(a.address, mid) is None
    assert of(await a.receive(), ev.ReceiptReceived) == []
    with pytest.raises(NotAllowed):
        await b.send_text(a.address, "blocked people get nothing")
    await b.messaging.unblock(a.address)
    mid2 = await a.send_text(b.address, "now?")
    assert [e.id for e in of(await b.receive(), ev.MessageReceived)] == [mid2]


async def test_group_rich_messaging_and_leave(crowd: Crowd) -> None:
    a, b, c = await crowd.make("ann", "ben", "cat")
    g = await a.create_group("crew", [b.address, c.address])
    await b.receive()
    await c.receive()
    mid = await a.send_group(g.id, "pizza tonight?")
    for x in (b, c):
        assert [e.text for e in of(await x.receive(), ev.MessageReceived)] == ["pizza tonight?"]
    await a.receive()  # group delivery receipts from both
    d = a.messaging.state.describe(a.store.group_history(g.id, 10)[-1], members=2)
    assert d["receipts"]["delivered"] == 2
    await c.messaging.mark_read(None, g.id)
    await b.messaging.react(None, mid, "🍕", group=g.id)
    got = await a.receive()
    assert any(e.kind == "read" and e.sender == c.address for e in of(got, rev.RichReceipt))
    assert [e.emoji for e in of(got, rev.ReactionChanged)] == ["🍕"]
    # typing and the disappearing timer in a group (one sender-key upload each)
    assert await b.messaging.typing(None, True, group=g.id)
    await a.messaging.set_timer(None, 3600, group=g.id)
    got = await c.receive()
    assert [(e.sender, e.group) for e in of(got, rev.TypingChanged)] == [(b.address, g.id)]
    assert [(e.seconds, e.group) for e in of(got, rev.TimerChanged)] == [(3600, g.id)]
    assert c.messaging.timer(None, g.id) == 3600
    assert all(m.peer.startswith(f"group:{g.id}:") for m in c.store.group_history(g.id, 50))
    assert {ct.Content.decode(m.body).type for m in c.store.group_history(g.id, 50)} == {"text"}
    reply = await b.send_group(g.id, "yes!", reply_to=mid)
    await a.messaging.edit(None, mid, "pizza at 8?", group=g.id)
    for x in (c,):
        got = await x.receive()
        assert [e.text for e in of(got, rev.MessageEdited)] == ["pizza at 8?"]
        rows = {m.id: m for m in x.store.group_history(g.id, 10)}
        assert x.messaging.state.describe(rows[reply])["quote"]["status"] == "ok"
    # c (not the author) tries to edit a's message inside the group: everyone refuses
    with pytest.raises(NotAllowed):
        await c.messaging.edit(None, mid, "no pizza", group=g.id)
    now = int(time.time() * 1000)
    # ... and if c bypasses that check (private calls on purpose), the receivers refuse it.
    await c._groups.send(
        g.id,
        rc.edit_content(rc.Target(mid, a.address), "no pizza", group=g.id, now_ms=now),
    )
    await c._groups.send(g.id, rc.delete_content(rc.Target(mid, a.address), group=g.id, now_ms=now))
    for x in (a, b):
        got = await x.receive()
        assert {e.kind for e in of(got, rev.RichRejected)} == {"edit", "delete"}
    body = ct.Content.decode(b.store.get_message(f"group:{g.id}:{a.address}", mid).body)  # type: ignore[union-attr]
    assert body.text == "pizza at 8?"
    await a.messaging.delete(None, mid, for_everyone=True, group=g.id)
    got = await b.receive()
    assert [e.target_id for e in of(got, rev.MessageDeleted)] == [mid]
    # c leaves: the others see a notice and rotate their sender keys
    await c.messaging.leave_group(g.id)
    for x in (a, b):
        got = await x.receive()
        notices = of(got, rev.GroupNotice)
        assert notices and notices[0].kind == "left" and "left" in notices[0].text
        assert c.address not in {m.address for m in x.group_info(g.id).members}
    assert a.store.get_group(g.id).own_key is None  # type: ignore[union-attr]  # fresh chain next send
    await a.send_group(g.id, "without cat")
    assert of(await c.receive(), ev.MessageReceived) == []
    assert "without cat" in [e.text for e in of(await b.receive(), ev.MessageReceived)]
