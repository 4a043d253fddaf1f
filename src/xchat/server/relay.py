"""The relay's shared state and the send path used by both HTTP and WebSocket (PROTOCOL III §4.4).

A send is all-or-nothing: every destination is checked (address known → 404, access proof
→ 401, device list → 409, sizes → 413) before anything is stored; then all envelopes go to
the store in one group-commit operation, and only after the commit are they pushed to the
connected recipient sockets (in commit order, hence per-device queue order) and the
sender is told 200. On SQLite (``delivery_hold_ms`` > 0) they are usually pushed first and
held for their ACK instead: :meth:`Relay._deliver_first`, PROTOCOL Part III §7.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

from xchat.clock import now_ms
from xchat.crypto.pow import stamp_ok
from xchat.errors import ApiError
from xchat.fanout.base import Fanout
from xchat.protocol.frames import PowAccess, TokenAccess
from xchat.server.auth import Challenges, ServerSecrets, Tokens
from xchat.server.backends import check as check_backends
from xchat.server.backends import make_fanout, make_store
from xchat.server.config import ServerConfig
from xchat.server.limits import RateLimiter
from xchat.server.metrics import Metrics
from xchat.storage.base import DeviceRecord, EarlyDelivery, NewEnvelope

log = logging.getLogger("xchat.server")

Access = TokenAccess | PowAccess | None


class ApiErrorWithBody(ApiError):
    """An ApiError whose JSON body carries extra fields (e.g. 409 ``devices``)."""

    def __init__(
        self,
        status: int,
        message: str,
        body: dict[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, message, retry_after=retry_after)
        self.body = body


class SendDest(NamedTuple):
    """One destination of a send. A NamedTuple (cheap to build on the hot path); the
    WebSocket path passes plain ``(address, access, envelopes)`` tuples of the same shape."""

    address: str
    access: Access
    envelopes: Sequence[tuple[int, bytes, bytes]]  # (device_id, envelope_id, content)


class _DeviceSocketLike(Protocol):
    device: DeviceRecord | None

    def close_soon(self, code: int, reason: str) -> None: ...


CLOSE_UNAUTHORIZED = 4401  # xchat.protocol.frames.CLOSE_UNAUTHORIZED


class Relay:
    """Everything a request handler needs, created once per server process."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.secrets = ServerSecrets(config.data)
        check_backends(config)
        self.store = make_store(config)  # SQLite, or PostgreSQL when scaled out
        self.fanout: Fanout = make_fanout(config, self.store)
        self.metrics = Metrics()
        self.challenges = Challenges(self.secrets, config.challenge_ttl_seconds * 1000, self.store)
        self.tokens = Tokens(self.secrets, config.token_ttl_seconds * 1000)
        on = config.rate_limits
        self.ip_limiter = RateLimiter(config.rate_ip_per_s, config.rate_ip_burst, on)
        self.device_limiter = RateLimiter(config.rate_device_per_s, config.rate_device_burst, on)
        self.send_limiter = RateLimiter(config.rate_send_per_s, config.rate_send_burst, on)
        #: what a send stores (every copy of every envelope), per IP bucket (issue #18)
        self.send_bytes_limiter = RateLimiter(
            config.rate_send_bytes_per_s, config.rate_send_bytes_burst, on
        )
        self.ws_connections = 0
        #: The live authenticated socket of each device (realtime.DeviceConnection), so
        #: a device whose epoch changes can be cut at once (PROTOCOL Part III §5, revocation).
        self.device_sockets: dict[int, _DeviceSocketLike] = {}
        self.store.on_epoch_change = self._epoch_changed
        #: Open TCP connections per IP bucket (PROTOCOL Part III §6), when capped.
        self.open_conns: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        m = self.metrics
        m.gauges["ws_connections"] = lambda: float(self.ws_connections)
        m.gauges["ws_device_sockets"] = lambda: float(self.fanout.connected())
        m.gauges.update(self.fanout.gauges())  # scaled out: Redis wake-ups, catch-up rounds
        m.gauges["store_transactions"] = lambda: float(self.store.stats.transactions)
        m.gauges["store_operations"] = lambda: float(self.store.stats.operations)
        m.gauges["envelopes_stored"] = lambda: float(self.store.stats.envelopes_stored)
        m.gauges["envelopes_deleted"] = lambda: float(self.store.stats.envelopes_deleted)
        m.gauges["envelopes_acked_unwritten"] = lambda: float(self.store.acked_unwritten())
        recent = self.store.stats.recent
        m.summaries["store_transaction_seconds"] = lambda: [r[1] for r in list(recent)]
        m.summaries["store_commit_seconds"] = lambda: [r[2] for r in list(recent)]
        m.summaries["store_batch_ops"] = lambda: [float(r[0]) for r in list(recent)]

    async def start(self) -> None:
        await self.store.open()
        self.challenges.load(self.store.used_challenges())
        self.store.on_challenge_used = lambda ch, exp: self.challenges.load({ch: exp})
        for key, value in self.store.settings().items():
            self._setting_changed(key, value)
        self.store.on_setting = self._setting_changed
        await self.fanout.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.fanout.stop()
        await self.store.close()

    def _setting_changed(self, key: str, value: str) -> None:
        """An operator setting (``xchat admin pow``) overrides the configured value."""
        if key == "pow_bits" and value.isdigit() and 0 <= int(value) <= 40:
            self.config = replace(self.config, pow_bits=int(value))
            log.info("setting changed", extra={"pow_bits": int(value)})

    def _epoch_changed(self, device: DeviceRecord) -> None:
        """Store hook, run right after the commit that bumped the epoch and before any
        later commit's deliveries: the old socket closes 4401 and is detached from the
        fan-out, so it can neither receive the new device's envelopes nor ACK them."""
        sock = self.device_sockets.get(device.ref)
        if sock is not None and sock.device is not None and sock.device.epoch != device.epoch:
            self.metrics.inc("ws_revoked_total")
            removed = device.epoch == -1  # gone from the account's list (Part VII §2)
            reason = (
                "device removed from its account" if removed else "device revoked or re-registered"
            )
            sock.close_soon(CLOSE_UNAUTHORIZED, reason)

    # --- connections per IP bucket (PROTOCOL Part III §6) ---

    def conn_open(self, bucket: str) -> bool:
        """Count one more connection from ``bucket``; False if that passes the cap (the
        caller refuses it and still calls :meth:`conn_close` once)."""
        n = self.open_conns.get(bucket, 0) + 1
        self.open_conns[bucket] = n
        cap = self.config.max_sockets_per_ip
        if 0 < cap < n:
            self.metrics.inc("connections_refused_total")
            return False
        return True

    def conn_close(self, bucket: str) -> None:
        n = self.open_conns.get(bucket, 0) - 1
        if n > 0:
            self.open_conns[bucket] = n
        else:
            self.open_conns.pop(bucket, None)

    async def _sweep_loop(self) -> None:
        """TTL expiry (PROTOCOL Part III §4.5): periodic delete; reads also filter expired rows."""
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            try:
                n = await self.store.sweep_expired(now_ms())
                if n:
                    self.metrics.inc("envelopes_expired_total", n)
            except Exception:
                log.exception("sweep failed")

    # --- the send path ---

    def check_send(
        self,
        dests: Sequence[tuple[str, Access, Sequence[tuple[int, bytes, bytes]]]],
        now: int,
        bucket: str = "",
    ) -> list[NewEnvelope]:
        """Validate and authorize a send; return the rows to store or raise ApiError.

        Per destination, in order: each address once (400), known address (404), access
        (401), exactly one envelope per device (409 with the device list, or 400 for a
        second envelope to a device); per envelope: size (413), id length (400); per device:
        the mailbox quota (429 "mailbox full"). Then the stored bytes are charged to the
        sender's IP bucket (429). PROTOCOL Part III §4.4, §6. One envelope per device per
        destination is what keeps one request (and one proof-of-work stamp) from storing
        many copies in one mailbox (issue #18, storage amplification)."""
        cfg = self.config
        if not dests:
            raise ApiError(400, "no destinations")
        rows: list[NewEnvelope] = []
        expires = now + cfg.ttl_seconds * 1000
        max_envelope = cfg.max_envelope
        get_account = self.store.get_account
        usage = self.store.mailbox_usage
        max_count, max_bytes = cfg.max_mailbox_envelopes, cfg.max_mailbox_bytes
        addresses: set[str] | None = set() if len(dests) > 1 else None
        total = 0
        for address, access, envelopes in dests:
            if addresses is not None:
                if address in addresses:
                    raise ApiError(400, "each destination address at most once per send")
                addresses.add(address)
            acct = get_account(address)
            if acct is None:
                raise ApiError(404, "unknown address")
            self._check_access(address, access, acct.token_hash, now)
            devs = acct.devices
            if len(devs) == 1 and len(envelopes) == 1:  # the common case: no sets or dicts
                if envelopes[0][0] != devs[0].device_id:
                    raise _device_mismatch(address, [devs[0].device_id])
                refs = [devs[0].ref]
            else:
                devices = {d.device_id: d.ref for d in devs}
                ids = [e[0] for e in envelopes]
                if len(set(ids)) != len(ids):
                    raise ApiError(400, "at most one envelope per device per destination")
                if set(ids) != devices.keys():
                    raise _device_mismatch(address, sorted(devices))
                refs = [devices[i] for i in ids]
            for ref, (_, envelope_id, content) in zip(refs, envelopes, strict=True):
                size = len(content)
                if not size:  # the sending device itself: in the device set, never stored
                    continue  # (PROTOCOL Part VII §4)
                if size > max_envelope:
                    raise ApiError(413, f"envelope larger than {max_envelope} bytes")
                if len(envelope_id) != 16:
                    raise ApiError(400, "envelope id must be 16 bytes")
                held = usage(ref)
                if held is not None and (held[0] >= max_count or held[1] + size > max_bytes):
                    self.metrics.inc("sends_mailbox_full_total")
                    raise ApiErrorWithBody(
                        429, "recipient mailbox full", {"address": address}, retry_after=60.0
                    )
                total += size
                rows.append(NewEnvelope(ref, envelope_id, now, expires, content))
        if bucket and self.send_bytes_limiter.enabled:
            wait = self.send_bytes_limiter.take(bucket, total)
            if wait:
                raise ApiError(429, "rate limited (stored bytes)", retry_after=wait)
        return rows

    def _check_access(
        self, address: str, access: Access, token_hash: bytes | None, now: int
    ) -> None:
        if access.__class__ is TokenAccess:
            digest = hashlib.sha256(access.token).digest()
            if token_hash is None or not hmac.compare_digest(digest, token_hash):
                raise ApiError(401, "invalid delivery token")
            return
        if isinstance(access, PowAccess):
            if not stamp_ok(
                access.challenge, address.encode("ascii"), access.nonce, self.config.pow_bits
            ):
                raise ApiError(401, "proof of work does not meet the difficulty")
            self.challenges.consume(access.challenge, now)
            return
        raise ApiError(401, "a delivery token or proof of work is required")

    def submit(self, rows: list[NewEnvelope]) -> asyncio.Future[None]:
        """Store ``rows`` (group commit), then push them to connected devices in commit
        order. The returned future resolves after both (HTTP path)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finished(ok: bool) -> None:
            if done.done():
                return
            if ok:
                done.set_result(None)
            else:
                done.set_exception(ApiError(503, "storage unavailable", retry_after=1.0))

        self.submit_cb(rows, finished)
        return done

    def submit_cb(self, rows: list[NewEnvelope], finished: Callable[[bool], None]) -> None:
        """Hot path (WebSocket SEND): like :meth:`submit` but ``finished(ok)`` is called on
        the event loop right after the commit, deliveries already pushed (delivered first:
        once every envelope is durable, :meth:`_deliver_first`). No future/task per send:
        one callback per operation inside the store's per-batch resolution."""
        early = self.store.early_delivery()
        if early is not None:
            self._deliver_first(early, rows, finished)
            return
        deliver = self.fanout.deliver
        metrics = self.metrics

        def after(seqs: list[int | None] | None, exc: BaseException | None) -> None:
            if exc is not None or seqs is None:
                log.error("store failed", extra={"error_type": type(exc).__name__})
                finished(False)
                return
            n = 0
            for row, seq in zip(rows, seqs, strict=True):
                if seq is not None:
                    n += 1
                    deliver(row.device_ref, seq, row.envelope_id, row.ts_ms, row.content)
            metrics.inc("envelopes_accepted_total", n)
            finished(True)

        self.store.enqueue_cb(rows, after)

    def _deliver_first(
        self, store: EarlyDelivery, rows: list[NewEnvelope], finished: Callable[[bool], None]
    ) -> None:
        """Delivery before commit (PROTOCOL Part III §7): push to the connected devices
        now; the store holds what they took until it is ACKed (then it is never written)
        or the hold time passes (then it is committed). ``finished`` still waits until
        every envelope is durable: on the relay's disk or ACKed by its device."""
        deliver = self.fanout.deliver
        seqs = store.reserve_seqs(len(rows))
        live = False
        for row, seq in zip(rows, seqs, strict=True):
            if deliver(row.device_ref, seq, row.envelope_id, row.ts_ms, row.content):
                live = True
        metrics = self.metrics

        def durable(_: Any, exc: BaseException | None) -> None:
            if exc is not None:
                log.error("store failed", extra={"error_type": type(exc).__name__})
                finished(False)
                return
            metrics.inc("envelopes_accepted_total", len(rows))
            finished(True)

        store.enqueue_reserved(rows, seqs, durable, hold=live)


def _device_mismatch(address: str, devices: list[int]) -> ApiErrorWithBody:
    return ApiErrorWithBody(409, "device list mismatch", {"address": address, "devices": devices})


def error_body(exc: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.message}
    if isinstance(exc, ApiErrorWithBody):
        body.update(exc.body)
    return body


def error_text(exc: ApiError) -> str:
    """SEND_RESULT message: plain text, or JSON when the error carries extra fields."""
    if isinstance(exc, ApiErrorWithBody):
        return json.dumps(error_body(exc))
    return exc.message
