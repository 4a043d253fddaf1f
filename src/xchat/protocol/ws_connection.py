"""RFC 6455 WebSocket framing, server side, sans-I/O (PROTOCOL Part III §5.1).

Bytes in, events out; outgoing frames in, bytes out. No sockets, no asyncio, no clock: the
relay's fast path (``xchat.server.wsfast``) feeds :meth:`ServerConnection.receive_data` from
``data_received``, reads :meth:`~ServerConnection.next_event` until it returns ``None``, and
writes :meth:`~ServerConnection.data_to_send` to its transport. Everything RFC 6455 asks of a
server after the handshake lives here, so it can be tested byte by byte (and against
``websockets``' own parser, ``tests/protocol/test_ws_connection.py``) without a socket:
masking (client frames must be masked), RSV bits (no extension is negotiated), opcodes,
control frames (final, ≤ 125 bytes, interleaved with fragments), fragmentation, the message
size limit, UTF-8 of text messages and close reasons, close codes, and the close handshake.

Why a parser of our own rather than ``websockets.protocol.Protocol``: that one builds a
``Frame`` dataclass, runs a generator coroutine and copies the payload through a
``StreamReader`` for every frame; the relay's data plane is thousands of small binary frames
per second on one event loop, so the common frame (final, binary, masked) takes a short path
here that slices and unmasks in place. Where RFC 6455 leaves room, this module answers as
``websockets`` does (same checks in the same order, so the same close code for the same
bytes) except for the deviations listed in the test module's docstring.

Which layer the two transports share, and why not this one: the ASGI path (uvicorn's
``websockets`` implementation → Starlette, ``XCHAT_WS_FAST=0`` or any other ASGI server) has
its frames parsed by uvicorn before our code runs; using this parser there would mean
replacing uvicorn's WebSocket protocol class, which is what the fast path already is. So the
ASGI path keeps ``websockets``' parser, and what both paths share is everything after
parsing: a complete binary message goes to ``realtime.DeviceConnection.handle_message``, the
one place that interprets relay frames (SEND, SEND_MULTI, ACK) and decides close codes.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from websockets.exceptions import ProtocolError as _WsProtocolError
from websockets.frames import Close

try:  # websockets' C extension; the pure-Python version is the one websockets falls back to
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - exercised by tests/server/test_wsfast.py in a subprocess
    from websockets.utils import apply_mask

__all__ = [
    "CloseReceived",
    "Event",
    "Failure",
    "Ping",
    "Pong",
    "ServerConnection",
    "State",
    "TextMessage",
    "apply_mask",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_OPCODES: Final = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))

# RFC 6455 §7.4.1 codes this module sends.
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

MAX_CONTROL_PAYLOAD: Final = 125  # RFC 6455 §5.5
MAX_REASON_BYTES: Final = MAX_CONTROL_PAYLOAD - 2  # a close payload is code(2) || reason


class State(IntEnum):
    """Where the close handshake is (RFC 6455 §7)."""

    OPEN = 0  # frames flow both ways
    CLOSING = 1  # we sent a close frame: input is skipped until the peer's close frame
    CLOSED = 2  # handshake done or connection failed: nothing more is read or sent


_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


@dataclass(slots=True)
class TextMessage:
    """A complete text message, already validated as UTF-8."""

    text: str


@dataclass(slots=True)
class Ping:
    """A ping; its pong is already queued in :meth:`ServerConnection.data_to_send`."""

    payload: bytes


@dataclass(slots=True)
class Pong:
    """A pong (solicited or not: RFC 6455 §5.5.3 lets a peer send them unasked)."""

    payload: bytes


@dataclass(slots=True)
class CloseReceived:
    """The peer's close frame (``code`` 1005 when it carried none). In state OPEN the echo
    is queued in :meth:`ServerConnection.data_to_send`; either way the handshake is complete
    and the server should close TCP once that is written (RFC 6455 §7.1.1)."""

    code: int
    reason: str


@dataclass(slots=True)
class Failure:
    """The peer broke RFC 6455: the close frame with ``code`` is queued (unless one had been
    sent already) and no further input is processed (§7.1.7). The transport should write it,
    then half-close (the server closes TCP first, §7.1.1) and drop whatever else arrives."""

    code: int
    reason: str


#: What :meth:`ServerConnection.next_event` returns. A complete binary message (fragments
#: joined, unmasked) is its ``bytes`` itself: it is the relay's every frame, and a wrapper
#: object would cost more than the rest of its parsing.
Event = bytes | TextMessage | Ping | Pong | CloseReceived | Failure


_HEAD16 = struct.Struct(">BBH").pack
_HEAD64 = struct.Struct(">BBQ").pack
_BINARY_HEADS: Final = tuple(bytes((0x80 | OP_BINARY, n)) for n in range(126))


def frame_header(n: int, opcode: int) -> bytes:
    """Header of one unmasked, final server frame with an ``n``-byte payload (RFC 6455 §5.2)."""
    b0 = 0x80 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return _HEAD16(b0, 126, n)
    return _HEAD64(b0, 127, n)


def close_payload(code: int, reason: str) -> bytes:
    """``code || reason`` for a close frame, the reason cut to fit 125 bytes on a UTF-8
    character boundary (a cut inside a character would be invalid UTF-8 on the wire).

    Raises ValueError for a code an endpoint may not send (1005, 1006, 1015, < 1000, ...)."""
    raw = reason.encode("utf-8")
    if len(raw) > MAX_REASON_BYTES:
        reason = raw[:MAX_REASON_BYTES].decode("utf-8", "ignore")
    try:
        return Close(code, reason).serialize()
    except _WsProtocolError as exc:
        raise ValueError(f"close code {code} may not be sent") from exc


def parse_close(payload: bytes) -> tuple[int, str] | None:
    """``(code, reason)`` of a close frame's payload, or None if RFC 6455 §5.5.1 / §7.4
    forbids it (one byte; a code outside 1000–1003, 1007–1014, 3000–4999; a reason that is
    not UTF-8). ``websockets``' own parser decides, so both transports agree."""
    try:
        close = Close.parse(payload)
    except (_WsProtocolError, UnicodeDecodeError):
        return None
    return int(close.code), close.reason


