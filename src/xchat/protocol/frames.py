"""Sans-I/O codec of the WebSocket data-plane frames (PROTOCOL.md Part III §5).

One binary WebSocket message carries exactly one frame: ``type u8 || body``. Integers are
big-endian. The decoder is total: any byte string either decodes to a frame object or raises
:class:`xchat.errors.DecodeError` (never ``struct.error``/``IndexError``/``UnicodeError``), so
the server can close a socket with 4400 on any malformed input without a traceback.

The decoder checks structure only (lengths, counts, types, trailing bytes); semantic limits
(envelope size, allowed addresses) belong to the server, which knows its configuration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from xchat.errors import DecodeError, UnsupportedVersion

# Frame types (PROTOCOL Part III §5).
SEND: Final = 0x01
ACK: Final = 0x02
SEND_MULTI: Final = 0x03
SEND_RESULT: Final = 0x10
DELIVER: Final = 0x11
DRAINED: Final = 0x12
KEYS_LOW: Final = 0x13

# Access kinds inside a SEND destination.
ACCESS_NONE: Final = 0
ACCESS_TOKEN: Final = 1
ACCESS_POW: Final = 2

ENVELOPE_ID_LEN: Final = 16
DELIVERY_TOKEN_LEN: Final = 16

# WebSocket close codes (PROTOCOL Part III §5).
CLOSE_MALFORMED: Final = 4400
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403
CLOSE_TIMEOUT: Final = 4408
CLOSE_REPLACED: Final = 4409
CLOSE_TOO_LARGE: Final = 4413
CLOSE_RATE_LIMITED: Final = 4429

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SEND_RESULT_HEAD = struct.Struct(">IHIH")
_DELIVER_ITEM_HEAD = struct.Struct(">16sQI")
_ENV_HEAD = struct.Struct(">I16sI")
_KEYS_LOW = struct.Struct(">II")
_U16_MAX: Final = 0xFFFF


# --- frame objects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenAccess:
    """Access by the recipient's 16-byte delivery token (kind 1)."""

    token: bytes


@dataclass(frozen=True, slots=True)
class PowAccess:
    """Access by a proof-of-work stamp over a server challenge (kind 2, PROTOCOL Part I §5)."""

    challenge: bytes
    nonce: int


Access = TokenAccess | PowAccess | None


@dataclass(frozen=True, slots=True)
class OutEnvelope:
    """One envelope for one recipient device inside a SEND."""

    device_id: int
    envelope_id: bytes
    content: bytes


@dataclass(frozen=True, slots=True)
class Destination:
    """All envelopes for one recipient address, with the access proof for it."""

    address: str
    access: Access
    envelopes: tuple[OutEnvelope, ...]


