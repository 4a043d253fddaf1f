"""The signed, versioned device list of an account, and linking codes (PROTOCOL.md Part VII).

Pure functions, no I/O. Every device of an account holds the account's identity key (as in
Signal), so session setup, sealed sender and safety numbers stay per account; which devices
exist is what the account *signs*: a list of device ids with a version that only grows.
Senders encrypt to exactly the devices of the newest list they verified and refuse a list
that is unsigned, signed by someone else, or older than one they saw (rollback), so the
relay can neither add a device nor silently drop one.

Device names are private to the account: they are sealed in the list under a key derived
from the identity seed, which only the account's own devices hold.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat import encoding
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey, hkdf
from xchat.errors import (
    CryptoError,
    DecodeError,
    DecryptionError,
    UnsupportedVersion,
    UntrustedDevice,
)

LIST_VERSION = 0x01
LABEL_LIST = b"XChat-v1-device-list"
LABEL_NAMES = b"XChat-v1-device-names"
LABEL_LINK_SLOT = b"XChat-v1-link-slot"
LABEL_LINK_OFFER = b"XChat-v1-link-offer"
LABEL_LINK_ANSWER = b"XChat-v1-link-answer"
#: Most devices one account may have (the issue asks for at least 5).
MAX_DEVICES = 16
MAX_NAME_LEN = 64
#: Bytes of entropy in a link code (120 bits: 24 base32 characters).
CODE_BYTES = 15
LINK_TTL_MS = 10 * 60 * 1000
_B32 = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols, no l/o/0/1 (read aloud, typed)
_HEADER = struct.Struct(">B65sQQB")
_ENTRY = struct.Struct(">IQB")
SIG_LEN = 64
Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class DeviceEntry:
    device_id: int
    linked_ms: int
    name_sealed: bytes  # AES-256-GCM under the account's name key, see :func:`seal_name`


@dataclass(frozen=True)
class DeviceList:
    """One version of an account's device list (signed by its identity key)."""

    identity_key: bytes  # 65-byte IdentityKey of the account
    version: int
    ts_ms: int
    entries: tuple[DeviceEntry, ...]
    signature: bytes = b""

    @property
    def device_ids(self) -> tuple[int, ...]:
        return tuple(e.device_id for e in self.entries)

    def body(self) -> bytes:
        out = bytearray(
            _HEADER.pack(
                LIST_VERSION, self.identity_key, self.version, self.ts_ms, len(self.entries)
            )
        )
        for e in self.entries:
            out += _ENTRY.pack(e.device_id, e.linked_ms, len(e.name_sealed)) + e.name_sealed
        return bytes(out)

    def encode(self) -> bytes:
        return self.body() + self.signature

    def digest(self) -> bytes:
        """SHA-256 of the encoded list: equal on two devices iff they hold the same list."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def sign(
        cls,
        identity: IdentityKeyPair,
        version: int,
        ts_ms: int,
        entries: tuple[DeviceEntry, ...],
    ) -> DeviceList:
        entries = tuple(sorted(entries, key=lambda e: e.device_id))
        _check_entries(entries)
        unsigned = cls(identity.public.encode(), version, ts_ms, entries)
        return cls(
            unsigned.identity_key,
            version,
            ts_ms,
            entries,
            identity.sign(LABEL_LIST + unsigned.body()),
        )

    @classmethod
    def decode(cls, data: bytes) -> DeviceList:
        if not data:
            raise DecodeError("empty device list")
        if data[0] != LIST_VERSION:
            raise UnsupportedVersion(f"device list version {data[0]}")
        if len(data) < _HEADER.size + SIG_LEN:
            raise DecodeError("device list too short")
        _, ik, version, ts_ms, n = _HEADER.unpack_from(data)
        off = _HEADER.size
        entries = []
        for _ in range(n):
            if off + _ENTRY.size > len(data):
                raise DecodeError("device list truncated")
            device_id, linked_ms, name_len = _ENTRY.unpack_from(data, off)
            off += _ENTRY.size
            name = data[off : off + name_len]
            if len(name) != name_len:
                raise DecodeError("device list truncated")
            off += name_len
            entries.append(DeviceEntry(device_id, linked_ms, name))
        if len(data) - off != SIG_LEN:
            raise DecodeError("device list has trailing bytes or no signature")
        out = cls(ik, version, ts_ms, tuple(entries), data[off:])
        _check_entries(out.entries)
        return out

    def verify(self, identity: IdentityPublicKey) -> DeviceList:
        """Check it is ``identity``'s list and its signature; returns self (UntrustedDevice)."""
        if self.identity_key != identity.encode():
            raise UntrustedDevice("device list is signed for another account")
        try:
            identity.verify(self.signature, LABEL_LIST + self.body())
        except CryptoError:
            raise UntrustedDevice("device list signature does not verify (forged list)") from None
        return self


def _check_entries(entries: tuple[DeviceEntry, ...]) -> None:
    ids = [e.device_id for e in entries]
    if not ids:
        raise DecodeError("a device list names at least one device")
    if len(ids) > MAX_DEVICES:
        raise DecodeError(f"a device list names at most {MAX_DEVICES} devices")
    if ids != sorted(set(ids)) or ids[0] < 1:
        raise DecodeError("device ids must be distinct, ascending and >= 1")


