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
(``parent_version``). Versions advance in *rounds*: round ``v`` is the set of all updates
with ``parent_version == v``; they are applied to state ``v`` one after another in
ascending order of their update hash, each one re-checked against the state it lands on
and skipped if no longer allowed (that is the rebase); if at least one applied, the result
is state ``v + 1``. :class:`GroupHistory` folds the rounds over the set of updates it has
received, so two devices holding the same updates compute the same state and epoch hash,
whatever order the updates arrived in.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from xchat.crypto.keys import (
    IDENTITY_KEY_LEN,
    IdentityKeyPair,
    IdentityPublicKey,
    Rng,
    decode_address,
    encode_address,
)
from xchat.errors import (
    DecodeError,
    ProtocolError,
    TooLarge,
    UnauthorizedGroupChange,
    UnsupportedVersion,
    XChatError,
)

# --- constants (PROTOCOL Part V §3.1) ---------------------------------------------------------

#: Largest group (issue requirement). Bounds the work and state one update can cause.
MAX_MEMBERS: Final = 1000
#: Longest group name in UTF-8 bytes (fits the u8 length prefix).
MAX_NAME_BYTES: Final = 128
#: Most operations in one update: a CREATE plus one ADD per other member.
MAX_OPS: Final = MAX_MEMBERS + 1
#: Version byte of an encoded update and of an encoded state snapshot.
UPDATE_VERSION: Final = 0x01
STATE_VERSION: Final = 0x01
GROUP_ID_LEN: Final = 16
HASH_LEN: Final = 32
SIGNATURE_LEN: Final = 64
ADDRESS_HASH_LEN: Final = 20
MAX_VERSION: Final = 0xFFFFFFFF

LABEL_UPDATE_SIGNATURE: Final = b"XChat-v1-group-update"
LABEL_UPDATE_HASH: Final = b"XChat-v1-group-update-hash"
LABEL_EPOCH: Final = b"XChat-v1-group-epoch"
#: Epoch hash "before" the genesis update.
GENESIS_PARENT_HASH: Final = bytes(HASH_LEN)

_UPDATE_HEAD: Final = struct.Struct(f">B16sI{IDENTITY_KEY_LEN}sH")
_STATE_HEAD: Final = struct.Struct(">B16sI32s")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
#: Largest encoded update: head, CREATE with the longest name, MAX_MEMBERS ADDs, signature.
MAX_UPDATE_LEN: Final = (
    _UPDATE_HEAD.size + 2 + MAX_NAME_BYTES + MAX_MEMBERS * (1 + IDENTITY_KEY_LEN) + SIGNATURE_LEN
)


class OpType(IntEnum):
    """Operation type bytes (PROTOCOL Part V §3.3)."""

    CREATE = 0x01
    ADD = 0x02
    REMOVE = 0x03
    RENAME = 0x04
    PROMOTE = 0x05
    DEMOTE = 0x06


_TARGET_OPS: Final = (OpType.REMOVE, OpType.PROMOTE, OpType.DEMOTE)
_NAME_OPS: Final = (OpType.CREATE, OpType.RENAME)


def _check_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME_BYTES:
        raise DecodeError(f"group name must be 1-{MAX_NAME_BYTES} UTF-8 bytes")
    return raw


@dataclass(frozen=True)
class GroupOp:
    """One change inside an update. Build with the class methods."""

    kind: OpType
    identity: IdentityPublicKey | None = None  # ADD
    target: str | None = None  # REMOVE / PROMOTE / DEMOTE: canonical address
    name: str | None = None  # CREATE / RENAME

    @classmethod
    def create(cls, name: str) -> GroupOp:
        _check_name(name)
        return cls(OpType.CREATE, name=name)

    @classmethod
    def add(cls, identity: IdentityPublicKey) -> GroupOp:
        return cls(OpType.ADD, identity=identity)

    @classmethod
    def remove(cls, address: str) -> GroupOp:
        return cls(OpType.REMOVE, target=encode_address(decode_address(address)))

    @classmethod
    def rename(cls, name: str) -> GroupOp:
        _check_name(name)
        return cls(OpType.RENAME, name=name)

    @classmethod
    def promote(cls, address: str) -> GroupOp:
        return cls(OpType.PROMOTE, target=encode_address(decode_address(address)))

    @classmethod
    def demote(cls, address: str) -> GroupOp:
        return cls(OpType.DEMOTE, target=encode_address(decode_address(address)))

    def encode(self) -> bytes:
        """``type u8 || body`` (PROTOCOL Part V §3.3)."""
        head = bytes([self.kind])
        if self.kind == OpType.ADD:
            assert self.identity is not None
            return head + self.identity.encode()
        if self.kind in _TARGET_OPS:
            assert self.target is not None
            return head + decode_address(self.target)
        assert self.name is not None
        raw = _check_name(self.name)
        return head + bytes([len(raw)]) + raw


