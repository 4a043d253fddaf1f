"""Group state kept only on members' devices, changed by signed updates (PROTOCOL Part V §3–§6).

The server never sees a group: a group is a :class:`GroupState` (id, name, members with
their identity keys, admins, version, epoch hash) that every member device holds and
changes only by applying a :class:`GroupUpdate` signed by a member's identity key and sent
end-to-end encrypted to the other members (the client sends it over pairwise sessions).

Who may do what (PROTOCOL Part V §4): the creator is the first admin; admins add, remove,
rename, promote and demote; any member may remove itself (leave); a group never has more
than :data:`MAX_MEMBERS` members and never has members without an admin. Every client
checks this itself, so a non-admin's update is rejected everywhere.

Concurrent updates (PROTOCOL Part V §5): every update names the version it was made against
(``parent_version``) and signs the hash of that state (``parent_hash``, the SHA-256 of its
snapshot, which holds the epoch hash): an update commits to the history it was built on.
Versions advance in *rounds*: round ``v`` is the set of all updates with
``parent_version == v``; they are applied to state ``v`` one after another in
ascending order of their update hash, each one re-checked against the state it lands on
and skipped if no longer allowed (that is the rebase); if at least one applied, the result
is state ``v + 1``. :class:`GroupHistory` folds the rounds over the set of updates it has
received, so two devices holding the same updates compute the same state and epoch hash,
whatever order the updates arrived in.

Backdating (PROTOCOL Part V §5.5): which updates a device *holds* is decided on arrival by
:meth:`GroupHistory.add`: an update whose parent is older than the device's head is taken
only from an author who is still an admin at that head (or a member leaving), so a demoted or
removed admin cannot sign against an old round in which it still had the rights; an update
whose parent this device never held waits (bounded) until it does. The welcome of a joiner is
the parent snapshot plus the signed ADD update that names that snapshot's hash (§5.3).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final

from xchat.crypto.group_update import (
    _U16,
    _U32,
    ADDRESS_HASH_LEN,
    GENESIS_PARENT_HASH,
    GROUP_ID_LEN,
    HASH_LEN,
    LABEL_UPDATE_HASH,
    LABEL_UPDATE_SIGNATURE,
    LEGACY_UPDATE_VERSION,
    MAX_MEMBERS,
    MAX_NAME_BYTES,
    MAX_OPS,
    MAX_UPDATE_LEN,
    MAX_VERSION,
    SIGNATURE_LEN,
    UPDATE_VERSION,
    GroupOp,
    GroupUpdate,
    OpType,
    _check_name,
)
from xchat.crypto.keys import IDENTITY_KEY_LEN, IdentityKeyPair, IdentityPublicKey, Rng
from xchat.errors import (
    DecodeError,
    ProtocolError,
    TooLarge,
    UnauthorizedGroupChange,
    UnsupportedVersion,
    XChatError,
)

# --- state, history and welcome constants (PROTOCOL Part V §3.1, §5) ---------------------------

STATE_VERSION: Final = 0x01
#: Version byte of a persisted :class:`GroupHistory` (0x02 adds waiting updates and the
#: state hashes held; 0x01 histories of 0x01 updates are collapsed to their head on load).
HISTORY_VERSION: Final = 0x02
#: Updates held back because their parent is not (yet) a state this device held: bounded so
#: a member cannot grow a device's memory without limit (§5.5).
MAX_WAITING: Final = 256
#: Hashes of states this device has held, kept so an update built on a state that a later
#: concurrent update superseded is still recognised as built on our history (§5.1).
MAX_KNOWN_STATES: Final = 4096
#: Largest concurrent round whose partial states are remembered (2^n − 2 extra folds).
MAX_PARTIAL_ROUND: Final = 4
LABEL_EPOCH: Final = b"XChat-v1-group-epoch"
LABEL_STATE_HASH: Final = b"XChat-v1-group-state-hash"
_STATE_HEAD: Final = struct.Struct(">B16sI32s")


def _epoch_hash(parent: bytes, applied: Iterable[bytes]) -> bytes:
    """``SHA-256(LABEL_EPOCH || parent_epoch_hash || h_1 || ... || h_k)`` (§5.2)."""
    return hashlib.sha256(LABEL_EPOCH + parent + b"".join(applied)).digest()


@dataclass(frozen=True, eq=True)
class GroupState:
    """One version of a group, as every member device holds it (PROTOCOL Part V §3.4).

    ``members`` maps canonical addresses to 65-byte identity keys; treat it as read-only.
    Equal states (including ``epoch_hash``) mean equal histories.
    """

    group_id: bytes
    name: str
    members: Mapping[str, bytes]
    admins: frozenset[str]
    version: int
    epoch_hash: bytes

    __hash__ = None  # type: ignore[assignment]  # holds a dict

    @cached_property
    def digest(self) -> bytes:
        """``SHA-256(LABEL_STATE_HASH || snapshot)`` (§3.4): what an update built on this
        state signs as its ``parent_hash``. The snapshot holds the epoch hash, so this
        commits to the history and to the member list alike."""
        return hashlib.sha256(LABEL_STATE_HASH + self.encode()).digest()

    def is_admin(self, address: str) -> bool:
        return address in self.admins

    def identity(self, address: str) -> IdentityPublicKey:
        """The pinned identity key of a member (KeyError if not a member)."""
        return IdentityPublicKey.decode(self.members[address])

    def encode(self) -> bytes:
        """Snapshot: ``0x01 || group_id || version u32 || epoch_hash || name_len u8 || name ||
        n u16 || (IdentityKey(65) || is_admin u8)*`` sorted by address (§3.4); stored
        locally and sent to a new member in the welcome."""
        name = _check_name(self.name)
        parts = [
            _STATE_HEAD.pack(STATE_VERSION, self.group_id, self.version, self.epoch_hash),
            bytes([len(name)]),
            name,
            _U16.pack(len(self.members)),
        ]
        for address in sorted(self.members):
            parts.append(self.members[address] + bytes([address in self.admins]))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> GroupState:
        """Inverse of :meth:`encode` (DecodeError / UnsupportedVersion / TooLarge)."""
        if len(data) < _STATE_HEAD.size + 1:
            raise DecodeError("group state truncated")
        version_byte, group_id, version, epoch = _STATE_HEAD.unpack_from(data)
        if version_byte != STATE_VERSION:
            raise UnsupportedVersion(f"unknown group state version {version_byte}")
        offset = _STATE_HEAD.size
        length = data[offset]
        raw_name = data[offset + 1 : offset + 1 + length]
        offset += 1 + length
        if len(raw_name) != length or len(data) < offset + 2:
            raise DecodeError("group state truncated")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("group name is not UTF-8") from exc
        _check_name(name)
        (count,) = _U16.unpack_from(data, offset)
        offset += 2
        if count > MAX_MEMBERS:
            raise TooLarge("group state has too many members")
        if len(data) != offset + count * (IDENTITY_KEY_LEN + 1):
            raise DecodeError("group state has the wrong length")
        members: dict[str, bytes] = {}
        admins: set[str] = set()
        previous = ""
        for _ in range(count):
            key = data[offset : offset + IDENTITY_KEY_LEN]
            flag = data[offset + IDENTITY_KEY_LEN]
            offset += IDENTITY_KEY_LEN + 1
            address = IdentityPublicKey.decode(key).address()
            if address <= previous or flag > 1:
                raise DecodeError("group state members not canonical")
            previous = address
            members[address] = bytes(key)
            if flag:
                admins.add(address)
        if members and not admins:
            raise DecodeError("group state has no admin")
        return cls(group_id, name, members, frozenset(admins), version, epoch)


# --- applying updates (PROTOCOL Part V §4) ----------------------------------------------------


@dataclass
class _Draft:
    name: str
    members: dict[str, bytes]
    admins: set[str]


def _apply_ops(state: GroupState | None, update: GroupUpdate) -> _Draft:
    """Check and apply one update's operations atomically (§4.1–§4.2); raises if any
    rule fails, leaving ``state`` untouched."""
    author = update.author_address
    author_key = update.author.encode()
    ops = update.ops
    if state is None:
        if update.parent_version != 0 or ops[0].kind != OpType.CREATE:
            raise ProtocolError("a group starts with a CREATE update at version 0")
        assert ops[0].name is not None
        draft = _Draft(ops[0].name, {author: author_key}, {author})
        ops = ops[1:]
    else:
        if update.group_id != state.group_id:
            raise ProtocolError("group update is for another group")
        if state.members.get(author) != author_key:
            raise UnauthorizedGroupChange("group update author is not a member")
        if author not in state.admins and not update.is_leave:
            raise UnauthorizedGroupChange("only admins may change a group (members may leave)")
        draft = _Draft(state.name, dict(state.members), set(state.admins))
    for op in ops:
        _apply_op(draft, op)
    if len(draft.members) > MAX_MEMBERS:
        raise TooLarge(f"a group has at most {MAX_MEMBERS} members")
    if draft.members and not draft.admins:
        raise UnauthorizedGroupChange("a group with members must keep an admin")
    return draft


def _apply_op(draft: _Draft, op: GroupOp) -> None:
    if op.kind == OpType.CREATE:
        raise ProtocolError("CREATE only in a group's first update")
    if op.kind == OpType.RENAME:
        assert op.name is not None
        draft.name = op.name
    elif op.kind == OpType.ADD:
        assert op.identity is not None
        key = op.identity.encode()
        address = op.identity.address()
        if draft.members.get(address, key) != key:
            raise ProtocolError("member already present with another identity key")
        draft.members[address] = key
    else:
        assert op.target is not None
        if op.kind == OpType.REMOVE:
            draft.members.pop(op.target, None)
            draft.admins.discard(op.target)
        elif op.kind == OpType.PROMOTE:
            if op.target not in draft.members:
                raise ProtocolError("only a member can be promoted")
            draft.admins.add(op.target)
        else:  # DEMOTE
            draft.admins.discard(op.target)


def _finish(
    state: GroupState | None, group_id: bytes, draft: _Draft, applied: list[bytes]
) -> GroupState:
    parent_hash = GENESIS_PARENT_HASH if state is None else state.epoch_hash
    version = 1 if state is None else state.version + 1
    return GroupState(
        group_id,
        draft.name,
        draft.members,
        frozenset(draft.admins),
        version,
        _epoch_hash(parent_hash, applied),
    )


def apply(state: GroupState | None, update: GroupUpdate) -> GroupState:
    """Apply one update to ``state`` (``None`` for the genesis update); a round of one.

    Raises ProtocolError if ``update`` was not built on ``state`` (its ``parent_version`` and
    ``parent_hash``; use :class:`GroupHistory` for concurrent updates),
    UnauthorizedGroupChange for a non-admin or non-member author, TooLarge above
    :data:`MAX_MEMBERS`. Signatures were checked by
    :meth:`GroupUpdate.decode`/:meth:`GroupUpdate.sign`.
    """
    expected = 0 if state is None else state.version
    if update.parent_version != expected:
        raise ProtocolError(
            f"group update is for version {update.parent_version}, state is at {expected}"
        )
    parent_hash = GENESIS_PARENT_HASH if state is None else state.digest
    if update.parent_hash != parent_hash:
        raise ProtocolError("group update was built on another history")
    draft = _apply_ops(state, update)
    return _finish(state, update.group_id, draft, [update.digest])


def apply_round(state: GroupState, updates: Iterable[GroupUpdate]) -> GroupState:
    """Apply round ``state.version`` (§5.1): every update with that parent version, in
    ascending update-hash order, each re-checked against the state it lands on and skipped
    if it fails. Returns ``state`` itself when none applies."""
    current = _Draft(state.name, dict(state.members), set(state.admins))
    applied: list[bytes] = []
    round_updates = {u.digest: u for u in updates if u.parent_version == state.version}
    for digest in sorted(round_updates):
        update = round_updates[digest]
        landing = _finish(state, state.group_id, current, applied)
        try:
            current = _apply_ops(landing, update)
        except XChatError:
            continue
        applied.append(digest)
    if not applied:
        return state
    return _finish(state, state.group_id, current, applied)


class GroupHistory:
    """The set of updates a device holds for one group, and the state they fold to (§5).

    ``base`` is the state this device started from (its genesis, or the parent snapshot in
    its welcome); updates for rounds before it are refused. The fold is a function of the
    held set alone (same set, same state and epoch hash, whatever the arrival order);
    *which* updates are held is decided on arrival by :meth:`add` (the backdating rule).
    """

    def __init__(self, base: GroupState) -> None:
        self.base = base
        self._by_round: dict[int, dict[bytes, GroupUpdate]] = {}
        self._states: list[GroupState] = [base]  # states[k] has version base.version + k
        self._waiting: dict[bytes, GroupUpdate] = {}
        #: state hash -> version, for every state this device has held (bounded)
        self._known: dict[bytes, int] = {}
        self._remember(base)

    @classmethod
    def from_genesis(cls, update: GroupUpdate) -> GroupHistory:
        """Start from a group's first update (as its creator or a founding member)."""
        return cls(apply(None, update))

    @property
    def state(self) -> GroupState:
        """The current head state."""
        return self._states[-1]

    def add(self, update: GroupUpdate) -> GroupState:
        """Add a verified update and return the new head state.

        Refused (not held): another group or a round before our base (ProtocolError); an
        update whose parent is older than our head from an author who is not an admin at the
        head, unless it is that member leaving (UnauthorizedGroupChange: the backdating rule,
        §5.5). Held back: an update for a future round or built on a state we never held
        (waits until that state appears; TooLarge beyond :data:`MAX_WAITING`). An update
        that is held but not applicable stays held: it is re-checked at every refold.
        """
        if update.group_id != self.base.group_id:
            raise ProtocolError("group update is for another group")
        if update.parent_version < self.base.version:
            raise ProtocolError("group update predates this device's copy of the group")
        if self._holds(update) or update.digest in self._waiting:
            return self.state
        if not self._admissible(update):
            if len(self._waiting) >= MAX_WAITING:
                raise TooLarge("too many group updates waiting for their parent state")
            self._waiting[update.digest] = update
            return self.state
        self._insert(update)
        self._admit_waiting()
        return self.state

    def _holds(self, update: GroupUpdate) -> bool:
        return update.digest in self._by_round.get(update.parent_version, {})

    def _admissible(self, update: GroupUpdate) -> bool:
        """True: hold it now; False: wait; raises: refuse it (see :meth:`add`)."""
        head = self.state
        if update.parent_version > head.version:
            return False
        if update.parent_version < head.version:
            author = update.author_address
            leaving = update.is_leave and head.members.get(author) == update.author.encode()
            if author not in head.admins and not leaving:
                raise UnauthorizedGroupChange(
                    "group update for an old round from an author who is no longer an admin"
                )
        # built on a state we have not held (yet): wait for it
        return self._known.get(update.parent_hash) == update.parent_version

    def _insert(self, update: GroupUpdate) -> None:
        self._by_round.setdefault(update.parent_version, {})[update.digest] = update
        position = update.parent_version - self.base.version
        if position < len(self._states):
            del self._states[position + 1 :]
            self._fold()

    def _admit_waiting(self) -> None:
        """Re-check held-back updates after the head or the known states changed."""
        progress = True
        while progress and self._waiting:
            progress = False
            for digest in sorted(self._waiting, key=lambda d: (self._waiting[d].parent_version, d)):
                update = self._waiting[digest]
                try:
                    ready = self._admissible(update)
                except XChatError:
                    del self._waiting[digest]  # refused now that its parent is known
                    continue
                if ready:
                    del self._waiting[digest]
                    self._insert(update)
                    progress = True
                    break

    def _remember(self, state: GroupState) -> None:
        self._known[state.digest] = state.version
        if len(self._known) > MAX_KNOWN_STATES:
            oldest = min(self._known, key=lambda d: (self._known[d], d))
            del self._known[oldest]

    def _fold(self) -> None:
        while True:
            head = self._states[-1]
            updates = self._by_round.get(head.version)
            if not updates:
                return
            after = apply_round(head, updates.values())
            if after is head:
                return
            self._states.append(after)
            self._remember(after)
            self._remember_partial_rounds(head, list(updates.values()))

    def _remember_partial_rounds(self, head: GroupState, updates: list[GroupUpdate]) -> None:
        """Also remember the states a member could have held while only part of a concurrent
        round had reached it, so what it built on them is recognised as our history (§5.1)."""
        if not 2 <= len(updates) <= MAX_PARTIAL_ROUND:
            return
        for mask in range(1, (1 << len(updates)) - 1):
            part = [u for i, u in enumerate(updates) if mask >> i & 1]
            after = apply_round(head, part)
            if after is not head:
                self._remember(after)

    def updates(self) -> list[GroupUpdate]:
        """Every held update, in round then hash order (to re-send or persist)."""
        return [
            self._by_round[v][d] for v in sorted(self._by_round) for d in sorted(self._by_round[v])
        ]

    def to_bytes(self) -> bytes:
        """``0x02 || u32 len || base snapshot || u32 n || (u32 len || update)*n || u32 w ||
        (u32 len || waiting update)*w || u32 k || (u32 version || state hash(32))*k`` (§5.4)."""
        base = self.base.encode()
        parts = [bytes([HISTORY_VERSION]), _U32.pack(len(base)), base]
        for group in (self.updates(), [self._waiting[d] for d in sorted(self._waiting)]):
            parts.append(_U32.pack(len(group)))
            parts.extend(_U32.pack(len(u.raw)) + u.raw for u in group)
        known = sorted(self._known.items(), key=lambda kv: (kv[1], kv[0]))
        parts.append(_U32.pack(len(known)))
        parts.extend(_U32.pack(version) + digest for digest, version in known)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupHistory:
        """Inverse of :meth:`to_bytes`; every update's signature is checked again. The held
        updates are this device's own earlier decisions; waiting ones are re-checked."""
        if not data or data[0] not in (HISTORY_VERSION, LEGACY_UPDATE_VERSION):
            raise UnsupportedVersion("unknown group history version")
        legacy = data[0] == LEGACY_UPDATE_VERSION
        base, offset = _read_chunk(data, 1)
        history = cls(GroupState.decode(base))
        held, offset = _read_updates(data, offset, history.base, legacy=legacy)
        for update in held:
            history._by_round.setdefault(update.parent_version, {})[update.digest] = update
        if legacy:  # 0x01: updates without parent hashes; keep the head, not the rounds
            if offset != len(data):
                raise DecodeError("trailing bytes after group history")
            history._fold()
            return cls(history.state)
        waiting, offset = _read_updates(data, offset, history.base, legacy=False)
        if len(waiting) > MAX_WAITING:
            raise TooLarge("group history holds too many waiting updates")
        if len(data) - offset < 4:
            raise DecodeError("group history truncated")
        (count,) = _U32.unpack_from(data, offset)
        offset += 4
        if count > MAX_KNOWN_STATES or len(data) - offset != count * (4 + HASH_LEN):
            raise DecodeError("group history has the wrong length")
        for _ in range(count):
            (version,) = _U32.unpack_from(data, offset)
            history._known[data[offset + 4 : offset + 4 + HASH_LEN]] = version
            offset += 4 + HASH_LEN
        history._fold()
        history._waiting = {u.digest: u for u in waiting}
        history._admit_waiting()
        return history