def check_successor(old: DeviceList | None, new: DeviceList) -> None:
    """``new`` may replace ``old`` (the newest list we verified for this account): its
    version is higher, or it is the very same list. UntrustedDevice names a rollback/fork."""
    if old is None:
        return
    if new.version < old.version:
        raise UntrustedDevice(
            f"device list rolled back (version {new.version} < {old.version} already seen)"
        )
    if new.version == old.version and new.digest() != old.digest():
        raise UntrustedDevice(f"two different device lists with version {new.version} (forked)")


# --- device names (private to the account) ---------------------------------------------------


def _name_key(seed: bytes) -> bytes:
    return hkdf(seed, b"", LABEL_NAMES, 32)


def seal_name(seed: bytes, device_id: int, name: str, rng: Rng = os.urandom) -> bytes:
    raw = name.encode()[:MAX_NAME_LEN]
    nonce = rng(12)
    return nonce + AESGCM(_name_key(seed)).encrypt(nonce, raw, struct.pack(">I", device_id))


def open_name(seed: bytes, device_id: int, sealed: bytes) -> str:
    try:
        raw = AESGCM(_name_key(seed)).decrypt(
            sealed[:12], sealed[12:], struct.pack(">I", device_id)
        )
    except (InvalidTag, ValueError):
        return "?"
    return raw.decode(errors="replace")


# --- link codes and the provisioning channel -------------------------------------------------


def new_code(rng: Rng = os.urandom) -> bytes:
    return rng(CODE_BYTES)


def format_code(code: bytes) -> str:
    """120 bits as 24 symbols in groups of four: ``abcd-efgh-...``."""
    n = int.from_bytes(code, "big")
    chars = [_B32[(n >> (5 * i)) & 31] for i in range(CODE_BYTES * 8 // 5)][::-1]
    s = "".join(chars)
    return "-".join(s[i : i + 4] for i in range(0, len(s), 4))


def parse_code(text: str) -> bytes:
    """The inverse of :func:`format_code`; DecodeError for anything else (typos)."""
    s = "".join(ch for ch in text.strip().lower() if ch not in "- ")
    if len(s) != CODE_BYTES * 8 // 5 or any(ch not in _B32 for ch in s):
        raise DecodeError("not a link code (24 letters and digits, e.g. abcd-efgh-...)")
    n = 0
    for ch in s:
        n = (n << 5) | _B32.index(ch)
    return n.to_bytes(CODE_BYTES, "big")


def slot_id(code: bytes) -> str:
    """The relay's name for the link slot: a hash of the code, so the relay never holds
    the code itself (and so cannot derive the channel keys)."""
    digest = hmac.new(code, LABEL_LINK_SLOT, hashlib.sha256).digest()[:16]
    return encoding.b64url_encode(digest)


def _code_key(code: bytes, label: bytes, salt: bytes = b"") -> bytes:
    return hkdf(code, salt, label, 32)


def seal_offer(code: bytes, ephemeral_public: bytes, payload: bytes) -> bytes:
    """The new device's offer: its ephemeral X25519 key and a small payload, sealed under
    the code (only a holder of the code learns or can replace the key)."""
    key = _code_key(code, LABEL_LINK_OFFER)
    return AESGCM(key).encrypt(b"\0" * 12, ephemeral_public + payload, LABEL_LINK_OFFER)


def open_offer(code: bytes, offer: bytes) -> tuple[bytes, bytes]:
    try:
        pt = AESGCM(_code_key(code, LABEL_LINK_OFFER)).decrypt(b"\0" * 12, offer, LABEL_LINK_OFFER)
    except (InvalidTag, ValueError):
        raise DecryptionError("link offer does not match this code") from None
    if len(pt) < 32:
        raise DecodeError("link offer too short")
    return pt[:32], pt[32:]


def seal_answer(code: bytes, offer_public: bytes, payload: bytes) -> bytes:
    """The approving device's answer: ``e.pub (32) || AES-256-GCM(k, 0, payload)`` with
    ``k = HKDF(ikm = X25519(e, offer key), salt = code, info = label || both keys)``. The
    code in the salt means even a relay that swapped the offer key learns nothing."""
    e = X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    k = hkdf(
        e.exchange(X25519PublicKey.from_public_bytes(offer_public)),
        code,
        LABEL_LINK_ANSWER + offer_public + e_pub,
        32,
    )
    return e_pub + AESGCM(k).encrypt(b"\0" * 12, payload, LABEL_LINK_ANSWER)


def open_answer(code: bytes, offer_private: X25519PrivateKey, answer: bytes) -> bytes:
    if len(answer) < 32 + 16:
        raise DecodeError("link answer too short")
    e_pub = answer[:32]
    offer_public = offer_private.public_key().public_bytes_raw()
    try:
        shared = offer_private.exchange(X25519PublicKey.from_public_bytes(e_pub))
        k = hkdf(shared, code, LABEL_LINK_ANSWER + offer_public + e_pub, 32)
        return AESGCM(k).decrypt(b"\0" * 12, answer[32:], LABEL_LINK_ANSWER)
    except (InvalidTag, ValueError):
        raise DecryptionError("link answer does not decrypt (wrong code or tampered)") from None


def link_uri(server: str, code: bytes, ephemeral_public: bytes) -> str:
    """What the QR code carries: the relay, the code and the ephemeral public key."""
    key = encoding.b64url_encode(ephemeral_public)
    return f"xchat-link:?v=1&server={server}&code={format_code(code)}&key={key}"
