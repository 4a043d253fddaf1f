"""The XChat web app: one in-process :class:`~xchat.client.Client` behind a loopback-only
JSON API and a Server-Sent Events stream (docs/app-readme.md).

Keys never leave the device: the browser page is only a view. It talks to this process
on ``127.0.0.1``; this process holds the profile (and its lock), does all the crypto via
the client SDK, and talks to the relay. The page authenticates with the per-launch
secret (see :mod:`xchat.app.security` for the full list of request checks).

A *conversation id* is a contact's address (1:1) or ``group:<32 hex>`` (a group,
PROTOCOL.md Part V §10). A message's ``peer`` is its storage key (the address, or
``group:<gid>:<sender address>``); file routes take that key.

API (all JSON; reads are GET, writes are POST with ``application/json``)::

    GET  /api/state                      account, default server
    GET  /api/events                     SSE: one JSON object per ``data:`` line
    POST /api/account/create             {server, handle}  -> phrase + 3 word positions
    POST /api/account/confirm            {words: [w, w, w]}
    POST /api/account/restore            {server, phrase}
    POST /api/account/handle             {handle}
    GET  /api/conversations              contacts and groups, last message, unread count
    POST /api/contacts/resolve           {to: "@handle" | address}
    GET  /api/messages?peer=CONV         history, oldest first (+ contact or group)
    POST /api/messages/send              {to: CONV, text}
    POST /api/conversations/read         {peer: CONV}
    GET  /api/safety?peer=ADDR           60 digits, verified flags
    GET  /api/safety.svg?peer=ADDR       the safety-number QR code (SVG, segno)
    GET  /api/address.svg                QR code of our own address
    POST /api/contacts/verify            {address, verified}
    POST /api/files/send                 {to: CONV, name, content_type, data: b64}
    POST /api/files/fetch                {peer, message_id} -> download + decrypt locally
    GET  /api/files/{message_id}?peer=P  the decrypted bytes (attachment / image)
    POST /api/groups/create              {name, members: ["@handle" | address]}
    GET  /api/groups/info?group=GID      members (with admin flags), our role
    POST /api/groups/members             {group, add: [...], remove: [...]} (admins)
    POST /api/groups/rename              {group, name} (admins)

Errors are ``{"error": "..."}`` with 400/403/404/409/413/502/503. The file routes live
in :mod:`xchat.app.files`, the group routes in :mod:`xchat.app.groups`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import segno
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xchat.app.security import Guard
from xchat.client import events as ev
from xchat.client import files as xf
from xchat.client.client import Client
from xchat.client.groups import GROUP_PEER_PREFIX, GroupInfo
from xchat.errors import (
    ApiError,
    IdentityChanged,
    InvalidMnemonic,
    ProfileError,
    ServerUnreachable,
    TooLarge,
    UnauthorizedGroupChange,
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
    fetch_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    connected: bool | None = None
    started: bool = False

    # --- persistence of UI-only state (app-state.json) -----------------------------------
    # {"read": {conv: ts_ms}, "chats": [address], "files": {"peer/message id": path}}

    @property
    def _state_path(self) -> Path:
        return Path(self.client.profile.path) / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _store(self, data: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self._state_path)

    def read_marks(self) -> dict[str, int]:
        marks = self._load().get("read")
        if not isinstance(marks, dict):
            return {}
        return {str(k): v for k, v in marks.items() if isinstance(v, int)}

    def mark_read(self, conv: str, ts_ms: int) -> None:
        data = self._load()
        marks = data.setdefault("read", {})
        if not isinstance(marks, dict) or marks.get(conv, 0) >= ts_ms:
            return
        marks[conv] = ts_ms
        self._store(data)

    def chats(self) -> set[str]:
        """Contacts the user opened a 1:1 chat with (group members alone are not chats)."""
        chats = self._load().get("chats")
        return {str(a) for a in chats} if isinstance(chats, list) else set()

    def add_chat(self, address: str) -> None:
        data = self._load()
        chats = set(data.get("chats") or [])
        if address not in chats:
            data["chats"] = sorted(chats | {address})
            self._store(data)

    def saved_file(self, key: str) -> Path | None:
        files = self._load().get("files")
        value = files.get(key) if isinstance(files, dict) else None
        path = Path(value) if isinstance(value, str) else None
        return path if path is not None and path.is_file() else None

    def remember_file(self, key: str, path: Path) -> None:
        data = self._load()
        files = data.get("files")
        data["files"] = {**(files if isinstance(files, dict) else {}), key: str(path)}
        self._store(data)

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


def group_conv(gid: str) -> str:
    """The conversation id of a group."""
    return f"{GROUP_PEER_PREFIX}{gid}"


def event_json(e: Any) -> dict[str, Any]:
    """A client event as the JSON the page receives (peer text stays data, never markup).

    ``conv`` names the conversation the event belongs to (see the module docstring)."""
    if isinstance(e, ev.MessageReceived):
        out: dict[str, Any] = {
            "type": "message",
            "conv": group_conv(e.group["id"]) if e.group else e.sender,
            "peer": e.sender,
            "handle": e.handle,
            "id": e.id,
            "text": e.text,
            "ts_ms": e.ts_ms,
        }
        if e.group:
            out["group"] = {"id": e.group.get("id"), "name": e.group.get("name")}
        if e.file is not None:
            name = e.file.get("name")
            out["file"] = {"name": xf.safe_filename(name) if isinstance(name, str) else "file"}
        return out
    if isinstance(e, ev.GroupChanged):
        return {
            "type": "group",
            "conv": group_conv(e.group_id),
            "name": e.name,
            "by": e.by,
            "added": list(e.added),
            "removed": list(e.removed),
            "left": e.left,
        }
    if isinstance(e, ev.GroupUpdateRejected):
        return {"type": "group_rejected", "conv": group_conv(e.group_id), "peer": e.sender}
    if isinstance(e, ev.ReceiptReceived):
        return {"type": "receipt", "conv": e.sender, "peer": e.sender, "ids": list(e.message_ids)}
    if isinstance(e, ev.IdentityChangedEvent):
        return {
            "type": "identity_changed",
            "conv": e.address,
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
    return {"type": "other", "name": type(e).__name__}


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
    if isinstance(exc, UnauthorizedGroupChange):
        return 403
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


def contact_json(c: Any) -> dict[str, Any]:
    return {
        "address": c.address,
        "handle": c.handle,
        "verified": bool(c.verified),
        "identity_changed": bool(c.identity_changed),
    }


def group_json(st: AppState, g: GroupInfo) -> dict[str, Any]:
    me = st.client.address
    own = _account(st)
    own_handle = (own or {}).get("handle")
    ordered = sorted(
        g.members,
        key=lambda m: (m.address != me, not m.admin, m.handle or "~" + m.address),
    )
    members = [
        {
            "address": m.address,
            "handle": own_handle if m.address == me else m.handle,
            "admin": m.admin,
            "me": m.address == me,
        }
        for m in ordered
    ]
    return {
        "conv": group_conv(g.id),
        "id": g.id,
        "name": g.name,
        "admin": g.admin,
        "left": g.left,
        "members": members,
    }


def message_json(m: Any, handles: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """A stored message as the page sees it; bodies are JSON content (PROTOCOL Part IV §2).

    ``sender`` is the author's address for incoming messages (None for ours), with its
    ``sender_handle`` looked up through ``handles`` (the contacts store)."""
    conv, sender = m.peer, m.peer
    if m.peer.startswith(GROUP_PEER_PREFIX):
        gid, _, sender = m.peer[len(GROUP_PEER_PREFIX) :].partition(":")
        conv = group_conv(gid)
    if m.direction != "in":
        sender = None
    out: dict[str, Any] = {
        "id": m.id,
        "peer": m.peer,
        "conv": conv,
        "sender": sender,
        "sender_handle": handles(sender) if handles is not None and sender else None,
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


def _handles(st: AppState) -> Callable[[str], str | None]:
    def lookup(address: str) -> str | None:
        c = st.client.store.get_contact(address)
        return c.handle if c is not None else None

    return lookup


def _qr_svg(payload: bytes | str) -> Response:
    buf = io.BytesIO()
    segno.make(payload, error="m").save(
        buf, kind="svg", scale=6, border=2, dark="#000", light="#fff", xmldecl=False
    )
    return Response(buf.getvalue(), media_type="image/svg+xml")


def _contact(st: AppState, peer: str) -> Any:
    c = st.client.find_contact(peer) if peer and not _is_group(peer) else None
    if c is None:
        raise HttpError(404, "unknown conversation")
    return c


def _is_group(conv: str) -> bool:
    return conv.startswith(GROUP_PEER_PREFIX)


def _group(st: AppState, conv_or_gid: str) -> GroupInfo:
    """A group by conversation id or bare id (never by name: the page always has ids)."""
    gid = conv_or_gid.removeprefix(GROUP_PEER_PREFIX)
    if len(gid) != 32 or st.client.store.get_group(gid) is None:
        raise HttpError(404, "unknown group")
    return st.client.group_info(gid)


def _conv_history(st: AppState, conv: str, limit: int) -> list[Any]:
    if _is_group(conv):
        return st.client.store.group_history(_group(st, conv).id, limit)
    return st.client.store.history(conv, limit)


# --- routes: account -------------------------------------------------------------------------


async def get_state(request: Request, st: AppState) -> Response:
    return JSONResponse(
        {
            "account": _account(st),
            "default_server": st.default_server,
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


def _summary(st: AppState, conv: str, marks: dict[str, int]) -> dict[str, Any]:
    hist = _conv_history(st, conv, UNREAD_WINDOW)
    mark = marks.get(conv, 0)
    return {
        "last": message_json(hist[-1], _handles(st)) if hist else None,
        "unread": sum(1 for m in hist if m.direction == "in" and m.ts_ms > mark),
    }


async def conversations(request: Request, st: AppState) -> Response:
    """1:1 chats (contacts with messages, or opened here) and every group we hold."""
    _require_account(st)
    marks = st.read_marks()
    chats = st.chats()
    out = []
    for c in st.client.contacts():
        summary = _summary(st, c.address, marks)
        if summary["last"] is None and c.address not in chats:
            continue  # a group member we never talked to 1:1
        out.append({**contact_json(c), "kind": "direct", "conv": c.address, **summary})
    for g in st.client.groups():
        out.append({**group_json(st, g), "kind": "group", **_summary(st, group_conv(g.id), marks)})
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
    st.add_chat(c.address)
    return JSONResponse({"contact": contact_json(c)})


async def messages(request: Request, st: AppState) -> Response:
    _require_account(st)
    conv = request.query_params.get("peer", "")
    hist = _conv_history(st, conv, HISTORY_LIMIT) if _is_group(conv) else None
    if hist is not None:
        head: dict[str, Any] = {"group": group_json(st, _group(st, conv))}
    else:
        c = _contact(st, conv)
        head = {"contact": contact_json(c)}
        hist = st.client.store.history(c.address, HISTORY_LIMIT)
    handles = _handles(st)
    return JSONResponse({**head, "messages": [message_json(m, handles) for m in hist]})


async def send_message(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to = _str(data, "to", limit=128)
    text = _str(data, "text", limit=16 * 1024)
    if _is_group(to):
        msg_id = await st.client.send_group(_group(st, to).id, text)
    else:
        msg_id = await st.client.send_text(to, text)
    return JSONResponse({"id": msg_id})


async def mark_read(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    conv = _str(data, "peer", limit=128)
    hist = _conv_history(st, conv, UNREAD_WINDOW)
    if hist:
        st.mark_read(conv, max(m.ts_ms for m in hist))
    return JSONResponse({"ok": True})


# --- routes: safety numbers ------------------------------------------------------------------


async def safety(request: Request, st: AppState) -> Response:
    _require_account(st)
    c = _contact(st, request.query_params.get("peer", ""))
    digits, _ = st.client.safety_number(c)
    plain = digits.replace(" ", "")
    return JSONResponse(
        {
            "contact": contact_json(c),
            "digits": plain,
            "groups": [plain[i : i + 5] for i in range(0, len(plain), 5)],
        }
    )


async def safety_svg(request: Request, st: AppState) -> Response:
    _require_account(st)
    c = _contact(st, request.query_params.get("peer", ""))
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
    return JSONResponse({"contact": contact_json(c)})


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


# Feature route modules: each defines ``ROUTES``, a list of ``(method, path, handler)``
# with ``async handler(request, state) -> Response``; build_app mounts them behind the same
# Guard and error mapping as the routes here. A feature adds its module with one line.
ROUTE_MODULES: tuple[str, ...] = (
    "xchat.app.files",
    "xchat.app.groups",
)

RouteSpec = tuple[str, str, Handler]

CORE_ROUTES: list[RouteSpec] = [
    ("GET", "/api/state", get_state),
    ("GET", "/api/events", events),
    ("POST", "/api/account/create", create_account),
    ("POST", "/api/account/phrase", recovery_phrase),
    ("POST", "/api/account/confirm", confirm_phrase),
    ("POST", "/api/account/restore", restore_account),
    ("POST", "/api/account/handle", set_handle),
    ("GET", "/api/conversations", conversations),
    ("POST", "/api/contacts/resolve", resolve_contact),
    ("POST", "/api/contacts/verify", verify_contact),
    ("GET", "/api/messages", messages),
    ("POST", "/api/messages/send", send_message),
    ("POST", "/api/conversations/read", mark_read),
    ("GET", "/api/safety", safety),
    ("GET", "/api/safety.svg", safety_svg),
    ("GET", "/api/address.svg", address_svg),
]


def api_routes() -> list[Route]:
    """Every /api/ route: the core ones above, then each module's in ROUTE_MODULES."""
    specs = list(CORE_ROUTES)
    for name in ROUTE_MODULES:  # imported here: they import this module's helpers
        specs += importlib.import_module(name).ROUTES
    seen: set[tuple[str, str]] = set()
    for method, path, _ in specs:
        if (method, path) in seen:
            raise RuntimeError(f"two handlers for {method} {path}")
        seen.add((method, path))
    return [Route(path, route(h), methods=[method]) for method, path, h in specs]


def build_app(state: AppState) -> Guard:
    """The ASGI app: routes wrapped by the :class:`Guard` (checks run before any route)."""
    routes = [
        Route("/", index, methods=["GET"]),
        *api_routes(),
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
