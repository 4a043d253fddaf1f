"""Fan-out between relay nodes through Redis (PROTOCOL Part III §8, docs/deployment.md).

Each node keeps the sockets it holds (as :class:`LocalFanout`) and records in Redis which
node holds each device: ``xchat:dev:<ref>`` = ``<node>:<n>`` (a token per attach, with a
TTL the node keeps refreshing, so a killed node's routes lapse). A committed envelope for a
device held elsewhere is published, batched per event-loop pass, to the holder's channel
``xchat:node:<node>``, which pushes it to the socket. When a device attaches on a second
node, the ``SET ... GET`` that records the new route returns the old token and the old node
is told to close that socket (4409, exactly as on one node).

Redis is a wake-up path, never the truth: the mailbox row in PostgreSQL is. A publish can
be lost (Redis restarted, a route changed in flight, a node briefly disconnected), so every
node re-reads, every ``resync_seconds``, the rows still queued for the devices it holds and
pushes those it has not pushed on that socket (``pending_for``); after Redis comes back it
re-registers its routes (Redis may have lost them) and catches up at once. Clients drop
redeliveries by envelope id, so a rare second push never shows a message twice.

Redis sees device refs, node names and ciphertext in flight; never an address, a sender,
or who talks to whom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from xchat.clock import now_ms
from xchat.fanout.base import DeviceSocket
from xchat.fanout.local import LocalFanout
from xchat.storage.base import StoredEnvelope

log = logging.getLogger("xchat.fanout.redis")

ROUTE_PREFIX = "xchat:dev:"
NODE_PREFIX = "xchat:node:"
ROUTE_TTL = 120  # seconds; refreshed every REFRESH_SECONDS by the holder
REFRESH_SECONDS = 30.0
MAX_MESSAGE = 1 << 20  # bytes per PUBLISH (batches are split above this)
RESYNC_LIMIT = 5000  # rows per catch-up query
RESYNC_REFS = 2000  # devices per catch-up query

_DELIVER = struct.Struct(">cQQQ16sI")  # 'D', ref, seq, ts_ms, envelope id, content length
_NOTIFY = struct.Struct(">cQI")  # 'N', ref, frame length
_REPLACE = struct.Struct(">cQH")  # 'R', ref, token length

# Delete a route only if it is still ours (another node may have taken the device over).
_DEL_IF_OURS = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class PendingSource(Protocol):
    """What the catch-up needs from the shared store (``PostgresStore.pending_for``)."""

    async def pending_for(
        self, refs: list[int], before_ms: int, now_ms: int, limit: int
    ) -> list[tuple[int, StoredEnvelope]]: ...


class RedisFanout(LocalFanout):
    """Local sockets plus Redis routing to the other nodes."""

    def __init__(self, url: str, store: PendingSource, resync_seconds: float = 2.0) -> None:
        super().__init__()
        self.url = url
        self.store = store
        self.resync_seconds = resync_seconds
        self.node = secrets.token_hex(6)
        self.channel = NODE_PREFIX + self.node
        self.healthy = False
        self.counters = {
            "published": 0,
            "received": 0,
            "resynced": 0,
            "unrouted": 0,
            "resync_rounds": 0,
        }
        self._redis: Any = None
        self._tokens: dict[int, str] = {}
        self._serial = 0
        self._pushed: dict[int, dict[bytes, float]] = {}
        self._out: dict[int, list[bytes]] = {}
        self._routes: list[tuple[bool, int, str]] = []  # (set?, ref, token)
        self._flushing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._run_id: str | None = None

    @property
    def redis(self) -> Any:
        """This node's Redis client once started (the relay's link slots share it)."""
        return self._redis

    # --- lifecycle ---

    async def start(self) -> None:
        self._redis = aioredis.from_url(
            self.url, socket_timeout=2.0, socket_connect_timeout=1.0, decode_responses=False
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._supervise(), name="xchat-redis-sub"),
            loop.create_task(self._resync_loop(), name="xchat-resync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(Exception):
                routes = [(ROUTE_PREFIX + str(r), t) for r, t in self._tokens.items()]
                if routes and self.healthy:
                    pipe = self._redis.pipeline(transaction=False)
                    for key, tok in routes:
                        pipe.eval(_DEL_IF_OURS, 1, key, tok)
                    await asyncio.wait_for(pipe.execute(), 2)
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    # --- Fanout ---

    def attach(self, device_ref: int, sock: DeviceSocket) -> None:
        super().attach(device_ref, sock)
        self._serial += 1
        token = f"{self.node}:{self._serial}"
        self._tokens[device_ref] = token
        self._pushed[device_ref] = {}
        self._routes.append((True, device_ref, token))
        self._kick()

    def detach(self, device_ref: int, sock: DeviceSocket) -> None:
        if self._sockets.get(device_ref) is not sock:
            return
        del self._sockets[device_ref]
        self._pushed.pop(device_ref, None)
        token = self._tokens.pop(device_ref, None)
        if token is not None:
            self._routes.append((False, device_ref, token))
            self._kick()

    def deliver(
        self, device_ref: int, seq: int, envelope_id: bytes, ts_ms: int, content: bytes
    ) -> bool:
        sock = self._sockets.get(device_ref)
        if sock is not None:
            self._push_local(device_ref, sock, seq, envelope_id, ts_ms, content)
            return True
        item = _DELIVER.pack(b"D", device_ref, seq, ts_ms, envelope_id, len(content)) + content
        self._out.setdefault(device_ref, []).append(item)
        self._kick()
        return False

    def notify(self, device_ref: int, frame: bytes) -> bool:
        sock = self._sockets.get(device_ref)
        if sock is not None:
            sock.push_frame(frame)
            return True
        self._out.setdefault(device_ref, []).append(
            _NOTIFY.pack(b"N", device_ref, len(frame)) + frame
        )
        self._kick()
        return False

    def gauges(self) -> dict[str, Callable[[], float]]:
        c = self.counters
        return {f"fanout_{name}": (lambda name=name: float(c[name])) for name in c} | {
            "fanout_redis_up": lambda: float(self.healthy)
        }

    def backlog_pushed(
        self, device_ref: int, sock: DeviceSocket, envelope_ids: list[bytes]
    ) -> None:
        pushed = self._pushed.get(device_ref)
        if pushed is not None and self._sockets.get(device_ref) is sock:
            now = time.monotonic()
            for eid in envelope_ids:
                pushed[eid] = now

    def _push_local(
        self,
        ref: int,
        sock: DeviceSocket,
        seq: int,
        envelope_id: bytes,
        ts_ms: int,
        content: bytes,
    ) -> None:
        pushed = self._pushed.get(ref)
        if pushed is not None and envelope_id in pushed:
            return  # already on this socket (a catch-up raced the wake-up)
        sock.push(seq, envelope_id, ts_ms, content)
        # While the socket reads its backlog, a live push may be dropped as "older than the
        # backlog" (seqs of different nodes commit out of order): let the catch-up see it.
        if pushed is not None and not getattr(sock, "loading", False):
            pushed[envelope_id] = time.monotonic()

    # --- outgoing: routes and wake-ups, one Redis round trip per event-loop pass ---

    def _kick(self) -> None:
        if not self._flushing and self._redis is not None:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._routes or self._out:
                routes, self._routes = self._routes, []
                out, self._out = self._out, {}
                if not self.healthy:
                    continue  # rows stay in the store; routes are re-registered on reconnect
                try:
                    await self._flush_routes(routes)
                    await self._flush_out(out)
                except (RedisError, OSError) as exc:
                    self._lost(exc)
        finally:
            self._flushing = False

    async def _flush_routes(self, routes: list[tuple[bool, int, str]]) -> None:
        if not routes:
            return
        pipe = self._redis.pipeline(transaction=False)
        for is_set, ref, token in routes:
            key = ROUTE_PREFIX + str(ref)
            if is_set:
                pipe.set(key, token, ex=ROUTE_TTL, get=True)
            else:
                pipe.eval(_DEL_IF_OURS, 1, key, token)
        results = await pipe.execute()
        notices: dict[str, list[bytes]] = {}
        for (is_set, ref, token), old in zip(routes, results, strict=True):
            if not is_set or not old:
                continue
            old_token = old.decode()
            node = old_token.split(":", 1)[0]
            if old_token != token and node != self.node:
                raw = old_token.encode()
                notices.setdefault(node, []).append(_REPLACE.pack(b"R", ref, len(raw)) + raw)
        if notices:
            await self._publish(notices)

    async def _flush_out(self, out: dict[int, list[bytes]]) -> None:
        if not out:
            return
        refs = list(out)
        tokens = await self._redis.mget([ROUTE_PREFIX + str(r) for r in refs])
        per_node: dict[str, list[bytes]] = {}
        for ref, token in zip(refs, tokens, strict=True):
            if token is None:
                self.counters["unrouted"] += 1
                continue  # offline: the row waits for the device's next connection
            node = token.split(b":", 1)[0].decode()
            if node == self.node:
                self._handle(b"".join(out[ref]))  # attached here meanwhile
            else:
                per_node.setdefault(node, []).extend(out[ref])
        if per_node:
            await self._publish(per_node)

    async def _publish(self, per_node: dict[str, list[bytes]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        n = 0
        for node, items in per_node.items():
            chunk: list[bytes] = []
            size = 0
            for item in items:
                if chunk and size + len(item) > MAX_MESSAGE:
                    pipe.publish(NODE_PREFIX + node, b"".join(chunk))
                    n += 1
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item)
            if chunk:
                pipe.publish(NODE_PREFIX + node, b"".join(chunk))
                n += 1
        await pipe.execute()  # a 0 receiver count = that node died: the row stays queued
        self.counters["published"] += n

    def _lost(self, exc: BaseException) -> None:
        if self.healthy:
            log.warning("redis unavailable", extra={"error_type": type(exc).__name__})
        self.healthy = False

    # --- incoming ---

    def _handle(self, data: bytes) -> None:
        """Apply one message of our channel: deliveries, control frames, replacements."""
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            kind = data[i : i + 1]
            if kind == b"D":
                _, ref, seq, ts, eid, size = _DELIVER.unpack_from(view, i)
                i += _DELIVER.size
                content = bytes(view[i : i + size])
                i += size
                sock = self._sockets.get(ref)
                if sock is not None:
                    self._push_local(ref, sock, seq, eid, ts, content)
            elif kind == b"N":
                _, ref, size = _NOTIFY.unpack_from(view, i)
                i += _NOTIFY.size
                frame = bytes(view[i : i + size])
                i += size
                sock = self._sockets.get(ref)
                if sock is not None:
                    sock.push_frame(frame)
            elif kind == b"R":
                _, ref, size = _REPLACE.unpack_from(view, i)
                i += _REPLACE.size
                token = bytes(view[i : i + size]).decode()
                i += size
                sock = self._sockets.get(ref)
                if sock is not None and self._tokens.get(ref) == token:
                    self._sockets.pop(ref, None)
                    self._tokens.pop(ref, None)
                    self._pushed.pop(ref, None)
                    sock.replaced()
            else:
                log.error("malformed fan-out message")
                return
        self.counters["received"] += 1

    async def _supervise(self) -> None:
        """Keep the subscription up; on (re)connect re-register every route and catch up."""
        backoff = 0.1
        while True:
            pubsub = None
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._run_id = await self._server_run_id()
                await self._register_all()
                self.healthy = True
                backoff = 0.1
                log.info("redis connected", extra={"node": self.node})
                self._resync_soon()
                next_check = time.monotonic() + 1.0
                next_refresh = time.monotonic() + REFRESH_SECONDS
                while True:
                    msg = await pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        self._handle(msg["data"])
                    now = time.monotonic()
                    if now >= next_check:  # a restarted Redis lost our routes
                        next_check = now + 1.0
                        if await self._server_run_id() != self._run_id:
                            raise ConnectionError("redis restarted")
                    if now >= next_refresh:
                        next_refresh = now + REFRESH_SECONDS
                        await self._register_all()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._lost(exc)
            except Exception:
                log.exception("fan-out subscriber failed")
                self.healthy = False
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    async def _server_run_id(self) -> str:
        info = await self._redis.info("server")
        return str(info.get("run_id", ""))

    async def _register_all(self) -> None:
        if not self._tokens:
            return
        pipe = self._redis.pipeline(transaction=False)
        for ref, token in list(self._tokens.items()):
            pipe.set(ROUTE_PREFIX + str(ref), token, ex=ROUTE_TTL)
        await pipe.execute()

    # --- catch-up from the store ---

    def _resync_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._resync(500))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _resync_loop(self) -> None:
        grace = max(1, int(self.resync_seconds * 1000))
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                await self._resync(grace)
            except Exception as exc:  # the store is down: next round
                log.debug("catch-up skipped: %s", type(exc).__name__)

    async def _resync(self, grace_ms: int) -> None:
        """Push every row queued more than ``grace_ms`` ago for a device held here and not
        yet pushed on its socket (a wake-up lost in Redis, or a race with a route change)."""
        self.counters["resync_rounds"] += 1
        refs = [r for r, s in self._sockets.items() if not getattr(s, "loading", False)]
        for start in range(0, len(refs), RESYNC_REFS):
            part = refs[start : start + RESYNC_REFS]
            now = now_ms()
            mono = time.monotonic()
            rows = await self.store.pending_for(part, now - grace_ms, now, RESYNC_LIMIT)
            present: dict[int, list[StoredEnvelope]] = {}
            for ref, row in rows:
                present.setdefault(ref, []).append(row)
            for ref in part:
                sock = self._sockets.get(ref)
                pushed = self._pushed.get(ref)
                if sock is None or pushed is None or getattr(sock, "loading", False):
                    continue
                mine = present.get(ref, [])
                keep = {r.envelope_id for r in mine}
                horizon = mono - 3 * max(grace_ms, 1000) / 1000
                for eid in [e for e, t in pushed.items() if t < horizon and e not in keep]:
                    del pushed[eid]
                for r in mine:
                    if r.envelope_id not in pushed:
                        sock.push(r.seq, r.envelope_id, r.ts_ms, r.content)
                        pushed[r.envelope_id] = mono
                        self.counters["resynced"] += 1
