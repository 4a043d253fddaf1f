"""WebSocket data plane ``/api/v1/ws`` (CONTRACT §5, wire.md §5).

One socket per device when authenticated (a newer one replaces the older: close 4409);
anonymous sockets may only SEND (sealed sender). Outgoing data is coalesced: everything
queued while a write is in flight goes out as few DELIVER frames as possible, written by an
on-demand flush task (no task per idle socket). ACKs are queued to the store's next group
commit without waiting.

Per-device order: deliveries are pushed in commit order; while the backlog present at
connect time is being read, live pushes are buffered and de-duplicated by queue seq, then
DRAINED is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from xchat.errors import ApiError, DecodeError
from xchat.protocol import frames as F
from xchat.server.limits import ip_bucket
from xchat.server.relay import Relay, SendDest, error_text, now_ms
from xchat.storage.base import DeviceRecord

log = logging.getLogger("xchat.server.ws")
router = APIRouter()

CLOSE_REPLACED = 4409
BACKLOG_PAGE = 256
_DRAINED = F.encode_frame(F.Drained())
_MAX_DELIVER_ITEMS = 0xFFFF


class DeviceConnection:
    """State of one accepted socket; implements :class:`xchat.fanout.base.DeviceSocket`."""

    __slots__ = (
        "bucket",
        "buffer",
        "closed",
        "device",
        "expiry",
        "flushing",
        "loading",
        "out",
        "out_bytes",
        "relay",
        "ws",
    )

    def __init__(self, ws: WebSocket, relay: Relay, device: DeviceRecord | None) -> None:
        self.ws = ws
        self.relay = relay
        self.device = device
        self.bucket = ip_bucket(ws.client.host if ws.client else None)
        self.out: list[Any] = []  # bytes (a frame) or (envelope_id, ts_ms, content)
        self.out_bytes = 0
        self.flushing = False
        self.loading = device is not None
        self.buffer: list[tuple[int, bytes, int, bytes]] = []
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None

    # --- DeviceSocket ---

    def push(self, seq: int, envelope_id: bytes, ts_ms: int, content: bytes) -> None:
        if self.loading:
            self.buffer.append((seq, envelope_id, ts_ms, content))
            return
        self._queue((envelope_id, ts_ms, content), len(content) + 28)

    def push_frame(self, frame: bytes) -> None:
        self._queue(frame, len(frame))

    def replaced(self) -> None:
        self.close_soon(CLOSE_REPLACED, "replaced by a newer connection")

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
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.out and not self.closed:
                items, self.out, self.out_bytes = self.out, [], 0
                for frame in self._frames(items):
                    await self.ws.send_bytes(frame)
        except Exception:  # peer vanished mid-write
            self.closed = True
        finally:
            self.flushing = False

    def _frames(self, items: list[Any]) -> list[bytes]:
        """Coalesce runs of envelopes into DELIVER frames under the frame size limit."""
        frames: list[bytes] = []
        run: list[tuple[bytes, int, bytes]] = []
        size = 0
        limit = self.relay.config.max_request
        for item in items:
            if isinstance(item, bytes):
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
        if frames and self.device is not None:
            self.relay.metrics.inc("ws_frames_sent_total", len(frames))
        return frames

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
                if len(rows) < BACKLOG_PAGE:
                    break
                while self.out_bytes > self.relay.config.ws_outbox_limit // 2 and not self.closed:
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
        except Exception:
            log.exception("backlog load failed")
            self.close_soon(1011, "internal error")

    # --- input ---

    def receive_send(self, frame: F.Send) -> None:
        relay = self.relay
        req_id = frame.req_id
        try:
            dests = []
            n = 0
            for d in frame.destinations:
                address = d.address if d.address.islower() else d.address.lower()
                envs = [(e.device_id, e.envelope_id, e.content) for e in d.envelopes]
                n += len(envs)
                dests.append(SendDest(address, d.access, envs))
            wait = relay.send_limiter.take(self.bucket, n)
            if wait:
                raise ApiError(429, "rate limited", retry_after=wait)
            rows = relay.check_send(dests, now_ms())
        except ApiError as exc:
            retry = int((exc.retry_after or 0) * 1000)
            relay.metrics.inc("sends_rejected_total")
            self.push_frame(F.encode_send_result(req_id, exc.status, retry, error_text(exc)))
            return
        fut = relay.submit(rows)

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.push_frame(F.encode_send_result(req_id, 503, 1000, "storage unavailable"))
            else:
                self.push_frame(F.encode_send_result(req_id, 200))

        fut.add_done_callback(done)

    def receive_ack(self, frame: F.Ack) -> None:
        assert self.device is not None
        if frame.envelope_ids:
            self.relay.store.ack_nowait(self.device.ref, list(frame.envelope_ids))
            self.relay.metrics.inc("envelopes_acked_total", len(frame.envelope_ids))


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
    if header is not None:
        try:
            device, expires = relay.tokens.from_header(header, relay.store, now_ms())
        except ApiError as exc:
            await _close(ws, F.CLOSE_UNAUTHORIZED, exc.message)
            return
    conn = DeviceConnection(ws, relay, device)
    relay.ws_connections += 1
    loop = asyncio.get_running_loop()
    backlog: asyncio.Task[None] | None = None
    if device is not None:
        relay.fanout.attach(device.ref, conn)
        conn.expiry = loop.call_later(
            max(0.0, (expires - now_ms()) / 1000),
            conn.close_soon,
            F.CLOSE_UNAUTHORIZED,
            "token expired",
        )
        backlog = loop.create_task(conn.load_backlog())
    try:
        await _receive_loop(ws, conn, relay)
    finally:
        conn.closed = True
        relay.ws_connections -= 1
        if conn.expiry is not None:
            conn.expiry.cancel()
        if device is not None:
            relay.fanout.detach(device.ref, conn)
        if backlog is not None and not backlog.done():
            backlog.cancel()


async def _receive_loop(ws: WebSocket, conn: DeviceConnection, relay: Relay) -> None:
    max_request = relay.config.max_request
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        data = msg.get("bytes")
        if data is None:
            return await conn.close(F.CLOSE_MALFORMED, "text frames are not accepted")
        if len(data) > max_request:
            return await conn.close(F.CLOSE_TOO_LARGE, f"frame larger than {max_request} bytes")
        try:
            frame = F.decode_frame(data)
        except DecodeError as exc:
            return await conn.close(F.CLOSE_MALFORMED, str(exc)[:120])
        if isinstance(frame, F.Send):
            conn.receive_send(frame)
        elif isinstance(frame, F.Ack):
            if conn.device is None:
                return await conn.close(F.CLOSE_FORBIDDEN, "ACK needs an authenticated socket")
            conn.receive_ack(frame)
        else:
            return await conn.close(F.CLOSE_MALFORMED, "server-to-client frame sent by client")
        if conn.closed:
            return
