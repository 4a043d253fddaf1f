"""Same-port fast path for the WebSocket data plane ``/api/v1/ws`` (PROTOCOL Part III §5.1).

Why: serving the data plane through uvicorn → ASGI → Starlette costs a task, several
futures and message dicts per frame and ~25–30 KiB per idle socket. Here the first request
on each TCP connection is sniffed: a WebSocket upgrade for ``/api/v1/ws`` is completed with
the ``websockets`` sans-I/O handshake and the connection is switched to
:class:`FastConnection`, a plain asyncio protocol with a small RFC 6455 frame parser;
everything else is handed, bytes included, to uvicorn's own httptools protocol (so the HTTP
API, and a plain ``GET /api/v1/ws``, behave exactly as before).

Per frame there is no task, no future and no ASGI message: ``data_received`` unmasks and
handles the frames synchronously; outgoing frames are queued and written with one
``transport.write`` per socket per event-loop pass (:class:`Hub`), so a group commit that
delivers to many sockets costs one write each. No compression is ever negotiated.

Connection hygiene (PROTOCOL Part III §6) also starts here, before anything is parsed: every TCP
connection counts in its IP bucket (refused with 429 above ``max_sockets_per_ip``), and the
request head must arrive within ``header_timeout`` (else 408/close); after the hand-off,
:class:`~xchat.server.httpguard.GuardedHttpProtocol` keeps the deadline and adds the body
idle timeout. Both cost one timer and one dict update per connection, nothing per frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, ClassVar

from websockets.exceptions import ProtocolError as _WsProtocolError
from websockets.frames import Close
from websockets.http11 import Request
from websockets.server import ServerProtocol

try:  # websockets' C extension; the pure-Python version is the one websockets falls back to
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - exercised by tests/server/test_wsfast.py in a subprocess
    from websockets.utils import apply_mask

from xchat.clock import now_ms
from xchat.errors import ApiError
from xchat.protocol import frames as F
from xchat.server.consistency import retry_when_fresh
from xchat.server.httpguard import TIMEOUT_RESPONSE, TOO_MANY_RESPONSE, GuardedHttpProtocol
from xchat.server.limits import ip_bucket
from xchat.server.realtime import DeviceConnection
from xchat.server.relay import Relay
from xchat.storage.base import DeviceRecord

log = logging.getLogger("xchat.server.ws")

WS_PATH = b"GET /api/v1/ws"
MAX_HEAD = 16 * 1024  # bytes of request head we buffer before giving up on the fast path
CLOSE_TIMEOUT = 5.0  # seconds we wait for the peer's close frame before aborting TCP

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_PROTOCOL_ERROR, _TOO_BIG, _SHUTDOWN = 1002, 1009, 1001


def ws_header(n: int, opcode: int = _OP_BINARY) -> bytes:
    """Header of one unmasked, final server frame with an ``n``-byte payload (RFC 6455 §5.2)."""
    b0 = 0x80 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return bytes((b0, 126)) + n.to_bytes(2, "big")
    return bytes((b0, 127)) + n.to_bytes(8, "big")


def _close_payload(code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8")[:120]
    return code.to_bytes(2, "big") + raw


class Hub:
    """Per-process state shared by fast sockets: the write coalescer and the keepalive."""

    __slots__ = ("conns", "dirty", "loop", "ping_interval", "scheduled", "tick", "timer")

    def __init__(self, ping_interval: float) -> None:
        self.dirty: list[FastConnection] = []
        self.scheduled = False
        self.conns: set[FastConnection] = set()
        self.tick = 0
        self.ping_interval = ping_interval
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def mark_dirty(self, conn: FastConnection) -> None:
        self.dirty.append(conn)
        if not self.scheduled:
            self.scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()

    def add(self, conn: FastConnection) -> None:
        self.conns.add(conn)
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.timer is None and self.ping_interval > 0:
            self.timer = self.loop.call_later(self.ping_interval, self.keepalive)

    def keepalive(self) -> None:
        """Every interval: ping sockets silent for a whole interval, drop those silent for
        three (a dead peer would otherwise hold its device slot until TCP gives up)."""
        self.tick += 1
        tick = self.tick
        ping = ws_header(0, _OP_PING)
        for conn in list(self.conns):
            if conn.seen >= tick - 1:
                continue
            if conn.seen < tick - 3:
                conn.transport.abort()
            elif not conn.closed:
                conn.transport.write(ping)
        assert self.loop is not None
        self.timer = self.loop.call_later(self.ping_interval, self.keepalive)


class FastConnection(DeviceConnection, asyncio.Protocol):
    """One upgraded socket: RFC 6455 framing over a raw asyncio transport."""

    __slots__ = (
        "closer",
        "counted",
        "fd",
        "frag",
        "hub",
        "need",
        "rbuf",
        "seen",
        "server_state",
        "transport",
    )

    def __init__(
        self,
        relay: Relay,
        hub: Hub,
        transport: asyncio.Transport,
        device: DeviceRecord | None,
        server_state: Any,
        direct_writes: bool = True,
    ) -> None:
        peer = transport.get_extra_info("peername")
        super().__init__(relay, device, peer[0] if peer else None)
        self.hub = hub
        self.transport = transport
        self.rbuf: bytearray | None = None
        self.need = 0
        self.frag: bytearray | None = None
        self.seen = hub.tick
        self.closer: asyncio.TimerHandle | None = None
        self.server_state = server_state
        self.counted = ""  # IP bucket this connection is counted in (PROTOCOL Part III §6)
        sock = transport.get_extra_info("socket")
        self.fd: int = sock.fileno() if sock is not None and direct_writes else -1

    # --- transport hooks (DeviceConnection) ---

    def _schedule_flush(self) -> None:
        self.hub.mark_dirty(self)

    def pending_bytes(self) -> int:
        return self.out_bytes + self.transport.get_write_buffer_size()

    def flush(self) -> None:
        if self.closed or not self.out:
            return
        parts: list[bytes] = []
        for frame in self.take_frames():
            n = len(frame)
            parts.append(bytes((0x82, n)) if n < 126 else ws_header(n))
            parts.append(frame)
        transport = self.transport
        data = b"".join(parts)
        fd = self.fd
        if fd >= 0 and not transport.get_write_buffer_size() and not transport.is_closing():
            # Write straight to the socket with os.write, which releases the GIL during the
            # syscall (uvloop's transport.write holds it): on loopback a send runs the
            # peer's whole TCP receive path, and the store's writer thread can use the GIL
            # meanwhile. Whatever the kernel does not take goes through the transport.
            try:
                n = os.write(fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:  # peer gone: let the transport notice and report it
                n = 0
                self.fd = -1
            if n:
                data = data[n:]
        if data:
            transport.write(data)
        if (
            transport.get_write_buffer_size() > self.relay.config.ws_outbox_limit
            and not self.loading
        ):
            # The reader is too slow; mail stays queued and is re-sent after reconnect.
            self.close_soon(F.CLOSE_TIMEOUT, "receiver too slow")

    def close_soon(self, code: int, reason: str) -> None:
        """Send a close frame (after what is already queued, unless the peer is too slow),
        unregister, and wait up to CLOSE_TIMEOUT for the peer's close frame."""
        if self.closed:
            return
        if code != F.CLOSE_TIMEOUT and self.out:
            self.flush()
        self._send_close(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        self.finish()
        self.fd = -1
        self.hub.conns.discard(self)
        payload = _close_payload(code, reason)
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(ws_header(len(payload), _OP_CLOSE) + payload)
        loop = asyncio.get_running_loop()
        self.closer = loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def shutdown(self) -> None:
        """Called by uvicorn on graceful shutdown (it tracks us in its connection set)."""
        self.close_soon(_SHUTDOWN, "server shutting down")

    # --- asyncio.Protocol ---

    def connection_lost(self, exc: Exception | None) -> None:
        self.fd = -1  # the descriptor may be reused from now on
        self.finish()
        self.hub.conns.discard(self)
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        self.server_state.connections.discard(self)
        if self.counted:
            self.relay.conn_close(self.counted)
            self.counted = ""

    def eof_received(self) -> bool | None:
        return None  # let the transport close

    def data_received(self, data: bytes) -> None:
        self.seen = self.hub.tick
        rbuf = self.rbuf
        if rbuf is not None:
            rbuf += data
            if len(rbuf) < self.need:
                return
            data = bytes(rbuf)
            self.rbuf = None
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        need = 0  # bytes (from pos) needed before the partial frame at pos can be parsed
        limit = 2 * self.relay.config.max_request
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[head : head + 2], "big")
                head += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            if not b1 & 0x80 or b0 & 0x70:
                self._fail(_PROTOCOL_ERROR, "unmasked frame or reserved bits set")
                return
            if length > limit:
                self._fail(_TOO_BIG, "frame too big")
                return
            end = head + 4 + length
            if end > n:
                need = end - pos
                break
            payload = apply_mask(data[head + 4 : end], data[head : head + 4])
            pos = end
            if self.closed:  # closing: discard everything but the peer's close frame
                if b0 & 0x0F == _OP_CLOSE:
                    self.transport.close()
                    return
                continue
            if not self._frame(b0, payload, limit):
                return
        self.need = need
        if pos < n:
            self.rbuf = bytearray(data[pos:])

    def _frame(self, b0: int, payload: bytes, limit: int) -> bool:
        """Handle one complete frame; False when the socket is being closed."""
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == _OP_BINARY and fin and self.frag is None:
            verdict = self.handle_message(payload)
        elif opcode >= 8:
            if not fin or len(payload) > 125:
                return self._fail(_PROTOCOL_ERROR, "bad control frame")
            if opcode == _OP_PING:
                self.transport.write(ws_header(len(payload), _OP_PONG) + payload)
                return True
            if opcode == _OP_PONG:
                return True
            if opcode == _OP_CLOSE:
                if not _valid_close_payload(payload):
                    return self._fail(_PROTOCOL_ERROR, "invalid close frame")
                # Echo the peer's close (RFC 6455 §5.5.1), then close TCP (server side).
                self.finish()
                self.fd = -1
                self.hub.conns.discard(self)
                self.transport.write(ws_header(len(payload), _OP_CLOSE) + payload)
                self.transport.close()
                return False
            return self._fail(_PROTOCOL_ERROR, "unknown opcode")
        elif opcode == _OP_TEXT:
            verdict = F.CLOSE_MALFORMED, "text frames are not accepted"
        elif opcode == _OP_BINARY and self.frag is None:  # first fragment
            self.frag = bytearray(payload)
            return True
        elif opcode == _OP_CONT and self.frag is not None:
            self.frag += payload
            if len(self.frag) > limit:
                return self._fail(_TOO_BIG, "message too big")
            if not fin:
                return True
            message, self.frag = bytes(self.frag), None
            verdict = self.handle_message(message)
        else:
            return self._fail(_PROTOCOL_ERROR, "unexpected frame")
        if verdict is not None:
            self.close_soon(*verdict)
            return False
        return not self.closed

    def _fail(self, code: int, reason: str) -> bool:
        self._send_close(code, reason)
        return False


