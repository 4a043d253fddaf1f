"""The relay's signing key in its address, and key rotation (PROTOCOL.md Part III §3.1).

Every client pins the relay's Ed25519 signing key (sender certificates are checked against
it). Fetched from ``GET /api/v1/server`` on first use, the pin is only as good as that
first connection. As SimpleX server addresses do, a relay address may therefore carry the
key's fingerprint, ``http://host:port#<fingerprint>``: the fragment never leaves the
client (HTTP does not send it), and a client that was given the address refuses a relay
whose key does not match it.

    fingerprint = base64url_nopad(SHA-256(b"XChat-v1-relay-key" || signing_key))  (43 chars)

Rotation: the relay signs its next key with the current one,

    rotation = 0x01 || new_key(32) || not_before_ms u64 || old_valid_until_ms u64
               || Ed25519(old_key, b"XChat-v1-relay-rotate" || the 49 bytes before)

(121 bytes). A client holding the old pin accepts the new key only through a statement
that verifies under it, and keeps accepting certificates signed by the old key until
``old_valid_until_ms`` (the overlap), so mail sealed just before the switch still opens.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat import encoding
from xchat.crypto import ed25519
from xchat.errors import DecodeError, InvalidAddress

LABEL_FINGERPRINT = b"XChat-v1-relay-key"
LABEL_ROTATE = b"XChat-v1-relay-rotate"
FINGERPRINT_LEN = 43
_ROTATION = struct.Struct(">B32sQQ")
ROTATION_LEN = _ROTATION.size + 64  # 121


def fingerprint(signing_key: bytes) -> str:
    """The 43-character fingerprint of a relay's 32-byte Ed25519 signing key."""
    if len(signing_key) != 32:
        raise DecodeError("a relay signing key is 32 bytes")
    digest = hashlib.sha256(LABEL_FINGERPRINT + signing_key).digest()
    return encoding.b64url_encode(digest)


def relay_address(base_url: str, signing_key: bytes) -> str:
    """``base_url#fingerprint``: what ``xchat serve`` prints and users share."""
    return f"{base_url.rstrip('/')}#{fingerprint(signing_key)}"


def split_address(address: str) -> tuple[str, str | None]:
    """``http(s)://host:port[/path]#fp`` → (URL without the fragment, fingerprint or None).
    :class:`InvalidAddress` for another scheme or a malformed fingerprint."""
    try:
        parts = urlsplit(address.strip())
    except ValueError:  # e.g. an unbalanced "[" of an IPv6 literal
        raise InvalidAddress(f"not a relay address: {address!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidAddress(f"not a relay address (http:// or https://): {address!r}")
    fp = parts.fragment or None
    if fp is not None:
        # Exactly the spelling fingerprint() writes: 43 characters, no padding, canonical
        # trailing bits (a look-alike spelling would pass here and fail only at the pin).
        try:
            encoding.b64url_decode(fp, "relay key fingerprint", 32)
        except DecodeError:
            raise InvalidAddress("the relay address's key fingerprint is malformed") from None
        if len(fp) != FINGERPRINT_LEN:
            raise InvalidAddress("the relay address's key fingerprint is malformed")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))
    return base, fp


def matches(signing_key: bytes, fp: str) -> bool:
    return fingerprint(signing_key) == fp


@dataclass(frozen=True)
class Rotation:
    """A verified statement: ``new_key`` takes over; the old key stays valid until
    ``old_valid_until_ms``."""

    new_key: bytes
    not_before_ms: int
    old_valid_until_ms: int


def sign_rotation(
    old: Ed25519PrivateKey, new_key: bytes, not_before_ms: int, old_valid_until_ms: int
) -> bytes:
    if len(new_key) != 32 or old_valid_until_ms < not_before_ms:
        raise DecodeError("bad rotation: 32-byte key, overlap ending after it starts")
    body = _ROTATION.pack(1, new_key, not_before_ms, old_valid_until_ms)
    return body + old.sign(LABEL_ROTATE + body)


def verify_rotation(old_key: bytes, statement: bytes) -> Rotation:
    """The rotation if ``statement`` is signed by ``old_key``; DecodeError or
    InvalidSignature otherwise."""
    if len(statement) != ROTATION_LEN or statement[0] != 1:
        raise DecodeError("malformed relay key rotation")
    body, sig = statement[: _ROTATION.size], statement[_ROTATION.size :]
    _, new_key, not_before, until = _ROTATION.unpack(body)
    if until < not_before:
        raise DecodeError("relay key rotation overlap ends before it starts")
    ed25519.verify(old_key, sig, LABEL_ROTATE + body)  # InvalidSignature
    return Rotation(new_key, not_before, until)
