"""Prekeys: generation, signing, storage records and the bundle a sender fetches.

Implements the "publishing keys" phase of PQXDH (rev. 3 §3.2) for XChat
(PROTOCOL.md Part II §1–§2):

1. one signed curve prekey ``SPK`` (X25519), rotated by the client from time to time;
2. a batch of unsigned one-time curve prekeys ``OPK`` (X25519);
3. a batch of signed one-time KEM prekeys ``PQOPK`` (ML-KEM-1024);
4. one signed last-resort KEM prekey ``PQSPK`` (ML-KEM-1024), handed out when the one-time
   KEM keys run out.

Every signature is Ed25519 by the identity key over ``b"XChat-v1-prekey" || encoded_key``
(PROTOCOL Part I §1), with keys encoded as ``0x05 || x25519`` or ``0x08 || mlkem``.

Private halves are kept as versioned byte records (``*Record.to_bytes``) that the client
stores in its sealed local database; the ML-KEM private key is kept as its 64-byte seed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM1024PrivateKey,
    MLKEM1024PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xchat import encoding
from xchat.crypto import constants as C
from xchat.crypto.keys import (
    IdentityKeyPair,
    IdentityPublicKey,
    address_matches,
    decode_mlkem1024,
    decode_x25519,
    encode_mlkem1024,
    encode_x25519,
)
from xchat.errors import DecodeError, UnsupportedVersion, UntrustedIdentity

Rng = Callable[[int], bytes]

_KIND_SIGNED = 0x01
_KIND_ONE_TIME = 0x02
_KIND_KEM = 0x03


# --- helpers -------------------------------------------------------------------------------


def prekey_signature_message(encoded_key: bytes) -> bytes:
    """The bytes a prekey signature covers (PROTOCOL Part I §1)."""
    return C.PREKEY_SIGNATURE_LABEL + encoded_key


def _check_id(value: object) -> int:
    """A u32 id (prekey or device); rejects bools, floats and strings from JSON."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError("id must be an integer")
    if not 0 <= value <= C.MAX_PREKEY_ID:
        raise DecodeError("id out of u32 range")
    return value


def _mlkem_from_seed(seed: bytes) -> MLKEM1024PrivateKey:
    if len(seed) != C.MLKEM_SEED_LEN:
        raise DecodeError("ML-KEM seed must be 64 bytes")
    try:
        return MLKEM1024PrivateKey.from_seed_bytes(seed)
    except ValueError as exc:  # pragma: no cover - any 64 bytes are a valid seed
        raise DecodeError("invalid ML-KEM seed") from exc


def mlkem_public_from_bytes(raw: bytes) -> MLKEM1024PublicKey:
    """Parse a raw 1568-byte ML-KEM-1024 key, enforcing the FIPS 203 §7.2 modulus check."""
    if len(raw) != C.MLKEM1024_PUBLIC_RAW_LEN:
        raise DecodeError("ML-KEM-1024 public key must be 1568 bytes")
    try:
        return MLKEM1024PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise DecodeError("invalid ML-KEM-1024 public key") from exc


# --- private records ------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedPreKeyRecord:
    """Private signed curve prekey ``SPK`` (PROTOCOL Part II §1.1)."""

    id: int
    private: bytes = field(repr=False)  # X25519 scalar, 32 bytes
    signature: bytes
    created_ms: int = 0

    @cached_property
    def private_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.private)

    @cached_property
    def public(self) -> bytes:
        """Raw 32-byte X25519 public key."""
        return self.private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(
        cls, identity: IdentityKeyPair, prekey_id: int, rng: Rng = os.urandom, created_ms: int = 0
    ) -> SignedPreKeyRecord:
        """New X25519 key signed by ``identity`` (PQXDH §3.2 ``Sig(IK_B, EncodeEC(SPK_B))``)."""
        _check_id(prekey_id)
        private = rng(C.X25519_LEN)
        public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
        signature = identity.sign(prekey_signature_message(encode_x25519(public)))
        return cls(prekey_id, private, signature, created_ms)

    def to_public_json(self) -> dict[str, Any]:
        """``{"id", "key", "signature"}`` as in PreKeyUpload (PROTOCOL Part III)."""
        return {
            "id": self.id,
            "key": _b64(encode_x25519(self.public)),
            "signature": _b64(self.signature),
        }

    def to_bytes(self) -> bytes:
        """``0x01 || 0x01 || id u32 || created_ms u64 || private(32) || signature(64)``."""
        head = struct.pack(">BBIQ", C.PREKEY_RECORD_VERSION, _KIND_SIGNED, self.id, self.created_ms)
        return head + self.private + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPreKeyRecord:
        """Inverse of :meth:`to_bytes`; DecodeError/UnsupportedVersion on anything else."""
        _check_record_head(data, _KIND_SIGNED, 14 + 32 + 64)
        _, _, prekey_id, created = struct.unpack_from(">BBIQ", data)
        return cls(prekey_id, bytes(data[14:46]), bytes(data[46:110]), created)