@dataclass(frozen=True, slots=True)
class Send:
    """``0x01`` client → server: a sealed-sender send to one or more addresses."""

    req_id: int
    destinations: tuple[Destination, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """``0x02`` client → server: delete these envelopes from my queue."""

    envelope_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SendResult:
    """``0x10`` server → client: outcome of the SEND with ``req_id`` (status as HTTP)."""

    req_id: int
    status: int
    retry_after_ms: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class Delivered:
    """One queued envelope inside a DELIVER."""

    envelope_id: bytes
    ts_ms: int
    content: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """``0x11`` server → client: envelopes in per-device queue order."""

    envelopes: tuple[Delivered, ...]


@dataclass(frozen=True, slots=True)
class Drained:
    """``0x12`` server → client: the backlog present when the socket opened is delivered."""


@dataclass(frozen=True, slots=True)
class KeysLow:
    """``0x13`` server → client: one-time prekey stock is low; upload more."""

    ec: int
    kem: int


Frame = Send | Ack | SendResult | Deliver | Drained | KeysLow


# --- encoding ----------------------------------------------------------------------------


def _check_u16(n: int, what: str) -> None:
    if not 0 <= n <= _U16_MAX:
        raise DecodeError(f"too many {what}: {n}")


def _encode_access(access: Access) -> bytes:
    if access is None:
        return bytes([ACCESS_NONE]) + _U16.pack(0)
    if isinstance(access, TokenAccess):
        if len(access.token) != DELIVERY_TOKEN_LEN:
            raise DecodeError("delivery token must be 16 bytes")
        return bytes([ACCESS_TOKEN]) + _U16.pack(DELIVERY_TOKEN_LEN) + access.token
    _check_u16(len(access.challenge), "challenge bytes")
    body = _U16.pack(len(access.challenge)) + access.challenge + _U64.pack(access.nonce)
    _check_u16(len(body), "access bytes")
    return bytes([ACCESS_POW]) + _U16.pack(len(body)) + body


def _encode_destination(dest: Destination) -> bytes:
    addr = dest.address.encode("ascii")
    if not 1 <= len(addr) <= 0xFF:
        raise DecodeError("address length must be 1..255")
    _check_u16(len(dest.envelopes), "envelopes")
    parts = [bytes([len(addr)]), addr, _encode_access(dest.access)]
    parts.append(_U16.pack(len(dest.envelopes)))
    for env in dest.envelopes:
        if len(env.envelope_id) != ENVELOPE_ID_LEN:
            raise DecodeError("envelope id must be 16 bytes")
        parts.append(_ENV_HEAD.pack(env.device_id, env.envelope_id, len(env.content)))
        parts.append(env.content)
    return b"".join(parts)


def encode_deliver(items: list[tuple[bytes, int, bytes]]) -> bytes:
    """Encode a DELIVER from ``(envelope_id, ts_ms, content)`` tuples (hot path: no objects)."""
    _check_u16(len(items), "envelopes")
    parts = [bytes([DELIVER]), _U16.pack(len(items))]
    pack = _DELIVER_ITEM_HEAD.pack
    for envelope_id, ts_ms, content in items:
        parts.append(pack(envelope_id, ts_ms, len(content)))
        parts.append(content)
    return b"".join(parts)


def encode_send_result(
    req_id: int, status: int, retry_after_ms: int = 0, message: str = ""
) -> bytes:
    """Encode a SEND_RESULT (hot path: no objects)."""
    msg = message.encode("utf-8")[:_U16_MAX]
    return (
        bytes([SEND_RESULT])
        + _SEND_RESULT_HEAD.pack(req_id, status, retry_after_ms, len(msg))
        + msg
    )


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame to its wire bytes (PROTOCOL Part III §5). Out-of-range fields raise
    :class:`DecodeError` (the same error a peer would get decoding them)."""
    try:
        if isinstance(frame, Send):
            _check_u16(len(frame.destinations), "destinations")
            head = bytes([SEND]) + _U32.pack(frame.req_id) + _U16.pack(len(frame.destinations))
            return head + b"".join(_encode_destination(d) for d in frame.destinations)
        if isinstance(frame, Ack):
            _check_u16(len(frame.envelope_ids), "envelope ids")
            if any(len(i) != ENVELOPE_ID_LEN for i in frame.envelope_ids):
                raise DecodeError("envelope id must be 16 bytes")
            return bytes([ACK]) + _U16.pack(len(frame.envelope_ids)) + b"".join(frame.envelope_ids)
        if isinstance(frame, SendResult):
            return encode_send_result(
                frame.req_id, frame.status, frame.retry_after_ms, frame.message
            )
        if isinstance(frame, Deliver):
            return encode_deliver([(d.envelope_id, d.ts_ms, d.content) for d in frame.envelopes])
        if isinstance(frame, Drained):
            return bytes([DRAINED])
        return bytes([KEYS_LOW]) + _KEYS_LOW.pack(frame.ec, frame.kem)
    except (struct.error, UnicodeEncodeError, OverflowError) as exc:
        raise DecodeError(f"cannot encode frame: {exc}") from None


# --- decoding ----------------------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over a frame body; every overrun is a DecodeError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError("truncated frame")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("truncated frame")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        v: int = _U16.unpack(self.take(2))[0]
        return v

    def u32(self) -> int:
        v: int = _U32.unpack(self.take(4))[0]
        return v

    def u64(self) -> int:
        v: int = _U64.unpack(self.take(8))[0]
        return v

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError("trailing bytes after frame")


def _decode_access(r: _Reader) -> Access:
    kind = r.u8()
    body = _Reader(r.take(r.u16()))
    access: Access
    if kind == ACCESS_NONE:
        access = None
    elif kind == ACCESS_TOKEN:
        access = TokenAccess(body.take(DELIVERY_TOKEN_LEN))
    elif kind == ACCESS_POW:
        challenge = body.take(body.u16())
        access = PowAccess(challenge, body.u64())
    else:
        raise DecodeError(f"unknown access kind {kind}")
    body.end()
    return access


def _decode_destination(r: _Reader) -> Destination:
    raw = r.take(r.u8())
    if not raw or not raw.isascii() or not raw.isalnum():
        raise DecodeError("address must be non-empty alphanumeric ASCII")
    access = _decode_access(r)
    envelopes = []
    for _ in range(r.u16()):
        device_id, envelope_id, n = _ENV_HEAD.unpack(r.take(_ENV_HEAD.size))
        envelopes.append(OutEnvelope(device_id, envelope_id, r.take(n)))
    return Destination(raw.decode("ascii"), access, tuple(envelopes))


def _decode_body(kind: int, r: _Reader) -> Frame:
    if kind == SEND:
        req_id = r.u32()
        dests = tuple(_decode_destination(r) for _ in range(r.u16()))
        return Send(req_id, dests)
    if kind == ACK:
        n = r.u16()
        raw = r.take(n * ENVELOPE_ID_LEN)
        ids = tuple(raw[i : i + ENVELOPE_ID_LEN] for i in range(0, len(raw), ENVELOPE_ID_LEN))
        return Ack(ids)
    if kind == SEND_RESULT:
        req_id, status, retry, n = _SEND_RESULT_HEAD.unpack(r.take(_SEND_RESULT_HEAD.size))
        try:
            message = r.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("SEND_RESULT message is not UTF-8") from None
        return SendResult(req_id, status, retry, message)
    if kind == DELIVER:
        items = []
        for _ in range(r.u16()):
            envelope_id, ts_ms, n = _DELIVER_ITEM_HEAD.unpack(r.take(_DELIVER_ITEM_HEAD.size))
            items.append(Delivered(envelope_id, ts_ms, r.take(n)))
        return Deliver(tuple(items))
    if kind == DRAINED:
        return Drained()
    if kind == KEYS_LOW:
        ec, kem = _KEYS_LOW.unpack(r.take(_KEYS_LOW.size))
        return KeysLow(ec, kem)
    raise UnsupportedVersion(f"unknown frame type 0x{kind:02x}")


#: One SEND destination as plain tuples: ``(address, access, ((device_id, envelope_id,
#: content), ...))`` — the shape :func:`decode_send` returns for the server's hot path.
SendItem = tuple[str, Access, list[tuple[int, bytes, bytes]]]

_SEND_HEAD = struct.Struct(">IH")


def decode_send(data: bytes) -> tuple[int, list[SendItem]]:
    """Decode a SEND frame (type byte included) to ``(req_id, destinations)`` without
    building frame objects: the relay's hot path (PROTOCOL Part III §5). Accepts and rejects exactly
    what :func:`decode_frame` does for type 0x01, with the same :class:`DecodeError`s."""
    if data[:1] != b"\x01":
        raise DecodeError("not a SEND frame")
    n = len(data)
    if n < 7:
        raise DecodeError("truncated frame")
    req_id, n_dest = _SEND_HEAD.unpack_from(data, 1)
    pos = 7
    dests: list[SendItem] = []
    env_head = _ENV_HEAD.unpack_from
    for _ in range(n_dest):
        if pos >= n:
            raise DecodeError("truncated frame")
        alen = data[pos]
        end = pos + 1 + alen
        if end + 3 > n:
            raise DecodeError("truncated frame")
        raw = data[pos + 1 : end]
        if not raw or not raw.isascii() or not raw.isalnum():
            raise DecodeError("address must be non-empty alphanumeric ASCII")
        kind = data[end]
        blen = (data[end + 1] << 8) | data[end + 2]
        pos = end + 3 + blen
        if pos > n:
            raise DecodeError("truncated frame")
        access: Access
        if kind == ACCESS_TOKEN and blen == DELIVERY_TOKEN_LEN:
            access = TokenAccess(data[end + 3 : pos])
        else:
            r = _Reader(data[end:pos])
            access = _decode_access(r)
        if pos + 2 > n:
            raise DecodeError("truncated frame")
        n_env = (data[pos] << 8) | data[pos + 1]
        pos += 2
        envs: list[tuple[int, bytes, bytes]] = []
        for _ in range(n_env):
            if pos + 24 > n:
                raise DecodeError("truncated frame")
            device_id, envelope_id, clen = env_head(data, pos)
            pos += 24
            end = pos + clen
            if end > n:
                raise DecodeError("truncated frame")
            envs.append((device_id, envelope_id, data[pos:end]))
            pos = end
        dests.append((raw.decode("ascii"), access, envs))
    if pos != n:
        raise DecodeError("trailing bytes after frame")
    return req_id, dests


def decode_frame(data: bytes) -> Frame:
    """Decode one frame (PROTOCOL Part III §5). Raises :class:`DecodeError` on any malformed input:
    empty data, unknown type, truncation, bad counts or trailing bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("frame must be bytes")
    data = bytes(data)
    if not data:
        raise DecodeError("empty frame")
    r = _Reader(data)
    r.pos = 1
    frame = _decode_body(data[0], r)
    r.end()
    return frame


# --- SEND_MULTI (PROTOCOL Part III §5.2): one shared payload, a small header per device -----------

#: Address hash length in a SEND_MULTI destination (PROTOCOL Part I §1: the address's 20 bytes).
ADDRESS_HASH_LEN: Final = 20
_MULTI_HEAD = struct.Struct(">II")  # req_id, shared_len
_MULTI_ENV = struct.Struct(">I16sB")  # device_id, envelope_id, header_len


@dataclass(frozen=True, slots=True)
class MultiEnvelope:
    """One recipient device of a SEND_MULTI: it is stored ``header || shared``."""

    device_id: int
    envelope_id: bytes
    header: bytes


@dataclass(frozen=True, slots=True)
class MultiDestination:
    """One recipient address (as its 20-byte hash) with its access proof and devices."""

    address_hash: bytes
    access: Access
    envelopes: tuple[MultiEnvelope, ...]


@dataclass(frozen=True, slots=True)
class SendMulti:
    """``0x03`` client → server: the same ``shared`` bytes for many devices, each prefixed
    by its own small header (a multi-recipient sealed-sender message, PROTOCOL Part I §8)."""

    req_id: int
    shared: bytes
    destinations: tuple[MultiDestination, ...]


def encode_send_multi(frame: SendMulti) -> bytes:
    """``0x03 || req_id u32 || shared_len u32 || shared || n_dest u16 || dest*`` with
    ``dest = addr_hash(20) || access (as in SEND) || n_env u8 || env*`` and
    ``env = device_id u32 || envelope_id(16) || header_len u8 || header`` (PROTOCOL III §5.2)."""
    try:
        _check_u16(len(frame.destinations), "destinations")
        parts = [bytes([SEND_MULTI]), _MULTI_HEAD.pack(frame.req_id, len(frame.shared))]
        parts.append(frame.shared)
        parts.append(_U16.pack(len(frame.destinations)))
        for dest in frame.destinations:
            if len(dest.address_hash) != ADDRESS_HASH_LEN:
                raise DecodeError("address hash must be 20 bytes")
            if len(dest.envelopes) > 0xFF:
                raise DecodeError("too many devices in one SEND_MULTI destination")
            parts.append(dest.address_hash)
            parts.append(_encode_access(dest.access))
            parts.append(bytes([len(dest.envelopes)]))
            for env in dest.envelopes:
                if len(env.envelope_id) != ENVELOPE_ID_LEN:
                    raise DecodeError("envelope id must be 16 bytes")
                parts.append(_MULTI_ENV.pack(env.device_id, env.envelope_id, len(env.header)))
                parts.append(env.header)
        return b"".join(parts)
    except (struct.error, OverflowError) as exc:
        raise DecodeError(f"cannot encode frame: {exc}") from None


def decode_send_multi(data: bytes) -> SendMulti:
    """Inverse of :func:`encode_send_multi` (type byte included); DecodeError on any
    malformed input, like :func:`decode_frame`."""
    data = bytes(data)
    if data[:1] != bytes([SEND_MULTI]):
        raise DecodeError("not a SEND_MULTI frame")
    r = _Reader(data)
    r.pos = 1
    req_id, shared_len = _MULTI_HEAD.unpack(r.take(_MULTI_HEAD.size))
    shared = r.take(shared_len)
    dests = []
    for _ in range(r.u16()):
        address_hash = r.take(ADDRESS_HASH_LEN)
        access = _decode_access(r)
        envs = []
        for _ in range(r.u8()):
            device_id, envelope_id, n = _MULTI_ENV.unpack(r.take(_MULTI_ENV.size))
            envs.append(MultiEnvelope(device_id, envelope_id, r.take(n)))
        dests.append(MultiDestination(address_hash, access, tuple(envs)))
    r.end()
    return SendMulti(req_id, shared, tuple(dests))


def expand_send_multi(frame: SendMulti) -> list[SendItem]:
    """The SEND destinations a SEND_MULTI stands for: each device's content is
    ``header || shared``, the address the bech32m form of its hash (PROTOCOL III §5.2)."""
    from xchat.crypto.keys import encode_address  # sans-I/O; imported late, cold path

    shared = frame.shared
    return [
        (
            encode_address(d.address_hash),
            d.access,
            # an empty header: the sender's own device, counted but not stored (Part VII §4)
            [
                (e.device_id, e.envelope_id, e.header + shared if e.header else b"")
                for e in d.envelopes
            ],
        )
        for d in frame.destinations
    ]
