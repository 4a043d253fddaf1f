"""Same-port fast path for the WebSocket data plane ``/api/v1/ws`` (PROTOCOL Part III §5.1).

Why: serving the data plane through uvicorn → ASGI → Starlette costs a task, several
futures and message dicts per frame and ~25–30 KiB per idle socket. Here the first request
on each TCP connection is sniffed: a WebSocket upgrade for ``/api/v1/ws`` is completed with
the ``websockets`` sans-I/O handshake and the connection is switched to
:class:`FastConnection`, a plain asyncio protocol; everything else is handed, bytes included,
to uvicorn's own httptools protocol (so the HTTP API, and a plain ``GET /api/v1/ws``, behave
exactly as before).

This module is only I/O: RFC 6455 itself (framing, masking, control frames, fragments, size
limit, UTF-8, close codes, the close handshake) is the sans-I/O
:class:`xchat.protocol.ws_connection.ServerConnection`, and what a message means is
:class:`xchat.server.realtime.DeviceConnection`, the layer the ASGI route shares (why that
route keeps ``websockets``' parser: see ``ws_connection``'s docstring).

Per frame there is no task, no future and no ASGI message: ``data_received`` feeds the bytes
to the parser and handles its events synchronously; outgoing frames are queued and written
with one ``transport.write`` per socket per event-loop pass (:class:`Hub`), so a group commit
that delivers to many sockets costs one write each. No compression is ever negotiated.

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

from websockets.http11 import Request
from websockets.server import ServerProtocol

from xchat.clock import now_ms
from xchat.errors import ApiError
from xchat.protocol import frames as F
from xchat.protocol.ws_connection import (
    CloseReceived,
    Failure,
    Ping,
    ServerConnection,
    TextMessage,
)
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
_SHUTDOWN = 1001


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
        for conn in list(self.conns):
            if conn.seen >= tick - 1:
                continue
            if conn.seen < tick - 3:
                conn.transport.abort()
            elif not conn.closed:
                conn.ws.send_ping()
                conn.write_control()
        assert self.loop is not None
        self.timer = self.loop.call_later(self.ping_interval, self.keepalive)


class FastConnection(DeviceConnection, asyncio.Protocol):
    """One upgraded socket: the I/O around a sans-I/O :class:`ServerConnection` (which does
    all of RFC 6455) and the relay's :class:`DeviceConnection` (which interprets messages)."""

    __slots__ = ("closer", "counted", "fd", "hub", "seen", "server_state", "transport", "ws")

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
        # Frames and messages up to twice the relay's frame limit are read, so that a
        # message between the two is answered with the relay's own 4413 (PROTOCOL III §5.1).
        self.ws = ServerConnection(2 * relay.config.max_request)
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
        ws = self.ws
        ws.send_binary(self.take_frames())
        data = ws.data_to_send()
        transport = self.transport
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

    def write_control(self) -> None:
        """Write what the WebSocket layer queued itself (pong, close frames) right away."""
        data = self.ws.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def close_soon(self, code: int, reason: str) -> None:
        """Send a close frame (after what is already queued, unless the peer is too slow),
        unregister, and wait up to CLOSE_TIMEOUT for the peer's close frame."""
        if self.closed:
            return
        if code != F.CLOSE_TIMEOUT and self.out:
            self.flush()
        self._send_close(code, reason)

    def _unregister(self) -> None:
        self.finish()
        self.fd = -1
        self.hub.conns.discard(self)

    def _send_close(self, code: int, reason: str) -> None:
        self._unregister()
        self.ws.send_close(code, reason)
        if self.transport.is_closing():
            return
        self.write_control()
        self._abort_later()

    def _abort_later(self) -> None:
        if self.closer is None:
            loop = asyncio.get_running_loop()
            self.closer = loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

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
        ws = self.ws
        ws.receive_data(data)
        event = ws.next_event()
        while event is not None:
            if event.__class__ is bytes:  # a binary message: the hot path
                if not self.closed:
                    verdict = self.handle_message(event)
                    if verdict is not None:
                        self.close_soon(*verdict)
                event = ws.next_event()
                continue
            kind = event.__class__
            if kind is Ping:
                self.write_control()  # the pong it queued
            elif kind is TextMessage:
                self.close_soon(*self.handle_text())
            elif kind is CloseReceived:
                # The handshake is complete (our echo, if any, is queued): the server
                # closes TCP first (RFC 6455 §7.1.1).
                self._unregister()
                self.write_control()
                self.transport.close()
                return
            elif kind is Failure:
                # RFC 6455 §7.1.7: close frame, then no more input; half-close so the peer
                # reads the close frame and EOF, and abort if it never closes its side.
                self._unregister()
                transport = self.transport
                if not transport.is_closing():
                    self.write_control()
                    if transport.can_write_eof():
                        transport.write_eof()
                    self._abort_later()
                return
            event = ws.next_event()  # (a Pong needs nothing: seen is already updated)


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