@dataclass(frozen=True)
class OneTimePreKeyRecord:
    """Private one-time curve prekey ``OPK`` (unsigned, as in PQXDH §3.2)."""

    id: int
    private: bytes = field(repr=False)

    @cached_property
    def private_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.private)

    @cached_property
    def public(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, prekey_id: int, rng: Rng = os.urandom) -> OneTimePreKeyRecord:
        _check_id(prekey_id)
        return cls(prekey_id, rng(C.X25519_LEN))

    def to_public_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": _b64(encode_x25519(self.public))}

    def to_bytes(self) -> bytes:
        """``0x01 || 0x02 || id u32 || private(32)``."""
        return struct.pack(">BBI", C.PREKEY_RECORD_VERSION, _KIND_ONE_TIME, self.id) + self.private

    @classmethod
    def from_bytes(cls, data: bytes) -> OneTimePreKeyRecord:
        _check_record_head(data, _KIND_ONE_TIME, 6 + 32)
        (prekey_id,) = struct.unpack_from(">I", data, 2)
        return cls(prekey_id, bytes(data[6:38]))


@dataclass(frozen=True)
class KemPreKeyRecord:
    """Private signed ML-KEM-1024 prekey: one-time ``PQOPK`` or last-resort ``PQSPK``."""

    id: int
    seed: bytes = field(repr=False)  # 64-byte FIPS 203 (d || z) seed
    signature: bytes
    last_resort: bool
    created_ms: int = 0

    @cached_property
    def private_key(self) -> MLKEM1024PrivateKey:
        return _mlkem_from_seed(self.seed)

    @cached_property
    def public(self) -> bytes:
        """Raw 1568-byte encapsulation key."""
        return self.private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(
        cls,
        identity: IdentityKeyPair,
        prekey_id: int,
        *,
        last_resort: bool,
        rng: Rng = os.urandom,
        created_ms: int = 0,
    ) -> KemPreKeyRecord:
        """New ML-KEM-1024 key from ``rng(64)`` signed by ``identity`` (PQXDH §3.2)."""
        _check_id(prekey_id)
        seed = rng(C.MLKEM_SEED_LEN)
        public = _mlkem_from_seed(seed).public_key().public_bytes_raw()
        signature = identity.sign(prekey_signature_message(encode_mlkem1024(public)))
        return cls(prekey_id, seed, signature, last_resort, created_ms)

    def to_public_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": _b64(encode_mlkem1024(self.public)),
            "signature": _b64(self.signature),
        }

    def to_bytes(self) -> bytes:
        """``0x01 || 0x03 || id u32 || created_ms u64 || flags u8 || seed(64) || sig(64)``;
        flags bit 0 = last resort, other bits zero."""
        head = struct.pack(
            ">BBIQB",
            C.PREKEY_RECORD_VERSION,
            _KIND_KEM,
            self.id,
            self.created_ms,
            1 if self.last_resort else 0,
        )
        return head + self.seed + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> KemPreKeyRecord:
        _check_record_head(data, _KIND_KEM, 15 + 64 + 64)
        _, _, prekey_id, created, flags = struct.unpack_from(">BBIQB", data)
        if flags not in (0, 1):
            raise DecodeError("unknown KEM prekey record flags")
        return cls(prekey_id, bytes(data[15:79]), bytes(data[79:143]), flags == 1, created)


