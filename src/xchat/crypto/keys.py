"""Identity keys, addresses and recovery phrases (PROTOCOL.md Part I §1–3).

One 32-byte seed is the whole identity. From it we derive, with HKDF (RFC 5869), an
Ed25519 signing key (RFC 8032) and an X25519 agreement key (RFC 7748). Signal uses one
Curve25519 key for both via XEdDSA; pyca/cryptography has no XEdDSA and we never write
primitives ourselves, so we derive two keys from the seed instead and publish both.

The seed is shown to the user once as a BIP-39 24-word phrase; restoring the phrase
restores the same keys and therefore the same address. The address is a bech32m string
(BIP-350 checksum, human-readable part ``xc``) of a hash of the public identity key: short
enough to read aloud, and a typo is caught by the checksum rather than sending to a
stranger.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from bech32m.codecs import DecodeError as _Bech32DecodeError
from bech32m.codecs import Encoding, bech32_decode, bech32_encode, convertbits
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mnemonic import Mnemonic

from xchat.crypto.ed25519 import check_public_key as ed25519_check_public_key
from xchat.crypto.ed25519 import verify as ed25519_verify
from xchat.errors import (
    DecodeError,
    DecryptionError,
    InvalidAddress,
    InvalidMnemonic,
    UnsupportedVersion,
)

Rng = Callable[[int], bytes]

SEED_LEN = 32
IDENTITY_KEY_VERSION = 0x01
IDENTITY_KEY_LEN = 65  # version || ed25519 (32) || x25519 (32)
ADDRESS_HRP = "xc"
ADDRESS_VERSION = 0x00
ADDRESS_HASH_LEN = 20  # 160-bit second-preimage resistance; ~42-character addresses
ADDRESS_MAX_LEN = 90  # BIP-173/350 limit for the checksum's error-detection guarantee

# Encoded public keys as they appear in bundles and under signatures (Signal's type bytes).
X25519_KEY_TYPE = 0x05
MLKEM1024_KEY_TYPE = 0x08
X25519_ENCODED_LEN = 33
MLKEM1024_PUBLIC_LEN = 1568
MLKEM1024_ENCODED_LEN = 1 + MLKEM1024_PUBLIC_LEN

LABEL_ED25519 = b"XChat-v1-identity-ed25519"
LABEL_X25519 = b"XChat-v1-identity-x25519"
LABEL_ADDRESS = b"XChat-v1-address"
LABEL_PREKEY_SIGNATURE = b"XChat-v1-prekey"

_MNEMONIC = Mnemonic("english")


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand; an empty salt means HashLen zero bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def x25519_dh(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement that refuses malformed or low-order peer keys.

    ``cryptography`` raises ``ValueError`` for an all-zero shared secret (a low-order point);
    we turn that and bad lengths into one opaque error, as a forged key is just a message
    that is not for us.
    """
    if len(peer_public) != 32:
        raise DecodeError("X25519 public key must be 32 bytes")
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise DecryptionError("invalid key agreement") from exc


def encode_x25519(public: bytes) -> bytes:
    """``0x05 || key``: the encoding used in bundles and under prekey signatures."""
    if len(public) != 32:
        raise DecodeError("X25519 public key must be 32 bytes")
    return bytes([X25519_KEY_TYPE]) + public


def decode_x25519(encoded: bytes) -> bytes:
    """Inverse of :func:`encode_x25519`; DecodeError on a wrong type byte or length."""
    if len(encoded) != X25519_ENCODED_LEN or encoded[0] != X25519_KEY_TYPE:
        raise DecodeError("not an encoded X25519 public key")
    return encoded[1:]


def encode_mlkem1024(public: bytes) -> bytes:
    """``0x08 || key``: an ML-KEM-1024 (FIPS 203) encapsulation key as published."""
    if len(public) != MLKEM1024_PUBLIC_LEN:
        raise DecodeError("ML-KEM-1024 public key must be 1568 bytes")
    return bytes([MLKEM1024_KEY_TYPE]) + public


def decode_mlkem1024(encoded: bytes) -> bytes:
    """Inverse of :func:`encode_mlkem1024`."""
    if len(encoded) != MLKEM1024_ENCODED_LEN or encoded[0] != MLKEM1024_KEY_TYPE:
        raise DecodeError("not an encoded ML-KEM-1024 public key")
    return encoded[1:]


@dataclass(frozen=True)
class IdentityPublicKey:
    """The public half of an identity: what contacts pin and safety numbers cover."""

    ed25519: bytes
    x25519: bytes

    @classmethod
    def from_parts(cls, ed25519: bytes, x25519: bytes) -> IdentityPublicKey:
        """Build from raw 32-byte keys, validating the Ed25519 point encoding."""
        if len(ed25519) != 32 or len(x25519) != 32:
            raise DecodeError("identity key parts must be 32 bytes each")
        ed25519_check_public_key(ed25519)
        return cls(ed25519, x25519)

    def encode(self) -> bytes:
        """``0x01 || ed25519 || x25519`` (65 bytes)."""
        return bytes([IDENTITY_KEY_VERSION]) + self.ed25519 + self.x25519

    @classmethod
    def decode(cls, data: bytes) -> IdentityPublicKey:
        """Parse the 65-byte encoding; DecodeError / UnsupportedVersion on bad input."""
        if len(data) != IDENTITY_KEY_LEN:
            raise DecodeError("identity key must be 65 bytes")
        if data[0] != IDENTITY_KEY_VERSION:
            raise UnsupportedVersion(f"unknown identity key version {data[0]}")
        return cls.from_parts(data[1:33], data[33:65])

    def address(self) -> str:
        """The account address derived from this key (PROTOCOL.md Part I §2)."""
        return encode_address(address_hash(self.encode()))

    def verify(self, signature: bytes, message: bytes) -> None:
        """Check an Ed25519 signature by this identity; InvalidSignature if it fails."""
        ed25519_verify(self.ed25519, signature, message)


