"""Base64 as every part of XChat writes and reads it (PROTOCOL.md Part 0 §0.1).

One implementation, because seven had grown with different rules: some accepted junk
characters (``base64.urlsafe_b64decode`` silently drops anything outside its alphabet), some
accepted non-canonical encodings, and each raised its own exception. The rules here:

- standard base64 (RFC 4648 §4) is written padded; base64url (§5, for URL paths) unpadded;
- a decoder accepts only a ``str`` of its own alphabet, with canonical padding (standard:
  required; url: optional) and canonical trailing bits, i.e. exactly what the encoder would
  write for the same bytes; so one value has one spelling, and no two spellings are told
  apart anywhere (in a cache key, a replay log, a signature input);
- every failure is :class:`~xchat.errors.DecodeError` naming the field (``what``); layers
  translate it at their boundary (the relay to HTTP 400, the client to ``ProtocolError`` for
  what a server sent).
"""

from __future__ import annotations

import base64
import binascii
import re

from xchat.errors import DecodeError

_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*")


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding (RFC 4648 §5, as in URL paths)."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64decode(value: object, what: str, length: int | None = None) -> bytes:
    """Strict standard base64 → bytes (exactly ``length`` of them if given); DecodeError."""
    if not isinstance(value, str) or not _STANDARD.fullmatch(value):
        raise DecodeError(f"{what}: not standard base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what}: not standard base64") from None
    if b64encode(raw) != value:
        raise DecodeError(f"{what}: not canonical base64")
    return _checked_length(raw, what, length)


def b64url_decode(value: object, what: str, length: int | None = None) -> bytes:
    """Strict base64url, padding optional → bytes (``length`` checked if given); DecodeError."""
    if not isinstance(value, str):
        raise DecodeError(f"{what}: not base64url")
    unpadded = value.rstrip("=")
    if not _URLSAFE.fullmatch(unpadded) or (value != unpadded and len(value) % 4):
        raise DecodeError(f"{what}: not base64url")
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what}: not base64url") from None
    if b64url_encode(raw) != unpadded:
        raise DecodeError(f"{what}: not canonical base64url")
    return _checked_length(raw, what, length)


def _checked_length(raw: bytes, what: str, length: int | None) -> bytes:
    if length is not None and len(raw) != length:
        raise DecodeError(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw
