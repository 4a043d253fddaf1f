"""Groups end to end against a real relay (PROTOCOL.md Part V §10, PROTOCOL Part III §5.2)."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _crowd import Crowd, messages, texts

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.crypto.group import GroupHistory
from xchat.crypto.keys import decode_address
from xchat.errors import ClientError, UnauthorizedGroupChange
from xchat.testing import ServerProcess


def _held_history(c: Client, gid: str) -> GroupHistory:
    """The signed group history ``c`` holds. Private on purpose, like :func:`_send_raw`:
    the attacks below forge updates against it, which no public method would sign."""
    return c._groups.book.history(c._groups.resolve(gid))


async def _send_raw(c: Client, to: str, ctype: str, body: dict[str, Any]) -> None:
    """Send group content pairwise past every check of ``c``'s SDK (an attacker's client)."""
    await c._groups.sender.send_pairwise(to, None, ctype, body)


async def test_three_member_group_roundtrip(crowd: Crowd) -> None:
    a, b, c = await crowd.many(3)
    info = await a.create_group("friends", [f"@{b.whoami().handle}", c.address])
    assert info.admin and len(info.members) == 3
    assert {m.address for m in info.members if m.admin} == {a.address}
    for x in (b, c):
        got = await x.receive()
        changed = [e for e in got if isinstance(e, ev.GroupChanged)]
        assert changed and changed[0].group_id == info.id and changed[0].name == "friends"
        assert x.group_info(info.id).epoch == info.epoch  # same state everywhere
    mid = await a.send_group("friends", "hello group")
    assert a.last_upload_bytes > 0
    for x in (b, c):
        msgs = messages(await x.receive())
        assert [(m.id, m.text, m.sender) for m in msgs] == [(mid, "hello group", a.address)]
        assert msgs[0].group == {"id": info.id, "name": "friends"}
    # A member replies (lazy key distribution, then one multi upload).
    await b.send_group(info.id, "hi from b")
    assert texts(await a.receive()) == ["hi from b"]
    assert texts(await c.receive()) == ["hi from b"]
    hist = a.group_history(info.id)
    assert [(h.direction, h.text, h.peer) for h in hist] == [
        ("out", "hello group", a.address),
        ("in", "hi from b", b.address),
    ]
    assert hist[0].status == "sent"


async def test_non_admin_change_rejected_everywhere(crowd: Crowd) -> None:
    a, b, c = await crowd.many(3)
    info = await a.create_group("club", [b.address, c.address])
    await b.receive()
    await c.receive()
    # b's own client refuses to sign a change it is not allowed to make ...
    with pytest.raises(UnauthorizedGroupChange):
        await b.rename_group(info.id, "hijacked")
    # ... and if b forges one anyway (bypassing the check), every other client rejects it.
    from xchat.crypto.group import GroupOp, GroupUpdate

    # Private calls on purpose here and in the attacks below: a malicious member signs
    # and sends what its own SDK's public methods would refuse to.
    state = _held_history(b, info.id).state
    forged = GroupUpdate.against(b.identity, state, [GroupOp.rename("x")])
    body = {"id": info.id, "update": base64.b64encode(forged.encode()).decode()}
    for target in (a, c):
        await _send_raw(b, target.address, "group_update", body)
    for target in (a, c):
        got = await target.receive()
        assert any(isinstance(e, ev.GroupUpdateRejected) for e in got)
        assert target.group_info(info.id).name == "club"
        assert target.group_info(info.id).version == info.version


async def test_removed_member_reads_nothing_after_removal(crowd: Crowd) -> None:
    a, b, c = await crowd.many(3)
    info = await a.create_group("team", [b.address, c.address])
    for x in (b, c):
        await x.receive()
    await a.send_group(info.id, "before")
    await c.send_group(info.id, "c before")  # c distributes its first sender key to b too
    assert texts(await b.receive()) == ["before", "c before"]
    await a.receive()
    await a.remove_members(info.id, [b.address])
    got_b = await b.receive()
    assert any(isinstance(e, ev.GroupChanged) and e.left for e in got_b)
    assert b.group_info(info.id).left
    await c.receive()  # c learns of the removal: it will rotate before its next message
    await a.send_group(info.id, "after a")
    await c.send_group(info.id, "after c")
    assert texts(await c.receive()) == ["after a"]
    assert texts(await a.receive()) == ["after c"]
    got_b = await b.receive()
    assert texts(got_b) == []  # nothing readable (not even addressed to b any more)
    with pytest.raises(ClientError):
        await b.send_group(info.id, "still here?")


async def test_joiner_reads_new_messages_not_old(crowd: Crowd) -> None:
    a, b, d = await crowd.many(3)
    info = await a.create_group("club", [b.address])
    await b.receive()
    await a.send_group(info.id, "old news")
    await b.send_group(info.id, "old from b")
    assert texts(await b.receive()) == ["old news"]
    await a.receive()
    await a.add_members(info.id, [d.address])
    got = await d.receive()
    assert texts(got) == []  # no history
    assert d.group_info(info.id).epoch == a.group_info(info.id).epoch
    await b.receive()
    await a.send_group(info.id, "welcome d")
    await b.send_group(info.id, "hi d")
    assert texts(await d.receive()) == ["welcome d", "hi d"]
    # The joiner holds only chains at their current iteration: replaying the old
    # message envelope is impossible (the relay deleted it); its keys predate d's copy.
    await d.send_group(info.id, "thanks")
    assert texts(await a.receive())[-1] == "thanks"
    assert texts(await b.receive())[-1] == "thanks"


async def test_concurrent_admin_updates_converge(crowd: Crowd) -> None:
    a, b, c, d = await crowd.many(4)
    info = await a.create_group("conc", [b.address, c.address, d.address])
    for x in (b, c, d):
        await x.receive()
    await a.set_group_admin(info.id, b.address)
    for x in (b, c, d):
        await x.receive()
    # Both admins change version v at the same time, before seeing each other's update.
    await a.rename_group(info.id, "renamed by a")
    await b.remove_members(info.id, [d.address])
    for x in (a, b, c, d):
        await x.receive()
    states = {x.address: x.group_info(info.id) for x in (a, b, c)}
    views = {
        (s.name, s.version, s.epoch, tuple((m.address, m.admin) for m in s.members))
        for s in states.values()
    }
    assert len(views) == 1
    final = states[a.address]
    assert final.name == "renamed by a"
    assert d.address not in {m.address for m in final.members}
    assert d.group_info(info.id).left


async def test_ambiguous_and_unknown_group_names(crowd: Crowd) -> None:
    a, b = await crowd.many(2)
    g1 = await a.create_group("same", [b.address])
    g2 = await a.create_group("same", [b.address])
    with pytest.raises(ClientError, match="ambiguous"):
        a.group_info("same")
    assert a.group_info(g1.id).id == g1.id and a.group_info(g2.id).id == g2.id
    with pytest.raises(ClientError):
        a.group_info("nope")


def _server_files(server: ServerProcess) -> list[Path]:
    return [p for p in Path(server.data_dir).rglob("*") if p.is_file()]


async def test_twenty_member_group_and_server_sees_no_group(
    server: ServerProcess, crowd: Crowd
) -> None:
    members = await crowd.many(20, "t")
    admin, rest = members[0], members[1:]
    info = await admin.create_group("twenty", [m.address for m in rest])
    for m in rest[:3]:
        await m.receive()
    await admin.send_group(info.id, "hello twenty")
    # One upload: well under 19 × a full envelope.
    assert admin.last_upload_bytes < 19 * 600
    for m in rest:
        got = await m.receive()
        assert texts(got) == ["hello twenty"]
        assert m.group_info(info.id).epoch == info.epoch
    await rest[0].send_group(info.id, "from t1")
    for m in [admin, *rest[1:]]:
        assert texts(await m.receive()) == ["from t1"]
    # The relay's data directory (DB, WAL, blobs, logs) holds no group id and no member
    # list: grep every file for the id (raw, hex, base64) and for member addresses.
    gid = bytes.fromhex(info.id)
    needles = [gid, info.id.encode(), base64.b64encode(gid)[:20]]
    with sqlite3.connect(Path(server.data_dir) / "xchat.db") as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    blobs = b"".join(p.read_bytes() for p in _server_files(server))
    for needle in needles:
        assert needle not in blobs
    # Addresses are registered accounts, so they appear in the accounts table; what must
    # not appear is any list pairing members: no row or file holds two of them together
    # beyond the accounts table. We check the strongest simple form: no member's address
    # hash appears next to another's within any 200-byte window.
    hashes = [decode_address(m.address) for m in members]
    for h in hashes[:5]:
        at = blobs.find(h)
        while at != -1:
            window = blobs[max(0, at - 200) : at + 220]
            assert sum(1 for o in hashes if o != h and o in window) == 0
            at = blobs.find(h, at + 1)


def _rejected(events: list[ev.Event]) -> list[ev.GroupUpdateRejected]:
    return [e for e in events if isinstance(e, ev.GroupUpdateRejected)]


@pytest.mark.parametrize("fate", ["removed", "demoted"])
async def test_attack_backdated_update_by_former_admin(crowd: Crowd, fate: str) -> None:
    """Issue #18 attack 1 through a real relay: Bob, an admin at version 2 and removed (or
    demoted) at version 3, signs an update against version 2 removing Alice (the other
    admin) and sends it to Carol. Carol refuses it; Alice stays the only admin."""
    from xchat.crypto.group import GroupOp, GroupUpdate

    a, b, c = await crowd.many(3)
    info = await a.create_group("coup", [b.address, c.address])
    for x in (b, c):
        await x.receive()
    await a.set_group_admin(info.id, b.address)
    for x in (b, c):
        await x.receive()
    # The attacker keeps the state it held as an admin (private: no SDK exposes it).
    b_was_admin = _held_history(b, info.id).state
    assert b.address in b_was_admin.admins
    if fate == "removed":
        await a.remove_members(info.id, [b.address])
    else:
        await a.set_group_admin(info.id, b.address, admin=False)
    for x in (b, c):
        await x.receive()
    assert b.group_info(info.id).left == (fate == "removed")
    coup = GroupUpdate.against(b.identity, b_was_admin, [GroupOp.remove(a.address)])
    body = {"id": info.id, "update": base64.b64encode(coup.encode()).decode()}
    await _send_raw(b, c.address, "group_update", body)
    got = await c.receive()
    assert _rejected(got) and _rejected(got)[0].sender == b.address
    seen = c.group_info(info.id)
    assert {m.address for m in seen.members if m.admin} == {a.address}
    assert (b.address in {m.address for m in seen.members}) == (fate == "demoted")
    assert seen.epoch == a.group_info(info.id).epoch


async def test_attack_forged_welcome_then_genuine_welcome(crowd: Crowd) -> None:
    """Issue #18 attack 3: member Bob sends Dave (not a member) a forged snapshot of the real
    group (same id and epoch hash, Bob its admin) with a real update of Alice's. Dave
    refuses it, then accepts Alice's genuine welcome; a later forged welcome for the group
    Dave now holds changes nothing."""
    from xchat.crypto.group import GroupOp, GroupState, GroupUpdate

    a, b, d = await crowd.many(3)
    info = await a.create_group("real", [b.address])
    await b.receive()
    await a.rename_group(info.id, "real group")
    await b.receive()
    # Private calls on purpose: Bob builds and sends what his SDK would refuse to.
    history = _held_history(b, info.id)
    real, alice_update = history.state, history.updates()[-1]
    members = dict(real.members)
    members[d.address] = d.identity.public.encode()
    forged = GroupState(
        real.group_id, real.name, members, frozenset({b.address}), real.version, real.epoch_hash
    )
    body = {
        "id": info.id,
        "update": base64.b64encode(alice_update.encode()).decode(),
        "welcome": base64.b64encode(forged.encode()).decode(),
    }
    await _send_raw(b, d.address, "group_update", body)
    got = await d.receive()
    assert _rejected(got) and not d.groups()
    await a.add_members(info.id, [d.address])
    await d.receive()
    assert d.group_info(info.id).epoch == a.group_info(info.id).epoch
    assert {m.address for m in d.group_info(info.id).members if m.admin} == {a.address}
    # Bob now signs his own ADD over a forged snapshot: Dave already holds the group, so the
    # welcome is refused and the update is checked against Dave's real copy (Bob: no admin).
    await b.receive()
    own = GroupUpdate.against(b.identity, forged, [GroupOp.add(d.identity.public)])
    body = {
        "id": info.id,
        "update": base64.b64encode(own.encode()).decode(),
        "welcome": base64.b64encode(forged.encode()).decode(),
    }
    await _send_raw(b, d.address, "group_update", body)
    before = d.group_info(info.id)
    got = await d.receive()
    assert _rejected(got) and d.group_info(info.id) == before


async def test_sender_keys_for_unknown_groups_are_bounded(crowd: Crowd) -> None:
    """Issue #18 item 6: a stranger's sender keys for groups we do not hold are kept only
    up to a bound (they may precede a welcome), not without limit."""
    import secrets

    from xchat.client.group_receive import MAX_ORPHAN_KEYS_PER_SENDER
    from xchat.crypto.sender_keys import SenderKeyState

    stranger, victim = await crowd.many(2)
    sent = MAX_ORPHAN_KEYS_PER_SENDER + 3
    for _ in range(sent):
        gid = secrets.token_bytes(16)
        skdm = SenderKeyState.generate(gid).distribution_message()
        body = {"id": gid.hex(), "skdm": base64.b64encode(skdm).decode()}
        await _send_raw(stranger, victim.address, "sender_key", body)
    got = await victim.receive()
    assert len(_rejected(got)) == sent - MAX_ORPHAN_KEYS_PER_SENDER
    mine, _ = victim.store.orphan_sender_key_counts(stranger.address)
    assert mine == MAX_ORPHAN_KEYS_PER_SENDER


async def test_retry_pending_resends_group_messages(crowd: Crowd) -> None:
    """Issue #18 client gap: ``retry_pending`` skipped group rows. A group message whose
    SEND_MULTI was never confirmed (the process died) is re-sent with its original id; one
    the relay had stored before the ack was lost is still shown once."""
    from xchat.client import content as ct
    from xchat.client.group_book import group_peer

    a, b = await crowd.many(2)
    info = await a.create_group("retry", [b.address])
    await b.receive()
    await a.send_group(info.id, "first")  # also distributes a's sender key
    assert texts(await b.receive()) == ["first"]
    peer = group_peer(info.id, a.address)
    # 1. died before the upload: the row is 'sending', nothing reached the relay
    lost = ct.Content(
        id=ct.new_message_id(), type="text", ts=1, text="never left", group={"id": info.id}
    )
    a.store.add_message(lost.id, peer, "out", lost.ts, "sending", lost.encode(), 1)
    # 2. the relay stored it but the ack was lost: delivered once, still unconfirmed
    acked = await a.send_group(info.id, "ack lost")
    a.store._db.execute(  # fault injection (private on purpose): the ack never came
        "UPDATE messages SET status = 'sending' WHERE peer = ? AND id = ?", (peer, acked)
    )
    result = await a.retry_pending()
    assert {item.id for item in result.sent} == {lost.id, acked} and not result.failed
    got = messages(await b.receive())
    assert sorted((m.id, m.text) for m in got) == sorted(
        [(lost.id, "never left"), (acked, "ack lost")]
    )
    assert {h.status for h in a.group_history(info.id)} == {"sent"}
    assert (await a.retry_pending()).sent == ()
