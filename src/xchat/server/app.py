"""FastAPI application factory of the relay (PROTOCOL Part III §4, §6).

Error policy: every error is JSON ``{"error": "<message>"}`` with a 4xx status; pydantic
validation failures keep FastAPI's 422 (with the same ``error`` key); an unexpected
exception is logged (type only) and answered with 500 ``{"error": "internal error"}``.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xchat import __version__
from xchat.errors import ApiError, XChatError
from xchat.server import (
    backups,
    blobs,
    devices,
    directory,
    mailbox,
    openapi,
    realtime,
    tokens,
    turn,
)
from xchat.server.backends import make_blob_store
from xchat.server.config import ServerConfig
from xchat.server.consistency import StaleRetryMiddleware
from xchat.server.limits import ip_bucket
from xchat.server.relay import Relay, error_body

log = logging.getLogger("xchat.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive()`` once a streamed (chunked) body passes the limit. It is an
    HTTPException so FastAPI's body parser re-raises it instead of turning it into its
    generic 400 "error parsing the body"; the handler renders 413 ``{"error"}``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body larger than {limit} bytes", headers={"connection": "close"}
        )


async def _plain_json(send: Send, status: int, body: bytes, extra: list[Any] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


BLOB_PREFIX = "/api/v1/blobs/"
#: An answer given before the body was read ends the connection (gracefully, issue #18).
_CLOSE = [(b"connection", b"close")]


class LimitsMiddleware:
    """Per-IP-bucket request rate limit (429 + Retry-After) and the HTTP body size limit
    (413), enforced before any handler or body parser runs (PROTOCOL Part III §6)."""

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        relay = self.relay
        client = scope.get("client")
        wait = relay.ip_limiter.take(ip_bucket(client[0] if client else None))
        if wait:
            relay.metrics.inc("http_rate_limited_total")
            retry = str(math.ceil(wait)).encode()
            await _plain_json(send, 429, b'{"error":"rate limited"}', [(b"retry-after", retry)])
            return
        if scope.get("method") == "PATCH" and scope.get("path", "").startswith(BLOB_PREFIX):
            # Blob uploads are streamed and capped at the blob's declared size by the blob
            # router itself (PROTOCOL Part VI §4); the 1 MiB JSON body limit does not apply to them.
            await self.app(scope, receive, send)
            return
        limit = relay.config.max_request
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:  # close after it (lingering: httpguard), not read 2 MiB of junk
                    await _plain_json(send, 413, _too_large_body(limit), _CLOSE)
                    return
        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            msg = await receive()
            if msg["type"] == "http.request":
                total += len(msg.get("body", b""))
                if total > limit:
                    raise _BodyTooLarge(limit)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _plain_json(send, 413, _too_large_body(limit), _CLOSE)


class RequestLogMiddleware:
    """One JSON log line per HTTP request (PROTOCOL III §9): method, the route *template* (never
    the concrete path, which can hold an address, handle or blob id), status and duration;
    the client IP only when the operator passed ``--log-ips`` (``XCHAT_LOG_IPS=1``)."""

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.log_ips = relay.config.log_ips
        self.log = logging.getLogger("xchat.server.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        status = 0
        t0 = time.perf_counter()

        async def logging_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            route = scope.get("route")
            extra: dict[str, Any] = {
                "method": scope.get("method"),
                "route": getattr(route, "path", None) or "-",
                "status": status or 500,
                "ms": round((time.perf_counter() - t0) * 1000, 2),
            }
            if self.log_ips:
                client = scope.get("client")
                extra["client_ip"] = client[0] if client else None
            self.log.info("request", extra=extra)


def _too_large_body(limit: int) -> bytes:
    return b'{"error":"request body larger than %d bytes"}' % limit


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(config: ServerConfig) -> FastAPI:
    """Build the ASGI app; the relay's store opens in the lifespan (before listening)."""
    relay = Relay(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await relay.start()
        log.info("relay started", extra={"pow_bits": config.pow_bits})
        try:
            yield
        finally:
            await relay.stop()
            log.info("relay stopped")

    app = FastAPI(title="XChat relay", version=__version__, lifespan=lifespan)
    openapi.install(app)  # 422 documented as {"error": ...}, the body validation_error sends
    app.state.relay = relay
    shared_blobs = make_blob_store(config)  # scaled out: blob index in PostgreSQL
    if shared_blobs is not None:
        app.state.blob_store = shared_blobs
    app.state.anon_tokens = tokens.Issuer(relay)  # PROTOCOL Part XI
    app.state.bundle_limits = directory.BundleLimits(relay)
    app.state.turn = turn.load_issuer(
        config.turn_url, config.turn_secret_file, config.turn_ttl_seconds
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(XChatError)
    async def xchat_error(request: Request, exc: XChatError) -> JSONResponse:
        return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def metrics(request: Request) -> str:
        """Aggregate counters for the operator only (issue #18): behind ``--metrics-token``,
        off without one (PROTOCOL Part III §9)."""
        token = relay.config.metrics_token
        if not token:
            raise ApiError(404, "metrics are off (start the relay with --metrics-token)")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "metrics need the operator's bearer token")
        return relay.metrics.render()

    app.include_router(directory.router)
    app.include_router(devices.router)
    app.include_router(mailbox.router)
    app.include_router(realtime.router)
    app.include_router(blobs.router)
    app.include_router(turn.router)
    app.include_router(tokens.router)
    app.include_router(backups.router)
    app.add_middleware(StaleRetryMiddleware, relay=relay)  # innermost; scaled out only
    app.add_middleware(LimitsMiddleware, relay=relay)
    app.add_middleware(RequestLogMiddleware, relay=relay)  # outermost: sees 413/429 too
    return app
