"""Sender keys: encrypt a group message once for every member (PROTOCOL.md Part V §2).

Modelled on Signal's sender keys (libsignal ``rust/protocol/src/sender_keys.rs``,
``group_cipher.rs``) and Matrix Megolm. Each member device owns, per group, a *sending
chain*: a random 32-byte chain key ``CK_i`` with an iteration counter ``i``. Algorithm
(PROTOCOL Part V §2.2):

1. ``MK_i = HMAC-SHA256(CK_i, 0x01)``, ``CK_{i+1} = HMAC-SHA256(CK_i, 0x02)`` (libsignal's
   ``SenderChainKey``); the old chain key and every used message key are dropped, so a
   later compromise does not reveal earlier messages (forward secrecy within the chain).
2. ``key(32) || nonce(12) = HKDF-SHA256(ikm=MK_i, salt="", info=LABEL_MESSAGE_KEYS, L=44)``.
3. ``header = version || group_id(16) || key_id u32 || i u32``;
   ``message = header || AES-256-GCM(key, nonce, plaintext, aad=header)``.

The chain key travels to the other members in a distribution message over their pairwise
(Double Ratchet) sessions. Every member holds the chain key, so the chain alone cannot tell
the sender from another member. Version 1 signed every message with a per-chain Ed25519 key
for that; version 2 (this one) does not, because the message never travels alone: it is the
content of a multi-recipient sealed envelope (PROTOCOL Part I §8), whose per-recipient tag is
keyed by the static-static DH of sender and recipient over the hash of the whole shared part,
and the receiver selects the chain *by that authenticated sender* (Part V §7). A member holding
the chain key cannot make that tag, so it cannot speak under another member's chain; and a
tag, unlike a signature, proves nothing to a third party (deniability, as in Signal's sealed
sender). The signature cost ~25 µs to make and ~55 µs to check per message (PROTOCOL Part V
§8). **Callers must never decrypt a sender-key message whose chain was not selected by the
authenticated sealed sender.**

Receivers keep skipped message keys (bounded by :data:`MAX_MESSAGE_KEYS`) for out-of-order
delivery, refuse a jump beyond :data:`MAX_FORWARD_JUMPS`, refuse a reused key with
:class:`~xchat.errors.DuplicateMessage`, and update their state only after the message
decrypted (a failed decrypt leaves the state as it was).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xchat.crypto.keys import Rng
from xchat.crypto.ratchet import kdf_ck
from xchat.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ProtocolError,
    TooLarge,
    TooManySkipped,
    UnknownSenderKey,
    UnsupportedVersion,
)

# --- constants (PROTOCOL Part V §2.1; limits after libsignal consts.rs) -----------------------

#: Version byte of a sender-key message (2: unsigned; authenticity from the sealed envelope).
MESSAGE_VERSION: Final = 0x02
#: Proposed ``content_type`` for ``sealed.seal_multi`` when the content is a sender-key
#: message (0x01 is a pairwise session message); PROTOCOL Part V §7.
SEALED_CONTENT_TYPE: Final = 0x02
#: Version byte of a sender-key distribution message (2: no signing key).
DISTRIBUTION_VERSION: Final = 0x02
#: Version byte of a serialized :class:`SenderKeyRecord` (the list of chains).
RECORD_VERSION: Final = 0x01
#: Version byte of a serialized :class:`SenderKeyState`. Version 1 (with a signing key
#: pair) is still read, so stores written before version 2 keep their chains.
STATE_VERSION: Final = 0x02
_STATE_VERSION_SIGNED: Final = 0x01

#: HKDF info expanding a message key into the AES-256-GCM key and nonce.
LABEL_MESSAGE_KEYS: Final = b"XChat-v1-sender-key-message-keys"

GROUP_ID_LEN: Final = 16
CHAIN_KEY_LEN: Final = 32
_TAG_LEN: Final = 16

#: How far ahead of the next expected iteration a message may point (libsignal
#: ``MAX_FORWARD_JUMPS``). The chain is selected by the authenticated sealed sender, so only
#: its owner can make us walk it; 25,000 steps is ~70 ms of HMACs.
MAX_FORWARD_JUMPS: Final = 25_000
#: Skipped message keys kept per chain (libsignal ``MAX_MESSAGE_KEYS``); the oldest are
#: evicted first, and a message whose key was evicted reads as a duplicate.
MAX_MESSAGE_KEYS: Final = 2000
#: Chains kept per (group, sender device) (libsignal ``MAX_SENDER_KEY_STATES``): after a
#: rotation, messages still in flight under the previous few keys can be read.
MAX_SENDER_KEY_STATES: Final = 5
#: The last u32 iteration is never used, so the counter after it still fits a u32; a
#: sender reaching it must rotate (four billion messages, never in practice).
MAX_ITERATION: Final = 0xFFFFFFFF - 1

_HEADER: Final = struct.Struct(">B16sII")  # version, group_id, key_id, iteration
HEADER_LEN: Final = _HEADER.size  # 25
#: Bytes a sender-key message adds to its plaintext: header and GCM tag.
MESSAGE_OVERHEAD: Final = HEADER_LEN + _TAG_LEN  # 41
#: Largest plaintext (a padded group content; padding tops out at 128 KiB).
MAX_PLAINTEXT_LEN: Final = 128 * 1024
MAX_MESSAGE_LEN: Final = MESSAGE_OVERHEAD + MAX_PLAINTEXT_LEN

_DISTRIBUTION: Final = struct.Struct(">B16sII32s")
DISTRIBUTION_LEN: Final = _DISTRIBUTION.size  # 57

_STATE_FIXED: Final = struct.Struct(">BB16sIII32s")  # + n u16 + skipped
#: Version 1 states carried a signing public key, and a private key on own chains.
_STATE_SIGNED_FIXED: Final = struct.Struct(">BB16sIII32s32s")
_SKIPPED: Final = struct.Struct(">I32s")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
#: State flag: this is our own (sending) chain. In version 1 it meant "private signing key
#: present", which only own chains had, so the bit keeps its meaning.
_FLAG_OWN: Final = 0x01

_SHA256: Final = hashes.SHA256()


def _chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One chain step, ``(MK_i, CK_{i+1})`` from ``CK_i`` (step 1): the Double Ratchet's
    KDF_CK with the same seeds (``crypto.constants``), as libsignal's ``SenderChainKey``."""
    next_chain_key, message_key = kdf_ck(chain_key)
    return message_key, next_chain_key


