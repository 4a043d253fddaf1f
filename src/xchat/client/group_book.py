"""The groups one device holds: its copy of each group's signed history, kept sealed in
the local store (tables ``groups`` and ``group_sender_keys``; PROTOCOL.md Part V §10.1).

The server never holds any of it. :class:`GroupBook` is the one place that reads and writes
those rows (and caches the parsed :class:`~xchat.crypto.group.GroupHistory`), so the
sending side (:mod:`.group_send`), the receiving side (:mod:`.group_receive`) and the admin
operations (:mod:`.groups`) share one view of a group without importing each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xchat.client.model import GROUP_PEER_PREFIX, now_ms
from xchat.client.store import GroupRow
from xchat.crypto.group import GroupHistory, GroupState, KeyPlan
from xchat.crypto.sender_keys import SEALED_CONTENT_TYPE
from xchat.errors import ClientError

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient

#: Sealed inner content type of a group message (a sender-key message), PROTOCOL Part V §2.1.
GROUP_CONTENT_TYPE = SEALED_CONTENT_TYPE
UPDATE_TYPE = "group_update"
SENDER_KEY_TYPE = "sender_key"
PAIRWISE_TYPES = (UPDATE_TYPE, SENDER_KEY_TYPE)
GID_RE = re.compile(r"^[0-9a-f]{32}$")


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


class GroupBook:
    """The local group rows of one client, by id or unambiguous name."""

    def __init__(self, client: SendingClient) -> None:
        self.c = client
        self._histories: dict[str, GroupHistory] = {}

    def row(self, gid: str) -> GroupRow | None:
        return self.c.store.get_group(gid)

    def history(self, row: GroupRow) -> GroupHistory:
        h = self._histories.get(row.id)
        if h is None:
            h = self._histories[row.id] = GroupHistory.from_bytes(row.history)
        return h

    def save(
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
        if GID_RE.match(key.lower()):
            row = store.get_group(key.lower())
            if row is not None:
                return row
        matches = []
        for gid in store.group_ids():
            row = store.get_group(gid)
            if row is not None and self.history(row).state.name == key:
                matches.append(row)
        if not matches:
            raise ClientError(f"no group {group!r}")
        live = [r for r in matches if not r.left] if len(matches) > 1 else matches
        if len(live) != 1:
            ids = ", ".join(r.id for r in (live or matches))
            raise ClientError(f"group name {group!r} is ambiguous ({ids}); use the group id")
        return live[0]

    def info(self, row: GroupRow) -> GroupInfo:
        state = self.history(row).state
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

    def drop_pending(self, gid: str, done: set[str]) -> None:
        row = self.row(gid)
        if row is None:
            return
        pending = set(json.loads(row.pending)) - done
        with self.c.store.transaction():
            self.save(gid, self.history(row), row.own_key, pending, row.left)

    def apply_plan(
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

    def forget(self, gid: str) -> None:
        """Drop the cached history of ``gid``: the store keeps the last committed copy."""
        self._histories.pop(gid, None)