@dataclass(frozen=True)
class IdentityKeyPair:
    """A device's identity secret: the seed and the two keys derived from it."""

    seed: bytes = field(repr=False)
    public: IdentityPublicKey
    ed25519_private: Ed25519PrivateKey = field(repr=False, compare=False)
    x25519_private: X25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> IdentityKeyPair:
        """A fresh identity from 32 random bytes."""
        return cls.from_seed(rng(SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKeyPair:
        """Derive both key pairs from the seed (labels in PROTOCOL.md Part I §1)."""
        if len(seed) != SEED_LEN:
            raise DecodeError("identity seed must be 32 bytes")
        ed = Ed25519PrivateKey.from_private_bytes(hkdf(seed, b"", LABEL_ED25519, 32))
        x = X25519PrivateKey.from_private_bytes(hkdf(seed, b"", LABEL_X25519, 32))
        public = IdentityPublicKey.from_parts(
            ed.public_key().public_bytes_raw(), x.public_key().public_bytes_raw()
        )
        return cls(seed, public, ed, x)

    @classmethod
    def from_mnemonic(cls, phrase: str) -> IdentityKeyPair:
        """Restore from the 24-word BIP-39 phrase (whitespace and case are forgiven)."""
        return cls.from_seed(seed_from_mnemonic(phrase))

    def mnemonic(self) -> str:
        """The recovery phrase: BIP-39 English words for the 32-byte seed."""
        return mnemonic_from_seed(self.seed)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) by the identity key."""
        return self.ed25519_private.sign(message)

    def dh(self, peer_x25519_public: bytes) -> bytes:
        """X25519 agreement with the identity agreement key."""
        return x25519_dh(self.x25519_private, peer_x25519_public)


def mnemonic_from_seed(seed: bytes) -> str:
    """BIP-39: 256 bits of entropy + 8-bit checksum -> 24 English words."""
    if len(seed) != SEED_LEN:
        raise DecodeError("identity seed must be 32 bytes")
    return str(_MNEMONIC.to_mnemonic(seed))


def seed_from_mnemonic(phrase: str) -> bytes:
    """Inverse of :func:`mnemonic_from_seed`; InvalidMnemonic on unknown words, a wrong
    word count or a bad checksum."""
    words = phrase.lower().split()
    if len(words) != 24:
        raise InvalidMnemonic(f"a recovery phrase has 24 words, got {len(words)}")
    normalized = " ".join(words)
    try:
        valid = _MNEMONIC.check(normalized)
    except (LookupError, ValueError) as exc:
        raise InvalidMnemonic("recovery phrase contains an unknown word") from exc
    if not valid:
        raise InvalidMnemonic("recovery phrase has a wrong word or checksum")
    entropy = bytes(_MNEMONIC.to_entropy(normalized))
    if len(entropy) != SEED_LEN:
        raise InvalidMnemonic("recovery phrase does not encode 32 bytes")
    return entropy


def address_hash(identity_key: bytes) -> bytes:
    """``SHA-256(LABEL_ADDRESS || IdentityKey)[:20]``."""
    return hashlib.sha256(LABEL_ADDRESS + identity_key).digest()[:ADDRESS_HASH_LEN]


def encode_address(digest: bytes) -> str:
    """bech32m(hrp="xc", data = 5-bit groups of ``0x00 || digest``)."""
    if len(digest) != ADDRESS_HASH_LEN:
        raise DecodeError("address hash must be 20 bytes")
    data = convertbits(bytes([ADDRESS_VERSION]) + digest, 8, 5, True)
    if data is None:  # pragma: no cover - convertbits only fails on out-of-range input
        raise DecodeError("cannot encode address")
    return str(bech32_encode(ADDRESS_HRP, data, Encoding.BECH32M))


def decode_address(address: str) -> bytes:
    """Check the checksum, prefix, version and length; return the 20-byte hash."""
    if not isinstance(address, str) or not 8 <= len(address) <= ADDRESS_MAX_LEN:
        raise InvalidAddress("not an XChat address")
    try:
        hrp, data, spec = bech32_decode(address)
    except (_Bech32DecodeError, ValueError) as exc:
        raise InvalidAddress("not an XChat address (bad characters or checksum)") from exc
    if hrp is None or data is None or spec != Encoding.BECH32M:
        raise InvalidAddress("not an XChat address (bad characters or checksum)")
    if hrp != ADDRESS_HRP:
        raise InvalidAddress(f"not an XChat address (prefix {hrp!r}, expected 'xc')")
    raw = convertbits(data, 5, 8, False)
    if raw is None or len(raw) != 1 + ADDRESS_HASH_LEN:
        raise InvalidAddress("not an XChat address (wrong length)")
    if raw[0] != ADDRESS_VERSION:
        raise InvalidAddress(f"unsupported address version {raw[0]}")
    return bytes(raw[1:])


def normalize_address(address: str) -> str:
    """The canonical (lower-case) form of a valid address."""
    return encode_address(decode_address(address.strip()))


def is_address(value: str) -> bool:
    """True when ``value`` is a valid address (checksum included)."""
    try:
        decode_address(value)
    except InvalidAddress:
        return False
    return True


def address_matches(address: str, identity: IdentityPublicKey) -> bool:
    """Constant-time check that ``address`` belongs to ``identity``."""
    try:
        digest = decode_address(address)
    except InvalidAddress:
        return False
    return hmac.compare_digest(digest, address_hash(identity.encode()))