def _aead_keys(message_key: bytes) -> tuple[AESGCM, bytes]:
    """Step 2: the AES-256-GCM key and nonce for one message key."""
    okm = HKDF(algorithm=_SHA256, length=44, salt=None, info=LABEL_MESSAGE_KEYS).derive(message_key)
    return AESGCM(okm[:32]), okm[32:]


def _open(message_key: bytes, message: bytes) -> bytes:
    aead, nonce = _aead_keys(message_key)
    try:
        return aead.decrypt(nonce, message[HEADER_LEN:], message[:HEADER_LEN])
    except InvalidTag as exc:
        raise DecryptionError("group message does not decrypt") from exc


@dataclass(frozen=True)
class SenderKeyMessageHeader:
    """The cleartext routing fields of a sender-key message (not yet authenticated)."""

    group_id: bytes
    key_id: int
    iteration: int


def parse_header(message: bytes) -> SenderKeyMessageHeader:
    """Read the header so the caller can find the right :class:`SenderKeyRecord`.

    Checks version, lengths and the iteration range (PROTOCOL Part V §2.3); DecodeError,
    UnsupportedVersion or TooLarge otherwise. Nothing here is authenticated yet.
    """
    if len(message) < MESSAGE_OVERHEAD:
        raise DecodeError("group message truncated")
    if len(message) > MAX_MESSAGE_LEN:
        raise TooLarge(f"group message exceeds {MAX_MESSAGE_LEN} bytes")
    version, group_id, key_id, iteration = _HEADER.unpack_from(message)
    if version != MESSAGE_VERSION:
        raise UnsupportedVersion(f"unknown group message version {version}")
    if iteration > MAX_ITERATION:
        raise DecodeError("group message iteration out of range")
    return SenderKeyMessageHeader(group_id, key_id, iteration)