_PING_EMPTY: Final = frame_header(0, OP_PING)


class ServerConnection:
    """The server side of one WebSocket connection after a successful handshake.

    ``max_size`` bounds a frame's payload and a fragmented message's total (larger → close
    1009). Input is parsed lazily, one frame per :meth:`next_event` call, so a caller that
    decides to close after some event (:meth:`send_close`) never has later frames
    interpreted as if the connection were still open.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_frag",
        "_need",
        "_out",
        "_pos",
        "_skip",
        "_tail",
        "max_size",
        "state",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.state = _OPEN
        self._buf = b""  # received bytes, parsed up to _pos
        self._pos = 0
        self._tail: bytearray | None = None  # an incomplete frame, grown until _need bytes
        self._need = 0
        self._skip = 0  # CLOSING: payload bytes of a skipped frame still to arrive
        self._frag: bytearray | None = None  # the fragmented message being assembled
        self._decoder: codecs.IncrementalDecoder | None = None  # set while it is text
        self._out: list[bytes] = []

    # --- input ---

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the network (any split: a frame may span many calls)."""
        if self.state is _CLOSED:
            return
        tail = self._tail
        if tail is not None:
            tail += data
            if len(tail) >= self._need:
                self._buf, self._pos, self._tail = bytes(tail), 0, None
            return
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip :]
            self._skip = 0
        if self._pos < len(self._buf):  # events not all taken yet: keep the rest
            self._buf = self._buf[self._pos :] + data
        else:
            self._buf = data
        self._pos = 0

    def next_event(self) -> Event | None:
        """The next event from the bytes received so far, or None until more arrive."""
        buf = self._buf
        n = len(buf)
        pos = self._pos
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length >= 126:
                if length == 126:
                    if n - pos < 4:
                        break
                    length = buf[head] << 8 | buf[head + 1]  # int.from_bytes costs 3x more
                    head += 2
                else:
                    if n - pos < 10:
                        break
                    length = int.from_bytes(buf[head : head + 8], "big")
                    head += 8
            masked = b1 & 0x80
            end = head + length + (4 if masked else 0)
            if self.state is not _OPEN:
                if self.state is _CLOSED:
                    return None
                event = self._closing_frame(b0, masked, length, head, end)
                if event is not None:
                    return event
                buf, n, pos = self._buf, len(self._buf), self._pos
                continue
            if b0 == 0x82 and masked and self._frag is None:  # hot path: a whole binary message
                if length > self.max_size:
                    return self._fail(CLOSE_TOO_BIG, "frame too big")
                if end > n:
                    self._wait(end - pos)
                    return None
                self._pos = end
                return apply_mask(buf[head + 4 : end], buf[head : head + 4])
            failure = self._check(b0, masked, length)
            if failure is not None:
                return failure
            if end > n:
                self._wait(end - pos)
                return None
            self._pos = pos = end
            event = self._frame(b0, apply_mask(buf[head + 4 : end], buf[head : head + 4]))
            if event is not None:
                return event
        if pos < n:  # an incomplete header (at most 9 bytes): look again at the next byte
            self._wait(n - pos + 1)
        return None

    def _wait(self, need: int) -> None:
        """Keep the incomplete frame at ``_pos``; parse again once ``need`` bytes of it are in."""
        self._tail = bytearray(self._buf[self._pos :])
        self._need = need
        self._buf, self._pos = b"", 0

    def _check(self, b0: int, masked: int, length: int) -> Failure | None:
        """RFC 6455 §5.2–5.5 on a frame header, in ``websockets``' order (opcode, mask,
        size, RSV, control rules, sequencing) so both parsers pick the same close code."""
        opcode = b0 & 0x0F
        if opcode not in _OPCODES:
            return self._fail(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if not masked:
            return self._fail(CLOSE_PROTOCOL_ERROR, "unmasked frame")
        frag = self._frag
        if length > self.max_size - (len(frag) if frag is not None else 0):
            too_big = "frame too big" if frag is None or length > self.max_size else None
            return self._fail(CLOSE_TOO_BIG, too_big or "message too big")
        if b0 & 0x70:
            return self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if opcode >= OP_CLOSE:
            if not b0 & 0x80:
                return self._fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                return self._fail(CLOSE_PROTOCOL_ERROR, "control frame too long")
        elif opcode == OP_CONT:
            if frag is None:
                return self._fail(CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
        elif frag is not None:
            return self._fail(CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
        return None

    def _frame(self, b0: int, payload: bytes) -> Event | None:
        """One complete, checked frame in state OPEN; None for a non-final fragment."""
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == OP_PING:
            self._out.append(frame_header(len(payload), OP_PONG) + payload)
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            parsed = parse_close(payload)
            if parsed is None:
                return self._fail(CLOSE_PROTOCOL_ERROR, "invalid close frame")
            # Echo the peer's payload as it came (RFC 6455 §5.5.1); a message being
            # assembled is abandoned (control frames may interleave with fragments, §5.4).
            self._out.append(frame_header(len(payload), OP_CLOSE) + payload)
            self._closed()
            return CloseReceived(*parsed)
        if opcode == OP_CONT:
            frag = self._frag
            assert frag is not None  # _check
            decoder = self._decoder
            if decoder is not None and not self._utf8(decoder, payload, bool(fin)):
                return self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
            frag += payload
            if not fin:
                return None
            self._frag = self._decoder = None
            if decoder is not None:
                return TextMessage(frag.decode("utf-8"))
            return bytes(frag)
        # a first (or only) data frame
        if opcode == OP_TEXT:
            if fin:
                try:
                    return TextMessage(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    return self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            if not self._utf8(decoder, payload, False):
                return self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
            self._decoder = decoder
        elif fin:
            return payload
        self._frag = bytearray(payload)
        return None

    @staticmethod
    def _utf8(decoder: codecs.IncrementalDecoder, data: bytes, final: bool) -> bool:
        """Whether ``data`` continues valid UTF-8 (checked per fragment, so a bad message
        fails at the fragment that breaks it, RFC 6455 §8.1)."""
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError:
            return False
        return True

    def _closing_frame(
        self, b0: int, masked: int, length: int, head: int, end: int
    ) -> Event | None:
        """State CLOSING: wait for the peer's close frame, skipping every other frame
        (payload unread, not buffered); None when the frame at ``_pos`` was skipped or is
        incomplete (then ``_buf`` is exhausted)."""
        buf = self._buf
        n = len(buf)
        if b0 & 0x0F == OP_CLOSE and length <= MAX_CONTROL_PAYLOAD:
            if end > n:
                self._wait(end - self._pos)
                return None
            payload = buf[head + 4 : end] if masked else buf[head:end]
            if masked:
                payload = apply_mask(payload, buf[head : head + 4])
            self._closed()
            parsed = parse_close(payload)
            if parsed is None:
                return Failure(CLOSE_PROTOCOL_ERROR, "invalid close frame")
            return CloseReceived(*parsed)
        if end > n:
            self._skip = end - n
            self._buf, self._pos = b"", 0
        else:
            self._pos = end
        return None

    def _fail(self, code: int, reason: str) -> Failure:
        """Fail the connection (RFC 6455 §7.1.7): queue the close frame, read no more."""
        if self.state is _OPEN:
            payload = close_payload(code, reason)
            self._out.append(frame_header(len(payload), OP_CLOSE) + payload)
        self._closed()
        return Failure(code, reason)

    def _closed(self) -> None:
        self.state = _CLOSED
        self._buf, self._pos, self._tail, self._skip = b"", 0, None, 0
        self._frag = self._decoder = None

    # --- output ---

    def send_binary(self, payloads: Iterable[bytes]) -> None:
        """Queue one final binary frame per payload (none once a close frame was sent:
        RFC 6455 §5.5.1)."""
        if self.state is not _OPEN:
            return
        append = self._out.append
        heads = _BINARY_HEADS
        for payload in payloads:
            n = len(payload)
            if n < 126:
                append(heads[n])
            elif n < 65536:
                append(_HEAD16(0x82, 126, n))
            else:
                append(_HEAD64(0x82, 127, n))
            append(payload)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (the relay's keepalive); a no-op once closing."""
        if self.state is not _OPEN:
            return
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("a ping payload is at most 125 bytes")
        self._out.append(frame_header(len(payload), OP_PING) + payload if payload else _PING_EMPTY)

    def send_close(self, code: int, reason: str) -> None:
        """Start the close handshake: queue the close frame, drop a half-received message,
        and from now on skip input until the peer's close frame. A no-op unless OPEN."""
        if self.state is not _OPEN:
            return
        payload = close_payload(code, reason)
        self._out.append(frame_header(len(payload), OP_CLOSE) + payload)
        self.state = _CLOSING
        self._frag = self._decoder = None

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call, in order (b"" if nothing)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)
