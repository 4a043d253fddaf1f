"""The XChat web app: one in-process :class:`~xchat.client.Client` behind a loopback-only
JSON API and a Server-Sent Events stream (docs/app-readme.md).

Keys never leave the device: the browser page is only a view. It talks to this process
on ``127.0.0.1``; this process holds the profile (and its lock), does all the crypto via
the client SDK, and talks to the relay. The page authenticates with the per-launch
secret (see :mod:`xchat.app.security` for the full list of request checks).

API (all JSON; reads are GET, writes are POST with ``application/json``)::

    GET  /api/state                      account, features, default server
    GET  /api/events                     SSE: one JSON object per ``data:`` line
    POST /api/account/create             {server, handle}  -> phrase + 3 word positions
    POST /api/account/confirm            {words: [w, w, w]}
    POST /api/account/restore            {server, phrase}
    POST /api/account/handle             {handle}
    GET  /api/conversations              contacts with last message and unread count
    POST /api/contacts/resolve           {to: "@handle" | address}
    GET  /api/messages?peer=ADDR         history, oldest first
    POST /api/messages/send              {to, text}
    POST /api/conversations/read         {peer}
    GET  /api/safety?peer=ADDR           60 digits, verified flags
    GET  /api/safety.svg?peer=ADDR       the safety-number QR code (SVG, segno)
    GET  /api/address.svg                QR code of our own address
    POST /api/contacts/verify            {address, verified}
    POST /api/files/send                 {to, name, content_type, data: b64}
    POST /api/files/fetch                {peer, message_id} -> download + decrypt locally
    GET  /api/files/{message_id}?peer=A  the decrypted bytes (attachment / image)
    GET  /api/groups, POST /api/groups/* only when the Client has a group API

Errors are ``{"error": "..."}`` with 400/404/409/413/501/502/503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import segno
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xchat.app.security import Guard
from xchat.client import events as ev
from xchat.client.client import Client
from xchat.errors import (
    ApiError,
    IdentityChanged,
    InvalidMnemonic,
    ProfileError,
    ServerUnreachable,
    TooLarge,
    UnknownContact,
    XChatError,
)

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_FILE_BYTES = 25 * 1024 * 1024  # per upload from the page (base64 inside JSON)
MAX_UPLOAD_JSON = MAX_FILE_BYTES * 4 // 3 + 64 * 1024
HISTORY_LIMIT = 200
UNREAD_WINDOW = 100
HEARTBEAT_S = 15.0
CONFIRM_WORDS = 3
PREVIEW_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}
STATE_FILE = "app-state.json"


def static_dir() -> Path:
    return Path(str(resources.files("xchat.app") / "static"))


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class AppState:
    """Everything the routes share: the client, the event fan-out, UI-only state."""

    client: Client
    secret: str
    port: int
    default_server: str | None = None
    subscribers: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)
    pending_phrase: list[str] | None = None
    confirm_indices: list[int] = field(default_factory=list)
    downloads: dict[str, Path] = field(default_factory=dict)
    connected: bool | None = None
    started: bool = False

    # --- persistence of UI-only state (read markers) -------------------------------------

    @property
    def _state_path(self) -> Path:
        return Path(self.client.profile.path) / STATE_FILE

    def read_marks(self) -> dict[str, int]:
        try:
            data = json.loads(self._state_path.read_text())
            marks = data.get("read", {})
            return {str(k): int(v) for k, v in marks.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def mark_read(self, peer: str, ts_ms: int) -> None:
        marks = self.read_marks()
        if marks.get(peer, 0) >= ts_ms:
            return
        marks[peer] = ts_ms
        tmp = self._state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"read": marks}, fh)
        os.replace(tmp, self._state_path)

    # --- events --------------------------------------------------------------------------

    def broadcast(self, item: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(item)

    def on_client_event(self, e: ev.Event) -> None:
        item = event_json(e)
        if item.get("type") == "connection":
            self.connected = bool(item.get("connected"))
        self.broadcast(item)

    async def start_receiving(self) -> None:
        if not self.started and self.client.profile.initialised:
            self.started = True
            await self.client.start()


def event_json(e: Any) -> dict[str, Any]:
    """A client event as the JSON the page receives (peer text stays data, never markup)."""
    if isinstance(e, ev.MessageReceived):
        return {
            "type": "message",
            "peer": e.sender,
            "handle": e.handle,
            "id": e.id,
            "text": e.text,
            "ts_ms": e.ts_ms,
        }
    if isinstance(e, ev.ReceiptReceived):
        return {"type": "receipt", "peer": e.sender, "ids": list(e.message_ids)}
    if isinstance(e, ev.IdentityChangedEvent):
        return {
            "type": "identity_changed",
            "peer": e.address,
            "handle": e.handle,
            "was_verified": e.was_verified,
        }
    if isinstance(e, ev.DecryptionFailed):
        return {"type": "decryption_failed", "peer": e.sender}
    if isinstance(e, ev.ConnectionChanged):
        return {"type": "connection", "connected": e.connected}
    if isinstance(e, ev.Drained):
        return {"type": "drained"}
    peer = None
    for attr in ("sender", "peer", "address", "group_id", "group"):
        v = getattr(e, attr, None)
        if isinstance(v, str):
            peer = v
            break
    return {"type": "other", "name": type(e).__name__, "peer": peer}


# --- helpers ---------------------------------------------------------------------------------


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HttpError(413, "request body too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise HttpError(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str, *, required: bool = True, limit: int = 4096) -> str:
    v = data.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v.strip()) or len(v) > limit:
        raise HttpError(400, f"{key!r} must be a non-empty string")
    return v


def _status_for(exc: XChatError) -> int:
    if isinstance(exc, UnknownContact):
        return 404
    if isinstance(exc, IdentityChanged):
        return 409
    if isinstance(exc, ServerUnreachable):
        return 503
    if isinstance(exc, ApiError):
        return 429 if exc.status == 429 else (409 if exc.status == 409 else 502)
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, ProfileError):
        return 409
    return 400


def _message_for(exc: XChatError) -> str:
    if isinstance(exc, ApiError):
        if exc.status == 409:
            return f"taken: {exc.message}"
        return f"server refused the request: {exc.message} (HTTP {exc.status})"
    if isinstance(exc, InvalidMnemonic):
        return f"wrong recovery phrase: {exc}"
    return str(exc) or type(exc).__name__


Handler = Callable[[Request, AppState], Awaitable[Response]]


def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Bind the shared state and turn every typed error into a JSON error response."""

    async def endpoint(request: Request) -> Response:
        st: AppState = request.app.state.xchat
        try:
            return await handler(request, st)
        except HttpError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except XChatError as exc:
            return JSONResponse({"error": _message_for(exc)}, status_code=_status_for(exc))
        except Exception as exc:  # a bug: log it here, tell the page only its type
            log.exception("internal error in %s", request.url.path)
            return JSONResponse(
                {"error": f"internal error ({type(exc).__name__})"}, status_code=500
            )

    return endpoint


