"""The blob HTTP API: resumable upload, capability download (PROTOCOL.md Part VI §4).

* ``POST /api/v1/blobs`` (auth) ``{"size": n}`` → 201 ``{"id", "upload_offset": 0, "size",
  "expires_ms"}``; 413 over the per-blob cap or the account's quota.
* ``PATCH /api/v1/blobs/{id}`` (auth, owner only) with ``Upload-Offset: k`` and the raw
  bytes as the body (streamed, never buffered whole) → 200 ``{"id", "upload_offset",
  "size", "complete"}``; 409 if ``k`` is not the confirmed offset, 413 past the size.
* ``HEAD /api/v1/blobs/{id}`` → headers ``Upload-Offset`` and ``Upload-Length``.
* ``GET /api/v1/blobs/{id}`` (NO auth: the id is the capability) → the bytes, with
  ``Range`` support; 404 if unknown or expired, 409 while the upload is incomplete.

Blob settings are read from the environment here (they are not part of
:class:`~xchat.server.config.ServerConfig`): ``XCHAT_BLOB_TTL_SECONDS`` (default 30 days),
``XCHAT_BLOB_QUOTA_BYTES`` (8 GiB per account), ``XCHAT_BLOB_MAX_BYTES`` (8 GiB per blob),
``XCHAT_BLOB_SWEEP_SECONDS`` (600). Blobs live under ``<XCHAT_DATA>/blobs``.

The quota grows with the account's age (issue #18: a 20-bit stamp must not buy 8 GiB):
``min(XCHAT_BLOB_QUOTA_BYTES, XCHAT_BLOB_QUOTA_NEW_BYTES (256 MiB) + age in days ×
XCHAT_BLOB_QUOTA_PER_DAY_BYTES (256 MiB))`` — the full quota after 31 days (PROTOCOL
Part VI §6).

The router finds the relay state at ``request.app.state.relay`` (config, token checker
and account store) and keeps its :class:`FilesystemBlobStore` at
``request.app.state.blob_store``, created on first use.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from xchat.clock import now_ms
from xchat.errors import ApiError
from xchat.server.directory import BEARER
from xchat.server.models import Error, errors
from xchat.server.paths import BlobId
from xchat.storage.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_QUOTA_BYTES,
    DEFAULT_TTL_SECONDS,
    BlobInfo,
    BlobStore,
    FilesystemBlobStore,
)

BLOBS_PATH = "/api/v1/blobs"
_SWEEP_DEFAULT = 600.0
#: Blob quota of a brand-new account, and what each day of account age adds (§6).
DEFAULT_QUOTA_NEW_BYTES = 256 * 1024 * 1024
DEFAULT_QUOTA_PER_DAY_BYTES = 256 * 1024 * 1024
_DAY_MS = 86_400_000


def age_quota(age_ms: int, new_bytes: int, per_day_bytes: int, max_bytes: int) -> int:
    """The blob quota of an account ``age_ms`` old (PROTOCOL Part VI §6)."""
    grown = new_bytes + per_day_bytes * max(0, age_ms) // _DAY_MS
    return min(max_bytes, grown)


class BlobCreate(BaseModel):
    """Body of ``POST /api/v1/blobs``: the (already padded) ciphertext size (a JSON integer:
    strict, so ``true`` is refused)."""

    model_config = ConfigDict(strict=True)

    size: int = Field(ge=0, description="Total bytes the blob will hold")


class BlobCreated(BaseModel):
    id: str = Field(description="32 hex digits; the download capability")
    upload_offset: int
    size: int
    expires_ms: int


class BlobStatus(BaseModel):
    id: str
    upload_offset: int
    size: int
    complete: bool


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(500, f"invalid {name}") from None


class _BlobState:
    """The store plus its sweep clock, one per app."""

    def __init__(self, store: BlobStore, sweep_ms: int) -> None:
        self.store = store
        self.sweep_ms = sweep_ms
        self.last_sweep = 0

    async def maybe_sweep(self, now: int) -> None:
        """TTL expiry (PROTOCOL Part VI §7): at most once per sweep interval, on the request path
        (expired blobs are also refused on every read, so a late sweep leaks nothing)."""
        if now - self.last_sweep >= self.sweep_ms:
            self.last_sweep = now
            await self.store.expire(now)


def _state(request: Request) -> _BlobState:
    app_state = request.app.state
    st: _BlobState | None = getattr(app_state, "blob_state", None)
    if st is None:
        relay = getattr(app_state, "relay", None)
        data = relay.config.data if relay is not None else os.environ.get("XCHAT_DATA", ".")
        store: BlobStore | None = getattr(app_state, "blob_store", None)
        if store is None:
            store = FilesystemBlobStore(
                os.path.join(data, "blobs"),
                ttl_seconds=_env_int("XCHAT_BLOB_TTL_SECONDS", DEFAULT_TTL_SECONDS),
                quota_bytes=_env_int("XCHAT_BLOB_QUOTA_BYTES", DEFAULT_QUOTA_BYTES),
                max_blob_bytes=_env_int("XCHAT_BLOB_MAX_BYTES", DEFAULT_MAX_BLOB_BYTES),
            )
            app_state.blob_store = store
        sweep = float(os.environ.get("XCHAT_BLOB_SWEEP_SECONDS", _SWEEP_DEFAULT))
        st = _BlobState(store, int(sweep * 1000))
        app_state.blob_state = st
    return st


BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]  # /openapi.json


async def _owner(request: Request, _doc: BearerDoc = None) -> str:
    """The uploading account's address, from the bearer token (quota accounting, §6)."""
    relay: Any = getattr(request.app.state, "relay", None)
    if relay is None:
        raise ApiError(401, "authentication unavailable")
    device, _ = relay.tokens.from_header(
        request.headers.get("authorization"), relay.store, now_ms()
    )
    return str(device.address)