def _read_updates(
    data: bytes, offset: int, base: GroupState, *, legacy: bool
) -> tuple[list[GroupUpdate], int]:
    """``u32 n || (u32 len || update)*n`` of one group, none before ``base``."""
    if len(data) - offset < 4:
        raise DecodeError("group history truncated")
    (count,) = _U32.unpack_from(data, offset)
    offset += 4
    out = []
    for _ in range(count):
        raw, offset = _read_chunk(data, offset)
        update = GroupUpdate._decode(raw, legacy=legacy)
        if update.group_id != base.group_id:
            raise DecodeError("group history holds another group's update")
        if update.parent_version < base.version:
            raise DecodeError("group history holds an update before its base")
        out.append(update)
    return out, offset


def _read_chunk(data: bytes, offset: int) -> tuple[bytes, int]:
    """``u32 len || bytes`` at ``offset``."""
    if len(data) - offset < 4:
        raise DecodeError("group history truncated")
    (length,) = _U32.unpack_from(data, offset)
    chunk = data[offset + 4 : offset + 4 + length]
    if len(chunk) != length:
        raise DecodeError("group history truncated")
    return chunk, offset + 4 + length


def accept_welcome(
    snapshot: bytes, update: GroupUpdate, sender_address: str, own: IdentityPublicKey
) -> GroupHistory:
    """Start a history from the welcome an admin sent us when adding us (§5.3).

    ``snapshot`` is the state the ADD ``update`` was built on; the update signs its hash
    (``parent_hash``), so the adding admin vouches for exactly this snapshot. Checks: the
    update was signed over this snapshot, its author is ``sender_address`` (the
    pairwise-authenticated sender), it applies to the snapshot under §4 (so the author is an
    admin there) and it ADDs our identity key. UnauthorizedGroupChange otherwise.
    """
    state = GroupState.decode(snapshot)
    if update.group_id != state.group_id:
        raise UnauthorizedGroupChange("group welcome update is for another group")
    if update.parent_hash != state.digest or update.parent_version != state.version:
        raise UnauthorizedGroupChange("group welcome snapshot is not the one the update signs")
    if update.author_address != sender_address:
        raise UnauthorizedGroupChange("group welcome not signed by its sender")
    if not any(op.kind == OpType.ADD and op.identity == own for op in update.ops):
        raise UnauthorizedGroupChange("group welcome does not add us")
    try:
        apply(state, update)
    except UnauthorizedGroupChange:
        raise
    except XChatError as exc:
        raise UnauthorizedGroupChange(f"group welcome update does not apply: {exc}") from exc
    history = GroupHistory(state)
    history.add(update)
    if own.address() not in history.state.members:
        raise UnauthorizedGroupChange("group welcome does not list us as a member")
    return history


