"""The realm's HTTP API: a small Starlette app (PROTOCOL.md Part X §5).

* ``GET /healthz`` → ``{"status": "ok"}``
* ``GET /api/v1/realm`` → ``{"protocol", "name", "public_key", "pow_bits", "guess_limit"}``
* ``POST /api/v1/realm/challenge`` → ``{"challenge", "expires_ms", "pow_bits"}``
* ``POST /api/v1/realm/{register,info,evaluate,recover,delete}`` → signed answer
  ``{"payload", "signature"}``

Errors are ``{"error": message}`` with 400 (malformed), 401 (proof of work, challenge),
404, 405, 413 (body over 64 KiB), 429 (+ ``Retry-After``; per-IP bucket). Like the relay, the
realm logs no client IP and no record id.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from xchat.clock import now_ms
from xchat.errors import ApiError
from xchat.realm.service import RealmService
from xchat.server.limits import RateLimiter, ip_bucket

log = logging.getLogger("xchat.realm")

MAX_BODY = 64 * 1024  # a registration is ~1.5 KiB; anything bigger is abuse


def create_app(
    service: RealmService, *, rate_per_s: float = 20.0, burst: float = 100.0
) -> Starlette:
    """Build the ASGI app around one :class:`RealmService` (its store stays open until
    the lifespan ends)."""
    limiter = RateLimiter(rate_per_s, burst, enabled=rate_per_s > 0)

    def error(status: int, message: str, retry: float | None = None) -> JSONResponse:
        headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def limited(request: Request) -> JSONResponse | None:
        client = request.client
        wait = limiter.take(ip_bucket(client.host if client else None))
        return error(429, "rate limited", wait) if wait else None

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(service.describe())

    async def challenge(request: Request) -> JSONResponse:
        return limited(request) or JSONResponse(service.challenge(now_ms()))

    async def operation(request: Request) -> JSONResponse:
        refused = limited(request)
        if refused is not None:
            return refused
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY:
                return error(413, f"request body larger than {MAX_BODY} bytes")
        try:
            obj: Any = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return error(400, "request body is not JSON")
        try:
            answer = service.handle(request.path_params["op"], obj, now_ms())
        except ApiError as exc:
            return error(exc.status, exc.message)
        return JSONResponse(answer)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("realm started", extra={"records": service.store.count()})
        try:
            yield
        finally:
            service.store.close()

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, "not found")

    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error(405, "method not allowed")

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return error(500, "internal error")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/api/v1/realm", describe, methods=["GET"]),
            Route("/api/v1/realm/challenge", challenge, methods=["POST"]),
            Route("/api/v1/realm/{op}", operation, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed, Exception: internal},
    )
