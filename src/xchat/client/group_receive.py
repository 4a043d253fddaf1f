"""Receiving group contents: sender-key messages, signed group updates and welcomes, and
sender-key distributions (PROTOCOL.md Part V §10.4).

Everything a peer sends is checked here before it touches the local copy: a message is
decrypted with the chain of its SEALED sender, an update must be signed by its author and
pass the rules of :mod:`xchat.crypto.group`, a welcome is only taken for a group we do not
hold. Problems become events; the caller's transaction always commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xchat import encoding
from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.device_events import MessageSynced
from xchat.client.group_book import GID_RE, UPDATE_TYPE, GroupBook, group_peer
from xchat.client.model import GROUP_PEER_PREFIX, _Batch
from xchat.client.store import GroupRow
from xchat.crypto import padding, sealed
from xchat.crypto.group import (
    GroupHistory,
    GroupState,
    GroupUpdate,
    accept_welcome,
    apply,
    key_plan,
)
from xchat.crypto.sender_keys import SenderKeyRecord, SenderKeyState, parse_header
from xchat.errors import (
    DecodeError,
    DuplicateMessage,
    ProtocolError,
    TooLarge,
    UnauthorizedGroupChange,
    UnknownSenderKey,
    XChatError,
)

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient


#: Sender-key records kept for groups this device does not hold (yet): per sender, in total.
MAX_ORPHAN_KEYS_PER_SENDER = 4
MAX_ORPHAN_KEYS = 64


def _b64d(value: object, what: str) -> bytes:
    """A base64 field of a peer's group content (``xchat.encoding``; DecodeError)."""
    return encoding.b64decode(value, f"group content {what}")


def _gid_of(group: object) -> str:
    if not isinstance(group, dict):
        raise DecodeError("group content has no group object")
    gid = group.get("id")
    if not isinstance(gid, str) or not GID_RE.match(gid):
        raise DecodeError("group id must be 32 lower-case hex digits")
    return gid


class GroupReceiver:
    """The receiving half of :class:`~xchat.client.groups.Groups` (one per client)."""

    def __init__(self, client: SendingClient, book: GroupBook) -> None:
        self.c = client
        self.book = book

    def receive_message(
        self, unsealed: sealed.UnsealedMessage, sender: str, env_id: str, t: int, batch: _Batch
    ) -> None:
        """A sealed group message (content type 0x02) from ``sender`` (authenticated by
        sealed sender): find the sender's chain BY THE SEALED SENDER, decrypt, store."""
        try:
            header = parse_header(unsealed.content)
            gid = header.group_id.hex()
            row = self.book.row(gid)
            if row is None or row.left:
                raise UnknownSenderKey("group message for a group we are not in")
            state = self.book.history(row).state
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
            self.book.forget(gid)  # the store keeps the last committed copy
            batch.events.append(ev.GroupUpdateRejected(gid, sender, f"{type(exc).__name__}: {exc}"))
        except BaseException:
            self.book.forget(gid)
            raise

    def _on_update(self, sender: str, gid: str, body: dict[str, Any], batch: _Batch) -> None:
        me = self.c.address
        row = self.book.row(gid)
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
            if row is not None and update.parent_version < self.book.history(row).state.version:
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
            history = self.book.history(row)
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
        own_key, pending = self.book.apply_plan(base_row, plan, new)
        self.book.save(gid, history, own_key, pending, plan.left)
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

    def _on_sender_key(self, sender: str, device_id: int, gid: str, skdm: bytes) -> None:
        state = SenderKeyState.from_distribution(skdm)
        if state.group_id.hex() != gid:
            raise ProtocolError("sender key is for another group")
        row = self.book.row(gid)
        if row is not None:
            if row.left:
                return
            if sender not in self.book.history(row).state.members:
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