Owner = Annotated[str, Depends(_owner)]


def _status_headers(info: BlobInfo) -> dict[str, str]:
    return {
        "Upload-Offset": str(info.offset),
        "Upload-Length": str(info.size),
        "Cache-Control": "no-store",
    }


router = APIRouter(tags=["blobs"])


@router.post(
    BLOBS_PATH, status_code=201, response_model=BlobCreated, responses=errors(400, 401, 413)
)
async def create_blob(body: BlobCreate, owner: Owner, request: Request) -> JSONResponse:
    """Reserve a blob of ``size`` bytes against the caller's quota."""
    st = _state(request)
    now = now_ms()
    await st.maybe_sweep(now)
    await _check_age_quota(request, st.store, owner, body.size, now)
    info = await st.store.create(owner, body.size, now)
    out = BlobCreated(id=info.id, upload_offset=0, size=info.size, expires_ms=info.expires_ms)
    return JSONResponse(out.model_dump(), status_code=201, headers=_status_headers(info))


async def _check_age_quota(
    request: Request, store: BlobStore, owner: str, size: int, now: int
) -> None:
    """413 if ``size`` more bytes pass the quota this account's age allows (the store
    itself enforces the full quota and the per-blob cap)."""
    relay: Any = getattr(request.app.state, "relay", None)
    created = await relay.store.account_created_ms(owner) if relay is not None else None
    quota = age_quota(
        now - (now if created is None else created),
        _env_int("XCHAT_BLOB_QUOTA_NEW_BYTES", DEFAULT_QUOTA_NEW_BYTES),
        _env_int("XCHAT_BLOB_QUOTA_PER_DAY_BYTES", DEFAULT_QUOTA_PER_DAY_BYTES),
        _env_int("XCHAT_BLOB_QUOTA_BYTES", DEFAULT_QUOTA_BYTES),
    )
    used = await store.usage(owner, now)
    if used + size > quota:
        raise ApiError(
            413,
            f"blob quota for this account's age exceeded ({used} of {quota} bytes in use; "
            "it grows each day)",
        )