# --- creating a group -------------------------------------------------------------------


def create_group(
    creator: IdentityKeyPair,
    name: str,
    members: Iterable[IdentityPublicKey],
    rng: Rng = os.urandom,
) -> tuple[GroupState, GroupUpdate]:
    """A new group with a random 16-byte id: the creator (admin) plus ``members``.

    Returns the state (version 1) and the genesis update to send to every member.
    """
    ops = [GroupOp.create(name)]
    ops.extend(GroupOp.add(m) for m in members if m != creator.public)
    update = GroupUpdate.sign(creator, rng(GROUP_ID_LEN), 0, ops)
    return apply(None, update), update


def propose(
    author: IdentityKeyPair, state: GroupState, ops: Iterable[GroupOp]
) -> tuple[GroupState, GroupUpdate]:
    """Sign ``ops`` against ``state`` and check them locally first (same errors as
    :func:`apply`), so a client never sends an update its peers will reject."""
    update = GroupUpdate.against(author, state, ops)
    return apply(state, update), update


# --- key rotation (PROTOCOL Part V §6) --------------------------------------------------------


@dataclass(frozen=True)
class KeyPlan:
    """What one device must do with sender keys after its group state moved on.

    ``rotate``: generate a new own sending chain (the old one is no longer used).
    ``send_key_to``: members that must receive our current (after ``rotate``: new)
    distribution message over pairwise sessions. ``forget``: members whose sender keys we
    delete. ``left``: we are no longer a member; delete every key of this group.
    """

    added: frozenset[str]
    removed: frozenset[str]
    rotate: bool
    send_key_to: frozenset[str]
    forget: frozenset[str]
    left: bool


