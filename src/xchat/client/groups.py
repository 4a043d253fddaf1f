"""Groups in the client: state on members' devices only (PROTOCOL.md Part V §10).

The pure parts live in :mod:`xchat.crypto.group` (signed updates, the round rule,
``key_plan``) and :mod:`xchat.crypto.sender_keys`; this module does the I/O around them:

* group state (a :class:`~xchat.crypto.group.GroupHistory`), our own sender key and the
  members still owed it are kept sealed in the local store (tables ``groups`` and
  ``group_sender_keys``); the server never holds any of it;
* group updates travel pairwise (content type ``group_update``) to every member, a joiner
  also gets a welcome snapshot; sender-key distribution messages travel pairwise
  (content type ``sender_key``, or piggy-backed on an update);
* a group message is encrypted once with our sender key and sealed once for every member
  device (``sealed.seal_multi``), then sent in ONE ``SEND_MULTI`` frame (PROTOCOL Part III §5.2):
  the relay fans it out without learning that the recipients form a group.

Key distribution is lazy, as Signal allows (PROTOCOL Part V §6): after a change we only note
what ``key_plan`` asks for (rotate, send our key to whom) and do it right before our next
group send, so a removal costs the members nothing until they speak.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from xchat import encoding
from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.device_events import MessageSynced
from xchat.client.model import GROUP_PEER_PREFIX, _Batch, _history_item, now_ms
from xchat.client.store import ContactRecord, GroupRow, MessageRecord
from xchat.client.transport import Backoff, SendChannel, ws_url
from xchat.crypto import padding, sealed
from xchat.crypto.group import (
    GroupHistory,
    GroupOp,
    GroupState,
    GroupUpdate,
    KeyPlan,
    accept_welcome,
    apply,
    create_group,
    key_plan,
    propose,
)
from xchat.crypto.keys import IdentityPublicKey, decode_address
from xchat.crypto.sender_keys import (
    SEALED_CONTENT_TYPE,
    SenderKeyRecord,
    SenderKeyState,
    parse_header,
)
from xchat.errors import (
    ApiError,
    ClientError,
    DecodeError,
    DuplicateMessage,
    ProtocolError,
    ServerUnreachable,
    TooLarge,
    UnauthorizedGroupChange,
    UnknownSenderKey,
    XChatError,
)
from xchat.protocol import frames as fr

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient

log = logging.getLogger(__name__)

#: Sealed inner content type of a group message (a sender-key message), PROTOCOL Part V §2.1.
GROUP_CONTENT_TYPE = SEALED_CONTENT_TYPE
UPDATE_TYPE = "group_update"
SENDER_KEY_TYPE = "sender_key"
PAIRWISE_TYPES = (UPDATE_TYPE, SENDER_KEY_TYPE)
_GID_RE = re.compile(r"^[0-9a-f]{32}$")
_SEND_ATTEMPTS = 4
#: Sender-key records kept for groups this device does not hold (yet): per sender, in total.
MAX_ORPHAN_KEYS_PER_SENDER = 4
MAX_ORPHAN_KEYS = 64


@dataclass(frozen=True)
class GroupMember:
    address: str
    handle: str | None
    admin: bool


@dataclass(frozen=True)
class GroupInfo:
    """What ``groups()``/``group_info()`` return (also the web app's JSON shape)."""

    id: str  # 32 hex digits
    name: str
    version: int
    epoch: str  # epoch hash, hex: equal on every member device iff histories are equal
    members: tuple[GroupMember, ...]
    admin: bool  # are we an admin
    left: bool  # we are no longer a member


def group_peer(gid: str, sender: str) -> str:
    """The ``messages.peer`` of a group message: ``group:<gid>:<sender address>``."""
    return f"{GROUP_PEER_PREFIX}{gid}:{sender}"


def _b64d(value: object, what: str) -> bytes:
    """A base64 field of a peer's group content (``xchat.encoding``; DecodeError)."""
    return encoding.b64decode(value, f"group content {what}")


def _gid_of(group: object) -> str:
    if not isinstance(group, dict):
        raise DecodeError("group content has no group object")
    gid = group.get("id")
    if not isinstance(gid, str) or not _GID_RE.match(gid):
        raise DecodeError("group id must be 32 lower-case hex digits")
    return gid


class Groups:
    """Group logic of one :class:`~xchat.client.client.Client` (use through the client).

    A component, not a mixin: it sees its host only through the sending layer
    (:class:`~xchat.client.sending.SendingClient`), and the receiving layer calls
    :meth:`receive_message` / :meth:`receive_pairwise`, so imports point one way."""

    def __init__(self, client: SendingClient) -> None:
        self.c = client
        client._group_resend = self.resend_row  # retry_pending covers group rows too
        self._histories: dict[str, GroupHistory] = {}
        #: bytes of the last SEND_MULTI frame (bench and tests read it)
        self.last_upload_bytes = 0

    # --- local state ----------------------------------------------------------------------

    def _row(self, gid: str) -> GroupRow | None:
        return self.c.store.get_group(gid)

    def _history(self, row: GroupRow) -> GroupHistory:
        h = self._histories.get(row.id)
        if h is None:
            h = self._histories[row.id] = GroupHistory.from_bytes(row.history)
        return h

    def _save(
        self,
        gid: str,
        history: GroupHistory,
        own_key: bytes | None,
        pending: set[str],
        left: bool = False,
    ) -> None:
        self._histories[gid] = history
        row = GroupRow(gid, history.to_bytes(), own_key, json.dumps(sorted(pending)).encode(), left)
        self.c.store.put_group(row, now_ms())

    def resolve(self, group: str) -> GroupRow:
        """A group by id (hex) or unambiguous name; ClientError otherwise."""
        key = group.strip()
        store = self.c.store
        if _GID_RE.match(key.lower()):
            row = store.get_group(key.lower())
            if row is not None:
                return row
        matches = []
        for gid in store.group_ids():
            row = store.get_group(gid)
            if row is not None and self._history(row).state.name == key:
                matches.append(row)
        if not matches:
            raise ClientError(f"no group {group!r}")
        live = [r for r in matches if not r.left] if len(matches) > 1 else matches
        if len(live) != 1:
            ids = ", ".join(r.id for r in (live or matches))
            raise ClientError(f"group name {group!r} is ambiguous ({ids}); use the group id")
        return live[0]

    def info(self, row: GroupRow) -> GroupInfo:
        state = self._history(row).state
        members = []
        for address in sorted(state.members):
            contact = self.c.store.get_contact(address)
            handle = contact.handle if contact is not None else None
            members.append(GroupMember(address, handle, address in state.admins))
        me = self.c.address
        return GroupInfo(
            row.id,
            state.name,
            state.version,
            state.epoch_hash.hex(),
            tuple(members),
            state.is_admin(me) and not row.left,
            row.left or me not in state.members,
        )

    def all(self) -> list[GroupInfo]:
        out = []
        for gid in self.c.store.group_ids():
            row = self.c.store.get_group(gid)
            if row is not None:
                out.append(self.info(row))
        return sorted(out, key=lambda g: (g.name, g.id))

    # --- admin operations (PROTOCOL Part V §4, §10.2) -----------------------------------------

    async def _resolve_members(self, members: list[str]) -> list[IdentityPublicKey]:
        out: dict[str, IdentityPublicKey] = {}
        for m in members:
            contact = await self.c._sendable_contact(m)
            assert contact.identity_key is not None
            out[contact.address] = IdentityPublicKey.decode(contact.identity_key)
        return list(out.values())

    async def create(self, name: str, members: list[str]) -> GroupInfo:
        identities = await self._resolve_members(members)
        state, update = create_group(self.c.identity, name, identities)
        gid = state.group_id.hex()
        history = GroupHistory.from_genesis(update)
        own = SenderKeyState.generate(state.group_id)
        others = set(state.members) - {self.c.address}
        with self.c.store.transaction():
            self._save(gid, history, own.to_bytes(), others)
        await self._announce(gid, update, state, others, set(), skdm=own)
        row = self._row(gid)
        assert row is not None
        return self.info(row)

    async def change(self, group: str, ops: list[GroupOp]) -> GroupInfo:
        """Sign ``ops`` against our head, check them locally, apply, announce."""
        row = self.resolve(group)
        if row.left:
            raise ClientError("you are no longer a member of this group")
        history = self._history(row)
        old = history.state
        _, update = propose(self.c.identity, old, ops)  # UnauthorizedGroupChange if not admin
        new = history.add(update)
        plan = key_plan(old, new, self.c.address)
        own_key, pending = self._apply_plan(row, plan, new)
        with self.c.store.transaction():
            self._save(row.id, history, own_key, pending)
        joiners = set(plan.added) - {self.c.address}
        targets = (set(new.members) | set(plan.removed)) - {self.c.address}
        await self._announce(row.id, update, new, targets, joiners, welcome_base=old)
        fresh = self._row(row.id)
        assert fresh is not None
        return self.info(fresh)

    async def add(self, group: str, members: list[str]) -> GroupInfo:
        identities = await self._resolve_members(members)
        return await self.change(group, [GroupOp.add(i) for i in identities])

    async def remove(self, group: str, members: list[str]) -> GroupInfo:
        addresses = []
        row = self.resolve(group)
        state = self._history(row).state
        for m in members:
            found = self.c.find_contact(m)
            if found is not None and found.address in state.members:
                addresses.append(found.address)
            else:
                addresses.append((await self.c.contact(m)).address)
        return await self.change(group, [GroupOp.remove(a) for a in addresses])

    async def _announce(
        self,
        gid: str,
        update: GroupUpdate,
        state: GroupState,
        targets: set[str],
        joiners: set[str],
        skdm: SenderKeyState | None = None,
        welcome_base: GroupState | None = None,
    ) -> None:
        """Send ``update`` pairwise to ``targets`` (joiners first, with the welcome: the
        snapshot ``update`` was built on, whose hash it signs, PROTOCOL Part V §5.3; so
        their copy exists before other members' keys reach them)."""
        raw = encoding.b64encode(update.encode())
        snapshot = encoding.b64encode(welcome_base.encode()) if joiners and welcome_base else None
        for address in sorted(targets, key=lambda a: (a not in joiners, a)):
            body: dict[str, Any] = {"id": gid, "update": raw}
            if address in joiners:
                body["welcome"] = snapshot
            if skdm is not None:
                body["skdm"] = encoding.b64encode(skdm.distribution_message())
            key = state.members.get(address)
            try:
                await self._send_pairwise(address, key, UPDATE_TYPE, body)
            except XChatError as exc:
                log.warning("group update not delivered to %s: %s", address, exc)
                continue
            if skdm is not None:
                self._drop_pending(gid, {address})

    def _drop_pending(self, gid: str, done: set[str]) -> None:
        row = self._row(gid)
        if row is None:
            return
        pending = set(json.loads(row.pending)) - done
        with self.c.store.transaction():
            self._save(gid, self._history(row), row.own_key, pending, row.left)

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

    async def _send_pairwise(
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
        row = self.resolve(group)
        if row.left:
            raise ClientError("you are no longer a member of this group")
        gid = row.id
        if msg.type in ("text", "file"):  # quote and timer (PROTOCOL Part VIII)
            msg = await self.c.messaging.prepare_outgoing(f"{GROUP_PEER_PREFIX}{gid}", msg)
        state = self._history(row).state
        me = self.c.address
        others = set(state.members) - {me}
        own_raw, pending = row.own_key, set(json.loads(row.pending))
        if own_raw is None:  # first send, or rotation after a removal (key_plan.rotate)
            own_raw = SenderKeyState.generate(state.group_id).to_bytes()
            pending = set(others)
            with self.c.store.transaction():
                self._save(gid, self._history(row), own_raw, pending)
        own = SenderKeyState.from_bytes(own_raw)
        skdm = encoding.b64encode(own.distribution_message())
        for address in sorted(pending & others):
            try:
                await self._send_pairwise(
                    address, state.members[address], SENDER_KEY_TYPE, {"id": gid, "skdm": skdm}
                )
            except XChatError as exc:
                log.warning("sender key not delivered to %s: %s", address, exc)
                continue
            self._drop_pending(gid, {address})
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
        row = self._row(gid)
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
            row = self._row(gid)
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
                row = self._row(gid)
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

    # --- receiving (PROTOCOL Part V §10.4) ----------------------------------------------------

    def receive_message(
        self, unsealed: sealed.UnsealedMessage, sender: str, env_id: str, t: int, batch: _Batch
    ) -> None:
        """A sealed group message (content type 0x02) from ``sender`` (authenticated by
        sealed sender): find the sender's chain BY THE SEALED SENDER, decrypt, store."""
        try:
            header = parse_header(unsealed.content)
            gid = header.group_id.hex()
            row = self._row(gid)
            if row is None or row.left:
                raise UnknownSenderKey("group message for a group we are not in")
            state = self._history(row).state
            if sender not in state.members:
                raise UnauthorizedGroupChange("group message from a non-member")
            raw = self.c.store.get_sender_key(gid, sender, unsealed.device_id)
            if raw is None:
                raise UnknownSenderKey("no sender key from this member yet")
            record = SenderKeyRecord.from_bytes(raw)
            plaintext = padding.unpad(record.decrypt(unsealed.content))
            self.c.store.put_sender_key(gid, sender, unsealed.device_id, record.to_bytes())
            msg = ct.Content.decode(plaintext)
        except DuplicateMessage:
            return
        except XChatError as exc:
            batch.events.append(ev.DecryptionFailed(env_id, f"{type(exc).__name__}: {exc}", sender))
            return
        rich = self.c.messaging.state  # PROTOCOL Part VIII
        conv = f"{GROUP_PEER_PREFIX}{gid}"
        if not rich.admit(sender, conv):
            return  # a blocked member (or group): dropped
        if rich.handles(msg):
            if self.c.store.mark_seen(group_peer(gid, sender), msg.id, t):
                rich.apply(sender, conv, msg, batch.origin_ms or t, t, batch.events)
            return
        if msg.type not in ("text", "file"):
            return
        if sender == self.c.address:  # sent by our other device: outgoing here too (VII §5.1)
            peer = group_peer(gid, sender)
            if self.c.store.add_message(msg.id, peer, "out", msg.ts, "sent", plaintext, t,
                                        unseen=False):  # fmt: skip
                rich.outgoing(peer, msg, batch.origin_ms or t)
                batch.events.append(
                    MessageSynced(
                        msg.id, conv, msg.text or "", msg.ts, unsealed.device_id, msg.file
                    )
                )
            return
        if not self.c.store.add_message(
            msg.id, group_peer(gid, sender), "in", msg.ts, "received", plaintext, t
        ):
            return
        origin = batch.origin_ms or t
        rich.message_stored(group_peer(gid, sender), sender, msg, origin, t, batch.events)
        contact = self.c.store.get_contact(sender)
        batch.events.append(
            ev.MessageReceived(
                msg.id,
                sender,
                contact.handle if contact is not None else None,
                msg.text or "",
                msg.ts,
                msg.reply_to,
                unsealed.device_id,
                msg.file,
                {"id": gid, "name": state.name},
            )
        )

    def receive_pairwise(
        self, sender: str, msg: ct.Content, device_id: int, t: int, batch: _Batch
    ) -> None:
        """A ``group_update`` or ``sender_key`` content from ``sender`` over a pairwise
        session. Problems become events; the caller's transaction always commits."""
        gid = ""
        try:
            gid = _gid_of(msg.group)
            assert msg.group is not None
            if msg.type == UPDATE_TYPE:
                self._on_update(sender, gid, msg.group, batch)
            skdm = msg.group.get("skdm")
            if skdm is not None:
                self._on_sender_key(sender, device_id, gid, _b64d(skdm, "skdm"))
        except XChatError as exc:
            self._histories.pop(gid, None)  # the store keeps the last committed copy
            batch.events.append(ev.GroupUpdateRejected(gid, sender, f"{type(exc).__name__}: {exc}"))
        except BaseException:
            self._histories.pop(gid, None)
            raise

    def _on_update(self, sender: str, gid: str, body: dict[str, Any], batch: _Batch) -> None:
        me = self.c.address
        row = self._row(gid)
        update = GroupUpdate.decode(_b64d(body.get("update"), "update"))
        if update.group_id.hex() != gid:
            raise ProtocolError("group update is for another group")
        if update.author_address != sender:
            raise UnauthorizedGroupChange("group update not sent by its author")
        welcome = body.get("welcome")
        old: GroupState | None
        if welcome is not None and (row is None or row.left):
            # A welcome is the snapshot the ADD was built on; the ADD signs its hash (§5.3).
            # After leaving, only a welcome past the copy we hold (a re-add) is taken.
            if row is not None and update.parent_version < self._history(row).state.version:
                raise ProtocolError("welcome older than the copy of the group we hold")
            history = accept_welcome(
                _b64d(welcome, "welcome"), update, sender, self.c.identity.public
            )
            old = None
            base_row = GroupRow(gid, b"", None, b"[]", False)
        elif row is None:
            if update.parent_version != 0:
                return  # an update for a group we never joined
            history = GroupHistory.from_genesis(update)
            if me not in history.state.members:
                return
            old = None
            base_row = GroupRow(gid, b"", None, b"[]", False)
        else:
            # A welcome for a group we already hold is refused: only the update is used,
            # checked against our own history (a forged snapshot cannot replace it).
            if row.left:
                return
            history = self._history(row)
            old = history.state
            if sender not in old.members:
                raise UnauthorizedGroupChange("group update from a non-member")
            if update.parent_version == old.version and update.parent_hash == old.digest:
                apply(old, update)  # the rules of §4; raises for a non-admin
            history.add(update)  # the backdating rule of §5.5; may hold it back
            base_row = row
        new = history.state
        if old is not None and new == old:
            return
        plan = key_plan(old, new, me)
        own_key, pending = self._apply_plan(base_row, plan, new)
        self._save(gid, history, own_key, pending, plan.left)
        if plan.left:
            self.c.store.delete_sender_keys(gid)
        batch.events.append(
            ev.GroupChanged(
                gid,
                new.name,
                new.version,
                sender,
                tuple(sorted(plan.added)),
                tuple(sorted(plan.removed)),
                plan.left,
            )
        )

    def _apply_plan(
        self, row: GroupRow, plan: KeyPlan, new: GroupState
    ) -> tuple[bytes | None, set[str]]:
        """Record what ``key_plan`` asks (lazily: done before our next send)."""
        pending = set(json.loads(row.pending)) if row.pending else set()
        own_key = row.own_key
        if plan.left:
            return None, set()
        if plan.rotate:
            own_key = None  # a fresh chain and distribution to all others at next send
        pending |= set(plan.send_key_to)
        pending &= set(new.members) - {self.c.address}
        for address in plan.forget:
            self.c.store.delete_sender_keys(row.id, address)
        return own_key, pending

    def _on_sender_key(self, sender: str, device_id: int, gid: str, skdm: bytes) -> None:
        state = SenderKeyState.from_distribution(skdm)
        if state.group_id.hex() != gid:
            raise ProtocolError("sender key is for another group")
        row = self._row(gid)
        if row is not None:
            if row.left:
                return
            if sender not in self._history(row).state.members:
                raise UnauthorizedGroupChange("sender key from a non-member")
        raw = self.c.store.get_sender_key(gid, sender, device_id)
        if row is None and raw is None:
            # A key for a group we do not hold yet (it may precede its welcome): bounded per
            # sender and in total, so a stranger cannot fill the store (issue #18).
            mine, total = self.c.store.orphan_sender_key_counts(sender)
            if mine >= MAX_ORPHAN_KEYS_PER_SENDER or total >= MAX_ORPHAN_KEYS:
                raise TooLarge("too many sender keys for groups this device does not hold")
        record = SenderKeyRecord.from_bytes(raw) if raw is not None else SenderKeyRecord()
        if record.add(state):
            self.c.store.put_sender_key(gid, sender, device_id, record.to_bytes())


class GroupMethods:
    """The group API of :class:`~xchat.client.client.Client` (mixed in; PROTOCOL Part V §10)."""

    _groups: Groups

    def groups(self) -> list[GroupInfo]:
        """Every group this device holds (including ones we were removed from)."""
        return self._groups.all()

    def group_info(self, group: str) -> GroupInfo:
        """One group by id (hex) or unambiguous name (ClientError otherwise)."""
        return self._groups.info(self._groups.resolve(group))

    async def create_group(self, name: str, members: list[str]) -> GroupInfo:
        """Create a group (we are its admin) with ``members`` (@handles or addresses;
        resolved and their identity keys pinned) and tell each of them pairwise."""
        return await self._groups.create(name, list(members))

    async def add_members(self, group: str, members: list[str]) -> GroupInfo:
        """Admin only: add members; each gets a welcome (current state, no history)."""
        return await self._groups.add(group, list(members))

    async def remove_members(self, group: str, members: list[str]) -> GroupInfo:
        """Admin only (or yourself, to leave): remove members; every remaining member
        rotates its sender key before its next message (PROTOCOL Part V §6)."""
        return await self._groups.remove(group, list(members))

    async def rename_group(self, group: str, name: str) -> GroupInfo:
        return await self._groups.change(group, [GroupOp.rename(name)])

    async def set_group_admin(self, group: str, member: str, admin: bool = True) -> GroupInfo:
        """Admin only: make ``member`` (an address) an admin of the group, or (``admin``
        false) no longer one; signed into the group's state like every change (Part V)."""
        op = GroupOp.promote(member) if admin else GroupOp.demote(member)
        return await self._groups.change(group, [op])

    @property
    def last_upload_bytes(self) -> int:
        """Bytes of the last group send's single upload (shared ciphertext plus one key
        per member device): what ``xchat group send --json`` reports as ``uploaded_bytes``."""
        return self._groups.last_upload_bytes

    async def send_group(self, group: str, text: str, *, reply_to: str | None = None) -> str:
        """Encrypt ``text`` once with our sender key and send it in ONE upload to every
        member device; returns the message id once the server acked."""
        gid = self._groups.resolve(group).id
        msg = ct.text_message(text, now_ms(), reply_to=reply_to)
        msg = ct.Content(
            id=msg.id, type="text", ts=msg.ts, text=text, reply_to=reply_to, group={"id": gid}
        )
        return await self._groups.send(gid, msg)

    async def send_group_file(
        self, group: str, manifest: dict[str, Any], *, text: str | None = None
    ) -> str:
        """Send a file manifest (the blob was uploaded once) to the whole group."""
        gid = self._groups.resolve(group).id
        msg = ct.Content(
            id=ct.new_message_id(),
            type="file",
            ts=now_ms(),
            text=text,
            file=manifest,
            group={"id": gid},
        )
        return await self._groups.send(gid, msg)

    def group_history(self, group: str, limit: int = 100) -> list[Any]:
        """The last ``limit`` messages of a group, oldest first (HistoryItem, peer =
        the sender's address)."""
        gid = self._groups.resolve(group).id
        items = []
        for m in self._groups.c.store.group_history(gid, limit):
            item = _history_item(m)
            items.append(replace(item, peer=m.peer.rsplit(":", 1)[-1]))
        return items


__all__ = [
    "GROUP_CONTENT_TYPE",
    "GROUP_PEER_PREFIX",
    "PAIRWISE_TYPES",
    "GroupInfo",
    "GroupMember",
    "GroupMethods",
    "Groups",
    "group_peer",
]