@router.patch(
    BLOBS_PATH + "/{blob_id}",
    response_model=BlobStatus,
    responses=errors(400, 401, 403, 404, 409, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/offset+octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def append_blob(
    blob_id: BlobId,
    owner: Owner,
    request: Request,
    upload_offset: Annotated[int, Header(alias="Upload-Offset", ge=0)],
) -> JSONResponse:
    """Append the raw request body at ``Upload-Offset`` (resume semantics, §5)."""
    st = _state(request)
    now = now_ms()
    info = await st.store.info(blob_id, now)
    if info.owner != owner:
        raise ApiError(403, "not your blob")
    try:
        info = await st.store.append(blob_id, upload_offset, _body(request), now)
    except ClientDisconnect:
        # The bytes that arrived are kept; the client resumes from HEAD's offset.
        return JSONResponse({"error": "client disconnected"}, status_code=400)
    out = BlobStatus(id=info.id, upload_offset=info.offset, size=info.size, complete=info.complete)
    return JSONResponse(out.model_dump(), headers=_status_headers(info))


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for piece in request.stream():
        if piece:
            yield piece


@router.head(BLOBS_PATH + "/{blob_id}", responses={404: {"description": "Unknown blob"}})
async def blob_status(blob_id: BlobId, request: Request) -> Response:
    """The confirmed offset and total size of a blob (what a resuming client needs)."""
    info = await _state(request).store.info(blob_id, now_ms())
    return Response(status_code=200, headers=_status_headers(info))


class _BigFileResponse(FileResponse):
    chunk_size = 1024 * 1024  # fewer thread hops per byte than starlette's 64 KiB


@router.get(
    BLOBS_PATH + "/{blob_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {},
        416: {"model": Error, "description": "No requested range overlaps the blob"},
        **errors(404, 409),
    },
)
async def download_blob(blob_id: BlobId, request: Request) -> Response:
    """Stream a complete blob. No authentication on purpose: the 128-bit id is the
    capability, and the relay learns nothing about who downloads (§4.1)."""
    st = _state(request)
    now = now_ms()
    await st.maybe_sweep(now)
    info = await st.store.info(blob_id, now)
    if not info.complete:
        raise ApiError(409, "blob upload is not complete")
    path = st.store.path_of(blob_id)
    headers = {"Cache-Control": "no-store"}
    verdict = range_verdict(request.headers.get("range"), info.size)
    if verdict == "ignore":  # RFC 9110 §14.2: an invalid Range is ignored (200, whole blob)
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"range"]
    elif verdict == "unsatisfiable":
        return JSONResponse(
            {"error": "range not satisfiable"},
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{info.size}"},
        )
    if path is not None:
        return _BigFileResponse(path, media_type="application/octet-stream", headers=headers)
    return StreamingResponse(  # pragma: no cover - remote backends
        st.store.read(blob_id, 0, info.size),
        media_type="application/octet-stream",
        headers=headers,
    )


_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def range_verdict(header: str | None, size: int) -> str:
    """What to do with a ``Range`` header (RFC 9110 §14.1.1–§14.2): ``"none"`` (absent),
    ``"ignore"`` (another unit or a syntactically invalid set, e.g. ``bytes=5-2``: served
    whole, 200), ``"unsatisfiable"`` (no range overlaps the blob: 416) or ``"serve"``."""
    if header is None:
        return "none"
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return "ignore"
    satisfiable = False
    for part in spec.split(","):
        found = _RANGE_SPEC.match(part)
        if found is None or (not found.group(1) and not found.group(2)):
            return "ignore"
        first, last = found.group(1), found.group(2)
        if first:
            if last and int(last) < int(first):
                return "ignore"
            satisfiable |= int(first) < size
        else:  # suffix range "-n"
            if int(last) == 0:
                return "ignore"
            satisfiable |= size > 0
    return "serve" if satisfiable else "unsatisfiable"