def key_plan(old: GroupState | None, new: GroupState, own_address: str) -> KeyPlan:
    """Sender-key duties for ``own_address`` moving from ``old`` to ``new`` (§6).

    After any removal every remaining member rotates and sends the new key to all other
    remaining members, so a removed member cannot read what follows. A new member gets
    only our *current* chain (never an earlier one), so it cannot read what came before.
    """
    before = set() if old is None else set(old.members)
    after = set(new.members)
    added, removed = frozenset(after - before), frozenset(before - after)
    others = frozenset(after - {own_address})
    if own_address not in after:
        return KeyPlan(added, removed, False, frozenset(), frozenset(before), True)
    if own_address not in before or removed:
        return KeyPlan(added, removed, True, others, removed, False)
    return KeyPlan(added, removed, False, added - {own_address}, removed, False)


__all__ = [
    "ADDRESS_HASH_LEN",
    "GENESIS_PARENT_HASH",
    "GROUP_ID_LEN",
    "HASH_LEN",
    "LABEL_EPOCH",
    "LABEL_STATE_HASH",
    "LABEL_UPDATE_HASH",
    "LABEL_UPDATE_SIGNATURE",
    "MAX_MEMBERS",
    "MAX_NAME_BYTES",
    "MAX_OPS",
    "MAX_UPDATE_LEN",
    "MAX_VERSION",
    "MAX_WAITING",
    "SIGNATURE_LEN",
    "UPDATE_VERSION",
    "GroupHistory",
    "GroupOp",
    "GroupState",
    "GroupUpdate",
    "KeyPlan",
    "OpType",
    "accept_welcome",
    "apply",
    "apply_round",
    "create_group",
    "key_plan",
    "propose",
]