def _check_record_head(data: bytes, kind: int, length: int) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("prekey record must be bytes")
    if len(data) < 2:
        raise DecodeError("truncated prekey record")
    if data[0] != C.PREKEY_RECORD_VERSION:
        raise UnsupportedVersion(f"unknown prekey record version {data[0]}")
    if data[1] != kind:
        raise DecodeError("wrong prekey record kind")
    if len(data) != length:
        raise DecodeError("prekey record has the wrong length")


def generate_one_time_prekeys(
    start_id: int, count: int, rng: Rng = os.urandom
) -> list[OneTimePreKeyRecord]:
    """``count`` one-time curve prekeys with ids ``start_id, start_id+1, ...`` (mod 2^32)."""
    return [
        OneTimePreKeyRecord.generate((start_id + i) & C.MAX_PREKEY_ID, rng) for i in range(count)
    ]


def generate_kem_prekeys(
    identity: IdentityKeyPair, start_id: int, count: int, rng: Rng = os.urandom
) -> list[KemPreKeyRecord]:
    """``count`` signed one-time ML-KEM-1024 prekeys."""
    return [
        KemPreKeyRecord.generate(
            identity, (start_id + i) & C.MAX_PREKEY_ID, last_resort=False, rng=rng
        )
        for i in range(count)
    ]


# --- rotation of the signed and last-resort prekeys (PROTOCOL Part II §1.5) ---------------

DAY_MS = 86_400_000
#: A signed (or last-resort) prekey older than this is replaced. Weekly, as Signal does:
#: it bounds how long one compromised medium-term key opens new sessions.
ROTATE_AFTER_MS = 7 * DAY_MS
#: A replaced key's private half is kept this long, then deleted. It must cover a PreKey
#: message built from the old bundle and still waiting in a mailbox: the relay keeps mail
#: 30 days (Part III §2), plus a day of clock and delivery slack.
GRACE_MS = 31 * DAY_MS


@dataclass(frozen=True)
class RotationPlan:
    """What to do with one kind of medium-term prekey at ``now``."""

    rotate: bool  # publish a new current key
    delete: tuple[int, ...]  # ids of replaced keys whose grace period is over


def rotation_plan(generations: Iterable[tuple[int, int]], now_ms: int) -> RotationPlan:
    """Decide from ``(id, created_ms)`` of every key still held, oldest first (the last is
    the current one). A replaced key is retired when its successor was created; it is
    deleted :data:`GRACE_MS` after that. No key at all means: create one."""
    gens = sorted(generations, key=lambda g: (g[1], g[0]))
    if not gens:
        return RotationPlan(True, ())
    delete = tuple(gens[i][0] for i in range(len(gens) - 1) if now_ms - gens[i + 1][1] >= GRACE_MS)
    return RotationPlan(now_ms - gens[-1][1] >= ROTATE_AFTER_MS, delete)


def prekey_upload(
    *,
    signed_prekey: SignedPreKeyRecord | None = None,
    kem_last_resort: KemPreKeyRecord | None = None,
    one_time_ec: Iterable[OneTimePreKeyRecord] = (),
    one_time_kem: Iterable[KemPreKeyRecord] = (),
) -> dict[str, Any]:
    """The ``PreKeyUpload`` JSON object of PROTOCOL Part III (only the public halves)."""
    body: dict[str, Any] = {}
    if signed_prekey is not None:
        body["signed_prekey"] = signed_prekey.to_public_json()
    if kem_last_resort is not None:
        body["kem_last_resort"] = kem_last_resort.to_public_json()
    ec = [k.to_public_json() for k in one_time_ec]
    kem = [k.to_public_json() for k in one_time_kem]
    if ec:
        body["one_time_ec"] = ec
    if kem:
        body["one_time_kem"] = kem
    return body


class PreKeyStore(Protocol):
    """Lookup of a device's own private prekeys by id (libsignal ``storage/traits.rs``).

    Each getter returns ``None`` for an unknown id (used up, rotated away, or never issued).
    """

    def signed_prekey(self, prekey_id: int) -> SignedPreKeyRecord | None: ...

    def one_time_prekey(self, prekey_id: int) -> OneTimePreKeyRecord | None: ...

    def kem_prekey(self, prekey_id: int) -> KemPreKeyRecord | None: ...


