"""Relay-signed handle certificates (PROTOCOL.md Part IV §3.2).

A contact's claimed ``@handle`` must not be trusted on its word; checking it with ``GET
/handles/{handle}`` right after that contact's first message arrives tells the relay whose
message it just delivered (the lookup names the sender). Instead the sender carries, in
its E2EE ``sender`` block, a short-lived statement by the relay that the handle is its:

    cert = 0x01 || expires_ms u64 || len u8 || address (ASCII) || len u8 || handle (ASCII)
           || Ed25519(relay signing key, b"XChat-v1-handle-cert" || all bytes before)

and the recipient checks it locally against the pinned relay key: no lookup at all.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat.crypto import ed25519
from xchat.errors import DecodeError, ExpiredCertificate, InvalidCertificate, InvalidSignature

LABEL = b"XChat-v1-handle-cert"
VERSION = 0x01
MAX_FIELD = 255


def issue(relay_key: Ed25519PrivateKey, address: str, handle: str, expires_ms: int) -> bytes:
    body = _body(address, handle, expires_ms)
    return body + relay_key.sign(LABEL + body)


def _body(address: str, handle: str, expires_ms: int) -> bytes:
    a, h = address.encode("ascii"), handle.encode("ascii")
    if not (0 < len(a) <= MAX_FIELD and 0 < len(h) <= MAX_FIELD):
        raise DecodeError("handle certificate fields must be 1..255 ASCII bytes")
    return struct.pack(">BQB", VERSION, expires_ms, len(a)) + a + bytes([len(h)]) + h


def _split(cert: bytes) -> tuple[bytes, bytes, str, str, int]:
    """(signed body, signature, address, handle, expires_ms); DecodeError if malformed."""
    try:
        version, expires, alen = struct.unpack_from(">BQB", cert)
        pos = 10
        address = cert[pos : pos + alen]
        pos += alen
        hlen = cert[pos]
        handle = cert[pos + 1 : pos + 1 + hlen]
        pos += 1 + hlen
    except (struct.error, IndexError):
        raise DecodeError("truncated handle certificate") from None
    if version != VERSION or len(address) != alen or len(handle) != hlen or not alen or not hlen:
        raise DecodeError("malformed handle certificate")
    if len(cert) - pos != 64:
        raise DecodeError("handle certificate signature must be 64 bytes")
    try:
        return cert[:pos], cert[pos:], address.decode("ascii"), handle.decode("ascii"), expires
    except UnicodeDecodeError:
        raise DecodeError("handle certificate fields must be ASCII") from None


def parse(cert: bytes) -> tuple[str, str, int]:
    """``(address, handle, expires_ms)`` WITHOUT checking the signature (own cache only)."""
    _, _, address, handle, expires = _split(cert)
    return address, handle, expires


def verify(relay_keys: list[bytes], cert: bytes, now_ms: int) -> tuple[str, str]:
    """``(address, handle)`` if one of ``relay_keys`` signed ``cert`` and it has not
    expired; DecodeError / InvalidCertificate / ExpiredCertificate otherwise."""
    body, sig, address, handle, expires = _split(cert)
    for key in relay_keys:
        try:
            ed25519.verify(key, sig, LABEL + body)
            break
        except (InvalidSignature, DecodeError):
            continue
    else:
        raise InvalidCertificate("handle certificate not signed by the relay")
    if expires <= now_ms:
        raise ExpiredCertificate("handle certificate expired")
    return address, handle