def _decode_op(data: bytes, offset: int) -> tuple[GroupOp, int]:
    if offset >= len(data):
        raise DecodeError("group update truncated")
    try:
        kind = OpType(data[offset])
    except ValueError as exc:
        raise UnsupportedVersion(f"unknown group operation {data[offset]}") from exc
    offset += 1
    if kind == OpType.ADD:
        raw = data[offset : offset + IDENTITY_KEY_LEN]
        return GroupOp(kind, identity=IdentityPublicKey.decode(raw)), offset + IDENTITY_KEY_LEN
    if kind in _TARGET_OPS:
        raw = data[offset : offset + ADDRESS_HASH_LEN]
        if len(raw) != ADDRESS_HASH_LEN:
            raise DecodeError("group update truncated")
        return GroupOp(kind, target=encode_address(raw)), offset + ADDRESS_HASH_LEN
    if offset >= len(data):
        raise DecodeError("group update truncated")
    length = data[offset]
    raw = data[offset + 1 : offset + 1 + length]
    if len(raw) != length:
        raise DecodeError("group update truncated")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("group name is not UTF-8") from exc
    _check_name(name)
    return GroupOp(kind, name=name), offset + 1 + length


@dataclass(frozen=True)
class GroupUpdate:
    """A signed, encoded change to a group (PROTOCOL Part V §3.2). Construct with :meth:`sign`
    (own update) or :meth:`decode` (received: parsed *and* signature-checked)."""

    group_id: bytes
    parent_version: int
    author: IdentityPublicKey
    ops: tuple[GroupOp, ...]
    raw: bytes = field(repr=False)
    digest: bytes = field(repr=False)  # update hash: identity and round order

    @classmethod
    def sign(
        cls,
        author: IdentityKeyPair,
        group_id: bytes,
        parent_version: int,
        ops: Iterable[GroupOp],
    ) -> GroupUpdate:
        """Encode and sign ``ops`` against the state at ``parent_version``."""
        ops = tuple(ops)
        if len(group_id) != GROUP_ID_LEN:
            raise DecodeError("group id must be 16 bytes")
        if not 0 <= parent_version <= MAX_VERSION:
            raise DecodeError("group version out of range")
        if not 1 <= len(ops) <= MAX_OPS:
            raise TooLarge(f"a group update has 1-{MAX_OPS} operations")
        body = _UPDATE_HEAD.pack(
            UPDATE_VERSION, group_id, parent_version, author.public.encode(), len(ops)
        ) + b"".join(op.encode() for op in ops)
        raw = body + author.sign(LABEL_UPDATE_SIGNATURE + body)
        return cls(group_id, parent_version, author.public, ops, raw, _update_hash(raw))

    @classmethod
    def decode(cls, data: bytes) -> GroupUpdate:
        """Parse and verify (DecodeError, UnsupportedVersion, TooLarge, InvalidSignature)."""
        if len(data) > MAX_UPDATE_LEN:
            raise TooLarge("group update too large")
        if len(data) < _UPDATE_HEAD.size + SIGNATURE_LEN:
            raise DecodeError("group update truncated")
        version, group_id, parent_version, author_raw, n_ops = _UPDATE_HEAD.unpack_from(data)
        if version != UPDATE_VERSION:
            raise UnsupportedVersion(f"unknown group update version {version}")
        if not 1 <= n_ops <= MAX_OPS:
            raise DecodeError("bad group operation count")
        author = IdentityPublicKey.decode(author_raw)
        body = data[:-SIGNATURE_LEN]
        # signature first: a forgery costs one verify, not up to 1,000 key decodings
        author.verify(data[-SIGNATURE_LEN:], LABEL_UPDATE_SIGNATURE + body)
        offset, ops = _UPDATE_HEAD.size, []
        for _ in range(n_ops):
            op, offset = _decode_op(body, offset)
            ops.append(op)
        if offset != len(body):
            raise DecodeError("trailing bytes in group update")
        raw = bytes(data)
        return cls(group_id, parent_version, author, tuple(ops), raw, _update_hash(raw))

    def encode(self) -> bytes:
        """The signed bytes, as sent."""
        return self.raw

    @property
    def author_address(self) -> str:
        return self.author.address()


