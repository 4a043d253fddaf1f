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

This module holds the admin operations and the client's group API; the parts live one per
concept below it: :mod:`.group_book` (the local rows), :mod:`.group_send` (sending, key
distribution) and :mod:`.group_receive` (checking and applying what peers send).

Key distribution is lazy, as Signal allows (PROTOCOL Part V §6): after a change we only note
what ``key_plan`` asks for (rotate, send our key to whom) and do it right before our next
group send, so a removal costs the members nothing until they speak.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from xchat import encoding
from xchat.client import content as ct
from xchat.client.group_book import UPDATE_TYPE, GroupBook, GroupInfo
from xchat.client.group_receive import GroupReceiver
from xchat.client.group_send import GroupSender
from xchat.client.model import _Batch, _history_item, now_ms
from xchat.client.store import GroupRow
from xchat.crypto import sealed
from xchat.crypto.group import (
    GroupHistory,
    GroupOp,
    GroupState,
    GroupUpdate,
    create_group,
    key_plan,
    propose,
)
from xchat.crypto.keys import IdentityPublicKey
from xchat.crypto.sender_keys import SenderKeyState
from xchat.errors import ClientError, XChatError

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient

log = logging.getLogger(__name__)


class Groups:
    """Group logic of one :class:`~xchat.client.client.Client` (use through the client).

    A component, not a mixin: it sees its host only through the sending layer
    (:class:`~xchat.client.sending.SendingClient`), and the receiving layer calls
    :meth:`receive_message` / :meth:`receive_pairwise`, so imports point one way."""

    def __init__(self, client: SendingClient) -> None:
        self.c = client
        self.book = GroupBook(client)
        self.sender = GroupSender(client, self.book)
        self.receiver = GroupReceiver(client, self.book)
        client._group_resend = self.sender.resend_row  # retry_pending covers group rows too

    # --- the parts' entry points, for the client's layers --------------------------------------

    def resolve(self, group: str) -> GroupRow:
        """A group by id (hex) or unambiguous name; ClientError otherwise."""
        return self.book.resolve(group)

    def info(self, row: GroupRow) -> GroupInfo:
        return self.book.info(row)

    def all(self) -> list[GroupInfo]:
        return self.book.all()

    async def send(self, group: str, msg: ct.Content, resend: bool = False) -> str:
        """Send ``msg`` to the whole group (PROTOCOL Part V §7); the message id once acked."""
        return await self.sender.send(group, msg, resend)

    def receive_message(
        self, unsealed: sealed.UnsealedMessage, sender: str, env_id: str, t: int, batch: _Batch
    ) -> None:
        """A sealed group message from ``sender`` (see :class:`.GroupReceiver`)."""
        self.receiver.receive_message(unsealed, sender, env_id, t, batch)

    def receive_pairwise(
        self, sender: str, msg: ct.Content, device_id: int, t: int, batch: _Batch
    ) -> None:
        """A ``group_update`` or ``sender_key`` content from ``sender`` (pairwise)."""
        self.receiver.receive_pairwise(sender, msg, device_id, t, batch)

    @property
    def last_upload_bytes(self) -> int:
        """Bytes of the last SEND_MULTI frame (bench and tests read it)."""
        return self.sender.last_upload_bytes

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
            self.book.save(gid, history, own.to_bytes(), others)
        await self._announce(gid, update, state, others, set(), skdm=own)
        row = self.book.row(gid)
        assert row is not None
        return self.info(row)

    async def change(self, group: str, ops: list[GroupOp]) -> GroupInfo:
        """Sign ``ops`` against our head, check them locally, apply, announce."""
        row = self.resolve(group)
        if row.left:
            raise ClientError("you are no longer a member of this group")
        history = self.book.history(row)
        old = history.state
        _, update = propose(self.c.identity, old, ops)  # UnauthorizedGroupChange if not admin
        new = history.add(update)
        plan = key_plan(old, new, self.c.address)
        own_key, pending = self.book.apply_plan(row, plan, new)
        with self.c.store.transaction():
            self.book.save(row.id, history, own_key, pending)
        joiners = set(plan.added) - {self.c.address}
        targets = (set(new.members) | set(plan.removed)) - {self.c.address}
        await self._announce(row.id, update, new, targets, joiners, welcome_base=old)
        fresh = self.book.row(row.id)
        assert fresh is not None
        return self.info(fresh)

    async def add(self, group: str, members: list[str]) -> GroupInfo:
        identities = await self._resolve_members(members)
        return await self.change(group, [GroupOp.add(i) for i in identities])

    async def remove(self, group: str, members: list[str]) -> GroupInfo:
        addresses = []
        row = self.resolve(group)
        state = self.book.history(row).state
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
                await self.sender.send_pairwise(address, key, UPDATE_TYPE, body)
            except XChatError as exc:
                log.warning("group update not delivered to %s: %s", address, exc)
                continue
            if skdm is not None:
                self.book.drop_pending(gid, {address})


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