class InMemoryPreKeyStore:
    """Dict-backed :class:`PreKeyStore` for tests and benchmarks."""

    def __init__(
        self,
        signed: Iterable[SignedPreKeyRecord] = (),
        one_time: Iterable[OneTimePreKeyRecord] = (),
        kem: Iterable[KemPreKeyRecord] = (),
    ) -> None:
        self.signed = {k.id: k for k in signed}
        self.one_time = {k.id: k for k in one_time}
        self.kem = {k.id: k for k in kem}

    def signed_prekey(self, prekey_id: int) -> SignedPreKeyRecord | None:
        return self.signed.get(prekey_id)

    def one_time_prekey(self, prekey_id: int) -> OneTimePreKeyRecord | None:
        return self.one_time.get(prekey_id)

    def kem_prekey(self, prekey_id: int) -> KemPreKeyRecord | None:
        return self.kem.get(prekey_id)


# --- bundle ---------------------------------------------------------------------------------


_b64 = encoding.b64encode


def _unb64(value: object, what: str) -> bytes:
    return encoding.b64decode(value, what)


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DecodeError(f"{what} must be a JSON object")
    return value


def _sig(value: object, what: str) -> bytes:
    sig = _unb64(value, what)
    if len(sig) != C.SIGNATURE_LEN:
        raise DecodeError(f"{what} must be 64 bytes")
    return sig


