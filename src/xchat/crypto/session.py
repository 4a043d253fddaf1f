"""Pairwise sessions: PQXDH setup + Double Ratchet, the API the client uses.

PROTOCOL.md Part II §5–§6. Flow (PQXDH rev. 3 §3, Double Ratchet §3):

1. Alice: ``Session.initiate(own, bundle)`` verifies Bob's bundle, runs PQXDH and starts
   her ratchet. Until Bob's first reply arrives, every ``encrypt`` yields a PreKey message:
   the PQXDH initial data (``IK_A``, ``EK_A``, prekey ids, KEM ciphertext) wrapping a normal
   ratchet message, so any of her first messages can start the session on Bob's side.
2. Bob: ``Session.respond(own, prekeys, message)`` looks up his prekeys by id, runs PQXDH,
   starts his ratchet and decrypts the wrapped message. It returns which prekeys were used so
   the caller deletes the one-time ones (PQXDH §3.4).
3. Both then ``encrypt``/``decrypt`` normal messages; ``to_bytes``/``from_bytes`` persist
   the whole state between messages.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from xchat.crypto import constants as C
from xchat.crypto import pqxdh
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey
from xchat.crypto.prekeys import PreKeyBundle, PreKeyStore
from xchat.crypto.ratchet import HEADER_LEN, RatchetState
from xchat.errors import (
    DecodeError,
    DecryptionError,
    TooLarge,
    UnknownPreKey,
    UnsupportedVersion,
)

Rng = Callable[[int], bytes]


class MessageKind(enum.IntEnum):
    """The type byte of a session message (PROTOCOL Part II §5)."""

    NORMAL = C.MESSAGE_TYPE_NORMAL
    PREKEY = C.MESSAGE_TYPE_PREKEY


NORMAL = MessageKind.NORMAL
PREKEY = MessageKind.PREKEY

#: version, type, IK_A(65), EK_A(32), spk id, kem id, otk flag, otk id, KEM ciphertext
_PREKEY_HEAD = struct.Struct(">BB65s32sIIBI1568s")
PREKEY_HEADER_LEN = _PREKEY_HEAD.size  # 1680
_MIN_NORMAL_LEN = HEADER_LEN + C.AES_TAG_LEN
_SESSION_HEAD = struct.Struct(">BB65s65s32s32s")
_FLAG_INITIATOR = 0x01
_FLAG_PENDING = 0x02


def message_kind(data: bytes) -> MessageKind:
    """Classify a session message by its version and type bytes.

    UnsupportedVersion for an unknown version, DecodeError for an unknown type or empty input.
    """
    if len(data) < 2:
        raise DecodeError("truncated message")
    if data[0] != C.MESSAGE_VERSION:
        raise UnsupportedVersion(f"unknown message version {data[0]}")
    if data[1] == C.MESSAGE_TYPE_NORMAL:
        return MessageKind.NORMAL
    if data[1] == C.MESSAGE_TYPE_PREKEY:
        return MessageKind.PREKEY
    raise DecodeError(f"unknown message type {data[1]}")


@dataclass(frozen=True)
class PreKeyMessage:
    """A parsed PreKey message (PROTOCOL Part II §5.2). Nothing in it is authenticated yet."""

    identity_key: IdentityPublicKey
    base_key: bytes
    signed_prekey_id: int
    kem_prekey_id: int
    one_time_prekey_id: int | None
    kem_ciphertext: bytes
    message: bytes  # the wrapped normal message
    header_digest: bytes  # SHA-256 of the 1680-byte PQXDH part: names this PQXDH run

    @classmethod
    def parse(cls, data: bytes) -> PreKeyMessage:
        """Check layout and sizes; DecodeError / UnsupportedVersion / TooLarge."""
        if len(data) > C.MAX_MESSAGE_LEN:
            raise TooLarge("message exceeds MAX_MESSAGE_LEN")
        if message_kind(data) != MessageKind.PREKEY:
            raise DecodeError("not a PreKey message")
        if len(data) < PREKEY_HEADER_LEN + _MIN_NORMAL_LEN:
            raise DecodeError("truncated PreKey message")
        _, _, ik, ek, spk_id, kem_id, otk_flag, otk_id, ct = _PREKEY_HEAD.unpack_from(data)
        if otk_flag not in (0, 1) or (otk_flag == 0 and otk_id != 0):
            raise DecodeError("bad one-time prekey field")
        return cls(
            identity_key=IdentityPublicKey.decode(ik),
            base_key=ek,
            signed_prekey_id=spk_id,
            kem_prekey_id=kem_id,
            one_time_prekey_id=otk_id if otk_flag else None,
            kem_ciphertext=ct,
            message=bytes(data[PREKEY_HEADER_LEN:]),
            header_digest=_digest(bytes(data[:PREKEY_HEADER_LEN])),
        )


def _digest(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def _prekey_head(own: IdentityPublicKey, keys: pqxdh.InitiatorKeys) -> bytes:
    otk = keys.one_time_prekey_id
    return _PREKEY_HEAD.pack(
        C.MESSAGE_VERSION,
        C.MESSAGE_TYPE_PREKEY,
        own.encode(),
        keys.base_key,
        keys.signed_prekey_id,
        keys.kem_prekey_id,
        0 if otk is None else 1,
        0 if otk is None else otk,
        keys.kem_ciphertext,
    )


@dataclass(frozen=True)
class UsedPreKeys:
    """Which of Bob's prekeys a PreKey message consumed (PQXDH §3.4: delete one-time keys).

    Delete ``one_time_prekey_id`` if not None, and ``kem_prekey_id`` unless
    ``kem_last_resort``.
    """

    signed_prekey_id: int
    kem_prekey_id: int
    kem_last_resort: bool
    one_time_prekey_id: int | None


class Session:
    """A pairwise session with one remote device."""

    __slots__ = (
        "_pending",
        "_ratchet",
        "base_key",
        "initiator",
        "local_identity",
        "remote_identity",
        "setup_digest",
    )

    def __init__(
        self,
        *,
        ratchet: RatchetState,
        local_identity: IdentityPublicKey,
        remote_identity: IdentityPublicKey,
        initiator: bool,
        base_key: bytes,
        setup_digest: bytes,
        pending: bytes | None,
    ) -> None:
        self._ratchet = ratchet
        self.local_identity = local_identity
        self.remote_identity = remote_identity
        self.initiator = initiator
        self.base_key = base_key  # EK_A of the PQXDH run that made this session
        self.setup_digest = setup_digest  # SHA-256 of that run's PreKey header (1680 bytes)
        self._pending = pending  # PreKey header to prepend until the first reply

    # -- setup --

    @classmethod
    def initiate(cls, own: IdentityKeyPair, bundle: PreKeyBundle, rng: Rng = os.urandom) -> Session:
        """Alice: PQXDH to ``bundle`` (signatures checked) and start the ratchet."""
        keys = pqxdh.initiate(own, bundle, rng)
        ratchet = RatchetState.init_alice(
            keys.shared_secret, keys.associated_data, keys.signed_prekey, rng
        )
        head = _prekey_head(own.public, keys)
        return cls(
            ratchet=ratchet,
            local_identity=own.public,
            remote_identity=bundle.identity_key,
            initiator=True,
            base_key=keys.base_key,
            setup_digest=_digest(head),
            pending=head,
        )

    @classmethod
    def respond(
        cls, own: IdentityKeyPair, prekeys: PreKeyStore, message: bytes, rng: Rng = os.urandom
    ) -> tuple[Session, bytes, UsedPreKeys]:
        """Bob: accept a PreKey message; returns (session, plaintext, used prekeys).

        UnknownPreKey if a named prekey is gone; DecryptionError if the message does not
        authenticate under the derived keys (wrong identity, forged or corrupted fields).
        """
        msg = PreKeyMessage.parse(message)
        signed = prekeys.signed_prekey(msg.signed_prekey_id)
        kem = prekeys.kem_prekey(msg.kem_prekey_id)
        one_time = None
        if msg.one_time_prekey_id is not None:
            one_time = prekeys.one_time_prekey(msg.one_time_prekey_id)
            if one_time is None:
                raise UnknownPreKey("unknown one-time prekey")
        if signed is None:
            raise UnknownPreKey("unknown signed prekey")
        if kem is None:
            raise UnknownPreKey("unknown KEM prekey")
        secret, ad = pqxdh.respond(
            own, msg.identity_key, msg.base_key, msg.kem_ciphertext, signed, kem, one_time
        )
        ratchet = RatchetState.init_bob(secret, ad, signed.private_key)
        plaintext = ratchet.decrypt(msg.message, rng)
        session = cls(
            ratchet=ratchet,
            local_identity=own.public,
            remote_identity=msg.identity_key,
            initiator=False,
            base_key=msg.base_key,
            setup_digest=msg.header_digest,
            pending=None,
        )
        used = UsedPreKeys(signed.id, kem.id, kem.last_resort, msg.one_time_prekey_id)
        return session, plaintext, used

    # -- messages --

    @property
    def awaiting_reply(self) -> bool:
        """True while our messages are still PreKey messages (no reply received yet)."""
        return self._pending is not None

    def encrypt(self, plaintext: bytes, rng: Rng | None = None) -> bytes:
        """Encrypt one message. ``rng`` is accepted for API uniformity and unused: sending
        needs no randomness (new ratchet keys are made when a reply is received)."""
        if len(plaintext) > C.MAX_MESSAGE_LEN - PREKEY_HEADER_LEN - _MIN_NORMAL_LEN:
            raise TooLarge("plaintext too large for one message")
        body = self._ratchet.encrypt(plaintext)
        pending = self._pending
        return body if pending is None else pending + body

    def decrypt(self, message: bytes, rng: Rng = os.urandom) -> bytes:
        """Decrypt a normal message, or a PreKey message of the PQXDH run that created this
        session (one of Alice's first messages arriving after the one that set it up): its
        PQXDH part must be byte-identical (same SHA-256). State is unchanged on any error."""
        if (
            len(message) >= 2
            and message[1] == C.MESSAGE_TYPE_PREKEY
            and message[0] == C.MESSAGE_VERSION
        ):
            msg = PreKeyMessage.parse(message)
            if self.initiator or msg.header_digest != self.setup_digest:
                raise DecryptionError("PreKey message for another session")
            return self._ratchet.decrypt(msg.message, rng)
        plaintext = self._ratchet.decrypt(message, rng)
        self._pending = None
        return plaintext

    def matches_prekey_message(self, message: bytes) -> bool:
        """True when ``message`` is a PreKey message of the PQXDH run behind this session,
        so ``decrypt`` (not ``respond``) is the right call."""
        try:
            msg = PreKeyMessage.parse(message)
        except DecodeError:
            return False
        return not self.initiator and msg.header_digest == self.setup_digest

    # -- persistence (PROTOCOL Part II §6) --

    def to_bytes(self) -> bytes:
        """Versioned record: see PROTOCOL Part II §6.1."""
        flags = (_FLAG_INITIATOR if self.initiator else 0) | (
            _FLAG_PENDING if self._pending is not None else 0
        )
        head = _SESSION_HEAD.pack(
            C.SESSION_RECORD_VERSION,
            flags,
            self.local_identity.encode(),
            self.remote_identity.encode(),
            self.base_key,
            self.setup_digest,
        )
        return head + (self._pending or b"") + self._ratchet.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """Inverse of :meth:`to_bytes`. DecodeError / UnsupportedVersion / TooLarge."""
        if len(data) > C.MAX_SESSION_RECORD_LEN:
            raise TooLarge("session record too large")
        if len(data) < 1:
            raise DecodeError("empty session record")
        if data[0] != C.SESSION_RECORD_VERSION:
            raise UnsupportedVersion(f"unknown session record version {data[0]}")
        if len(data) < _SESSION_HEAD.size:
            raise DecodeError("truncated session record")
        _, flags, local_raw, remote_raw, base_key, digest = _SESSION_HEAD.unpack_from(data)
        if flags & ~(_FLAG_INITIATOR | _FLAG_PENDING):
            raise DecodeError("unknown session flags")
        initiator = bool(flags & _FLAG_INITIATOR)
        if flags & _FLAG_PENDING and not initiator:
            raise DecodeError("only an initiator can have a pending PreKey header")
        local = IdentityPublicKey.decode(local_raw)
        remote = IdentityPublicKey.decode(remote_raw)
        pos = _SESSION_HEAD.size
        pending = None
        if flags & _FLAG_PENDING:
            pending = bytes(data[pos : pos + PREKEY_HEADER_LEN])
            if len(pending) != PREKEY_HEADER_LEN or pending[:2] != bytes(
                [C.MESSAGE_VERSION, C.MESSAGE_TYPE_PREKEY]
            ):
                raise DecodeError("bad pending PreKey header")
            pos += PREKEY_HEADER_LEN
        ad = (local.encode() + remote.encode()) if initiator else (remote.encode() + local.encode())
        ratchet, used = RatchetState.from_bytes(data[pos:], ad)
        if pos + used != len(data):
            raise DecodeError("trailing bytes after session record")
        return cls(
            ratchet=ratchet,
            local_identity=local,
            remote_identity=remote,
            initiator=initiator,
            base_key=base_key,
            setup_digest=digest,
            pending=pending,
        )
