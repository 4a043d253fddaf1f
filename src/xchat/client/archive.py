"""The history-backup archive format (PROTOCOL.md Part X §9), sans-I/O.

A backup is a list of *segments* plus one *manifest*:

* A segment is a JSON object (contacts, groups, sender keys, settings and the messages
  stored since the previous segment), zlib-compressed, then encrypted as a blob with the
  file cipher of Part VI §3 (STREAM chunks of AES-256-GCM under a fresh random key,
  Padmé-padded), so the relay sees one more padded blob like any file.
* The manifest lists the segments (blob id, key, digest, size) in order. It is sealed with
  AES-256-GCM under ``HKDF(account secret, "XChat-v1-backup-manifest-key")`` with the
  account's address in the associated data, padded (ISO 7816-4) to its Padmé length, and
  stored at the relay (``PUT /api/v1/backup``). Only the account secret opens it, and a
  manifest of another account does not open (DecryptionError) even if a relay swaps them.

Restore applies the segments in order: messages accumulate (ids de-duplicate), the last
segment's contacts, groups and settings win.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat import encoding
from xchat.crypto.keys import hkdf
from xchat.crypto.padding import padme_size
from xchat.errors import DecodeError, DecryptionError, TooLarge

ARCHIVE_VERSION: Final = 1
LABEL_MANIFEST_KEY: Final = b"XChat-v1-backup-manifest-key"
LABEL_MANIFEST_AAD: Final = b"XChat-v1-backup-manifest"
MAX_SEGMENT_PLAIN: Final = 512 * 1024 * 1024  # decompression bound (a zip bomb stops here)
MAX_SEGMENTS: Final = 16  # then the next backup is a full one (compaction)

Rng = Callable[[int], bytes]


def manifest_key(secret: bytes) -> bytes:
    return hkdf(secret, b"", LABEL_MANIFEST_KEY, 32)


def _aad(address: str) -> bytes:
    return LABEL_MANIFEST_AAD + address.encode("ascii")


def seal_manifest(
    secret: bytes, address: str, manifest: dict[str, Any], rng: Rng = os.urandom
) -> bytes:
    """``nonce(12) || AES-256-GCM(key, nonce, pad(JSON), aad = label || address)``."""
    data = json.dumps(manifest, separators=(",", ":")).encode()
    padded = data + b"\x80" + bytes(padme_size(len(data) + 1) - len(data) - 1)
    nonce = rng(12)
    return nonce + AESGCM(manifest_key(secret)).encrypt(nonce, padded, _aad(address))


def open_manifest(secret: bytes, address: str, sealed: bytes) -> dict[str, Any]:
    """The manifest object; DecryptionError if it is not this account's (or tampered)."""
    if len(sealed) < 12 + 16 + 1:
        raise DecryptionError("backup manifest too short")
    try:
        padded = AESGCM(manifest_key(secret)).decrypt(sealed[:12], sealed[12:], _aad(address))
    except InvalidTag:
        raise DecryptionError("backup manifest does not open with this account's key") from None
    end = padded.rstrip(b"\x00")
    if not end.endswith(b"\x80"):
        raise DecodeError("backup manifest padding is malformed")
    try:
        obj = json.loads(end[:-1])
    except ValueError:
        raise DecodeError("backup manifest is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != ARCHIVE_VERSION:
        raise DecodeError("unsupported backup manifest version")
    if obj.get("address") != address:
        raise DecryptionError("backup manifest is for another account")
    if not isinstance(obj.get("segments"), list):
        raise DecodeError("backup manifest has no segment list")
    return obj


def encode_segment(segment: dict[str, Any]) -> bytes:
    """JSON, compressed (level 6: ~3-4x on chat history, fast)."""
    return zlib.compress(json.dumps(segment, separators=(",", ":")).encode(), 6)


def decode_segment(data: bytes, address: str) -> dict[str, Any]:
    """Inverse of :func:`encode_segment`, bounded to :data:`MAX_SEGMENT_PLAIN` bytes."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, MAX_SEGMENT_PLAIN)
    except zlib.error:
        raise DecodeError("backup segment is not valid zlib") from None
    if d.unconsumed_tail:
        raise TooLarge("backup segment expands beyond the limit")
    try:
        obj = json.loads(raw)
    except ValueError:
        raise DecodeError("backup segment is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != ARCHIVE_VERSION:
        raise DecodeError("unsupported backup segment version")
    if obj.get("address") != address:
        raise DecryptionError("backup segment is for another account")
    return obj


def body_to_json(body: bytes) -> dict[str, str]:
    """Message bodies are JSON text almost always; keep them readable (and compressible)
    and fall back to base64 for anything else."""
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": encoding.b64encode(body)}


def body_from_json(obj: object) -> bytes:
    if isinstance(obj, dict):
        if isinstance(obj.get("text"), str):
            return str(obj["text"]).encode("utf-8")
        if "b64" in obj:
            return encoding.b64decode(obj["b64"], "backup message body")
    raise DecodeError("backup message body is malformed")


b64 = encoding.b64encode


def unb64(value: object, what: str) -> bytes:
    return encoding.b64decode(value, f"backup {what}")