class SenderKeyState:
    """One sender chain, either our own (can encrypt) or a member's (can decrypt).

    Mutable on purpose: :meth:`encrypt` and :meth:`decrypt` advance it, and the caller
    persists :meth:`to_bytes` afterwards. Create with :meth:`generate` (own chain) or
    :meth:`from_distribution` (a member's chain).
    """

    __slots__ = (
        "chain_key",
        "first_iteration",
        "group_id",
        "is_own",
        "iteration",
        "key_id",
        "skipped",
    )

    def __init__(
        self,
        group_id: bytes,
        key_id: int,
        iteration: int,
        chain_key: bytes,
        *,
        own: bool = False,
        first_iteration: int | None = None,
        skipped: dict[int, bytes] | None = None,
    ) -> None:
        if len(group_id) != GROUP_ID_LEN or len(chain_key) != CHAIN_KEY_LEN:
            raise DecodeError("bad group id or chain key length")
        if not 0 <= key_id <= 0xFFFFFFFF or not 0 <= iteration <= MAX_ITERATION + 1:
            raise DecodeError("key id or iteration out of range")
        #: True for a chain we send on (made by :meth:`generate`), False for a member's.
        self.is_own = own
        self.group_id = group_id
        self.key_id = key_id
        self.iteration = iteration  # index of the next message key CK yields
        self.chain_key = chain_key  # CK_iteration
        self.first_iteration = iteration if first_iteration is None else first_iteration
        self.skipped: dict[int, bytes] = {} if skipped is None else skipped  # oldest first

    # --- creation and distribution (PROTOCOL Part V §2.4) -------------------------------------

    @classmethod
    def generate(cls, group_id: bytes, rng: Rng = os.urandom) -> SenderKeyState:
        """A fresh own sending chain for ``group_id``: random key id and chain key (on first
        send and after every rotation)."""
        key_id = _U32.unpack(rng(4))[0]
        chain_key = rng(CHAIN_KEY_LEN)
        return cls(group_id, key_id, 0, chain_key, own=True)

    def distribution_message(self) -> bytes:
        """The SenderKeyDistributionMessage at the *current* iteration (PROTOCOL Part V §2.4).

        Giving a new member the current chain key, not an earlier one, is what keeps it from
        reading messages sent before it joined: the chain only runs forward.
        """
        return _DISTRIBUTION.pack(
            DISTRIBUTION_VERSION,
            self.group_id,
            self.key_id,
            self.iteration,
            self.chain_key,
        )

    @classmethod
    def from_distribution(cls, data: bytes) -> SenderKeyState:
        """A receiving chain from a distribution message (DecodeError on bad input)."""
        if len(data) != DISTRIBUTION_LEN:
            raise DecodeError("sender key distribution message has the wrong length")
        version, group_id, key_id, iteration, chain_key = _DISTRIBUTION.unpack(data)
        if version != DISTRIBUTION_VERSION:
            raise UnsupportedVersion(f"unknown sender key distribution version {version}")
        if iteration > MAX_ITERATION:
            raise DecodeError("sender key iteration out of range")
        return cls(group_id, key_id, iteration, chain_key)

    # --- the hot path (PROTOCOL Part V §2.2–§2.3) ---------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt one group message, then advance the chain.

        ProtocolError if this is not our own chain or it is exhausted (rotate);
        TooLarge above :data:`MAX_PLAINTEXT_LEN`.
        """
        if not self.is_own:
            raise ProtocolError("cannot send on another member's sender key")
        if len(plaintext) > MAX_PLAINTEXT_LEN:
            raise TooLarge(f"group plaintext exceeds {MAX_PLAINTEXT_LEN} bytes")
        if self.iteration > MAX_ITERATION:
            raise ProtocolError("sender key exhausted; rotate it")
        message_key, next_chain_key = _chain_step(self.chain_key)
        header = _HEADER.pack(MESSAGE_VERSION, self.group_id, self.key_id, self.iteration)
        aead, nonce = _aead_keys(message_key)
        message = header + aead.encrypt(nonce, plaintext, header)
        self.chain_key = next_chain_key
        self.iteration += 1
        return message

    def decrypt(self, message: bytes) -> bytes:
        """Decrypt one group message; the state changes only on success.

        The caller must have selected this chain by the authenticated sealed sender (see the
        module docstring): the chain key authenticates the message only as "from a member".
        Errors: DecodeError/UnsupportedVersion/TooLarge (malformed), DecryptionError
        (another chain, a message from before our copy of the chain, or a bad ciphertext),
        DuplicateMessage (key already used or evicted), TooManySkipped (more than
        MAX_FORWARD_JUMPS ahead).
        """
        header = parse_header(message)
        if header.group_id != self.group_id or header.key_id != self.key_id:
            raise DecryptionError("group message is not under this sender key")
        iteration = header.iteration
        if iteration < self.iteration:
            return self._decrypt_skipped(iteration, message)
        jump = iteration - self.iteration
        if jump > MAX_FORWARD_JUMPS:
            raise TooManySkipped(f"group message is {jump} messages ahead")
        chain_key = self.chain_key
        new_skipped: list[tuple[int, bytes]] = []
        keep_from = iteration - MAX_MESSAGE_KEYS
        for index in range(self.iteration, iteration):
            message_key, chain_key = _chain_step(chain_key)
            if index >= keep_from:
                new_skipped.append((index, message_key))
        message_key, chain_key = _chain_step(chain_key)
        plaintext = _open(message_key, message)
        # commit
        skipped = self.skipped
        skipped.update(new_skipped)
        while len(skipped) > MAX_MESSAGE_KEYS:
            del skipped[next(iter(skipped))]
        self.chain_key = chain_key
        self.iteration = iteration + 1
        return plaintext

    def _decrypt_skipped(self, iteration: int, message: bytes) -> bytes:
        message_key = self.skipped.get(iteration)
        if message_key is None:
            if iteration < self.first_iteration:
                raise DecryptionError("group message predates our copy of the sender key")
            raise DuplicateMessage("group message key already used")
        plaintext = _open(message_key, message)
        del self.skipped[iteration]
        return plaintext

    # --- persistence (PROTOCOL Part V §2.5) ---------------------------------------------------

    def to_bytes(self) -> bytes:
        """Versioned serialization (PROTOCOL Part V §2.5)."""
        out = [
            _STATE_FIXED.pack(
                STATE_VERSION,
                _FLAG_OWN if self.is_own else 0,
                self.group_id,
                self.key_id,
                self.iteration,
                self.first_iteration,
                self.chain_key,
            )
        ]
        out.append(_U16.pack(len(self.skipped)))
        out.extend(_SKIPPED.pack(i, key) for i, key in self.skipped.items())
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyState:
        """Inverse of :meth:`to_bytes`; DecodeError/UnsupportedVersion on bad input."""
        state, end = cls._parse(data, 0)
        if end != len(data):
            raise DecodeError("trailing bytes after sender key state")
        return state

    @classmethod
    def _parse(cls, data: bytes, offset: int) -> tuple[SenderKeyState, int]:
        if len(data) - offset < 1:
            raise DecodeError("sender key state truncated")
        version = data[offset]
        if version == STATE_VERSION:
            fixed = _STATE_FIXED
        elif version == _STATE_VERSION_SIGNED:
            fixed = _STATE_SIGNED_FIXED  # read, then its signing keys are dropped
        else:
            raise UnsupportedVersion(f"unknown sender key state version {version}")
        if len(data) - offset < fixed.size + 2:
            raise DecodeError("sender key state truncated")
        _, flags, group_id, key_id, iteration, first, chain_key = fixed.unpack_from(data, offset)[
            :7
        ]
        if flags & ~_FLAG_OWN:
            raise DecodeError("unknown sender key state flags")
        offset += fixed.size
        if version == _STATE_VERSION_SIGNED and flags & _FLAG_OWN:
            offset += 32  # version 1's private signing key
        if len(data) - offset < 2:
            raise DecodeError("sender key state truncated")
        (count,) = _U16.unpack_from(data, offset)
        offset += 2
        if count > MAX_MESSAGE_KEYS or len(data) - offset < count * _SKIPPED.size:
            raise DecodeError("bad skipped key list")
        skipped: dict[int, bytes] = {}
        for _ in range(count):
            index, key = _SKIPPED.unpack_from(data, offset)
            offset += _SKIPPED.size
            if not first <= index < iteration or index in skipped:
                raise DecodeError("bad skipped key index")
            skipped[index] = key
        if first > iteration:
            raise DecodeError("bad sender key iterations")
        state = cls(
            group_id,
            key_id,
            iteration,
            chain_key,
            own=bool(flags & _FLAG_OWN),
            first_iteration=first,
            skipped=skipped,
        )
        return state, offset


class SenderKeyRecord:
    """Every chain we hold for one (group, sender address, sender device), newest first.

    Keeping the last :data:`MAX_SENDER_KEY_STATES` chains lets messages sent just before a
    rotation still be read; the client drops the whole record when the sender leaves.
    """

    __slots__ = ("states",)

    def __init__(self, states: list[SenderKeyState] | None = None) -> None:
        self.states: list[SenderKeyState] = [] if states is None else states

    def add(self, state: SenderKeyState) -> bool:
        """Install a chain from a distribution message; False (no change) if a chain with
        this key id is already known: a re-sent distribution must not rewind the chain and
        re-open used message keys."""
        if self.get(state.key_id) is not None:
            return False
        self.states.insert(0, state)
        del self.states[MAX_SENDER_KEY_STATES:]
        return True

    def get(self, key_id: int) -> SenderKeyState | None:
        """The chain with ``key_id``, if held."""
        for state in self.states:
            if state.key_id == key_id:
                return state
        return None

    def decrypt(self, message: bytes) -> bytes:
        """Decrypt with the chain the message names; UnknownSenderKey if none is held
        (the distribution message may still be on its way), else as
        :meth:`SenderKeyState.decrypt`."""
        header = parse_header(message)
        state = self.get(header.key_id)
        if state is None or state.group_id != header.group_id:
            raise UnknownSenderKey("no sender key for this group message")
        return state.decrypt(message)

    def to_bytes(self) -> bytes:
        """``version || n u8 || (len u32 || state)*``."""
        parts = [bytes([RECORD_VERSION, len(self.states)])]
        for state in self.states:
            raw = state.to_bytes()
            parts.append(_U32.pack(len(raw)) + raw)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyRecord:
        """Inverse of :meth:`to_bytes`."""
        if len(data) < 2:
            raise DecodeError("sender key record truncated")
        if data[0] != RECORD_VERSION:
            raise UnsupportedVersion(f"unknown sender key record version {data[0]}")
        count, offset = data[1], 2
        if count > MAX_SENDER_KEY_STATES:
            raise DecodeError("too many sender key states")
        states = []
        for _ in range(count):
            if len(data) - offset < 4:
                raise DecodeError("sender key record truncated")
            (length,) = _U32.unpack_from(data, offset)
            offset += 4
            if len(data) - offset < length:
                raise DecodeError("sender key record truncated")
            states.append(SenderKeyState.from_bytes(data[offset : offset + length]))
            offset += length
        if offset != len(data):
            raise DecodeError("trailing bytes after sender key record")
        return cls(states)
