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
"""

from __future__ import annotations

import asyncio
from typing import Any

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
        transport.close()

    # --- uvicorn hooks ---

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
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