def _account(st: AppState) -> dict[str, Any] | None:
    c = st.client
    if not c.profile.initialised:
        return None
    try:
        info = c.whoami()
    except ProfileError:
        return None
    return {
        "address": info.address,
        "handle": info.handle,
        "server": info.server,
        "device_id": info.device_id,
    }


def _require_account(st: AppState) -> None:
    if _account(st) is None:
        raise HttpError(409, "no account yet: create or restore one first")


def features(client: Client) -> dict[str, bool]:
    return {
        "files": True,
        "groups": all(
            callable(getattr(client, n, None)) for n in ("create_group", "groups", "send_group")
        ),
    }


def contact_json(st: AppState, c: Any) -> dict[str, Any]:
    return {
        "address": c.address,
        "handle": c.handle,
        "verified": bool(c.verified),
        "identity_changed": bool(c.identity_changed),
    }


def message_json(m: Any) -> dict[str, Any]:
    """A stored message as the page sees it; bodies are JSON content (client.md §2)."""
    from xchat.client import files as xf

    out: dict[str, Any] = {
        "id": m.id,
        "peer": m.peer,
        "direction": m.direction,
        "ts_ms": m.ts_ms,
        "status": m.status,
        "kind": "other",
        "text": None,
        "file": None,
    }
    try:
        obj = json.loads(m.body)
    except ValueError:
        return out
    if not isinstance(obj, dict):
        return out
    kind = obj.get("type")
    if kind == "text":
        out["kind"] = "text"
        out["text"] = obj.get("text") if isinstance(obj.get("text"), str) else ""
    elif kind == "file":
        try:
            man = xf.manifest_from_content(obj)
        except XChatError:
            man = None
        if man is not None:
            out["kind"] = "file"
            out["file"] = {
                "name": xf.safe_filename(man.name),
                "size": man.size,
                "content_type": man.content_type,
                "image": man.content_type in PREVIEW_TYPES,
            }
    return out


def _qr_svg(payload: bytes | str) -> Response:
    buf = io.BytesIO()
    segno.make(payload, error="m").save(
        buf, kind="svg", scale=6, border=2, dark="#000", light="#fff", xmldecl=False
    )
    return Response(buf.getvalue(), media_type="image/svg+xml")


