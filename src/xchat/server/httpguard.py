"""Read timeouts and the per-IP-bucket connection count for the HTTP side (PROTOCOL Part III §6).

uvicorn arms its keep-alive timeout only after a response, so a client that never finishes
a request head, or stops sending a body it announced, would hold its connection (and, for
a body, an ASGI task) forever: the slowloris attack. :class:`GuardedHttpProtocol` is
uvicorn's httptools protocol plus one lazily re-armed timer per connection:

- *head*: the whole request head must arrive within ``header_timeout`` of the connection
  being accepted (first request) or of the request's first byte (keep-alive requests); a
  total deadline, so dripping one byte at a time does not extend it;
- *body*: while a body is being read, at most ``body_timeout`` may pass without a byte of
  it arriving (an idle timeout, not a total one: blob uploads stream large bodies). Time
  during which uvicorn has paused reading because the application is not consuming the
  body does not count.

On expiry the relay answers ``408 {"error": ...}`` with ``Connection: close`` if no response
has started yet, and closes the connection. The timer is re-armed only when it fires, so
the per-chunk cost is one float assignment.

Lingering close (issue #18; RFC 9112 §9.6, as Apache and nginx do): when the relay answers
before the request body has fully arrived (413 for an oversized body) and then closes,
closing at once would make the kernel answer the client's further bytes with a TCP reset,
which can destroy the response before the client reads it. Instead the write side is shut
down after the response (FIN), the rest of the body is read and discarded for at most
:data:`LINGER_SECONDS` or :data:`LINGER_BYTES`, and only then is the socket closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD, _BODY, _APP = 0, 1, 2

_TIMEOUT_BODY = b'{"error":"request timeout"}'
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)
_BUSY_BODY = b'{"error":"too many connections from your network"}'
TOO_MANY_RESPONSE = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 10\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


#: Longest a closing connection keeps draining a request body nobody will read.
LINGER_SECONDS = 2.0
#: Most bytes drained that way (a client sending more gets the reset).
LINGER_BYTES = 16 * 1024 * 1024


class _LingeringTransport:
    """The transport uvicorn sees: ``close()`` while a request body is still arriving
    becomes a lingering close (module docstring); everything else goes to the socket."""

    def __init__(self, raw: Any, protocol: GuardedHttpProtocol) -> None:
        self._xc_raw = raw
        self._xc_protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._xc_raw, name)

    def is_closing(self) -> bool:
        return bool(self._xc_protocol.xc_lingering or self._xc_raw.is_closing())

    def close(self) -> None:
        protocol = self._xc_protocol
        if protocol.xc_phase == _BODY and not protocol.xc_lingering:
            protocol.xc_linger()
        elif not protocol.xc_lingering:
            self._xc_raw.close()


class GuardedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with request head/body read timeouts; releases the connection's
    slot in its IP bucket (``relay.conn_close``) when the connection ends."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        relay: Any,
        bucket: str = "",
        started: float | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        cfg = relay.config
        self.xc_relay = relay
        self.xc_bucket = bucket  # "" = not counted
        self.xc_head_timeout: float = cfg.header_timeout
        self.xc_body_timeout: float = cfg.body_timeout
        self.xc_phase = _HEAD
        self.xc_since = self.loop.time() if started is None else started
        self.xc_timer: asyncio.TimerHandle | None = None
        self.xc_lingering = False
        self.xc_drained = 0
        self.xc_raw: Any = None

    # --- timer ---

    def _xc_arm(self, limit: float) -> None:
        if self.xc_timer is None and limit > 0:
            self.xc_timer = self.loop.call_at(self.xc_since + limit, self._xc_check)

    def _xc_check(self) -> None:
        self.xc_timer = None
        transport = self.transport
        phase = self.xc_phase
        if phase == _APP or transport is None or transport.is_closing():
            return
        now = self.loop.time()
        if phase == _HEAD:
            limit = self.xc_head_timeout
        else:
            limit = self.xc_body_timeout
            if self.flow is not None and self.flow.read_paused:
                self.xc_since = now  # the application is not reading: not the client's fault
        if now < self.xc_since + limit:
            self._xc_arm(limit)
            return
        self.xc_relay.metrics.inc("http_read_timeouts_total")
        cycle = self.cycle
        if phase == _HEAD or (cycle is not None and not cycle.response_started):
            transport.write(TIMEOUT_RESPONSE)
        if phase == _BODY and cycle is not None:
            cycle.disconnected = True  # the app's late response (if any) is dropped
            cycle.message_event.set()
        self.xc_phase = _APP  # a stalled client gets no lingering close
        transport.close()

    # --- lingering close ---

    def xc_linger(self) -> None:
        """Half-close after the response, then drain (see the module docstring)."""
        raw = self.xc_raw
        self.xc_lingering = True
        self.xc_phase = _APP
        if self.xc_timer is not None:
            self.xc_timer.cancel()
            self.xc_timer = None
        self.xc_relay.metrics.inc("http_lingering_closes_total")
        try:
            raw.resume_reading()
            if raw.can_write_eof():
                raw.write_eof()  # FIN after the buffered response
        except (OSError, RuntimeError):
            raw.close()
            return
        self.loop.call_later(LINGER_SECONDS, raw.close)

    def data_received(self, data: bytes) -> None:
        if self.xc_lingering:  # the rest of a body nobody reads: count and drop it
            self.xc_drained += len(data)
            if self.xc_drained > LINGER_BYTES:
                self.xc_raw.close()
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self.xc_lingering:
            self.xc_raw.close()  # the client sent everything and read our answer
            return
        super().eof_received()

    # --- uvicorn hooks ---

    def connection_made(self, transport: Any) -> None:
        self.xc_raw = transport
        super().connection_made(cast(asyncio.Transport, _LingeringTransport(transport, self)))
        self._xc_arm(self.xc_head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.xc_timer is not None:
            self.xc_timer.cancel()
            self.xc_timer = None
        self.xc_phase = _APP
        if self.xc_bucket:
            self.xc_relay.conn_close(self.xc_bucket)
            self.xc_bucket = ""
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.xc_phase == _APP:  # a keep-alive request: its own head deadline
            self.xc_phase = _HEAD
            self.xc_since = self.loop.time()
            self._xc_arm(self.xc_head_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.xc_phase = _BODY
        self.xc_since = self.loop.time()

    def on_body(self, body: bytes) -> None:
        self.xc_since = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.xc_phase = _APP
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        """Fallback data plane (``XCHAT_WS_FAST=0``): the Starlette endpoint counts the
        socket in its IP bucket from now on (PROTOCOL Part III §6), so this slot is released."""
        self.xc_phase = _APP
        if self.xc_bucket:
            self.xc_relay.conn_close(self.xc_bucket)
            self.xc_bucket = ""
        super().handle_websocket_upgrade()
