"""WebSocket data plane for the client (PROTOCOL Part III §5; PROTOCOL.md Part IV §5).

Two kinds of socket:

* :class:`SendChannel` — an UNauthenticated socket used only for sealed-sender SENDs, so
  the server cannot tie a send to the sending device's authenticated connection. Each SEND
  carries a ``req_id``; the call returns once the matching SEND_RESULT says 200.
* :class:`ReceiveLoop` — the authenticated socket that receives DELIVER / DRAINED /
  KEYS_LOW. It reconnects forever with exponential backoff and full jitter (AWS
  Architecture Blog, "Exponential Backoff And Jitter", 2015): ``sleep(uniform(0,
  min(cap, base * 2**attempt)))``. "Resume" needs no cursor: the server keeps every
  envelope until it is ACKed, so after a reconnect it redelivers the unacked tail and the
  client's dedup (envelope id, then content id) makes that harmless.

``websockets`` exceptions are mapped here; nothing foreign escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from xchat.errors import (
    ApiError,
    DecodeError,
    DeviceRemoved,
    Displaced,
    ProtocolError,
    ServerUnreachable,
    XChatError,
)
from xchat.protocol import frames as fr

log = logging.getLogger(__name__)

MAX_FRAME = 4 * 1024 * 1024  # a DELIVER batch; the server's own limit is lower
BACKOFF_BASE = 0.2
BACKOFF_CAP = 30.0
SEND_TIMEOUT = 30.0


def ws_url(base_url: str) -> str:
    """``http(s)://host/...`` -> ``ws(s)://host/.../api/v1/ws``."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/api/v1/ws"