async def _contact(st: AppState, request: Request) -> Any:
    peer = request.query_params.get("peer", "")
    c = st.client.find_contact(peer) if peer else None
    if c is None:
        raise HttpError(404, "unknown conversation")
    return c


# --- routes: account -------------------------------------------------------------------------


async def get_state(request: Request, st: AppState) -> Response:
    return JSONResponse(
        {
            "account": _account(st),
            "default_server": st.default_server,
            "features": features(st.client),
            "connected": st.connected,
            "phrase_pending": st.pending_phrase is not None,
            "confirm_indices": [i + 1 for i in st.confirm_indices],
        }
    )


async def create_account(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    server = _str(data, "server", limit=2048).strip()
    handle = _str(data, "handle", required=False, limit=64).strip().removeprefix("@") or None
    if not server.startswith(("http://", "https://")):
        raise HttpError(400, "server URL must start with http:// or https://")
    info = await st.client.create_account(server, handle)
    words = (info.recovery_phrase or "").split()
    st.pending_phrase = words
    st.confirm_indices = sorted(secrets.SystemRandom().sample(range(len(words)), CONFIRM_WORDS))
    await st.start_receiving()
    return JSONResponse(
        {
            "account": _account(st),
            "recovery_phrase": words,
            "confirm_indices": [i + 1 for i in st.confirm_indices],
        }
    )


async def recovery_phrase(request: Request, st: AppState) -> Response:
    """The phrase again, only while it waits for confirmation (e.g. after a reload)."""
    await read_json(request)
    if st.pending_phrase is None:
        raise HttpError(409, "no recovery phrase waiting for confirmation")
    return JSONResponse(
        {
            "recovery_phrase": st.pending_phrase,
            "confirm_indices": [i + 1 for i in st.confirm_indices],
        }
    )


async def confirm_phrase(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    words = data.get("words")
    if st.pending_phrase is None:
        raise HttpError(409, "no recovery phrase waiting for confirmation")
    if not isinstance(words, list) or len(words) != CONFIRM_WORDS:
        raise HttpError(400, f"send the {CONFIRM_WORDS} requested words")
    ok = True
    for i, w in zip(st.confirm_indices, words, strict=True):
        given = (w if isinstance(w, str) else "").strip().lower().encode()
        ok &= secrets.compare_digest(given, st.pending_phrase[i].encode())
    if not ok:
        raise HttpError(400, "those words do not match your recovery phrase")
    st.pending_phrase = None
    st.confirm_indices = []
    return JSONResponse({"ok": True})


async def restore_account(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    server = _str(data, "server", limit=2048).strip()
    phrase = " ".join(_str(data, "phrase", limit=1024).lower().split())
    if not server.startswith(("http://", "https://")):
        raise HttpError(400, "server URL must start with http:// or https://")
    await st.client.restore_account(server, phrase)
    await st.start_receiving()
    return JSONResponse({"account": _account(st)})


async def set_handle(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    handle = _str(data, "handle", limit=64).strip().removeprefix("@")
    await st.client.set_handle(handle)
    return JSONResponse({"account": _account(st)})


# --- routes: conversations and messages ------------------------------------------------------


async def conversations(request: Request, st: AppState) -> Response:
    _require_account(st)
    marks = st.read_marks()
    out = []
    for c in st.client.contacts():
        hist = st.client.store.history(c.address, UNREAD_WINDOW)
        last = message_json(hist[-1]) if hist else None
        mark = marks.get(c.address, 0)
        unread = sum(1 for m in hist if m.direction == "in" and m.ts_ms > mark)
        out.append({**contact_json(st, c), "kind": "direct", "last": last, "unread": unread})
    out.sort(key=lambda x: -(x["last"]["ts_ms"] if x["last"] else 0))
    return JSONResponse({"conversations": out})


async def resolve_contact(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to = _str(data, "to", limit=128).strip()
    if not to.startswith("@") and not to.startswith("xc1"):
        to = "@" + to
    # Always ask the server (not the per-session cache): the user explicitly typed a name,
    # and a handle that now points at someone else must raise the identity warning.
    c = await st.client.resolve(to)
    return JSONResponse({"contact": contact_json(st, c)})


async def messages(request: Request, st: AppState) -> Response:
    _require_account(st)
    c = await _contact(st, request)
    hist = st.client.store.history(c.address, HISTORY_LIMIT)
    return JSONResponse(
        {"contact": contact_json(st, c), "messages": [message_json(m) for m in hist]}
    )


async def send_message(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to = _str(data, "to", limit=128)
    text = _str(data, "text", limit=16 * 1024)
    msg_id = await st.client.send_text(to, text)
    return JSONResponse({"id": msg_id})


async def mark_read(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    peer = _str(data, "peer", limit=128)
    hist = st.client.store.history(peer, 1)
    if hist:
        st.mark_read(peer, max(m.ts_ms for m in hist))
    return JSONResponse({"ok": True})


# --- routes: safety numbers ------------------------------------------------------------------


async def safety(request: Request, st: AppState) -> Response:
    _require_account(st)
    c = await _contact(st, request)
    digits, _ = st.client.safety_number(c)
    plain = digits.replace(" ", "")
    return JSONResponse(
        {
            "contact": contact_json(st, c),
            "digits": plain,
            "groups": [plain[i : i + 5] for i in range(0, len(plain), 5)],
        }
    )


async def safety_svg(request: Request, st: AppState) -> Response:
    _require_account(st)
    c = await _contact(st, request)
    _, payload = st.client.safety_number(c)
    return _qr_svg(payload)


async def address_svg(request: Request, st: AppState) -> Response:
    _require_account(st)
    return _qr_svg(st.client.address)


async def verify_contact(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    address = _str(data, "address", limit=128)
    verified = data.get("verified", True)
    if not isinstance(verified, bool):
        raise HttpError(400, "'verified' must be true or false")
    c = st.client.find_contact(address)
    if c is None:
        raise HttpError(404, "unknown contact")
    st.client.mark_verified(c, verified)
    c = st.client.find_contact(address)
    return JSONResponse({"contact": contact_json(st, c)})


# --- routes: files ---------------------------------------------------------------------------


def _progress(st: AppState, transfer: str, direction: str) -> Callable[[int, int], None]:
    last = [-1]

    def cb(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if pct != last[0]:
            last[0] = pct
            st.broadcast(
                {
                    "type": "file_progress",
                    "transfer": transfer,
                    "direction": direction,
                    "done": done,
                    "total": total,
                }
            )

    return cb


async def send_file(request: Request, st: AppState) -> Response:
    from xchat.client import files as xf

    _require_account(st)
    data = await read_json(request, MAX_UPLOAD_JSON)
    to = _str(data, "to", limit=128)
    name = _str(data, "name", limit=255)
    transfer = _str(data, "transfer", required=False, limit=64) or secrets.token_hex(8)
    try:
        raw = base64.b64decode(_str(data, "data", limit=MAX_UPLOAD_JSON), validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "'data' must be base64") from None
    if len(raw) > MAX_FILE_BYTES:
        raise HttpError(413, f"files up to {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    ctype = data.get("content_type")
    with tempfile.TemporaryDirectory(prefix="xchat-app-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(raw)
        del raw
        async with xf.BlobClient.from_api(st.client.api) as blobs:
            manifest = await xf.send_file(
                blobs,
                path,
                name=xf.safe_filename(name),
                content_type=ctype if isinstance(ctype, str) and ctype else None,
                progress=_progress(st, transfer, "up"),
            )
    msg_id = await xf.send_manifest(st.client, to, manifest)
    return JSONResponse({"id": msg_id, "transfer": transfer})


def _file_message(st: AppState, peer: str, message_id: str) -> Any:
    from xchat.client import files as xf

    m = st.client.store.get_message(peer, message_id)
    if m is None:
        raise HttpError(404, "no such message")
    try:
        man = xf.manifest_from_content(json.loads(m.body))
    except (ValueError, XChatError):
        man = None
    if man is None:
        raise HttpError(404, "that message carries no file")
    return man


async def fetch_file(request: Request, st: AppState) -> Response:
    from xchat.client import files as xf
    from xchat.client.metadata import detect_image

    _require_account(st)
    data = await read_json(request)
    message_id = _str(data, "message_id", limit=64)
    peer = _str(data, "peer", limit=128)
    man = _file_message(st, peer, message_id)
    key = f"{peer}/{message_id}"
    path = st.downloads.get(key)
    if path is None or not path.exists():
        target = xf.downloads_dir(st.client.profile.path)
        async with xf.BlobClient(st.client.api.base_url) as blobs:
            path = await xf.receive_file(
                blobs, man, target, progress=_progress(st, message_id, "down")
            )
        st.downloads[key] = path
    with open(path, "rb") as fh:
        image = detect_image(fh.read(16))
    return JSONResponse(
        {
            "url": f"/api/files/{message_id}?peer={quote(peer)}",
            "name": path.name,
            "size": man.size,
            "image": image,
        }
    )


async def file_content(request: Request, st: AppState) -> Response:
    from xchat.client.metadata import detect_image

    _require_account(st)
    message_id = request.path_params["message_id"]
    path = st.downloads.get(f"{request.query_params.get('peer', '')}/{message_id}")
    if path is None or not path.exists():
        raise HttpError(404, "fetch the file first")
    with open(path, "rb") as fh:
        image = detect_image(fh.read(16))
    # Only sniffed raster images keep an image type; everything else is opaque bytes.
    media = image if image in PREVIEW_TYPES else "application/octet-stream"
    return FileResponse(
        path,
        media_type=media,
        headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(path.name)}"},
    )


# --- routes: groups (only when the Client offers them) --------------------------------------


def _groups_api(st: AppState) -> Client:
    if not features(st.client)["groups"]:
        raise HttpError(501, "this client build has no group support yet")
    return st.client


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return str(obj)


async def _maybe_await(v: Any) -> Any:
    if asyncio.iscoroutine(v):
        return await v
    return v


async def list_groups(request: Request, st: AppState) -> Response:
    _require_account(st)
    c: Any = _groups_api(st)
    return JSONResponse({"groups": _jsonable(await _maybe_await(c.groups()))})


async def create_group(request: Request, st: AppState) -> Response:
    _require_account(st)
    c: Any = _groups_api(st)
    data = await read_json(request)
    name = _str(data, "name", limit=128)
    members = data.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise HttpError(400, "'members' must be a list of @handles or addresses")
    group = await _maybe_await(c.create_group(name, members))
    return JSONResponse({"group": _jsonable(group)})


async def group_members(request: Request, st: AppState) -> Response:
    _require_account(st)
    c: Any = _groups_api(st)
    data = await read_json(request)
    group = _str(data, "group", limit=128)
    for m in data.get("add") or []:
        await _maybe_await(c.add_group_member(group, str(m)))
    for m in data.get("remove") or []:
        await _maybe_await(c.remove_group_member(group, str(m)))
    return JSONResponse({"ok": True})


async def send_group(request: Request, st: AppState) -> Response:
    _require_account(st)
    c: Any = _groups_api(st)
    data = await read_json(request)
    msg_id = await _maybe_await(
        c.send_group(_str(data, "group", limit=128), _str(data, "text", limit=16 * 1024))
    )
    return JSONResponse({"id": _jsonable(msg_id)})


# --- events (SSE) ----------------------------------------------------------------------------


async def events(request: Request, st: AppState) -> Response:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
    st.subscribers.add(q)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            hello = {"type": "hello", "connected": st.connected}
            yield f"data: {json.dumps(hello)}\n\n".encode()
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield f"data: {json.dumps(item)}\n\n".encode()
        finally:
            st.subscribers.discard(q)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )


# --- pages -----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(static_dir() / "index.html", media_type="text/html; charset=utf-8")


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method not allowed"}, status_code=405)


def build_app(state: AppState) -> Guard:
    """The ASGI app: routes wrapped by the :class:`Guard` (checks run before any route)."""

    def get(path: str, h: Handler) -> Route:
        return Route(path, route(h), methods=["GET"])

    def post(path: str, h: Handler) -> Route:
        return Route(path, route(h), methods=["POST"])

    routes = [
        Route("/", index, methods=["GET"]),
        get("/api/state", get_state),
        get("/api/events", events),
        post("/api/account/create", create_account),
        post("/api/account/phrase", recovery_phrase),
        post("/api/account/confirm", confirm_phrase),
        post("/api/account/restore", restore_account),
        post("/api/account/handle", set_handle),
        get("/api/conversations", conversations),
        post("/api/contacts/resolve", resolve_contact),
        post("/api/contacts/verify", verify_contact),
        get("/api/messages", messages),
        post("/api/messages/send", send_message),
        post("/api/conversations/read", mark_read),
        get("/api/safety", safety),
        get("/api/safety.svg", safety_svg),
        get("/api/address.svg", address_svg),
        post("/api/files/send", send_file),
        post("/api/files/fetch", fetch_file),
        get("/api/files/{message_id:str}", file_content),
        get("/api/groups", list_groups),
        post("/api/groups/create", create_group),
        post("/api/groups/members", group_members),
        post("/api/groups/send", send_group),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.xchat = state
    state.client.on_event(state.on_client_event)
    return Guard(app, state.secret, state.port)


def new_secret() -> str:
    """The per-launch secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


__all__ = ["AppState", "build_app", "new_secret"]
