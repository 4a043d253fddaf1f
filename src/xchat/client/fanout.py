"""The device fan-out of a 1:1 message (PROTOCOL.md Part VII §4): content encrypted once.

A message to an account with several devices, copied to the sender's own other devices,
is encrypted ONCE under a fresh 32-byte key ``K``; every target device gets ``K`` through
its own pairwise session (a 90-byte ratchet message, unpadded: ``K`` has a fixed size).
The whole thing is sealed with ``seal_multi`` (sealed content type ``0x03``) and sent in one
``SEND_MULTI``: one upload, 49 bytes of sealed header plus ~100 bytes of entry per extra
device. Pure functions; the client does the sessions and I/O.

Layout (all inside the sealed payload, so the relay sees none of it)::

    0x01 || to_len u8 || to (ASCII address of the conversation's peer account)
         || n u8 || n x (flags u8 (bit 0: the sender's own device), device_id u32,
                         len u16, session message (Part II §5) whose plaintext is K)
         || body = AES-256-GCM(K, 0^12, pad(content JSON), aad = label || to)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.crypto import padding
from xchat.errors import DecodeError, DecryptionError, UnsupportedVersion

FANOUT_CONTENT_TYPE = 0x03  # = e2e.FANOUT_CONTENT_TYPE
FANOUT_VERSION = 0x01
LABEL_FANOUT = b"XChat-v1-fanout"
KEY_LEN = 32
MAX_ENTRIES = 255
_ENTRY = struct.Struct(">BIH")
_NONCE = b"\0" * 12


@dataclass(frozen=True)
class FanoutEntry:
    own: bool  # a device of the sender's own account (a "sent" copy)
    device_id: int
    message: bytes  # Part II session message carrying K


@dataclass(frozen=True)
class Fanout:
    to: str
    entries: tuple[FanoutEntry, ...]
    body: bytes

    def entry(self, own: bool, device_id: int) -> FanoutEntry:
        for e in self.entries:
            if e.own == own and e.device_id == device_id:
                return e
        raise DecryptionError("fan-out names no entry for this device")


def encode(to: str, entries: list[FanoutEntry], body: bytes) -> bytes:
    raw_to = to.encode("ascii")
    if len(raw_to) > 255 or len(entries) > MAX_ENTRIES:
        raise DecodeError("fan-out too wide")
    out = bytearray([FANOUT_VERSION, len(raw_to)]) + raw_to + bytes([len(entries)])
    for e in entries:
        out += _ENTRY.pack(1 if e.own else 0, e.device_id, len(e.message)) + e.message
    return bytes(out + body)


def decode(data: bytes) -> Fanout:
    if not data:
        raise DecodeError("empty fan-out")
    if data[0] != FANOUT_VERSION:
        raise UnsupportedVersion(f"fan-out version {data[0]}")
    try:
        n_to = data[1]
        to = data[2 : 2 + n_to].decode("ascii")
        off = 2 + n_to
        n = data[off]
        off += 1
        entries = []
        for _ in range(n):
            flags, device_id, size = _ENTRY.unpack_from(data, off)
            off += _ENTRY.size
            msg = data[off : off + size]
            if len(msg) != size or flags > 1:
                raise DecodeError("fan-out entry malformed")
            off += size
            entries.append(FanoutEntry(bool(flags), device_id, msg))
    except (IndexError, struct.error, UnicodeDecodeError):
        raise DecodeError("fan-out truncated") from None
    if len(data) - off < 16:
        raise DecodeError("fan-out body missing")
    return Fanout(to, tuple(entries), data[off:])


def seal_body(key: bytes, to: str, plaintext: bytes) -> bytes:
    """``K`` is fresh per message, so the constant nonce is safe (as Part I §7.2)."""
    return AESGCM(key).encrypt(_NONCE, padding.pad(plaintext), LABEL_FANOUT + to.encode())


def open_body(key: bytes, to: str, body: bytes) -> bytes:
    if len(key) != KEY_LEN:
        raise DecryptionError("fan-out key has the wrong length")
    try:
        padded = AESGCM(key).decrypt(_NONCE, body, LABEL_FANOUT + to.encode())
    except InvalidTag:
        raise DecryptionError("fan-out body does not decrypt") from None
    return padding.unpad(padded)