class RelayHttpProtocol(asyncio.Protocol):
    """uvicorn ``http`` protocol class: routes each new TCP connection either to the fast
    WebSocket path or to uvicorn's :class:`HttpToolsProtocol` (see module docstring).

    Use :func:`protocol_class` to bind it to a relay."""

    relay: ClassVar[Relay]
    hub: ClassVar[Hub]
    fast: ClassVar[bool] = True  # False: every request, upgrades included, goes to uvicorn
    __slots__ = ("args", "bucket", "buf", "refused", "started", "timer", "transport")

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.args = (config, server_state, app_state, _loop)
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.bucket = ""  # counted IP bucket; handed to whichever protocol takes over
        self.refused = False
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        cfg = self.relay.config
        if cfg.max_sockets_per_ip > 0:
            peer = transport.get_extra_info("peername")
            self.bucket = ip_bucket(peer[0] if peer else None)
            self.refused = not self.relay.conn_open(self.bucket)
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        if cfg.header_timeout > 0:
            self.timer = loop.call_at(self.started + cfg.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        """No complete request head within ``header_timeout`` of the connect (PROTOCOL III §6)."""
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.relay.metrics.inc("http_read_timeouts_total")
        if self.buf:  # a request has started: tell the client why
            transport.write(TIMEOUT_RESPONSE)
        transport.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self) -> None:
        """Over the per-bucket socket cap: answer 429 once the head is in (so the client
        reads the answer instead of a reset), then close."""
        transport = self.transport
        assert transport is not None
        self._stop_timer()
        self.buf = b""
        transport.write(TOO_MANY_RESPONSE)
        transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.refused:
            self.buf = buf
            if b"\r\n\r\n" in buf or len(buf) > MAX_HEAD:
                self._refuse()
            return None
        if not self.fast:
            return self._to_http(buf)
        k = min(len(buf), len(WS_PATH))
        if buf[:k] != WS_PATH[:k]:
            self._to_http(buf)
            return None
        if len(buf) <= len(WS_PATH):
            self.buf = buf
            return
        if buf[len(WS_PATH)] not in b" ?":
            return self._to_http(buf)
        if b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                return self._to_http(buf)
            self.buf = buf
            return
        self.buf = b""
        self._upgrade(buf)
        return None

    def _to_http(self, buf: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.buf = b""
        self._stop_timer()
        inner = GuardedHttpProtocol(
            *self.args, relay=self.relay, bucket=self.bucket, started=self.started
        )
        self.bucket = ""  # released by the inner protocol from now on
        inner.connection_made(transport)
        transport.set_protocol(inner)
        inner.data_received(buf)

    def _stale_auth(self, request: Request, buf: bytes) -> bool:
        """Scaled out: a token this node cannot verify yet may belong to a device registered
        through another node a moment ago. Pause reading, wait for the directory barrier
        (``server/consistency.py``), then redo the upgrade; True if that was started."""
        header = request.headers.get("Authorization")
        if header is None:
            return False
        try:
            self.relay.tokens.from_header(header, self.relay.store, now_ms())
            return False
        except ApiError as exc:

            def again() -> None:
                transport = self.transport
                if transport is not None and not transport.is_closing():
                    transport.resume_reading()
                    self._upgrade(buf, retried=True)

            if not retry_when_fresh(self.relay, exc, again, again):
                return False
        assert self.transport is not None
        self.transport.pause_reading()
        return True

    def _upgrade(self, buf: bytes, retried: bool = False) -> None:
        transport = self.transport
        assert transport is not None
        split = buf.index(b"\r\n\r\n") + 4
        hs = ServerProtocol(max_size=None)
        hs.receive_data(buf[:split])
        events = hs.events_received()
        if len(events) != 1 or not isinstance(events[0], Request):
            return self._to_http(buf)
        request = events[0]
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._to_http(buf)  # plain GET: let the ASGI app answer it
        if not retried and self._stale_auth(request, buf):
            return None
        self._stop_timer()
        response = hs.accept(request)
        hs.send_response(response)
        for chunk in hs.data_to_send():
            if chunk:
                transport.write(chunk)
        if response.status_code != 101:
            transport.close()
            return
        relay = self.relay
        device: DeviceRecord | None = None
        expires = 0
        error: str | None = None
        header = request.headers.get("Authorization")
        if header is not None:
            try:
                device, expires = relay.tokens.from_header(header, relay.store, now_ms())
            except ApiError as exc:
                error = exc.message
        server_state = self.args[1]
        conn = FastConnection(
            relay, self.hub, transport, device, server_state, relay.config.ws_direct_writes
        )
        conn.counted, self.bucket = self.bucket, ""
        transport.set_protocol(conn)
        server_state.connections.add(conn)
        self.hub.add(conn)
        if error is not None:
            conn._send_close(F.CLOSE_UNAUTHORIZED, error)
            return
        conn.start(expires)
        if split < len(buf):  # frames pipelined behind the handshake (RFC 6455 forbids it)
            conn.data_received(buf[split:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._stop_timer()
        if self.bucket:
            self.relay.conn_close(self.bucket)
            self.bucket = ""


def protocol_class(
    relay: Relay, ping_interval: float, fast: bool = True
) -> type[RelayHttpProtocol]:
    """A :class:`RelayHttpProtocol` subclass bound to ``relay`` (pass as uvicorn ``http``).
    ``fast=False`` keeps the connection cap and timeouts but serves ``/api/v1/ws`` through
    uvicorn and the Starlette route (``XCHAT_WS_FAST=0``)."""
    hub = Hub(ping_interval)
    attrs = {"relay": relay, "hub": hub, "fast": fast}
    return type("BoundRelayHttpProtocol", (RelayHttpProtocol,), attrs)


def _valid_close_payload(payload: bytes) -> bool:
    """RFC 6455 §5.5.1 / §7.4: empty, or a code a peer may send (1000–1003, 1007–1014,
    3000–4999) followed by UTF-8; websockets' own parser decides, so both transports agree."""
    if not payload:
        return True
    try:
        Close.parse(payload)
    except (_WsProtocolError, UnicodeDecodeError):
        return False
    return True
