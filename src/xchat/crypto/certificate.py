"""Server-signed sender certificates (PROTOCOL.md Part I §4).

A sealed-sender message hides its sender from the server, so the recipient needs another
way to know the sender's claimed identity is one the server actually registered. The
server signs a short-lived certificate binding an identity key and device id; the sender
places it inside the sealed envelope and the recipient checks it against the server's
published signing key and against the key that authenticated the envelope.

Layout: ``0x01 || IdentityKey(65) || device_id u32 || expires_ms u64 || signature(64)``,
signature = Ed25519(server key, ``b"XChat-v1-sender-cert" || everything before it``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat.crypto import ed25519
from xchat.crypto.keys import IDENTITY_KEY_LEN, IdentityPublicKey
from xchat.errors import (
    DecodeError,
    ExpiredCertificate,
    InvalidCertificate,
    InvalidSignature,
    UnsupportedVersion,
)

CERTIFICATE_VERSION = 0x01
LABEL_SENDER_CERT = b"XChat-v1-sender-cert"
CERTIFICATE_LIFETIME_MS = 24 * 3600 * 1000  # a day: short enough that revocation is moot
_BODY = struct.Struct(">IQ")
CERTIFICATE_LEN = 1 + IDENTITY_KEY_LEN + _BODY.size + 64


def issue_sender_certificate(
    server_key: Ed25519PrivateKey, identity: IdentityPublicKey, device_id: int, expires_ms: int
) -> bytes:
    """Sign a certificate for ``identity``/``device_id`` valid until ``expires_ms``."""
    if not 0 <= device_id <= 0xFFFFFFFF or not 0 <= expires_ms <= 0xFFFFFFFFFFFFFFFF:
        raise InvalidCertificate("device id or expiry out of range")
    unsigned = bytes([CERTIFICATE_VERSION]) + identity.encode() + _BODY.pack(device_id, expires_ms)
    return unsigned + server_key.sign(LABEL_SENDER_CERT + unsigned)


@dataclass(frozen=True)
class SenderCertificate:
    """A parsed (not yet verified) sender certificate."""

    identity: IdentityPublicKey
    device_id: int
    expires_ms: int
    signature: bytes
    raw: bytes

    @classmethod
    def decode(cls, data: bytes) -> SenderCertificate:
        """Parse the fixed layout; DecodeError / UnsupportedVersion / InvalidCertificate."""
        if len(data) != CERTIFICATE_LEN:
            raise InvalidCertificate("sender certificate has the wrong length")
        if data[0] != CERTIFICATE_VERSION:
            raise UnsupportedVersion(f"unknown sender certificate version {data[0]}")
        try:
            identity = IdentityPublicKey.decode(data[1 : 1 + IDENTITY_KEY_LEN])
        except DecodeError as exc:
            raise InvalidCertificate("sender certificate carries a malformed identity") from exc
        device_id, expires_ms = _BODY.unpack_from(data, 1 + IDENTITY_KEY_LEN)
        return cls(identity, device_id, expires_ms, data[-64:], bytes(data))

    def verify(self, server_public_key: bytes, now_ms: int) -> None:
        """Check the server's signature, then the expiry (in that order, so an expired
        forgery is reported as a forgery)."""
        try:
            ed25519.verify(server_public_key, self.signature, LABEL_SENDER_CERT + self.raw[:-64])
        except InvalidSignature as exc:
            raise InvalidCertificate("sender certificate is not signed by this server") from exc
        if now_ms >= self.expires_ms:
            raise ExpiredCertificate("sender certificate has expired")

    @property
    def address(self) -> str:
        """The sender's account address."""
        return self.identity.address()
