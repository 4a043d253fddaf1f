"""Sending to a group: sender-key distribution, and one message sealed once per member
device and sent in ONE ``SEND_MULTI`` frame (PROTOCOL.md Part V §7, §10.3; Part III §5.2).

The relay fans the frame out without learning that the recipients form a group. Key
distribution is lazy (Part V §6): what :func:`~xchat.crypto.group.key_plan` asked for after
a change is done here, right before our next group send. Pairwise group contents (updates,
sender keys) also leave through :meth:`GroupSender.send_pairwise`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from xchat import encoding
from xchat.client import content as ct
from xchat.client.group_book import GROUP_CONTENT_TYPE, SENDER_KEY_TYPE, GroupBook, group_peer
from xchat.client.model import GROUP_PEER_PREFIX, now_ms
from xchat.client.store import ContactRecord, GroupRow, MessageRecord
from xchat.client.transport import Backoff, SendChannel, ws_url
from xchat.crypto import padding, sealed
from xchat.crypto.group import GroupState
from xchat.crypto.keys import IdentityPublicKey, decode_address
from xchat.crypto.sender_keys import SenderKeyState
from xchat.errors import ApiError, ClientError, ServerUnreachable, XChatError
from xchat.protocol import frames as fr

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient

log = logging.getLogger(__name__)


_SEND_ATTEMPTS = 4


class GroupSender:
    """The sending half of :class:`~xchat.client.groups.Groups` (one per client)."""

    def __init__(self, client: SendingClient, book: GroupBook) -> None:
        self.c = client
        self.book = book
        #: bytes of the last SEND_MULTI frame (bench and tests read it)
        self.last_upload_bytes = 0

    async def _contact_for(self, address: str, identity_key: bytes | None) -> ContactRecord:
        """A contact for a group member, its identity key pinned from the group state."""
        store = self.c.store
        c = store.ensure_contact(address, now_ms())
        if c.identity_key is None:
            if identity_key is None:
                return await self.c.contact(address)
            store.update_contact(address, identity_key=identity_key)
            pinned = store.get_contact(address)
            assert pinned is not None
            return pinned
        return c

    async def send_pairwise(
        self, address: str, identity_key: bytes | None, ctype: str, body: dict[str, Any]
    ) -> None:
        c = await self._contact_for(address, identity_key)
        if c.verified and c.identity_changed:
            raise ClientError(f"identity of verified contact {address} changed; not sending")
        sender = None if c.token_shared else self.c._own_sender_info()
        msg = ct.Content(id=ct.new_message_id(), type=ctype, ts=now_ms(), sender=sender, group=body)
        await self.c._send_content(c, msg, store_as_message=False)

    # --- sending a group message (PROTOCOL Part V §7, §10.3) ----------------------------------

    async def send(self, group: str, msg: ct.Content, resend: bool = False) -> str:
        row = self.book.resolve(group)
        if row.left:
            raise ClientError("you are no longer a member of this group")
        gid = row.id
        if msg.type in ("text", "file"):  # quote and timer (PROTOCOL Part VIII)
            msg = await self.c.messaging.prepare_outgoing(f"{GROUP_PEER_PREFIX}{gid}", msg)
        state = self.book.history(row).state
        me = self.c.address
        others = set(state.members) - {me}
        own_raw, pending = row.own_key, set(json.loads(row.pending))
        if own_raw is None:  # first send, or rotation after a removal (key_plan.rotate)
            own_raw = SenderKeyState.generate(state.group_id).to_bytes()
            pending = set(others)
            with self.c.store.transaction():
                self.book.save(gid, self.book.history(row), own_raw, pending)
        own = SenderKeyState.from_bytes(own_raw)
        skdm = encoding.b64encode(own.distribution_message())
        for address in sorted(pending & others):
            try:
                await self.send_pairwise(
                    address, state.members[address], SENDER_KEY_TYPE, {"id": gid, "skdm": skdm}
                )
            except XChatError as exc:
                log.warning("sender key not delivered to %s: %s", address, exc)
                continue
            self.book.drop_pending(gid, {address})
        await self._share_key_with_own_devices(gid, own.key_id, skdm)
        await self._send_learning_devices(gid, state, msg, resend)
        return msg.id

    async def _share_key_with_own_devices(self, gid: str, key_id: int, skdm: str) -> None:
        """Our other devices read our group messages too (PROTOCOL Part VII §5.1): each
        gets this device's sender key once per key (a ``sender_key`` content to our own
        address), also a device linked after the key went round. Noted in meta
        ``group_own_key:<gid>`` as ``{"key_id", "devices"}``."""
        devices = self.c.own_other_devices()
        if not devices:
            return
        meta = f"group_own_key:{gid}"
        raw = self.c.store.get_meta(meta)
        noted = json.loads(raw) if raw else {}
        done = set(noted.get("devices", [])) if noted.get("key_id") == key_id else set()
        if set(devices) <= done:
            return
        body = {"id": gid, "skdm": skdm}
        me = ContactRecord(
            self.c.address, None, self.c.identity.public.encode(), None, False, False, True
        )
        msg = ct.Content(
            id=ct.new_message_id(), type=SENDER_KEY_TYPE, ts=now_ms(), sender=None, group=body
        )
        try:
            await self.c._send_content(me, msg, store_as_message=False)
        except XChatError as exc:
            log.warning("sender key not delivered to our other devices: %s", exc)
            return
        noted = {"key_id": key_id, "devices": sorted(done | set(devices))}
        self.c.store.put_meta(meta, json.dumps(noted).encode())

    async def _send_learning_devices(
        self, gid: str, state: GroupState, msg: ct.Content, resend: bool
    ) -> None:
        """A member linked or removed a device since we learned its list: the relay's 409
        names the member; learn its signed list (UntrustedDevice if the relay lies) and send
        again, at most twice (PROTOCOL Part VII §2)."""
        for attempt in range(3):
            try:
                await self._send_encrypted(gid, state, msg, resend or attempt > 0)
                return
            except ApiError as exc:
                if attempt == 2 or not await self._learn_member_devices(state, exc):
                    raise

    async def _learn_member_devices(self, state: GroupState, exc: ApiError) -> bool:
        try:
            address = json.loads(exc.message).get("address") if exc.status == 409 else None
        except (ValueError, AttributeError):
            return False
        if not isinstance(address, str) or address not in state.members:
            return False
        identity = IdentityPublicKey.decode(state.members[address])
        return await self.c._learn_devices(address, identity, exc)

    async def resend_row(self, m: MessageRecord) -> bool:
        """Re-send one of our group messages whose SEND_MULTI was never confirmed (the
        process died, or the send gave up), with its ORIGINAL content id, re-encrypted
        under our current sender key: members keep one message per (sender, content id),
        so one the relay had already stored is shown once (PROTOCOL Part IV §3.8, Part V
        §10.3). False if it was confirmed meanwhile; ClientError if we left the group."""
        gid = m.peer[len(GROUP_PEER_PREFIX) :].split(":", 1)[0]
        row = self.book.row(gid)
        if row is None or row.left:
            raise ClientError("you are no longer a member of this group")
        msg = ct.Content.decode(m.body)
        await self.send(gid, msg, resend=True)
        stored = self.c.store.get_message(m.peer, m.id)
        return stored is not None and stored.status == "sent"

    async def _send_encrypted(
        self, gid: str, state: GroupState, msg: ct.Content, resend: bool = False
    ) -> None:
        c = self.c
        me = c.address
        async with c._send_lock:
            if resend:  # under the lock, so a send in flight here is never doubled
                stored = c.store.get_message(group_peer(gid, me), msg.id)
                if stored is None or stored.status not in ("sending", "failed"):
                    return
            cert = await c._sender_certificate()
            row = self.book.row(gid)
            assert row is not None and row.own_key is not None
            own = SenderKeyState.from_bytes(row.own_key)
            plaintext = msg.encode()
            message = own.encrypt(padding.pad(plaintext))
            store = msg.type in ("text", "file")  # Part VIII control content: no row
            recipients: list[tuple[IdentityPublicKey, int]] = []
            routes: list[tuple[str, list[int]]] = []
            for address in sorted(state.members):
                if address == me:
                    continue
                devices = c.device_ids(address)  # its verified list (Part VII), else [1]
                identity = IdentityPublicKey.decode(state.members[address])
                recipients.extend((identity, d) for d in devices)
                routes.append((address, devices))
            own_devices = c.own_other_devices()  # our copy, same upload (Part VII §5.1)
            if own_devices:
                recipients.extend((c.identity.public, d) for d in own_devices)
                routes.append((me, own_devices))
            t = now_ms()
            # Chain state is persisted BEFORE the message leaves (as PROTOCOL Part IV §3.4).
            with c.store.transaction():
                row = self.book.row(gid)
                assert row is not None
                c.store.put_group(
                    GroupRow(gid, row.history, own.to_bytes(), row.pending, row.left), t
                )
                if store:
                    c.store.add_message(msg.id, group_peer(gid, me), "out", msg.ts, "sending",
                                        plaintext, t)  # fmt: skip
            shared, headers = await asyncio.to_thread(
                sealed.seal_multi, c.identity, cert, recipients, GROUP_CONTENT_TYPE, message
            )
            try:
                await self._deliver_multi(shared, headers, routes, state)
            except BaseException:
                if store:
                    c.store.mark_failed(group_peer(gid, me), msg.id)
                raise
            if store:
                c.store.mark_sent(group_peer(gid, me), msg.id)

    async def _deliver_multi(
        self,
        shared: bytes,
        headers: dict[tuple[IdentityPublicKey, int], bytes],
        routes: list[tuple[str, list[int]]],
        state: GroupState,
    ) -> None:
        if not routes:
            return
        use_tokens = True
        for _ in range(2):
            dests = []
            for address, devices in routes:
                own = address == self.c.address
                identity = (
                    self.c.identity.public
                    if own
                    else IdentityPublicKey.decode(state.members[address])
                )
                contact = self.c.store.get_contact(address)
                token = (
                    self.c.store.get_meta("delivery_token")
                    if own
                    else (contact.delivery_token if contact is not None else None)
                )
                access: fr.Access
                if (use_tokens or own) and token is not None:
                    access = fr.TokenAccess(token)
                else:
                    access = await self.c._pow_access(address)
                envs = tuple(
                    fr.MultiEnvelope(d, secrets.token_bytes(16), headers[(identity, d)])
                    for d in devices
                )
                if own:  # the relay checks our whole device set; this device gets no copy
                    envs += (fr.MultiEnvelope(self.c.device_id, secrets.token_bytes(16), b""),)
                dests.append(fr.MultiDestination(decode_address(address), access, envs))
            try:
                await self._send_multi_frame(shared, tuple(dests))
                return
            except ApiError as exc:
                if exc.status not in (401, 403) or not use_tokens:
                    raise
                # Someone rotated their delivery token: one retry with proof of work.
                use_tokens = False

    async def _send_multi_frame(
        self, shared: bytes, dests: tuple[fr.MultiDestination, ...]
    ) -> None:
        """One SEND_MULTI, retried on a lost connection with the same envelope ids (the
        relay stores a re-sent ``(device, envelope id)`` once)."""
        c = self.c
        backoff = Backoff(base=0.1, cap=2.0)
        for attempt in range(_SEND_ATTEMPTS):
            if c._sender is None:
                c._sender = SendChannel(ws_url(c.whoami().server))
            try:
                self.last_upload_bytes = await c._sender.send_multi(shared, dests)
                return
            except ServerUnreachable:
                await c._sender.aclose()
                c._sender = None
                if attempt == _SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff.next_delay())
