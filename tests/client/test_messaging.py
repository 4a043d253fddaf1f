"""Part VIII state rules over a real local store, no network (PROTOCOL.md Part VIII §2-§9).

The end-to-end tests through a relay are in test_rich_e2e.py; here each rule is pinned
on its own: who may edit/delete, the window, versions, tombstones, reactions, quotes,
requests, blocking, read receipts switched off, expiry (rows and files gone), search."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from xchat.client import content as ct
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.messaging import RichState
from xchat.client.store import Store
from xchat.crypto.keys import IdentityKeyPair

ME = IdentityKeyPair.generate().public.address()
BOB = IdentityKeyPair.generate().public.address()
EVE = IdentityKeyPair.generate().public.address()
GID = "cd" * 16
T0 = 1_750_000_000_000


@pytest.fixture
def st(tmp_path: Path) -> RichState:
    store = Store(tmp_path / "store.sqlite", os.urandom(32))
    return RichState(store, ME)


def _incoming(
    st: RichState,
    sender: str,
    text: str,
    *,
    peer: str | None = None,
    ts: int = T0,
    rich: dict | None = None,
    reply_to: str | None = None,
) -> ct.Content:
    msg = ct.Content(
        id=ct.new_message_id(), type="text", ts=ts, text=text, reply_to=reply_to, rich=rich or {}
    )
    peer = peer or sender
    events: list[object] = []
    assert st.store.add_message(msg.id, peer, "in", ts, "received", msg.encode(), ts)
    st.message_stored(peer, sender, msg, ts, ts, events)
    return msg


def _outgoing(
    st: RichState, peer: str, text: str, *, ts: int = T0, timer: int | None = None
) -> ct.Content:
    msg = ct.Content(
        id=ct.new_message_id(),
        type="text",
        ts=ts,
        text=text,
        rich=rc.text_rich(quote=None, timer_s=timer),
    )
    st.outgoing(peer, msg, ts)
    assert st.store.add_message(msg.id, peer, "out", ts, "sent", msg.encode(), ts)
    return msg


def _apply(
    st: RichState, sender: str, conv: str, msg: ct.Content, origin: int = T0
) -> list[object]:
    events: list[object] = []
    st.apply(sender, conv, msg, origin, origin, events)
    return events


def _text(st: RichState, peer: str, msg_id: str) -> str | None:
    m = st.store.get_message(peer, msg_id)
    assert m is not None
    return ct.Content.decode(m.body).text


def test_first_message_from_a_stranger_is_a_request_and_owes_nothing(st: RichState) -> None:
    msg = ct.Content(id=ct.new_message_id(), type="text", ts=T0, text="hi")
    events: list[object] = []
    st.store.add_message(msg.id, BOB, "in", T0, "received", msg.encode(), T0)
    assert st.message_stored(BOB, BOB, msg, T0, T0, events) is False  # no receipt back
    assert any(isinstance(e, rev.MessageRequest) for e in events)
    assert st.state(BOB) == "request" and [r.address for r in st.requests()] == [BOB]
    # reading a request sends no read receipt either
    st.mark_read(BOB, T0 + 1)
    assert st.rs.owed() == []
    # accepting queues the delivery receipts of the stored messages
    assert st.accept(BOB, T0 + 2) == [msg.id]
    assert st.store.pending_receipts(BOB) == [msg.id]
    assert st.requests() == []


def test_we_wrote_first_means_accepted(st: RichState) -> None:
    _outgoing(st, BOB, "hello")
    assert st.state(BOB) == "accepted"
    msg = ct.Content(id=ct.new_message_id(), type="text", ts=T0, text="hi back")
    st.store.add_message(msg.id, BOB, "in", T0, "received", msg.encode(), T0)
    assert st.message_stored(BOB, BOB, msg, T0, T0, []) is True


def test_block_drops_and_forgets_owed_receipts(st: RichState) -> None:
    _outgoing(st, BOB, "hello")
    st.store.add_pending_receipt(BOB, "ab" * 16, T0)
    st.block(BOB, T0)
    assert not st.admit(BOB)
    assert not st.admit(BOB, f"group:{GID}")  # a blocked member's group content too
    assert st.store.pending_receipts(BOB) == []
    st.unblock(BOB, T0)
    assert st.admit(BOB) and st.state(BOB) == "accepted"


def test_reactions_replace_and_remove(st: RichState) -> None:
    _outgoing(st, BOB, "x")
    m = _incoming(st, BOB, "dinner?")
    t = rc.Target(m.id, BOB)
    ev1 = _apply(
        st, BOB, BOB, rc.reaction_content(t, "👍", remove=False, group=None, now_ms=T0 + 1)
    )
    assert isinstance(ev1[0], rev.ReactionChanged) and ev1[0].emoji == "👍"
    _apply(st, BOB, BOB, rc.reaction_content(t, "❤️", remove=False, group=None, now_ms=T0 + 2))
    _apply(st, ME, BOB, rc.reaction_content(t, "😂", remove=False, group=None, now_ms=T0 + 2))
    assert sorted(st.rs.reactions(BOB, m.id)) == sorted([(BOB, "❤️"), (ME, "😂")])  # one each
    # an older reaction arriving late does not win
    _apply(st, BOB, BOB, rc.reaction_content(t, "👎", remove=False, group=None, now_ms=T0 + 1))
    assert (BOB, "❤️") in st.rs.reactions(BOB, m.id)
    _apply(st, BOB, BOB, rc.reaction_content(t, "", remove=True, group=None, now_ms=T0 + 3))
    assert st.rs.reactions(BOB, m.id) == [(ME, "😂")]
    d = st.describe(st.store.get_message(BOB, m.id))  # type: ignore[arg-type]
    assert d["reactions"] == [{"emoji": "😂", "count": 1, "by": [ME]}]


def test_only_the_author_edits_and_deletes(st: RichState) -> None:
    _outgoing(st, BOB, "x")
    mine = _outgoing(st, BOB, "my words")
    theirs = _incoming(st, BOB, "their words")
    # Bob names my message as mine: refused (not his)
    ev1 = _apply(
        st, BOB, BOB, rc.edit_content(rc.Target(mine.id, ME), "hacked", group=None, now_ms=T0)
    )
    assert [type(e) for e in ev1] == [rev.RichRejected]
    # Bob claims to be the author of my message id: no such message of his, nothing changes
    _apply(st, BOB, BOB, rc.edit_content(rc.Target(mine.id, BOB), "hacked", group=None, now_ms=T0))
    _apply(st, BOB, BOB, rc.delete_content(rc.Target(mine.id, ME), group=None, now_ms=T0))
    assert _text(st, BOB, mine.id) == "my words"
    # and his own message he may edit
    ev2 = _apply(
        st, BOB, BOB, rc.edit_content(rc.Target(theirs.id, BOB), "fixed", group=None, now_ms=T0 + 5)
    )
    assert isinstance(ev2[0], rev.MessageEdited) and _text(st, BOB, theirs.id) == "fixed"


def test_group_edit_by_another_member_refused(st: RichState) -> None:
    conv = f"group:{GID}"
    m = _incoming(st, BOB, "bob says", peer=f"{conv}:{BOB}")
    ev1 = _apply(
        st, EVE, conv, rc.edit_content(rc.Target(m.id, BOB), "eve says", group=GID, now_ms=T0)
    )
    assert isinstance(ev1[0], rev.RichRejected)
    ev2 = _apply(st, EVE, conv, rc.delete_content(rc.Target(m.id, BOB), group=GID, now_ms=T0))
    assert isinstance(ev2[0], rev.RichRejected)
    assert _text(st, f"{conv}:{BOB}", m.id) == "bob says"


def test_edit_window_versions_and_limit(st: RichState) -> None:
    _outgoing(st, BOB, "x")
    m = _incoming(st, BOB, "v0")
    t = rc.Target(m.id, BOB)
    late = T0 + rc.EDIT_WINDOW_MS + rc.CLOCK_SKEW_MS + 1
    ev_late = _apply(
        st, BOB, BOB, rc.edit_content(t, "too late", group=None, now_ms=late), origin=late
    )
    assert isinstance(ev_late[0], rev.RichRejected) and "24 h" in ev_late[0].reason
    for i in range(1, 3):
        _apply(st, BOB, BOB, rc.edit_content(t, f"v{i}", group=None, now_ms=T0 + i), origin=T0 + i)
    assert _text(st, BOB, m.id) == "v2"
    assert [v["text"] for v in st.versions(BOB, m.id)] == ["v0", "v1", "v2"]
    d = st.describe(st.store.get_message(BOB, m.id))  # type: ignore[arg-type]
    assert d["edited"] is True


def test_delete_for_everyone_leaves_a_tombstone_and_removes_files(
    st: RichState, tmp_path: Path
) -> None:
    _outgoing(st, BOB, "x")
    m = _incoming(st, BOB, "secret plan")
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"jpeg")
    st.record_file(BOB, m.id, str(f))
    t = rc.Target(m.id, BOB)
    _apply(st, ME, BOB, rc.reaction_content(t, "👍", remove=False, group=None, now_ms=T0))
    ev1 = _apply(st, BOB, BOB, rc.delete_content(t, group=None, now_ms=T0 + 1))
    assert isinstance(ev1[0], rev.MessageDeleted)
    assert _text(st, BOB, m.id) is None and not f.exists()
    assert st.rs.reactions(BOB, m.id) == []
    assert st.describe(st.store.get_message(BOB, m.id))["deleted"] is True  # type: ignore[arg-type]
    assert st.search("secret") == []


def test_quotes_checked_and_forgery_flagged(st: RichState) -> None:
    _outgoing(st, BOB, "x")
    orig = _outgoing(st, BOB, "meet at noon")
    good = _incoming(
        st,
        BOB,
        "ok!",
        reply_to=orig.id,
        rich=rc.text_rich(quote=rc.Quote(ME, "meet at noon"), timer_s=None),
    )
    forged = _incoming(
        st,
        BOB,
        "as you said",
        reply_to=orig.id,
        rich=rc.text_rich(quote=rc.Quote(ME, "send me the money"), timer_s=None),
    )
    wrong_author = _incoming(
        st,
        BOB,
        "hm",
        reply_to=orig.id,
        rich=rc.text_rich(quote=rc.Quote(EVE, "meet at noon"), timer_s=None),
    )
    unknown = _incoming(
        st,
        BOB,
        "?",
        reply_to="ef" * 16,
        rich=rc.text_rich(quote=rc.Quote(EVE, "I never said it"), timer_s=None),
    )

    def q(m: ct.Content) -> dict:
        return st.describe(st.store.get_message(BOB, m.id))["quote"]  # type: ignore[arg-type]

    assert q(good)["status"] == "ok" and q(good)["text"] == "meet at noon"
    assert q(forged)["status"] == "forged" and q(forged)["text"] == "meet at noon"
    assert q(forged)["claimed"]["text"] == "send me the money"
    assert q(wrong_author)["status"] == "forged"
    assert q(unknown)["status"] == "missing" and q(unknown)["text"] == "I never said it"


def test_read_receipts_off_means_neither_side(st: RichState) -> None:
    _outgoing(st, BOB, "x")
    mine = _outgoing(st, BOB, "did you read this?")
    theirs = _incoming(st, BOB, "yes")
    st.set_setting("read-receipts", False)
    st.mark_read(BOB, T0 + 1)
    assert st.rs.owed() == []  # we send none...
    r = rc.receipt_content([mine.id], "read", group=None, now_ms=T0 + 2, sender=None)
    assert _apply(st, BOB, BOB, r) == []  # ...and see none
    assert st.describe(st.store.get_message(BOB, mine.id))["read"] is False  # type: ignore[arg-type]
    st.set_setting("read-receipts", True)
    assert [type(e) for e in _apply(st, BOB, BOB, r)] == [rev.RichReceipt]
    assert st.describe(st.store.get_message(BOB, mine.id))["read"] is True  # type: ignore[arg-type]
    assert theirs.id


def test_group_receipts_aggregate(st: RichState) -> None:
    conv = f"group:{GID}"
    peer = f"{conv}:{ME}"
    mine = _outgoing(st, peer, "hello group")
    for who, kind in ((BOB, "delivered"), (EVE, "read")):
        r = rc.receipt_content([mine.id], kind, group=GID, now_ms=T0 + 1, sender=None)
        _apply(st, who, conv, r)
    d = st.describe(st.store.get_message(peer, mine.id), members=3)  # type: ignore[arg-type]
    assert d["receipts"] == {"delivered": 2, "read": 1, "members": 3}


def test_disappearing_messages_are_deleted_from_the_store(st: RichState, tmp_path: Path) -> None:
    events: list[object] = []
    assert st.set_timer(BOB, 30, ME, T0, T0, events)
    assert isinstance(events[0], rev.TimerChanged) and st.timer(BOB) == 30
    assert not st.set_timer(BOB, 60, BOB, T0 - 1, T0, [])  # an older setting loses
    sent = _outgoing(st, BOB, "burn after sending", timer=30)
    got = _incoming(st, BOB, "burn after reading", rich=rc.text_rich(quote=None, timer_s=30))
    f = tmp_path / "doc.pdf"
    f.write_bytes(b"pdf")
    st.record_file(BOB, got.id, str(f))
    assert st.search("burn") != []
    assert st.expire(T0 + 29_000) == []
    gone = st.expire(T0 + 30_000)  # ours: counted from sending
    assert gone == [rev.MessagesExpired(BOB, (sent.id,))]
    assert st.store.get_message(BOB, got.id) is not None  # unread: theirs waits
    st.mark_read(BOB, T0 + 100_000)
    assert st.expire(T0 + 129_999) == []
    assert st.expire(T0 + 130_000) == [rev.MessagesExpired(BOB, (got.id,))]
    assert not f.exists() and st.search("burn") == []
    db = sqlite3.connect(tmp_path / "store.sqlite")  # what is on disk
    for table in ("messages", "rich_messages", "rich_files"):
        assert db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE id IN (?, ?)", (sent.id, got.id)
        ).fetchone() == (0,)
    notices = st.notices(BOB)
    assert notices and notices[0]["text"] == "disappearing messages set to 30s"


def test_search_by_text_person_conversation_and_edits(st: RichState) -> None:
    _outgoing(st, BOB, "dinner tonight?")
    m = _incoming(st, BOB, "Dînner sounds good")
    _incoming(st, EVE, "dinner elsewhere", peer=f"group:{GID}:{EVE}")
    assert {h.text for h in st.search("dinner")} == {
        "dinner tonight?",
        "Dînner sounds good",
        "dinner elsewhere",
    }
    assert [h.text for h in st.search("din", conv=BOB, author=BOB)] == ["Dînner sounds good"]
    assert [h.author for h in st.search("elsewhere", conv=f"group:{GID}")] == [EVE]
    assert st.search('" OR 1=1 --') == [] and st.search("") == []
    _apply(
        st,
        BOB,
        BOB,
        rc.edit_content(rc.Target(m.id, BOB), "lunch then", group=None, now_ms=T0 + 1),
        origin=T0 + 1,
    )
    assert [h.text for h in st.search("lunch")] == ["lunch then"]
    assert all(h.id != m.id for h in st.search("sounds"))
    st.delete_for_me(BOB, m.id)
    assert st.store.get_message(BOB, m.id) is None and st.search("lunch") == []


def test_no_plaintext_index_on_disk(st: RichState, tmp_path: Path) -> None:
    word = "zebracrossing" + os.urandom(3).hex()
    _outgoing(st, BOB, f"the {word} is here")
    assert st.search(word)
    with contextlib.closing(sqlite3.connect(tmp_path / "store.sqlite")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert word.encode() not in raw
