"""Group updates on the wire: operations, the signed update and its limits (PROTOCOL Part V §3).

An update is a canonical binary record signed by its author's identity key; it names the
version it was built on and signs the hash of that state (``parent_hash``), so it commits to
the history it was made against (§3.2, §5.5). Applying updates, the round rule and the
history live in :mod:`xchat.crypto.group`, which re-exports everything here.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Protocol

from xchat.crypto.keys import (
    IDENTITY_KEY_LEN,
    IdentityKeyPair,
    IdentityPublicKey,
    decode_address,
    encode_address,
)
from xchat.errors import DecodeError, TooLarge, UnsupportedVersion

# --- constants (PROTOCOL Part V §3.1) ---------------------------------------------------------

#: Largest group (issue requirement). Bounds the work and state one update can cause.
MAX_MEMBERS: Final = 1000
#: Longest group name in UTF-8 bytes (fits the u8 length prefix).
MAX_NAME_BYTES: Final = 128
#: Most operations in one update: a CREATE plus one ADD per other member.
MAX_OPS: Final = MAX_MEMBERS + 1
#: Version byte of an encoded update (0x02: signs the parent state hash; 0x01 updates did not
#: and are read only from old local histories, never from the network) and of a snapshot.
UPDATE_VERSION: Final = 0x02
LEGACY_UPDATE_VERSION: Final = 0x01
GROUP_ID_LEN: Final = 16
HASH_LEN: Final = 32
SIGNATURE_LEN: Final = 64
ADDRESS_HASH_LEN: Final = 20
MAX_VERSION: Final = 0xFFFFFFFF

LABEL_UPDATE_SIGNATURE: Final = b"XChat-v1-group-update"
LABEL_UPDATE_HASH: Final = b"XChat-v1-group-update-hash"
#: Epoch hash "before" the genesis update, and the genesis update's ``parent_hash``.
GENESIS_PARENT_HASH: Final = bytes(HASH_LEN)

_UPDATE_HEAD: Final = struct.Struct(f">B16sI32s{IDENTITY_KEY_LEN}sH")
_LEGACY_HEAD: Final = struct.Struct(f">B16sI{IDENTITY_KEY_LEN}sH")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
#: Largest encoded update: head, CREATE with the longest name, MAX_MEMBERS ADDs, signature
#: (also above MAX_OPS ADDs without a CREATE: 120 + 1001 × 66 + 64 = 66,250).
MAX_UPDATE_LEN: Final = (
    _UPDATE_HEAD.size + 2 + MAX_NAME_BYTES + MAX_MEMBERS * (1 + IDENTITY_KEY_LEN) + SIGNATURE_LEN
)


class ParentState(Protocol):
    """What an update is built on (:class:`xchat.crypto.group.GroupState`)."""

    @property
    def group_id(self) -> bytes: ...
    @property
    def version(self) -> int: ...
    @property
    def digest(self) -> bytes: ...


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
    (own update) or :meth:`decode` (received: parsed *and* signature-checked).

    ``parent_hash`` is :attr:`GroupState.digest` of the state the author built it on
    (:data:`GENESIS_PARENT_HASH` for a genesis): the update commits to that history.
    """

    group_id: bytes
    parent_version: int
    parent_hash: bytes
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
        parent_hash: bytes = GENESIS_PARENT_HASH,
    ) -> GroupUpdate:
        """Encode and sign ``ops`` against the state at ``parent_version`` whose
        :attr:`GroupState.digest` is ``parent_hash`` (use :meth:`against` for a state)."""
        ops = tuple(ops)
        if len(group_id) != GROUP_ID_LEN:
            raise DecodeError("group id must be 16 bytes")
        if len(parent_hash) != HASH_LEN:
            raise DecodeError("group parent hash must be 32 bytes")
        if not 0 <= parent_version <= MAX_VERSION:
            raise DecodeError("group version out of range")
        if not 1 <= len(ops) <= MAX_OPS:
            raise TooLarge(f"a group update has 1-{MAX_OPS} operations")
        body = _UPDATE_HEAD.pack(
            UPDATE_VERSION,
            group_id,
            parent_version,
            parent_hash,
            author.public.encode(),
            len(ops),
        ) + b"".join(op.encode() for op in ops)
        raw = body + author.sign(LABEL_UPDATE_SIGNATURE + body)
        return cls(
            group_id, parent_version, bytes(parent_hash), author.public, ops, raw, _update_hash(raw)
        )

    @classmethod
    def against(
        cls, author: IdentityKeyPair, state: ParentState, ops: Iterable[GroupOp]
    ) -> GroupUpdate:
        """Sign ``ops`` on top of ``state`` (a :class:`~xchat.crypto.group.GroupState`: its
        version and its hash)."""
        return cls.sign(author, state.group_id, state.version, ops, state.digest)

    @classmethod
    def decode(cls, data: bytes) -> GroupUpdate:
        """Parse and verify (DecodeError, UnsupportedVersion, TooLarge, InvalidSignature)."""
        return cls._decode(data, legacy=False)

    @classmethod
    def _decode(cls, data: bytes, *, legacy: bool) -> GroupUpdate:
        """``legacy``: also read a 0x01 update (no parent hash; old local histories only)."""
        if len(data) > MAX_UPDATE_LEN:
            raise TooLarge("group update too large")
        if not data:
            raise DecodeError("group update truncated")
        head = _UPDATE_HEAD
        if data[0] == LEGACY_UPDATE_VERSION and legacy:
            head = _LEGACY_HEAD
        elif data[0] != UPDATE_VERSION:
            raise UnsupportedVersion(f"unknown group update version {data[0]}")
        if len(data) < head.size + SIGNATURE_LEN:
            raise DecodeError("group update truncated")
        if head is _LEGACY_HEAD:
            _, group_id, parent_version, author_raw, n_ops = head.unpack_from(data)
            parent_hash = GENESIS_PARENT_HASH
        else:
            _, group_id, parent_version, parent_hash, author_raw, n_ops = head.unpack_from(data)
        if not 1 <= n_ops <= MAX_OPS:
            raise DecodeError("bad group operation count")
        author = IdentityPublicKey.decode(author_raw)
        body = data[:-SIGNATURE_LEN]
        # signature first: a forgery costs one verify, not up to 1,000 key decodings
        author.verify(data[-SIGNATURE_LEN:], LABEL_UPDATE_SIGNATURE + body)
        offset, ops = head.size, []
        for _ in range(n_ops):
            op, offset = _decode_op(body, offset)
            ops.append(op)
        if offset != len(body):
            raise DecodeError("trailing bytes in group update")
        raw = bytes(data)
        return cls(
            group_id, parent_version, bytes(parent_hash), author, tuple(ops), raw, _update_hash(raw)
        )

    def encode(self) -> bytes:
        """The signed bytes, as sent."""
        return self.raw

    @property
    def author_address(self) -> str:
        return self.author.address()

    @property
    def is_leave(self) -> bool:
        """Only ``REMOVE(author)``: the one change a non-admin member may make."""
        return (
            len(self.ops) == 1
            and self.ops[0].kind == OpType.REMOVE
            and self.ops[0].target == self.author_address
        )


def _update_hash(raw: bytes) -> bytes:
    return hashlib.sha256(LABEL_UPDATE_HASH + raw).digest()