@dataclass(frozen=True)
class PreKeyBundle:
    """What Alice fetches to start a session with one of Bob's devices (PQXDH §3.3).

    Keys are held raw (32 / 1568 bytes); signatures cover their 0x05/0x08 encodings.
    Parsing checks shapes only; :meth:`verify` checks the signatures and must be called
    (``pqxdh.initiate`` does) before any key is used.
    """

    identity_key: IdentityPublicKey
    device_id: int
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    kem_prekey_id: int
    kem_prekey: bytes
    kem_prekey_signature: bytes
    kem_last_resort: bool
    one_time_prekey_id: int | None = None
    one_time_prekey: bytes | None = None

    def __post_init__(self) -> None:
        _check_id(self.device_id)
        _check_id(self.signed_prekey_id)
        _check_id(self.kem_prekey_id)
        if len(self.signed_prekey) != C.X25519_LEN:
            raise DecodeError("signed prekey must be 32 bytes")
        if len(self.kem_prekey) != C.MLKEM1024_PUBLIC_RAW_LEN:
            raise DecodeError("KEM prekey must be 1568 bytes")
        if len(self.signed_prekey_signature) != C.SIGNATURE_LEN:
            raise DecodeError("signed prekey signature must be 64 bytes")
        if len(self.kem_prekey_signature) != C.SIGNATURE_LEN:
            raise DecodeError("KEM prekey signature must be 64 bytes")
        if (self.one_time_prekey_id is None) != (self.one_time_prekey is None):
            raise DecodeError("one-time prekey id and key must come together")
        if self.one_time_prekey_id is not None:
            _check_id(self.one_time_prekey_id)
            if self.one_time_prekey is None or len(self.one_time_prekey) != C.X25519_LEN:
                raise DecodeError("one-time prekey must be 32 bytes")

    def verify(self) -> None:
        """Check both prekey signatures by the bundle's identity (PQXDH §3.3: "Alice
        verifies the prekey signatures and aborts the protocol if verification fails").

        Raises ``InvalidSignature``. One-time curve prekeys carry no signature (PQXDH §3.2).
        """
        self.identity_key.verify(
            self.signed_prekey_signature,
            prekey_signature_message(encode_x25519(self.signed_prekey)),
        )
        self.identity_key.verify(
            self.kem_prekey_signature,
            prekey_signature_message(encode_mlkem1024(self.kem_prekey)),
        )

    @classmethod
    def from_json(
        cls, device: Mapping[str, Any], identity_key: IdentityPublicKey | None = None
    ) -> PreKeyBundle:
        """Parse one entry of ``devices`` in ``GET /api/v1/bundles/{address}`` (PROTOCOL Part III).

        The identity key comes from ``identity_key`` or, failing that, from the entry's own
        ``"identity_key"`` field (which :meth:`to_json` writes). DecodeError on any bad shape.
        """
        device = _obj(device, "bundle")
        if identity_key is None:
            identity_key = IdentityPublicKey.decode(
                _unb64(device.get("identity_key"), "identity_key")
            )
        spk = _obj(device.get("signed_prekey"), "signed_prekey")
        kem = _obj(device.get("kem_prekey"), "kem_prekey")
        last_resort = kem.get("last_resort", False)
        if not isinstance(last_resort, bool):
            raise DecodeError("kem_prekey.last_resort must be a boolean")
        kem_key = decode_mlkem1024(_unb64(kem.get("key"), "kem_prekey.key"))
        mlkem_public_from_bytes(kem_key)  # FIPS 203 §7.2 input check, before anyone uses it
        otk_raw = device.get("one_time_ec")
        otk_id: int | None = None
        otk_key: bytes | None = None
        if otk_raw is not None:
            otk = _obj(otk_raw, "one_time_ec")
            otk_id = _check_id(otk.get("id"))
            otk_key = decode_x25519(_unb64(otk.get("key"), "one_time_ec.key"))
        return cls(
            identity_key=identity_key,
            device_id=_check_id(device.get("device_id")),
            signed_prekey_id=_check_id(spk.get("id")),
            signed_prekey=decode_x25519(_unb64(spk.get("key"), "signed_prekey.key")),
            signed_prekey_signature=_sig(spk.get("signature"), "signed_prekey.signature"),
            kem_prekey_id=_check_id(kem.get("id")),
            kem_prekey=kem_key,
            kem_prekey_signature=_sig(kem.get("signature"), "kem_prekey.signature"),
            kem_last_resort=last_resort,
            one_time_prekey_id=otk_id,
            one_time_prekey=otk_key,
        )

    def to_json(self) -> dict[str, Any]:
        """The device entry of PROTOCOL Part III bundle JSON, plus ``"identity_key"``."""
        one_time: dict[str, Any] | None = None
        if self.one_time_prekey_id is not None and self.one_time_prekey is not None:
            one_time = {
                "id": self.one_time_prekey_id,
                "key": _b64(encode_x25519(self.one_time_prekey)),
            }
        return {
            "identity_key": _b64(self.identity_key.encode()),
            "device_id": self.device_id,
            "signed_prekey": {
                "id": self.signed_prekey_id,
                "key": _b64(encode_x25519(self.signed_prekey)),
                "signature": _b64(self.signed_prekey_signature),
            },
            "kem_prekey": {
                "id": self.kem_prekey_id,
                "key": _b64(encode_mlkem1024(self.kem_prekey)),
                "signature": _b64(self.kem_prekey_signature),
                "last_resort": self.kem_last_resort,
            },
            "one_time_ec": one_time,
        }

    @classmethod
    def from_records(
        cls,
        identity: IdentityPublicKey,
        device_id: int,
        signed: SignedPreKeyRecord,
        kem: KemPreKeyRecord,
        one_time: OneTimePreKeyRecord | None = None,
    ) -> PreKeyBundle:
        """Build a bundle straight from private records (tests, benchmarks, loopback)."""
        return cls(
            identity_key=identity,
            device_id=device_id,
            signed_prekey_id=signed.id,
            signed_prekey=signed.public,
            signed_prekey_signature=signed.signature,
            kem_prekey_id=kem.id,
            kem_prekey=kem.public,
            kem_prekey_signature=kem.signature,
            kem_last_resort=kem.last_resort,
            one_time_prekey_id=None if one_time is None else one_time.id,
            one_time_prekey=None if one_time is None else one_time.public,
        )


def bundles_from_response(response: Mapping[str, Any]) -> list[PreKeyBundle]:
    """Parse a whole ``GET /api/v1/bundles/{address}`` response.

    Checks that ``address`` is the one derived from ``identity_key`` (else
    ``UntrustedIdentity``: the server paired an address with someone else's key).
    Signatures are not checked here; see :meth:`PreKeyBundle.verify`.
    """
    response = _obj(response, "bundle response")
    identity = IdentityPublicKey.decode(_unb64(response.get("identity_key"), "identity_key"))
    address = response.get("address")
    if not isinstance(address, str):
        raise DecodeError("address must be a string")
    if not address_matches(address, identity):
        raise UntrustedIdentity("bundle identity key does not match the address")
    devices = response.get("devices")
    if not isinstance(devices, list):
        raise DecodeError("devices must be a list")
    return [PreKeyBundle.from_json(d, identity) for d in devices]