def _update_hash(raw: bytes) -> bytes:
    return hashlib.sha256(LABEL_UPDATE_HASH + raw).digest()


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

    def is_member(self, address: str) -> bool:
        return address in self.members

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
        if author not in state.admins and (
            len(ops) != 1 or ops[0].kind != OpType.REMOVE or ops[0].target != author
        ):
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

    Raises ProtocolError if ``update.parent_version`` is not ``state.version`` (use
    :class:`GroupHistory` for concurrent updates), UnauthorizedGroupChange for a non-admin
    or non-member author, TooLarge above :data:`MAX_MEMBERS`. Signatures were checked by
    :meth:`GroupUpdate.decode`/:meth:`GroupUpdate.sign`.
    """
    expected = 0 if state is None else state.version
    if update.parent_version != expected:
        raise ProtocolError(
            f"group update is for version {update.parent_version}, state is at {expected}"
        )
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

    ``base`` is the state this device started from (its genesis, or the snapshot in its
    welcome); updates for rounds before it are refused. Adding the same update twice is a
    no-op; adding updates in any order yields the same :attr:`state`.
    """

    def __init__(self, base: GroupState) -> None:
        self.base = base
        self._by_round: dict[int, dict[bytes, GroupUpdate]] = {}
        self._states: list[GroupState] = [base]  # states[k] has version base.version + k

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

        ProtocolError for another group or a round before our base. An update that is not
        (yet) applicable stays held: it is re-checked whenever its round is refolded.
        """
        if update.group_id != self.base.group_id:
            raise ProtocolError("group update is for another group")
        if update.parent_version < self.base.version:
            raise ProtocolError("group update predates this device's copy of the group")
        round_set = self._by_round.setdefault(update.parent_version, {})
        if update.digest in round_set:
            return self.state
        round_set[update.digest] = update
        position = update.parent_version - self.base.version
        if position < len(self._states):
            del self._states[position + 1 :]
            self._fold()
        return self.state

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

    def updates(self) -> list[GroupUpdate]:
        """Every held update, in round then hash order (to re-send or persist)."""
        return [
            self._by_round[v][d] for v in sorted(self._by_round) for d in sorted(self._by_round[v])
        ]

    def to_bytes(self) -> bytes:
        """``0x01 || u32 len || base snapshot || u32 n || (u32 len || update)*`` (§5.4)."""
        base = self.base.encode()
        parts = [bytes([STATE_VERSION]), _U32.pack(len(base)), base]
        held = self.updates()
        parts.append(_U32.pack(len(held)))
        for update in held:
            parts.append(_U32.pack(len(update.raw)) + update.raw)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupHistory:
        """Inverse of :meth:`to_bytes`; every update's signature is checked again."""
        if not data or data[0] != STATE_VERSION:
            raise UnsupportedVersion("unknown group history version")
        base, offset = _read_chunk(data, 1)
        if len(data) - offset < 4:
            raise DecodeError("group history truncated")
        (count,) = _U32.unpack_from(data, offset)
        offset += 4
        history = cls(GroupState.decode(base))
        for _ in range(count):
            raw, offset = _read_chunk(data, offset)
            update = GroupUpdate.decode(raw)
            if update.group_id != history.base.group_id:
                raise DecodeError("group history holds another group's update")
            if update.parent_version < history.base.version:
                raise DecodeError("group history holds an update before its base")
            history._by_round.setdefault(update.parent_version, {})[update.digest] = update
        if offset != len(data):
            raise DecodeError("trailing bytes after group history")
        history._fold()
        return history


def _read_chunk(data: bytes, offset: int) -> tuple[bytes, int]:
    """``u32 len || bytes`` at ``offset``."""
    if len(data) - offset < 4:
        raise DecodeError("group history truncated")
    (length,) = _U32.unpack_from(data, offset)
    chunk = data[offset + 4 : offset + 4 + length]
    if len(chunk) != length:
        raise DecodeError("group history truncated")
    return chunk, offset + 4 + length


def accept_welcome(snapshot: bytes, sender_address: str, own_address: str) -> GroupHistory:
    """Start a history from the snapshot an admin sent us when adding us (§5.3).

    ``sender_address`` is the pairwise-authenticated sender of the welcome; it must be an
    admin of the snapshot, and we must be a member (UnauthorizedGroupChange otherwise).
    """
    state = GroupState.decode(snapshot)
    if sender_address not in state.admins:
        raise UnauthorizedGroupChange("group welcome not sent by an admin of the group")
    if own_address not in state.members:
        raise UnauthorizedGroupChange("group welcome does not list us as a member")
    return GroupHistory(state)


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
    update = GroupUpdate.sign(author, state.group_id, state.version, ops)
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
    "MAX_MEMBERS",
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
