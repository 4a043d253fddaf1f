"""The client SDK end to end against a real relay process (PROTOCOL.md Part IV)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _crowd import texts

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.crypto.keys import IdentityKeyPair
from xchat.errors import (
    IdentityChanged,
    InvalidAddress,
    InvalidMnemonic,
    ServerUnreachable,
    UnknownContact,
)
from xchat.testing import ServerProcess


async def _pair(server: ServerProcess, tmp_path: Path, handle) -> tuple[Client, Client]:
    a = Client(tmp_path / "a")
    b = Client(tmp_path / "b")
    await a.create_account(server.url, handle("alice"))
    await b.create_account(server.url, handle("bob"))
    return a, b


async def test_two_profiles_converse_both_ways(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a, b = await _pair(server, tmp_path, handle)
    try:
        bob_handle = b.whoami().handle
        mid = await a.send_text(f"@{bob_handle}", "hello bob")
        got = await b.receive()
        msgs = [e for e in got if isinstance(e, ev.MessageReceived)]
        assert [m.text for m in msgs] == ["hello bob"]
        assert msgs[0].id == mid and msgs[0].sender == a.address
        assert msgs[0].handle == a.whoami().handle  # learned from the E2EE content
        # Bob replies to the address he learned; Alice gets the reply and the receipt.
        await b.send_text(a.address, "hi alice", reply_to=mid)
        got = await a.receive()
        assert texts(got) == ["hi alice"]
        receipts = [e for e in got if isinstance(e, ev.ReceiptReceived)]
        assert receipts and mid in receipts[0].message_ids
        hist = a.history(a.find_contact(f"@{bob_handle}"))  # type: ignore[arg-type]
        assert [(h.direction, h.text, h.status) for h in hist] == [
            ("out", "hello bob", "delivered"),
            ("in", "hi alice", "received"),
        ]
        assert hist[1].reply_to == mid
        # Both sides now hold each other's delivery tokens (no more PoW).
        assert a.find_contact(b.address).delivery_token is not None  # type: ignore[union-attr]
        assert b.find_contact(a.address).delivery_token is not None  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()


async def test_offline_recipient_gets_everything_on_reconnect(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a, b = await _pair(server, tmp_path, handle)
    try:
        for i in range(25):
            await a.send_text(b.address, f"m{i}")
        got = await b.receive()
        assert texts(got) == [f"m{i}" for i in range(25)]
        assert texts(await b.receive()) == []  # acked: nothing comes twice
    finally:
        await a.close()
        await b.close()


async def test_unknown_handle(server: ServerProcess, tmp_path: Path, handle) -> None:
    a = Client(tmp_path / "a")
    try:
        await a.create_account(server.url, handle("carol"))
        with pytest.raises(UnknownContact):
            await a.send_text("@nobody_has_this_handle", "x")
    finally:
        await a.close()


async def test_interleaved_exactly_once_in_order(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """1,000 messages, two senders at once, both receiving live: each message arrives
    exactly once and in per-sender order."""
    a, b = await _pair(server, tmp_path, handle)
    n = 500
    got: dict[str, list[ev.MessageReceived]] = {a.address: [], b.address: []}
    done = {a.address: asyncio.Event(), b.address: asyncio.Event()}

    fence = {a.address: asyncio.Event(), b.address: asyncio.Event()}

    def collector(me: str):
        def on(e: ev.Event) -> None:
            if isinstance(e, ev.MessageReceived):
                if e.text == "fence":
                    fence[me].set()
                    return
                got[me].append(e)
                if len(got[me]) == n:
                    done[me].set()

        return on

    a.on_event(collector(a.address))
    b.on_event(collector(b.address))
    try:
        await a.start()
        await b.start()

        async def sender(c: Client, to: str, tag: str) -> None:
            for i in range(n):
                await c.send_text(to, f"{tag}{i}")

        await asyncio.gather(sender(a, b.address, "a"), sender(b, a.address, "b"))
        await asyncio.wait_for(asyncio.gather(done[a.address].wait(), done[b.address].wait()), 60)
        # A fence, not a sleep: each mailbox is delivered in order, so once the fence has
        # arrived, any duplicate the relay stored before it has been seen too.
        await a.send_text(b.address, "fence")
        await b.send_text(a.address, "fence")
        await asyncio.wait_for(asyncio.gather(fence[a.address].wait(), fence[b.address].wait()), 60)
        assert [m.text for m in got[b.address]] == [f"a{i}" for i in range(n)]
        assert [m.text for m in got[a.address]] == [f"b{i}" for i in range(n)]
        assert len({m.id for m in got[b.address]}) == n
    finally:
        await a.close()
        await b.close()


async def test_server_restart_mid_conversation_loses_nothing(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a = Client(tmp_path / "a", reconnect_cap=0.5)
    b = Client(tmp_path / "b", reconnect_cap=0.5)
    await a.create_account(server.url, handle("alice"))
    await b.create_account(server.url, handle("bob"))
    got: list[str] = []
    fence = asyncio.Event()

    def on(e: ev.Event) -> None:
        if isinstance(e, ev.MessageReceived) and e.text == "fence":
            fence.set()
        elif isinstance(e, ev.MessageReceived):
            got.append(e.text)

    b.on_event(on)
    try:
        await b.start()
        for i in range(10):
            await a.send_text(b.address, f"before{i}")
        await asyncio.to_thread(server.restart)
        for i in range(10):
            await a.send_text(b.address, f"after{i}")
        await asyncio.to_thread(server.kill9)  # crash right after the acks
        await asyncio.to_thread(server.start)
        # The fence is stored after everything above, and a mailbox is delivered in order:
        # once it arrived, every message (and any duplicate) before it has been seen.
        await a.send_text(b.address, "fence")
        await asyncio.wait_for(fence.wait(), 60)
        assert got == [f"before{i}" for i in range(10)] + [f"after{i}" for i in range(10)]
    finally:
        await a.close()
        await b.close()


async def test_identity_change_blocks_verified_contact(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a, b = await _pair(server, tmp_path, handle)
    seen: list[ev.Event] = []
    a.on_event(seen.append)
    try:
        bob = await a.resolve(b.address)
        a.mark_verified(bob)
        await a.send_text(b.address, "verified hello")
        # The server (or an attacker) now hands out another key for Bob: simulate by
        # making Alice's pinned key differ from what the server reports.
        other = Client(tmp_path / "other")
        await other.create_account(server.url, None)
        a.store.update_contact(b.address, identity_key=other.identity.public.encode())
        await other.close()
        a.forget_resolved()
        with pytest.raises(IdentityChanged):
            await a.send_text(b.address, "must not be sent")
        changes = [e for e in seen if isinstance(e, ev.IdentityChangedEvent)]
        assert changes and changes[0].was_verified and changes[0].address == b.address
        c = a.find_contact(b.address)
        assert c is not None and c.identity_changed and c.verified
        # Still blocked on the next try, until the user re-verifies.
        with pytest.raises(IdentityChanged):
            await a.send_text(b.address, "still blocked")
        a.mark_verified(c)
        await a.send_text(b.address, "after re-verify")
        assert texts(await b.receive()) == ["verified hello", "after re-verify"]
    finally:
        await a.close()
        await b.close()


async def test_handle_pointing_elsewhere_is_an_identity_change(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a, b = await _pair(server, tmp_path, handle)
    bob_handle = b.whoami().handle
    assert bob_handle is not None
    try:
        # Alice once verified someone else under Bob's handle.
        fake = "xc1qqukjys462lv6gpx393ks8vwtl6nv40nl5fy0775"
        a.store.ensure_contact(fake, 1)
        a.store.update_contact(
            fake, handle=bob_handle, verified=True, identity_key=b"\x01" + b"\x00" * 64
        )
        with pytest.raises(IdentityChanged):
            await a.send_text(f"@{bob_handle}", "x")
        assert a.find_contact(f"@{bob_handle}").address == b.address  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()


async def test_restored_account_same_address_and_receives(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a, b = await _pair(server, tmp_path, handle)
    try:
        phrase = b.identity.mnemonic()  # the CLI printed it once at creation
        bob_address = b.address
        bob_handle = b.whoami().handle
        await a.send_text(bob_address, "before restore")
        assert texts(await b.receive()) == ["before restore"]
        await b.send_text(a.address, "bob here")
        await a.receive()
        await b.close()

        wrong = Client(tmp_path / "wrong")
        with pytest.raises(InvalidMnemonic):
            await wrong.restore_account(server.url, "abandon " * 24)
        await wrong.close()
        b2 = Client(tmp_path / "b-restored")
        restored = await b2.restore_account(server.url, phrase)
        assert restored.address == bob_address
        assert restored.handle == bob_handle
        # Alice still has her old session; the restored device lost it and has a new
        # delivery token. The relay refuses Alice's old token, so she starts a fresh
        # session and encrypts again: the message arrives. (The restored device never
        # answers an undecryptable envelope, e.g. Alice's queued receipt: a replay by the
        # relay fails the same way, PROTOCOL Part IV §3.7.)
        await a.send_text(bob_address, "after restore")
        got = await b2.receive()
        assert texts(got) == ["after restore"]
        await b2.send_text(a.address, "restored bob")
        assert texts(await a.receive()) == ["restored bob"]
        await b2.close()
    finally:
        await a.close()


async def test_prekeys_restocked_on_keys_low(server: ServerProcess, tmp_path: Path, handle) -> None:
    a, b = await _pair(server, tmp_path, handle)
    try:
        assert await b.replenish_prekeys() == 0  # 100 of each: nothing to do
        await b.start()
        await b.wait_connected()
        assert b.connected
        api = await a.authed_api()
        for _ in range(95):  # each fetch hands out one one-time key of each kind
            await api.bundles(b.address)
        bapi = await b.authed_api()
        for _ in range(200):  # KEYS_LOW -> background upload of 100 more
            counts = await bapi.key_count()
            if counts["ec"] >= 100 and counts["kem"] >= 100:
                break
            await asyncio.sleep(0.05)
        assert counts["ec"] >= 100 and counts["kem"] >= 100
        # A session started from one of the new keys works.
        await b.stop()
        await a.send_text(b.address, "fresh keys")
        assert texts(await b.receive()) == ["fresh keys"]
    finally:
        await a.close()
        await b.close()


async def test_second_client_on_same_profile_is_locked(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    from xchat.errors import ProfileLocked

    a = Client(tmp_path / "a")
    try:
        await a.create_account(server.url, handle("lock"))
        with pytest.raises(ProfileLocked):
            Client(tmp_path / "a")
    finally:
        await a.close()
    Client(tmp_path / "a").profile.close()  # released on close


async def test_claimed_handle_is_not_trusted(server: ServerProcess, tmp_path: Path, handle) -> None:
    from xchat.client import content as ct

    a, b = await _pair(server, tmp_path, handle)
    mallory = Client(tmp_path / "m")
    try:
        await mallory.create_account(server.url, handle("mallory"))
        bob_handle = b.whoami().handle
        # Attack (private on purpose): Mallory's client claims Bob's handle in its sender block.
        real = mallory._own_sender_info()
        mallory._own_sender_info = lambda: ct.SenderInfo(bob_handle, real.delivery_token)  # type: ignore[method-assign]
        await mallory.send_text(a.address, "I am bob, send money")
        got = [e for e in await a.receive() if isinstance(e, ev.MessageReceived)]
        assert got[0].text == "I am bob, send money" and got[0].handle is None
        assert a.find_contact(f"@{bob_handle}") is None
        # An honest claim is adopted once the directory confirms it.
        await b.send_text(a.address, "really bob")
        got = [e for e in await a.receive() if isinstance(e, ev.MessageReceived)]
        assert got[0].handle == bob_handle
        assert a.find_contact(f"@{bob_handle}").address == b.address  # type: ignore[union-attr]
    finally:
        await mallory.close()
        await a.close()
        await b.close()


async def test_events_async_iterator(server: ServerProcess, tmp_path: Path, handle) -> None:
    a, b = await _pair(server, tmp_path, handle)
    try:
        await b.start()

        async def first_message() -> ev.MessageReceived:
            async for e in b.events():
                if isinstance(e, ev.MessageReceived):
                    return e
            raise AssertionError("iterator ended")

        waiter = asyncio.create_task(first_message())
        await asyncio.sleep(0)  # let the iterator subscribe
        await a.send_text(b.address, "live")
        got = await asyncio.wait_for(waiter, 30)
        assert got.text == "live" and got.sender == a.address
    finally:
        await a.close()
        await b.close()


async def test_file_message_carries_manifest(server: ServerProcess, tmp_path: Path, handle) -> None:
    a, b = await _pair(server, tmp_path, handle)
    manifest = {"blob": "abc", "name": "cat.jpg", "size": 12}
    try:
        mid = await a.send_file_manifest(b.address, manifest)
        got = [e for e in await b.receive() if isinstance(e, ev.MessageReceived)]
        assert got[0].id == mid and got[0].file == manifest
        hist = b.history(b.find_contact(a.address))  # type: ignore[arg-type]
        assert hist[0].file == manifest
    finally:
        await a.close()
        await b.close()


async def _relay_down(*args: object, **kw: object) -> None:
    """Fault injection: tests patch the private ``Client._deliver`` (the one call that
    reaches the relay) with this, to take the relay down for one client only, mid-send."""
    raise ServerUnreachable("relay down (test)")


async def test_retry_pending_resends_a_failed_send_with_its_id(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """PROTOCOL Part IV §3.8: a row left 'failed' (or 'sending') is re-sent with its ORIGINAL
    content id, and a resumed send of the same text is that message, not a new one."""
    a, b = await _pair(server, tmp_path, handle)
    try:
        await a.send_text(b.address, "warm-up")
        a._deliver = _relay_down  # type: ignore[method-assign]
        with pytest.raises(ServerUnreachable):
            await a.send_text(b.address, "lost?")
        with pytest.raises(ServerUnreachable):
            await a.send_text(b.address, "again")
        with pytest.raises(ServerUnreachable):  # the pass stops at the first outage
            await a.retry_pending()
        del a._deliver  # the relay is back
        contact = a.find_contact(b.address)
        assert contact is not None
        rows = {h.text: h for h in a.history(contact)}
        assert rows["lost?"].status == rows["again"].status == "failed"
        res = await a.retry_pending()
        assert [h.id for h in res.sent] == [rows["lost?"].id, rows["again"].id]
        assert res.failed == ()
        assert (await a.retry_pending()).sent == ()  # nothing pending any more
        # `xchat send` run again with a text it just re-sent: the same id, nothing new.
        assert await a.send_text(b.address, "again", resume=True) == rows["again"].id
        a._deliver = _relay_down  # type: ignore[method-assign]
        with pytest.raises(ServerUnreachable):
            await a.send_text(b.address, "third")
        del a._deliver
        third = {h.text: h for h in a.history(contact)}["third"]
        assert await a.send_text(b.address, "third", resume=True) == third.id
        assert await a.send_text(b.address, "third", resume=True) != third.id  # a new one
        got = [e for e in await b.receive() if isinstance(e, ev.MessageReceived)]
        assert [e.text for e in got] == ["warm-up", "lost?", "again", "third", "third"]
        assert [e.id for e in got][1:4] == [rows["lost?"].id, rows["again"].id, third.id]
        assert {h.status for h in a.history(contact)} <= {"sent", "delivered"}
    finally:
        await a.close()
        await b.close()


async def test_messages_stored_but_never_shown_are_replayed_once(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """PROTOCOL Part IV §5.3: rows stored but never emitted (the process died in between) are
    emitted by the next receive(); a listener may hold a message unseen until shown."""
    a, b = await _pair(server, tmp_path, handle)
    try:
        await a.send_text(b.address, "one")
        await a.send_text(b.address, "two")

        # Fault injection (private on purpose): the process dies inside event delivery.
        async def lost(event: ev.Event) -> None:  # dies before the app sees anything
            return None

        b._emit = lost  # type: ignore[method-assign]
        assert await b.receive() == []
        del b._emit
        assert [m.body is not None for m in b.store.unseen_messages()] == [True, True]
        assert texts(await b.receive()) == ["one", "two"]  # replayed, relay queue empty
        assert texts(await b.receive()) == []
        await b.close()

        await a.send_text(b.address, "three")
        await a.send_text(b.address, "four")
        b = Client(tmp_path / "b")
        held: list[ev.MessageReceived] = []

        def show_later(e: ev.Event) -> None:
            if isinstance(e, ev.MessageReceived):
                b.keep_unseen(e)
                held.append(e)

        b.on_event(show_later)
        assert texts(await b.receive()) == ["three", "four"]
        b.mark_shown(held[0])  # "three" was shown; the process dies before "four"
        await b.close()
        b = Client(tmp_path / "b")
        assert texts(await b.receive()) == ["four"]
        assert texts(await b.receive()) == []
    finally:
        await a.close()
        await b.close()


async def test_owed_receipt_survives_a_failed_send(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """PROTOCOL Part IV §3.6: the receipt is persisted with the message and sent by a later
    run when the first attempt fails."""
    a, b = await _pair(server, tmp_path, handle)
    try:
        await b.messaging.accept(a.address)  # a contact, not a request (PROTOCOL Part VIII §7)
        mid = await a.send_text(b.address, "confirm me")
        b._deliver = _relay_down  # type: ignore[method-assign]
        assert texts(await b.receive()) == ["confirm me"]  # the receipt attempt failed
        assert b.store.receipt_peers() == [a.address]
        await b.close()
        b = Client(tmp_path / "b")  # a later run with the relay reachable
        assert texts(await b.receive()) == []
        assert b.store.receipt_peers() == []
        got = await a.receive()
        assert any(isinstance(e, ev.ReceiptReceived) and mid in e.message_ids for e in got)
        contact = a.find_contact(b.address)
        assert contact is not None
        assert [h.status for h in a.history(contact)] == ["delivered"]
    finally:
        await a.close()
        await b.close()


async def test_mistyped_address_is_invalid_not_unknown(tmp_path: Path) -> None:
    c = Client(tmp_path / "x")
    try:
        address = IdentityKeyPair.generate().public.address()
        typo = address[:-1] + ("q" if address[-1] != "q" else "p")
        with pytest.raises(InvalidAddress, match="bad checksum"):
            await c.resolve(typo)
        with pytest.raises(InvalidAddress, match="characters"):
            await c.resolve(address[:-1] + "b")  # 'b' is not in the bech32 alphabet
        with pytest.raises(InvalidAddress, match="case"):
            await c.resolve(address[:10] + address[10:].upper())
    finally:
        await c.close()


async def test_a_prekey_message_arriving_during_our_bundle_fetch_keeps_its_session(
    server: ServerProcess, tmp_path: Path, handle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides start at once: Bob fetches Alice's bundle to write first, and Alice's
    first message (a PreKey message) is processed meanwhile. Bob must keep the session it
    created: replacing it made Alice's next PreKey messages of that session look like
    replays, dropped without a trace (found by delivery before commit's timing)."""
    from xchat.client.api import Api

    a, b = await _pair(server, tmp_path, handle)
    fetching, release = asyncio.Event(), asyncio.Event()
    real = Api.bundles

    async def slow_bundles(self: Api, address: str) -> dict:
        if address == a.address:
            fetching.set()
            await release.wait()
        return await real(self, address)

    monkeypatch.setattr(Api, "bundles", slow_bundles)
    got: list[str] = []
    arrived = asyncio.Event()

    def on(e: ev.Event) -> None:
        if isinstance(e, ev.MessageReceived):
            got.append(e.text)
            arrived.set()

    b.on_event(on)
    try:
        await a.send_text(b.address, "a0")
        bob_writes = asyncio.ensure_future(b.send_text(a.address, "b0"))
        await asyncio.wait_for(fetching.wait(), 10)
        await b.start()  # receives a0 (Bob's session from Alice's) while the fetch waits
        await asyncio.wait_for(arrived.wait(), 10)
        release.set()
        await asyncio.wait_for(bob_writes, 10)
        arrived.clear()
        await a.send_text(b.address, "a1")  # still a PreKey message: Alice has no reply yet
        await asyncio.wait_for(arrived.wait(), 10)
        assert got == ["a0", "a1"]
        assert texts(await a.receive()) == ["b0"]
    finally:
        release.set()
        await a.close()
        await b.close()