class Backoff:
    """Exponential backoff with full jitter."""

    def __init__(
        self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def open_socket(
    url: str, token: str | None = None, *, timeout: float = 10.0
) -> ClientConnection:
    """Open a data-plane socket; map every failure to an XChatError."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return await connect(
            url,
            additional_headers=headers,
            compression=None,
            max_size=MAX_FRAME,
            open_timeout=timeout,
            ping_interval=20,
            ping_timeout=20,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ApiError(status, f"server refused the WebSocket (HTTP {status})") from None
    except (TimeoutError, OSError, WebSocketException) as exc:
        raise ServerUnreachable(f"cannot open WebSocket to {url} ({type(exc).__name__})") from None


DISPLACED_TEXT = "This account is now used on another device"
REREGISTERED_REASON = "device revoked or re-registered"  # the relay's 4401 on an epoch change
REMOVED_REASON = "device removed from its account"  # its 4401 for a removed device (Part VII)


def _close_error(exc: ConnectionClosed) -> XChatError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    if code == fr.CLOSE_REPLACED:
        return Displaced(reason or DISPLACED_TEXT)
    if code == fr.CLOSE_UNAUTHORIZED and reason == REMOVED_REASON:
        return DeviceRemoved("this device was removed from its account (PROTOCOL Part VII)")
    if code == fr.CLOSE_UNAUTHORIZED and reason == REREGISTERED_REASON:
        # Our device's epoch changed: the account was restored (or the device revoked)
        # elsewhere. A fresh token would take the socket back from that copy.
        return Displaced(DISPLACED_TEXT)
    if code == fr.CLOSE_UNAUTHORIZED:
        return ApiError(401, reason or "unauthorized")
    if code == fr.CLOSE_RATE_LIMITED:
        return ApiError(429, reason or "rate limited")
    if code in (fr.CLOSE_MALFORMED, fr.CLOSE_TOO_LARGE, fr.CLOSE_FORBIDDEN):
        return ProtocolError(f"server closed the socket ({code}: {reason})")
    return ServerUnreachable(f"connection to server lost ({code})")


class SendChannel:
    """An unauthenticated socket for sealed-sender sends, reconnected lazily."""

    def __init__(self, url: str, *, timeout: float = SEND_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[fr.SendResult]] = {}
        self._req = random.randrange(1 << 31)
        self._lock = asyncio.Lock()

    async def _ensure(self) -> ClientConnection:
        async with self._lock:
            if self._ws is None:
                self._ws = await open_socket(self.url)
                self._reader = asyncio.create_task(self._read(self._ws))
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        error: XChatError = ServerUnreachable("connection to server lost")
        try:
            async for data in ws:
                if not isinstance(data, bytes):
                    continue
                try:
                    frame = fr.decode_frame(data)
                except DecodeError:
                    continue
                if isinstance(frame, fr.SendResult):
                    fut = self._pending.pop(frame.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
        except ConnectionClosed as exc:
            error = _close_error(exc)
        except (OSError, WebSocketException):
            pass
        finally:
            if self._ws is ws:
                self._ws = None
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self._pending.clear()

    async def send(self, destinations: tuple[fr.Destination, ...]) -> None:
        """Send one SEND frame and wait for its SEND_RESULT (200 = durably queued)."""
        await self._request(lambda req_id: fr.encode_frame(fr.Send(req_id, destinations)))

    async def send_multi(self, shared: bytes, destinations: tuple[fr.MultiDestination, ...]) -> int:
        """Send one SEND_MULTI frame (PROTOCOL Part III §5.2: ``shared`` once, a small header per
        device) and wait for its SEND_RESULT; returns the frame's size in bytes."""
        size = 0

        def build(req_id: int) -> bytes:
            nonlocal size
            data = fr.encode_send_multi(fr.SendMulti(req_id, shared, destinations))
            size = len(data)
            return data

        await self._request(build)
        return size

    async def _request(self, build: Callable[[int], bytes]) -> None:
        ws = await self._ensure()
        self._req = (self._req + 1) & 0xFFFFFFFF
        req_id = self._req
        fut: asyncio.Future[fr.SendResult] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await ws.send(build(req_id))
            result = await asyncio.wait_for(fut, self.timeout)
        except ConnectionClosed as exc:
            raise _close_error(exc) from None
        except (OSError, WebSocketException):
            raise ServerUnreachable("connection to server lost while sending") from None
        except TimeoutError:
            raise ServerUnreachable("server did not acknowledge the message in time") from None
        finally:
            self._pending.pop(req_id, None)
        if result.status != 200:
            retry = result.retry_after_ms / 1000 if result.retry_after_ms else None
            raise ApiError(result.status, result.message or f"send failed ({result.status})", retry)

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


FrameHandler = Callable[[fr.Frame, "ReceiveLoop"], Awaitable[None]]


class ReceiveLoop:
    """The authenticated receive socket, reconnecting with backoff until stopped."""

    def __init__(
        self,
        url: str,
        token_provider: Callable[[bool], Awaitable[str]],
        handler: FrameHandler,
        *,
        backoff: Backoff | None = None,
        on_connection: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self._on_connection = on_connection
        self._token_provider = token_provider  # arg: force a fresh token
        self._handler = handler
        self._backoff = backoff or Backoff()
        self._ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.drained = asyncio.Event()
        self.connections = 0
        self._stopped = False
        # Set while another copy of this device holds the connection (close 4409): no
        # automatic reconnect until resume(), or the two copies trade it forever.
        self.displaced: str | None = None
        self._resume = asyncio.Event()

    def resume(self) -> None:
        """Reconnect after being displaced (the user chose to use this copy again)."""
        self.displaced = None
        self._resume.set()

    async def send_ack(self, envelope_ids: list[bytes]) -> None:
        """ACK envelopes (after they are stored). Lost acks are harmless: redelivery is
        deduplicated."""
        ws = self._ws
        if ws is None or not envelope_ids:
            return
        for i in range(0, len(envelope_ids), 1024):
            chunk = tuple(envelope_ids[i : i + 1024])
            with contextlib.suppress(ConnectionClosed, OSError, WebSocketException):
                await ws.send(fr.encode_frame(fr.Ack(chunk)))

    async def run(self, *, fail_fast: bool = False) -> None:
        """Receive until :meth:`stop`. With ``fail_fast`` the first connection failure is
        raised instead of retried (used by one-shot commands to report errors)."""
        force_token = False
        while not self._stopped:
            try:
                token = await self._token_provider(force_token)
                force_token = False
                ws = await open_socket(self.url, token)
            except XChatError as exc:
                if isinstance(exc, ApiError) and exc.status == 401:
                    force_token = True
                if (fail_fast and self.connections == 0) or isinstance(exc, DeviceRemoved):
                    raise  # a removed device (Part VII) has nothing to reconnect to
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._ws = ws
            self.connections += 1
            self.drained.clear()
            self.connected.set()
            self._backoff.reset()
            try:
                if self._on_connection is not None:
                    await self._on_connection(True)
                await self._pump(ws)
            except ConnectionClosed as exc:
                err = _close_error(exc)
                if isinstance(err, ApiError) and err.status == 401:
                    force_token = True
                if isinstance(err, DeviceRemoved):
                    raise err from None  # nothing to reconnect to (PROTOCOL Part VII §2)
                if isinstance(err, Displaced):
                    self.displaced = str(err)
                    self._resume.clear()
                    force_token = True  # after a restore elsewhere the old token is dead
            except (OSError, WebSocketException) as exc:
                log.info("connection lost (%s); reconnecting", type(exc).__name__)
            except XChatError as exc:
                # The handler failed before acknowledging (e.g. the local store refused):
                # drop the connection; the server redelivers the unacked envelopes.
                log.warning("receive handler failed: %s", exc)
            finally:
                self._ws = None
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await ws.close()
                if self._on_connection is not None and not self._stopped:
                    await self._on_connection(False)
            if self.displaced is not None and not self._stopped:
                await self._resume.wait()
            elif not self._stopped:
                await asyncio.sleep(self._backoff.next_delay())

    async def _pump(self, ws: ClientConnection) -> None:
        async for data in ws:
            if not isinstance(data, bytes):
                continue
            try:
                frame = fr.decode_frame(data)
            except DecodeError as exc:
                log.warning("ignoring malformed frame from server: %s", exc)
                continue
            if isinstance(frame, fr.Drained):
                self.drained.set()
            await self._handler(frame, self)

    async def stop(self) -> None:
        self._stopped = True
        self._resume.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
