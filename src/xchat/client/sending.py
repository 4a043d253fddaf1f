"""The sending layer of the client: encrypt per device, seal, SEND with retries
(PROTOCOL.md Part IV §3)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from xchat.client import content as ct
from xchat.client import e2e
from xchat.client import rich_events as rev
from xchat.client.fanout_send import FanoutClient
from xchat.client.messaging import RichState
from xchat.client.model import (
    GROUP_PEER_PREFIX,
    HistoryItem,
    RetryResult,
    _history_item,
    now_ms,
)
from xchat.client.store import ContactRecord, MessageRecord
from xchat.client.transport import Backoff, SendChannel, ws_url
from xchat.crypto.keys import IdentityPublicKey
from xchat.errors import (
    ApiError,
    IdentityChanged,
    ProtocolError,
    ServerUnreachable,
    UnknownContact,
    UntrustedIdentity,
    XChatError,
)
from xchat.protocol import frames as fr

SEND_ATTEMPTS = 4
MAX_RATE_WAIT = 2.0  # seconds of Retry-After the SDK waits out by itself
PENDING_LIMIT = 1000  # unconfirmed outgoing rows re-sent per retry_pending() pass


class RichMessaging(Protocol):
    """What the layers below :class:`~xchat.client.Client` need from rich messaging
    (PROTOCOL Part VIII), which sits above them: :class:`xchat.client.rich_send.Messaging`
    satisfies it structurally. Naming the interface here, not the class, keeps imports
    pointing one way (``rich_send`` uses this layer), for the type checker too."""

    @property
    def state(self) -> RichState:
        """The store-level Part VIII rules the receive path applies."""
        ...

    async def prepare_outgoing(self, conv: str, msg: ct.Content) -> ct.Content:
        """A text/file about to be sent in ``conv``, with its timer and quote checks."""
        ...

    def pairwise_conv(self, sender: str, msg: ct.Content) -> str | None:
        """The conversation a pairwise Part VIII content belongs to (None: ignore it)."""
        ...

    def start(self) -> None:
        """Run the disappearing-message timers (from ``start()``)."""
        ...

    async def stop(self) -> None:
        """Stop the timers."""
        ...

    async def expire_now(self) -> list[rev.MessagesExpired]:
        """Delete the messages whose timer ran out and emit their events."""
        ...


class SendingClient(FanoutClient):
    """1:1 sending: texts, file manifests, resumable and retried sends."""

    #: rich messaging (PROTOCOL Part VIII), created by ``Client.__init__``
    messaging: RichMessaging

    #: Re-sends one unconfirmed group row (set by :class:`xchat.client.groups.Groups`, the
    #: layer above; True if it was sent, False if confirmed meanwhile or not re-sendable).
    _group_resend: Callable[[MessageRecord], Awaitable[bool]] | None = None

    async def send_text(
        self, to: str, text: str, *, reply_to: str | None = None, resume: bool = False
    ) -> str:
        """Encrypt, seal and send a text; returns the message id once the server acked.

        With ``resume``, a text identical (recipient, text, reply_to) to one whose send
        was never confirmed (or that :meth:`retry_pending` re-sent during this client's
        lifetime) is that message: it is (re-)sent with its ORIGINAL id and that id is
        returned, so running a crashed ``xchat send`` again shows the text once
        (PROTOCOL Part IV §3.8)."""
        c = await self._sendable_contact(to)
        if resume:
            resumed = await self._resume_text(c, text, reply_to)
            if resumed is not None:
                return resumed
        sender = None if c.token_shared else self._own_sender_info()
        msg = ct.text_message(text, now_ms(), reply_to=reply_to, sender=sender)
        msg = await self.messaging.prepare_outgoing(c.address, msg)  # PROTOCOL Part VIII
        if resume:  # noted until the caller reports it (client/reports.py)
            self.send_reports.note(c.address, msg.id, now_ms())
        await self._send_content(c, msg, store_as_message=True)
        return msg.id

    async def send_file_manifest(
        self, to: str, manifest: dict[str, Any], *, text: str | None = None
    ) -> str:
        """Send a file message (content type "file", PROTOCOL Part VI) carrying ``manifest``."""
        c = await self._sendable_contact(to)
        sender = None if c.token_shared else self._own_sender_info()
        msg = ct.Content(
            id=ct.new_message_id(),
            type="file",
            ts=now_ms(),
            text=text,
            sender=sender,
            file=manifest,
        )
        msg = await self.messaging.prepare_outgoing(c.address, msg)  # PROTOCOL Part VIII
        await self._send_content(c, msg, store_as_message=True)
        return msg.id

    async def _resume_text(self, c: ContactRecord, text: str, reply_to: str | None) -> str | None:
        done = self._resent.get(c.address, [])
        for i, h in enumerate(done):
            if h.text == text and h.reply_to == reply_to and h.file is None:
                del done[i]  # one resumed send per re-sent row
                return h.id
        for m in self.store.pending_outgoing(PENDING_LIMIT):
            if m.peer != c.address:
                continue
            h = _history_item(m)
            if h.text == text and h.reply_to == reply_to and h.file is None:
                await self._resend_row(c, m.id)
                return m.id
        # Confirmed by the relay but never reported (the run died after the ack was
        # recorded): that message is complete; do not send it again under a new id.
        for msg_id in self.send_reports.unreported(c.address, now_ms()):
            row = self.store.get_message(c.address, msg_id)
            if row is None or row.direction != "out" or row.status not in ("sent", "delivered"):
                continue
            h = _history_item(row)
            if h.text == text and h.reply_to == reply_to and h.file is None:
                return row.id
        return None

    async def retry_pending(self) -> RetryResult:
        """Re-send every message whose send was never confirmed by the relay — state
        'sending' (the process died mid-send) or 'failed' (the send gave up) — with its
        stored content and ORIGINAL content id, oldest first (PROTOCOL Part IV §3.8). The
        recipient keeps one message per (sender, content id), so a copy the relay had
        already committed is shown once.

        Rows to a blocked contact (verified, identity changed) wait until it is
        re-verified. A row that fails for its own reason stays 'failed' and is listed in
        the result; ServerUnreachable and long rate limits stop the pass and are raised
        (the remaining rows stay pending for the next pass). ``start()`` runs this on
        every (re)connection."""
        sent: list[HistoryItem] = []
        failed: list[tuple[HistoryItem, str]] = []
        for m in self.store.pending_outgoing(PENDING_LIMIT):
            group_row = m.peer.startswith(GROUP_PEER_PREFIX)
            c = None if group_row else self.store.get_contact(m.peer)
            if group_row:
                if self._group_resend is None:
                    continue
            elif c is None or c.identity_key is None or (c.verified and c.identity_changed):
                continue
            item = _history_item(m)
            try:
                if c is None:  # a group message: re-encrypted under our sender key
                    assert self._group_resend is not None
                    done = await self._group_resend(m)
                else:
                    done = await self._resend_row(c, m.id)
            except ServerUnreachable:
                raise
            except ApiError as exc:
                if exc.status == 429 or exc.status >= 500:
                    raise
                failed.append((item, str(exc)))
                continue
            except XChatError as exc:
                failed.append((item, str(exc) or type(exc).__name__))
                continue
            if done:
                sent.append(item)
                self._resent.setdefault(m.peer, []).append(item)
        return RetryResult(tuple(sent), tuple(failed))

    async def _resend_row(self, c: ContactRecord, msg_id: str) -> bool:
        """Re-send one stored outgoing row with its id; False if it got confirmed in the
        meantime. The status is checked under the send lock, so a send in flight in this
        process is never doubled."""
        async with self._send_lock:
            m = self.store.get_message(c.address, msg_id)
            if m is None or m.direction != "out" or m.status not in ("sending", "failed"):
                return False
            msg = ct.Content.decode(m.body)
            try:
                await self._send_locked(c, msg, store_as_message=False)
            except BaseException:
                self.store.mark_failed(c.address, msg_id)
                raise
            self.store.mark_sent(c.address, msg_id)
            return True

    async def _sendable_contact(self, to: str) -> ContactRecord:
        c = await self.contact(to)
        if c.verified and c.identity_changed:
            raise IdentityChanged(
                f"the identity of verified contact {c.handle or c.address} changed; "
                "compare safety numbers and run `xchat verify --mark-verified` to continue"
            )
        return c

    async def _send_content(
        self, c: ContactRecord, msg: ct.Content, *, store_as_message: bool
    ) -> None:
        async with self._send_lock:
            await self._send_locked(c, msg, store_as_message=store_as_message)

    async def _send_locked(
        self, c: ContactRecord, msg: ct.Content, *, store_as_message: bool
    ) -> None:
        if (
            msg.type != "reset"
            and self.store.get_meta("restored_ms") is not None
            and not self.store.session_devices(c.address)
            and self.replay_guard.allow(c.address, "announce", now_ms())
        ):
            # A restored device writes first: a `reset` ahead of the message makes the
            # contact re-send what it sent to the lost session (PROTOCOL Part IV §3.7).
            # Triggered by our own send, never by something the relay delivered.
            reset = ct.Content(
                id=ct.new_message_id(), type="reset", ts=now_ms(), sender=self._own_sender_info()
            )
            await self._send_locked(c, reset, store_as_message=False)
        cert = await self._sender_certificate()
        if await self._use_fanout(c):  # several devices on either side (PROTOCOL Part VII §4)
            await self._fanout_locked(c, msg, cert, store_as_message=store_as_message)
            return
        envelopes = await self._encrypt_for(c, msg, cert, store_as_message)

        async def restart() -> list[fr.OutEnvelope]:
            # The peer's delivery token was refused: it re-registered (a restore, which
            # loses its sessions) or rotated it. The envelopes above may be undecryptable
            # for it, and it will not ask (a failure is never answered, Part IV §3.7), so
            # start a fresh session and encrypt again — once per peer per day.
            self.store.delete_sessions(c.address)
            return await self._encrypt_for(c, msg, cert, False)

        try:
            await self._deliver(c, envelopes, restart)
        except ApiError as exc:
            # 409: the peer has linked a device since (or the relay lies): learn its list.
            assert c.identity_key is not None
            peer = IdentityPublicKey.decode(c.identity_key)
            if not await self._learn_devices(c.address, peer, exc):
                if store_as_message:
                    self.store.mark_failed(c.address, msg.id)
                raise
            await self._fanout_locked(c, msg, cert, store_as_message=store_as_message)
            return
        except BaseException:
            if store_as_message:
                self.store.mark_failed(c.address, msg.id)
            raise
        if store_as_message:
            # never downgrade: a receipt processed before the ack set "delivered"
            self.store.mark_sent(c.address, msg.id)

    async def _fanout_locked(
        self, c: ContactRecord, msg: ct.Content, cert: bytes, *, store_as_message: bool
    ) -> None:
        try:
            await self._send_fanout(c, msg, cert, store_as_message=store_as_message)
        except BaseException:
            if store_as_message:
                self.store.mark_failed(c.address, msg.id)
            raise
        if store_as_message:
            self.store.mark_sent(c.address, msg.id)

    async def _encrypt_for(
        self, c: ContactRecord, msg: ct.Content, cert: bytes, store_as_message: bool
    ) -> list[fr.OutEnvelope]:
        assert c.identity_key is not None
        peer = IdentityPublicKey.decode(c.identity_key)
        devices = self.store.session_devices(c.address)
        if not devices:
            devices = await self._start_sessions(c, peer)
        plaintext = msg.encode()
        t = now_ms()
        out: list[fr.OutEnvelope] = []
        # Ratchet state is persisted BEFORE the envelope leaves (PROTOCOL Part IV §3.4): a crash
        # after sending must never make us reuse a message key.
        with self.store.transaction():
            for device_id in devices:
                state = self.store.get_session(c.address, device_id)
                assert state is not None
                session = e2e.load_session(state)
                ciphertext = e2e.encrypt(session, plaintext)
                self.store.put_session(c.address, device_id, e2e.session_bytes(session), t)
                sealed = e2e.seal(self.identity, cert, peer, ciphertext, device_id)
                out.append(fr.OutEnvelope(device_id, secrets.token_bytes(16), sealed))
            if store_as_message:
                self.store.add_message(msg.id, c.address, "out", msg.ts, "sending", plaintext, t)
        return out

    async def _start_sessions(self, c: ContactRecord, peer: IdentityPublicKey) -> list[int]:
        api = await self._authed()
        try:
            resp = await api.bundles(c.address)
        except ApiError as exc:
            if exc.status == 404:
                raise UnknownContact(f"unknown contact {c.handle or c.address}") from None
            raise
        bundles = e2e.parse_bundles(resp)
        if not bundles:
            raise ProtocolError("server returned no devices for this contact")
        if bundles[0].identity_key != peer:
            await self._check_identity(c.address, bundles[0].identity_key, c.handle)
            raise UntrustedIdentity("server handed out prekeys of a different identity")
        t = now_ms()
        with self.store.transaction():
            for b in bundles:
                if self.store.get_session(c.address, b.device_id) is not None:
                    # The peer's PreKey message arrived while we fetched its bundle and
                    # created a session: keep it. Replacing it would lose the peer's next
                    # messages, PreKey messages of that session, as replays (Part IV §3.7).
                    continue
                session = e2e.initiate(self.identity, b)
                self.store.put_session(c.address, b.device_id, e2e.session_bytes(session), t)
        return [b.device_id for b in bundles]

    async def _deliver(
        self,
        c: ContactRecord,
        envelopes: list[fr.OutEnvelope],
        restart: Callable[[], Awaitable[list[fr.OutEnvelope]]] | None = None,
    ) -> None:
        token = c.delivery_token
        if token is not None:
            try:
                await self._send_frame(c.address, fr.TokenAccess(token), envelopes)
                return
            except ApiError as exc:
                if exc.status not in (401, 403):
                    raise
                # The contact rotated its token (e.g. restored): fall back to PoW.
                self.store.update_contact(c.address, token_shared=False)
                if restart is not None and self.replay_guard.allow(c.address, "restart", now_ms()):
                    envelopes = await restart()
        await self._send_frame(c.address, await self._pow_access(c.address), envelopes)

    async def _send_frame(
        self, address: str, access: fr.Access, envelopes: list[fr.OutEnvelope]
    ) -> None:
        """One SEND; retried on a lost connection with the SAME envelope ids, which the
        server stores once (PROTOCOL Part III §5), so a retry can never duplicate a message."""
        dest = (fr.Destination(address, access, tuple(envelopes)),)
        backoff = Backoff(base=0.1, cap=2.0)
        for attempt in range(SEND_ATTEMPTS):
            if self._sender is None:
                self._sender = SendChannel(ws_url(self.whoami().server))
            try:
                await self._sender.send(dest)
                return
            except ServerUnreachable:
                await self._sender.aclose()
                self._sender = None
                if attempt == SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff.next_delay())
            except ApiError as exc:
                # A short rate-limit pause is waited out; a long one is the caller's call.
                wait = exc.retry_after
                if exc.status != 429 or wait is None or wait > MAX_RATE_WAIT:
                    raise
                if attempt == SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(wait)
