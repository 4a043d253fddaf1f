"""WebSocket data plane ``/api/v1/ws`` (PROTOCOL.md Part III §5): the per-socket logic.

:class:`DeviceConnection` is transport-agnostic: it decodes client frames, runs the send
path, queues outgoing frames and coalesces them. Two transports drive it:

- ``xchat.server.wsfast`` (the one ``xchat serve`` uses): a raw asyncio protocol on the
  same port as the HTTP API; frames are handled synchronously in ``data_received`` and
  output is written with one ``transport.write`` per socket per event-loop pass.
- :class:`AsgiConnection` below: the Starlette route, kept for any other ASGI server and
  for in-process use; output goes through an on-demand flush task.

One socket per device when authenticated (a newer one replaces the older: close 4409);
anonymous sockets may only SEND (sealed sender). ACKs are queued to the store's next group
commit without waiting (or remove a held envelope, ``storage/holdback.py``). Per-device
order: deliveries are pushed in queue order (accepted order when delivered before commit,
commit order otherwise); while the backlog present at connect time is being read, live
pushes are buffered and de-duplicated by queue seq, then DRAINED is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from xchat.clock import now_ms
from xchat.errors import ApiError, DecodeError
from xchat.protocol import frames as F
from xchat.server.consistency import retry_when_fresh
from xchat.server.limits import ip_bucket
from xchat.server.relay import Relay, error_text
from xchat.storage.base import DeviceRecord

log = logging.getLogger("xchat.server.ws")
router = APIRouter()

CLOSE_REPLACED = F.CLOSE_REPLACED
REPLACED_REASON = "This account is now used on another device"
BACKLOG_PAGE = 256
_DRAINED = F.encode_frame(F.Drained())
_MAX_DELIVER_ITEMS = 0xFFFF


class DeviceConnection:
    """State of one accepted socket; implements :class:`xchat.fanout.base.DeviceSocket`.

    Subclasses provide the transport: :meth:`_schedule_flush`, :meth:`pending_bytes`,
    :meth:`close_soon`.
    """

    __slots__ = (
        "backlog",
        "bucket",
        "buffer",
        "closed",
        "device",
        "expiry",
        "live",
        "loading",
        "out",
        "out_bytes",
        "relay",
    )

    def __init__(self, relay: Relay, device: DeviceRecord | None, host: str | None) -> None:
        self.relay = relay
        self.device = device
        limited = relay.send_limiter.enabled or relay.send_bytes_limiter.enabled
        self.bucket = ip_bucket(host) if limited else ""
        self.out: list[Any] = []  # bytes (a frame) or (envelope_id, ts_ms, content)
        self.out_bytes = 0
        self.loading = device is not None
        self.buffer: list[tuple[int, bytes, int, bytes]] = []
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None
        self.backlog: asyncio.Task[None] | None = None
        self.live = False

    # --- transport hooks ---

    def _schedule_flush(self) -> None:
        raise NotImplementedError

    def pending_bytes(self) -> int:
        """Bytes queued towards the peer and not yet written to the socket."""
        return self.out_bytes

    def close_soon(self, code: int, reason: str) -> None:
        raise NotImplementedError

    # --- lifecycle ---

    def start(self, expires_ms: int) -> None:
        """Register the socket (after the upgrade and auth)."""
        relay = self.relay
        relay.ws_connections += 1
        self.live = True
        device = self.device
        if device is None:
            return
        loop = asyncio.get_running_loop()
        relay.fanout.attach(device.ref, self)
        relay.device_sockets[device.ref] = self
        self.expiry = loop.call_later(
            max(0.0, (expires_ms - now_ms()) / 1000),
            self.close_soon,
            F.CLOSE_UNAUTHORIZED,
            "token expired",
        )
        self.backlog = loop.create_task(self.load_backlog())

    def finish(self) -> None:
        """Unregister the socket (idempotent)."""
        self.closed = True
        if not self.live:
            return
        self.live = False
        relay = self.relay
        relay.ws_connections -= 1
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.device is not None:
            ref = self.device.ref
            relay.fanout.detach(ref, self)
            if relay.device_sockets.get(ref) is self:
                del relay.device_sockets[ref]
        if self.backlog is not None and not self.backlog.done():
            self.backlog.cancel()
        self.backlog = None
        self.out = []

    # --- DeviceSocket ---

    def push(self, seq: int, envelope_id: bytes, ts_ms: int, content: bytes) -> None:
        if self.loading:
            self.buffer.append((seq, envelope_id, ts_ms, content))
            return
        self._queue((envelope_id, ts_ms, content), len(content) + 28)

    def push_frame(self, frame: bytes) -> None:
        self._queue(frame, len(frame))

    def replaced(self) -> None:
        self.close_soon(CLOSE_REPLACED, REPLACED_REASON)

    # --- output ---

    def _queue(self, item: Any, size: int) -> None:
        if self.closed:
            return
        self.out.append(item)
        self.out_bytes += size
        if self.out_bytes > self.relay.config.ws_outbox_limit and not self.loading:
            # The reader is too slow; mail stays queued and is re-sent after reconnect.
            self.close_soon(F.CLOSE_TIMEOUT, "receiver too slow")
            return
        if len(self.out) == 1:
            self._schedule_flush()

    def take_frames(self) -> list[bytes]:
        """Everything queued, as wire frames (envelope runs coalesced into DELIVERs)."""
        items, self.out, self.out_bytes = self.out, [], 0
        return self._frames(items)

    def _frames(self, items: list[Any]) -> list[bytes]:
        """Coalesce runs of envelopes into DELIVER frames under the frame size limit."""
        frames: list[bytes] = []
        run: list[tuple[bytes, int, bytes]] = []
        size = 0
        limit = self.relay.config.max_request
        for item in items:
            if item.__class__ is bytes:
                if run:
                    frames.append(F.encode_deliver(run))
                    run, size = [], 0
                frames.append(item)
                continue
            n = len(item[2]) + 28
            if run and (size + n > limit or len(run) >= _MAX_DELIVER_ITEMS):
                frames.append(F.encode_deliver(run))
                run, size = [], 0
            run.append(item)
            size += n
        if run:
            frames.append(F.encode_deliver(run))
        return frames

    # --- backlog ---

    async def load_backlog(self) -> None:
        assert self.device is not None
        store = self.relay.store
        ref = self.device.ref
        last = 0
        try:
            while not self.closed:
                rows = await store.fetch(ref, last, BACKLOG_PAGE, now_ms())
                for r in rows:
                    self._queue((r.envelope_id, r.ts_ms, r.content), len(r.content) + 28)
                if rows:
                    last = rows[-1].seq
                    self.relay.fanout.backlog_pushed(ref, self, [r.envelope_id for r in rows])
                if len(rows) < BACKLOG_PAGE:
                    break
                half = self.relay.config.ws_outbox_limit // 2
                while self.pending_bytes() > half and not self.closed:
                    await asyncio.sleep(0.005)
            self.loading = False
            for seq, eid, ts, content in self.buffer:
                if seq > last:
                    self.push(seq, eid, ts, content)
            self.buffer = []
            self.push_frame(_DRAINED)
            ec, kem = await store.count_prekeys(ref)
            low = self.relay.config.keys_low
            if ec < low or kem < low:
                self.push_frame(F.encode_frame(F.KeysLow(ec, kem)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("backlog load failed")
            self.close_soon(1011, "internal error")

    # --- input ---

    def handle_text(self) -> tuple[int, str]:
        """A text message: the data plane is binary only (PROTOCOL Part III §5). Both
        transports ask here, so this class is the one place that interprets messages."""
        return F.CLOSE_MALFORMED, "text frames are not accepted"

    def handle_message(self, data: bytes) -> tuple[int, str] | None:
        """Process one binary client message; return ``(close_code, reason)`` to close."""
        max_request = self.relay.config.max_request
        if len(data) > max_request:
            return F.CLOSE_TOO_LARGE, f"frame larger than {max_request} bytes"
        try:
            kind = data[:1]
            if kind == b"\x01":  # SEND: decoded straight to tuples (hot path)
                req_id, dests = F.decode_send(data)
                self.receive_send(req_id, dests)
                return None
            if kind == b"\x03":  # SEND_MULTI: shared payload once, a header per device
                multi = F.decode_send_multi(data)
                self.receive_send(multi.req_id, F.expand_send_multi(multi))
                return None
            if kind == b"\x02":  # ACK: n u16 || id(16)*, sliced directly (hot path)
                n = len(data)
                want = 3 + 16 * int.from_bytes(data[1:3], "big") if n >= 3 else n + 1
                if n != want:
                    raise DecodeError("truncated frame" if n < want else "trailing bytes")
                if self.device is None:
                    return F.CLOSE_FORBIDDEN, "ACK needs an authenticated socket"
                if n > 3:
                    self.relay.store.ack_nowait(
                        self.device.ref, [data[i : i + 16] for i in range(3, n, 16)]
                    )
                    self.relay.metrics.inc("envelopes_acked_total", (n - 3) // 16)
                return None
            frame = F.decode_frame(data)
        except DecodeError as exc:
            return F.CLOSE_MALFORMED, str(exc)[:120]
        if frame.__class__ is F.Ack:
            if self.device is None:
                return F.CLOSE_FORBIDDEN, "ACK needs an authenticated socket"
            self.receive_ack(frame)
            return None
        return F.CLOSE_MALFORMED, "server-to-client frame sent by client"

    def receive_send(self, req_id: int, dests: list[F.SendItem], retried: bool = False) -> None:
        relay = self.relay
        try:
            for i, (address, access, envs) in enumerate(dests):
                if not address.islower():
                    dests[i] = (address.lower(), access, envs)
            if relay.send_limiter.enabled:
                wait = relay.send_limiter.take(self.bucket, sum(len(d[2]) for d in dests))
                if wait:
                    raise ApiError(429, "rate limited", retry_after=wait)
            rows = relay.check_send(dests, now_ms(), self.bucket)
        except ApiError as exc:
            err = exc
            retry = int((err.retry_after or 0) * 1000)

            def fail() -> None:
                relay.metrics.inc("sends_rejected_total")
                self.push_frame(F.encode_send_result(req_id, err.status, retry, error_text(err)))

            # Scaled out: a refusal may come from a cache a moment behind another node.
            if retried or not retry_when_fresh(
                relay, exc, lambda: self.receive_send(req_id, dests, True), fail
            ):
                fail()
            return

        def finished(ok: bool) -> None:
            if ok:
                self.push_frame(F.encode_send_result(req_id, 200))
            else:
                self.push_frame(F.encode_send_result(req_id, 503, 1000, "storage unavailable"))

        relay.submit_cb(rows, finished)

    def receive_ack(self, frame: F.Ack) -> None:
        assert self.device is not None
        if frame.envelope_ids:
            self.relay.store.ack_nowait(self.device.ref, list(frame.envelope_ids))
            self.relay.metrics.inc("envelopes_acked_total", len(frame.envelope_ids))


# --- the Starlette/ASGI transport ---------------------------------------------------------


class AsgiConnection(DeviceConnection):
    """A socket served through Starlette: output written by an on-demand flush task."""

    __slots__ = ("flushing", "ws")

    def __init__(self, ws: WebSocket, relay: Relay, device: DeviceRecord | None) -> None:
        super().__init__(relay, device, ws.client.host if ws.client else None)
        self.ws = ws
        self.flushing = False

    def _schedule_flush(self) -> None:
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.out and not self.closed:
                for frame in self.take_frames():
                    await self.ws.send_bytes(frame)
        except Exception:  # peer vanished mid-write
            self.closed = True
        finally:
            self.flushing = False

    async def close(self, code: int, reason: str) -> None:
        """Close from the receive loop (waits for the close frame to be written)."""
        if not self.closed:
            self.closed = True
            await _close(self.ws, code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        asyncio.get_running_loop().create_task(_close(self.ws, code, reason))


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed by the peer
        await ws.close(code, reason)


@router.websocket("/api/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    relay: Relay = ws.app.state.relay
    device: DeviceRecord | None = None
    expires = 0
    header = ws.headers.get("authorization")
    await ws.accept()
    counted = ""
    if relay.config.max_sockets_per_ip > 0:  # sockets per IP bucket (PROTOCOL Part III §6)
        counted = ip_bucket(ws.client.host if ws.client else None)
        if not relay.conn_open(counted):
            relay.conn_close(counted)
            await _close(ws, F.CLOSE_RATE_LIMITED, "too many connections from your network")
            return
    try:
        if header is not None:
            try:
                device, expires = relay.tokens.from_header(header, relay.store, now_ms())
            except ApiError as exc:
                await _close(ws, F.CLOSE_UNAUTHORIZED, exc.message)
                return
        conn = AsgiConnection(ws, relay, device)
        conn.start(expires)
        try:
            await _receive_loop(ws, conn)
        finally:
            conn.finish()
    finally:
        if counted:
            relay.conn_close(counted)


async def _receive_loop(ws: WebSocket, conn: AsgiConnection) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect" or conn.closed:
            return  # closed by the server meanwhile (revoked, replaced): drop the frame
        data = msg.get("bytes")
        if data is None:
            return await conn.close(*conn.handle_text())
        verdict = conn.handle_message(data)
        if verdict is not None:
            return await conn.close(*verdict)
        if conn.closed:
            return
