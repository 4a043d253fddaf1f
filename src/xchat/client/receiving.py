"""The receiving layer of the client: the receive loop, unseal/decrypt/store, delivery
receipts, session-reset follow-ups, replay of unseen messages (PROTOCOL.md Part IV §5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from xchat.client import content as ct
from xchat.client import device_events as dev_ev
from xchat.client import device_sync, e2e
from xchat.client import events as ev
from xchat.client import fanout as fo
from xchat.client.group_book import GROUP_CONTENT_TYPE, PAIRWISE_TYPES
from xchat.client.groups import Groups
from xchat.client.model import GROUP_PEER_PREFIX, _Batch, _row_key, now_ms
from xchat.client.sending import SendingClient
from xchat.client.store import MessageRecord, Store
from xchat.client.transport import Backoff, ReceiveLoop, ws_url
from xchat.crypto import handle_cert
from xchat.crypto.keys import IdentityPublicKey
from xchat.errors import (
    ApiError,
    ClientError,
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ExpiredCertificate,
    InvalidCertificate,
    ServerUnreachable,
    UnknownPreKey,
    XChatError,
)
from xchat.protocol import frames as fr

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0
RECEIPT_DELAY = 0.05  # seconds receipts for one sender are collected before sending
RESEND_LIMIT = 50  # undelivered messages re-sent after a peer's session reset
UNSEEN_LIMIT = 10_000  # stored-but-never-shown rows replayed per receive()/start()
RECEIPT_RETRY_CAP = 1.0  # seconds: longest pause between receipt retries (start() mode)
RECEIPT_RETRY_WINDOW = 60.0  # seconds of fast receipt retries; then only on reconnect
STORED_TYPES = ("text", "file")  # kept in history and acknowledged by receipt


class ReceivingClient(SendingClient):
    """Receiving: everything that happens when the relay delivers envelopes."""

    _groups: Groups

    def keep_unseen(self, event: ev.MessageReceived) -> None:
        """Called by an event callback that will show ``event`` only later (e.g. after a
        download): the message is flagged unseen again, so the next process replays it
        if this one dies first, until :meth:`mark_shown` (PROTOCOL Part IV §5.3)."""
        key = _row_key(event)
        self._held_unseen.add(key)
        self.store.mark_unseen(*key)

    def mark_shown(self, event: ev.MessageReceived) -> None:
        """The app has shown ``event`` (after :meth:`keep_unseen`)."""
        key = _row_key(event)
        self._held_unseen.discard(key)
        self.store.clear_unseen(*key)

    async def _replay_unseen(self) -> int:
        """Emit ``MessageReceived`` for every stored message the app was never shown:
        the process died between the store commit and the event (PROTOCOL Part IV §5.3).
        The relay's redelivery of those envelopes is a ratchet DuplicateMessage, so
        without this they would only ever appear in the history."""
        rows = self.store.unseen_messages(UNSEEN_LIMIT)
        for m in rows:
            if (m.peer, m.id) in self._held_unseen:
                continue  # this process holds it for later display (keep_unseen)
            event = self._stored_event(m)
            if event is None:
                self.store.clear_unseen(m.peer, m.id)
            else:
                await self._emit(event)
        return len(rows)

    def _stored_event(self, m: MessageRecord) -> ev.MessageReceived | None:
        try:
            body = ct.Content.decode(m.body)
        except XChatError:
            return None
        group: dict[str, str] | None = None
        sender = m.peer
        if m.peer.startswith(GROUP_PEER_PREFIX):
            gid, _, sender = m.peer[len(GROUP_PEER_PREFIX) :].partition(":")
            try:
                name = self._groups.info(self._groups.resolve(gid)).name
            except XChatError:
                name = "?"
            group = {"id": gid, "name": name}
        c = self.store.get_contact(sender)
        return ev.MessageReceived(
            m.id,
            sender,
            c.handle if c is not None else None,
            body.text or "",
            body.ts,
            body.reply_to,
            1,  # the device is not stored; one device per account (PROTOCOL Part IV §10)
            body.file,
            group,
        )

    # --- receiving (PROTOCOL Part IV §5) -------------------------------------------------------

    async def start(self) -> ReceiveLoop:
        """Start the background receive loop (reconnects forever until :meth:`stop`).

        First emits the messages stored but never shown (PROTOCOL Part IV §5.3), so register
        listeners before calling this. On every (re)connection it sends the delivery
        receipts still owed (§3.6) and re-sends unconfirmed messages
        (:meth:`retry_pending`, §3.8) in the background."""
        if self._recv is None:
            self._started = True
            await self._replay_unseen()
            self.messaging.start()  # disappearing-message timers (PROTOCOL Part VIII §6)
            self._recv = ReceiveLoop(
                ws_url(self.whoami().server),
                self._ws_token,
                self._on_frame,
                backoff=Backoff(cap=self._reconnect_cap),
                on_connection=self._on_connection,
            )
            self._recv_task = asyncio.create_task(self._recv.run())
        return self._recv

    async def stop(self) -> None:
        self._started = False
        await self.messaging.stop()
        retry, self._receipt_retry = self._receipt_retry, None
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(BaseException):
                await retry
        if self._recv is not None:
            await self._recv.stop()
        if self._recv_task is not None:
            self._recv_task.cancel()
            with contextlib.suppress(BaseException):
                await self._recv_task
        self._recv = None
        self._recv_task = None

    @property
    def connected(self) -> bool:
        """True while :meth:`start`'s receive loop holds an authenticated connection (the
        status an app shows; the loop reconnects on its own when it drops)."""
        return self._recv is not None and self._recv.connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until :meth:`start`'s loop is connected (TimeoutError after ``timeout``
        seconds), e.g. before relying on frames the relay pushes, such as KEYS_LOW."""
        loop = self._recv
        if loop is None:
            raise ClientError("not receiving: call start() first")
        await asyncio.wait_for(loop.connected.wait(), timeout)

    async def receive(self, wait: float = 0.0) -> list[ev.Event]:
        """Connect, process everything queued (until DRAINED), keep receiving for ``wait``
        seconds, then disconnect. Returns the events seen. Errors on the first connection
        (unreachable, unauthorised) are raised."""
        if self._recv is not None:
            raise ClientError("this client is already receiving (start() is running)")
        seen: list[ev.Event] = []
        self.on_event(seen.append)
        try:
            await self._replay_unseen()
            loop = ReceiveLoop(
                ws_url(self.whoami().server),
                self._ws_token,
                self._on_frame,
                backoff=Backoff(cap=self._reconnect_cap),
            )
            self._recv = loop
            task = asyncio.create_task(loop.run(fail_fast=True))
            self._recv_task = task
            drained = asyncio.create_task(loop.drained.wait())
            done, _ = await asyncio.wait(
                {task, drained}, timeout=DRAIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            drained.cancel()
            if task in done:
                task.result()  # raises the connection error
            if self.store.receipt_peers():  # owed by an earlier run (PROTOCOL Part IV §3.6)
                self._background(self._flush_all_receipts())
            if wait > 0:
                await asyncio.sleep(wait)
            await self.settle()
            await self.messaging.expire_now()  # PROTOCOL Part VIII §6
        finally:
            self._listeners.remove(seen.append)
            await self.stop()
        return seen

    async def settle(self) -> None:
        """Wait until the background work this client started (delivery receipts, prekey
        top-ups, re-sends after a reconnect) has finished, including work started while
        waiting; a failed task is logged, as in the background, not raised."""
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    async def _on_connection(self, connected: bool) -> None:
        await self._emit(ev.ConnectionChanged(connected))
        if connected:
            self._background(self.wallet.top_up())  # ahead of need (PROTOCOL Part XI §5)
            self._background(self.replenish_prekeys())
            self._background(self._flush_all_receipts())
            self._background(self.retry_pending())

    async def _ws_token(self, force: bool) -> str:
        return await self._auth_token(force=force)

    async def _on_frame(self, frame: fr.Frame, loop: ReceiveLoop) -> None:
        if isinstance(frame, fr.Deliver):
            await self._on_deliver(frame, loop)
        elif isinstance(frame, fr.Drained):
            await self._emit(ev.Drained())
        elif isinstance(frame, fr.KeysLow):
            self._background(self.replenish_prekeys(force=True))

    def _background(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except XChatError as exc:
                log.warning("background task failed: %s", exc)

        task = asyncio.create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _on_deliver(self, frame: fr.Deliver, loop: ReceiveLoop) -> None:
        """Unseal -> decrypt -> dedupe -> store (one transaction) -> emit -> ACK -> receipts."""
        batch = _Batch()
        events, receipts, followups = batch.events, batch.receipts, batch.followups
        t = now_ms()
        with self.store.transaction():
            for item in frame.envelopes:
                self._process_envelope(item, t, batch)
        if batch.cert_retry:
            # Certificates no accepted relay key verifies: learn a signed key rotation, if
            # the relay has one (PROTOCOL Part III §3.1), then try those envelopes once more.
            with contextlib.suppress(XChatError):
                await self._check_relay_rotation()
            batch.retrying = True
            with self.store.transaction():
                for item in batch.cert_retry:
                    self._process_envelope(item, t, batch)
        # Stored durably: only now may the server delete the envelopes.
        await loop.send_ack([d.envelope_id for d in frame.envelopes])
        if batch.claims:
            for sender, claimed in batch.claims.items():
                await self._verify_handle_claim(sender, claimed, sender in batch.certified)
            events = [_with_handle(e, self.store) for e in events]
        for e in events:
            await self._emit(e)
        for address in receipts:
            if address not in self._receipt_scheduled:
                self._receipt_scheduled.add(address)
                self._background(self._flush_receipts(address))
        for action, address in dict.fromkeys(followups):
            if action == "reset" and address not in self._reset_sent:
                self._reset_sent.add(address)
                self._background(self._reset_session(address))
            elif action == "resend":
                self._background(self._resend_undelivered(address))

    def _process_envelope(
        self,
        item: fr.Delivered,
        t: int,
        batch: _Batch,
    ) -> None:
        events, followups = batch.events, batch.followups
        env_id = item.envelope_id.hex()
        batch.origin_ms = item.ts_ms or t
        sender: str | None = None
        try:
            # The certificate must have been valid when the server ACCEPTED the envelope
            # (its DELIVER timestamp), not now: mail may wait in the queue for days while
            # certificates live 24 h (as Signal checks against the server timestamp).
            try:
                unsealed = e2e.unseal_any(
                    self.identity,
                    item.content,
                    self._server_keys(item.ts_ms or t),
                    item.ts_ms or t,
                    self.profile.config.device_id or 1,
                )
            except InvalidCertificate as exc:
                if isinstance(exc, ExpiredCertificate) or batch.retrying:
                    raise
                batch.cert_retry.append(item)  # perhaps a relay key rotation (III §3.1)
                return
            peer = unsealed.sender
            sender = self._address_of(peer)
            own = sender == self.address  # a copy from our own other device (Part VII §4)
            c = None if own else self.store.ensure_contact(sender, t)
            if c is None:
                pass
            elif c.identity_key is not None and c.identity_key != peer.encode():
                # Unreachable for an honest server (address = hash of key); treat as change.
                self.store.update_contact(sender, identity_key=peer.encode(), identity_changed=True)
                self.store.delete_sessions(sender)
                events.append(
                    ev.IdentityChangedEvent(
                        sender, c.handle, c.identity_key, peer.encode(), c.verified
                    )
                )
            elif c.identity_key is None:
                self.store.update_contact(sender, identity_key=peer.encode())
            if unsealed.content_type == GROUP_CONTENT_TYPE:  # one upload for the group
                self._groups.receive_message(unsealed, sender, env_id, t, batch)
                return
            session_msg, fan = unsealed.content, None
            if unsealed.content_type == fo.FANOUT_CONTENT_TYPE:  # several devices, one upload
                fan = fo.decode(unsealed.content)
                if not own and fan.to != self.address:
                    raise DecodeError("fan-out addressed to another account")
                session_msg = fan.entry(own, self.device_id).message
            state = self.store.get_session(sender, unsealed.device_id)
            guard = self.replay_guard
            result = e2e.decrypt(
                self.identity,
                peer,
                state,
                session_msg,
                e2e.StorePreKeys(self.store),
                replayed=guard.seen,
                raw=fan is not None,
            )
            self.store.put_session(sender, unsealed.device_id, e2e.session_bytes(result.session), t)
            if result.prekey_digest is not None:
                guard.record_prekey_message(result.prekey_digest, t)
            for kind, key_id in result.used_one_time:
                self.store.delete_prekey(kind, key_id)
                guard.record_used(kind, key_id, t)
            plaintext = result.plaintext
            if fan is not None:
                plaintext = fo.open_body(plaintext, fan.to, fan.body)
            msg = ct.Content.decode(plaintext)
        except DuplicateMessage:
            return  # a redelivery (or a replay) of something already processed: just ack it
        except (DecryptionError, UnknownPreKey) as exc:
            # Authenticated sender, no usable session. A replay by the relay fails exactly
            # like this, and answering it (bundle fetch + reset) would tell the relay who
            # sent the envelope: only a fresh PreKey message, once per peer per day, is
            # answered (PROTOCOL Part IV §3.7). Everything else is acked and dropped.
            events.append(ev.DecryptionFailed(env_id, f"{type(exc).__name__}: {exc}", sender))
            if (
                sender is not None
                and self.replay_guard.fresh_prekey_failure(
                    session_msg, unsealed.certificate.expires_ms, now_ms()
                )
                and self.replay_guard.allow(sender, "reset", t)
            ):
                followups.append(("reset", sender))
            return
        except XChatError as exc:
            events.append(ev.DecryptionFailed(env_id, f"{type(exc).__name__}: {exc}", sender))
            return
        assert sender is not None
        if own:
            if fan is not None:
                self._apply_own_copy(fan.to, msg, plaintext, unsealed.device_id, t, batch)
            return
        if not self.messaging.state.admit(sender):
            return  # blocked: dropped without a trace (PROTOCOL Part VIII §7)
        self._apply_content(sender, msg, plaintext, unsealed.device_id, t, batch)
        if msg.type == "reset" and result.new_session and self.store.mark_seen(sender, msg.id, t):
            # The peer lost its session (and our delivery token): share the token again
            # and re-send what it never confirmed; content ids make this idempotent.
            self.store.update_contact(sender, token_shared=False)
            followups.append(("resend", sender))

    def _apply_own_copy(
        self, to: str, msg: ct.Content, plaintext: bytes, device_id: int, t: int, batch: _Batch
    ) -> None:
        """What our own other device sent (PROTOCOL Part VII §4–§5): a sent message shows
        here too, a sync message updates local state, our group changes are folded in."""
        if msg.type == "sync" and to == self.address and msg.sync is not None:
            if self.store.mark_seen(to, msg.id, t):
                batch.events.extend(device_sync.apply(self, msg.sync, t))
            return
        if to == self.address:
            if msg.type in PAIRWISE_TYPES:  # our other device's sender key (Part VII §5.1)
                self._groups.receive_pairwise(self.address, msg, device_id, t, batch)
            return
        if msg.type in STORED_TYPES:
            self.store.ensure_contact(to, t)
            if self.store.add_message(
                msg.id, to, "out", msg.ts, "sent", plaintext, t, unseen=False
            ):
                # its disappearing timer runs from the send here too (PROTOCOL Part VIII §6)
                self.messaging.state.outgoing(to, msg, batch.origin_ms or t)
                batch.events.append(
                    dev_ev.MessageSynced(msg.id, to, msg.text or "", msg.ts, device_id, msg.file)
                )
        elif self.messaging.state.handles(msg) and msg.group is None:  # Part VIII
            if self.store.mark_seen(self.address, msg.id, t):
                self.messaging.state.apply(
                    self.address, to, msg, batch.origin_ms or t, t, batch.events
                )
        elif msg.type in PAIRWISE_TYPES:
            try:  # our own update to a member: the same update for every member, fold it once
                self._groups.receive_pairwise(self.address, msg, device_id, t, batch)
            except XChatError as exc:
                log.debug("own group copy not applied: %s", exc)

    def _apply_content(
        self,
        sender: str,
        msg: ct.Content,
        plaintext: bytes,
        device_id: int,
        t: int,
        batch: _Batch,
    ) -> None:
        events, receipts = batch.events, batch.receipts
        c = self.store.get_contact(sender)
        handle = c.handle if c is not None else None
        if msg.sender is not None:
            # The token is the sender's own business; a claimed handle is NOT trusted
            # until the server confirms it names this address (PROTOCOL Part IV §3.2).
            self.store.update_contact(sender, delivery_token=msg.sender.delivery_token)
            claimed = (msg.sender.handle or "").lower()
            if claimed and claimed != handle:
                batch.claims[sender] = claimed
                if msg.sender.handle_cert is not None:
                    # Proven by the relay's signature: no lookup (which would tell the
                    # relay whose message it just delivered), PROTOCOL Part IV §3.2.
                    with contextlib.suppress(XChatError):
                        keys = self._server_keys(t)
                        got = handle_cert.verify(keys, msg.sender.handle_cert, t)
                        if got == (sender, claimed):
                            batch.certified.add(sender)
        if msg.type in STORED_TYPES:
            if not self.store.add_message(msg.id, sender, "in", msg.ts, "received", plaintext, t):
                return  # duplicate content id (e.g. re-sent after a crash)
            # Owed receipt persisted with the message: a relay outage or a crash before
            # it leaves does not lose it (PROTOCOL Part IV §3.6). A message request owes
            # nothing until accepted (PROTOCOL Part VIII §7).
            rich = self.messaging.state
            if rich.message_stored(sender, sender, msg, batch.origin_ms or t, t, events):
                self.store.add_pending_receipt(sender, msg.id, t)
                receipts.setdefault(sender, []).append(msg.id)
            events.append(
                ev.MessageReceived(
                    msg.id,
                    sender,
                    handle,
                    msg.text or "",
                    msg.ts,
                    msg.reply_to,
                    device_id,
                    msg.file,
                )
            )
        elif self.messaging.state.handles(msg):  # PROTOCOL Part VIII
            conv = self.messaging.pairwise_conv(sender, msg)
            if conv is not None and self.store.mark_seen(sender, msg.id, t):
                self.messaging.state.apply(sender, conv, msg, batch.origin_ms or t, t, events)
        elif msg.type == "receipt":
            if not self.store.mark_seen(sender, msg.id, t):
                return
            ids = tuple(
                i for i in msg.receipt_for if self.store.set_message_status(sender, i, "delivered")
            )
            # A receipt proves the contact decrypted a message carrying our sender info.
            self.store.update_contact(sender, token_shared=True)
            if ids:
                events.append(ev.ReceiptReceived(sender, ids, msg.ts))
        elif msg.type in PAIRWISE_TYPES:  # group updates and sender keys (PROTOCOL Part V §10)
            self._groups.receive_pairwise(sender, msg, device_id, t, batch)
        elif (  # call signals, never stored (PROTOCOL Part IX §2)
            msg.type in ct.CALL_TYPES
            and msg.call is not None
            and self.store.mark_seen(sender, msg.id, t)
        ):
            events.append(ev.CallSignalReceived(sender, device_id, msg.type, msg.call, msg.ts))
        # "profile" and unknown types: sender info above is all we use for now.

    async def _reset_session(self, address: str) -> None:
        """Start a fresh session to ``address`` and tell it so (content type "reset")."""
        c = await self.resolve(address)
        if c.verified and c.identity_changed:
            return
        self.store.delete_sessions(address)
        msg = ct.Content(
            id=ct.new_message_id(), type="reset", ts=now_ms(), sender=self._own_sender_info()
        )
        await self._send_content(c, msg, store_as_message=False)

    async def _resend_undelivered(self, address: str) -> None:
        c = self.store.get_contact(address)
        if c is None or (c.verified and c.identity_changed):
            return
        for m in self.store.undelivered(address, RESEND_LIMIT):
            try:
                msg = ct.Content.decode(m.body)
            except XChatError:
                continue
            await self._send_content(c, msg, store_as_message=False)
            self.store.mark_sent(address, m.id)

    def _address_of(self, identity: IdentityPublicKey) -> str:
        """``identity.address()`` memoised: bech32m encoding is a measurable share of
        the per-message receive cost."""
        raw = identity.encode()
        address = self._addresses.get(raw)
        if address is None:
            if len(self._addresses) > 4096:
                self._addresses.clear()
            address = self._addresses[raw] = identity.address()
        return address

    async def _verify_handle_claim(
        self, sender: str, claimed: str, certified: bool = False
    ) -> None:
        """Adopt a handle a contact claims only if the relay vouches for it: by a handle
        certificate in its sender block (no request at all), else by a directory lookup."""
        if (sender, claimed) in self._rejected_claims:
            return
        if certified:
            data: dict[str, Any] = {"address": sender}
        else:
            try:
                data = await self.api.lookup_handle(claimed)
            except XChatError as exc:
                log.info("cannot check handle claim %r: %s", claimed, exc)
                return
        c = self.store.get_contact(sender)
        if data.get("address") != sender or c is None or c.identity_key is None:
            self._rejected_claims.add((sender, claimed))
            return
        await self._check_handle(claimed, sender, IdentityPublicKey.decode(c.identity_key))
        self.store.update_contact(sender, handle=claimed)

    async def _flush_receipts(self, address: str) -> None:
        """Coalesce receipts: ids that arrive within RECEIPT_DELAY share one receipt."""
        await asyncio.sleep(RECEIPT_DELAY)
        self._receipt_scheduled.discard(address)
        await self._send_pending_receipts(address)

    async def _flush_all_receipts(self) -> None:
        """Send every receipt still owed (after a reconnect, or owed by an earlier run)."""
        for address in self.store.receipt_peers():
            await self._send_pending_receipts(address)

    async def _send_pending_receipts(self, address: str) -> None:
        """Send the receipts owed to ``address`` from the store; each id is deleted only
        after the relay acknowledged the receipt carrying it. A transient failure keeps
        them (and, under start(), schedules a retry); a permanent one drops them."""
        async with self._receipt_lock:
            while ids := self.store.pending_receipts(address, ct.MAX_RECEIPT_IDS):
                c = self.store.get_contact(address)
                if (
                    c is None
                    or c.identity_key is None
                    or c.delivery_token is None  # never pay PoW for a receipt (§3.6)
                    or (c.verified and c.identity_changed)  # blocked (§8)
                ):
                    self.store.delete_pending_receipts(address)
                    return
                sender = None if c.token_shared else self._own_sender_info()
                r = ct.receipt(ids, now_ms(), sender=sender)
                try:
                    await self._send_content(c, r, store_as_message=False)
                except XChatError as exc:
                    if _transient(exc):
                        self._schedule_receipt_retry()
                        raise
                    log.info("dropping %d receipts for %s: %s", len(ids), address, exc)
                self.store.delete_pending_receipts(address, ids)

    def _schedule_receipt_retry(self) -> None:
        if self._started and (self._receipt_retry is None or self._receipt_retry.done()):
            self._receipt_retry = asyncio.create_task(self._receipt_retry_loop())

    async def _receipt_retry_loop(self) -> None:
        """Retry owed receipts with a short backoff for RECEIPT_RETRY_WINDOW seconds (a
        relay restart takes about a second, and the receive socket may take far longer
        to notice); after that only a reconnection flushes them."""
        backoff = Backoff(base=0.2, cap=RECEIPT_RETRY_CAP)
        deadline = time.monotonic() + RECEIPT_RETRY_WINDOW
        while self._started and time.monotonic() < deadline:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._flush_all_receipts()
                return
            except XChatError as exc:
                log.info("receipt retry failed: %s", exc)


def _transient(exc: XChatError) -> bool:
    """Worth retrying later: the relay is down, overloaded or rate limiting."""
    if isinstance(exc, ServerUnreachable):
        return True
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


def _with_handle(e: ev.Event, store: Store) -> ev.Event:
    if isinstance(e, ev.MessageReceived):
        c = store.get_contact(e.sender)
        if c is not None and c.handle != e.handle:
            return replace(e, handle=c.handle)
    return e
