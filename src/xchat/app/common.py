"""What the web app's route modules share: the app state, request parsing, typed errors
as JSON, and the JSON shapes of accounts, contacts, groups, messages and events.

:mod:`xchat.app.server` and every feature route module (``files``, ``groups``, ...)
import this module and never each other, so the imports point one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.client import events as ev
from xchat.client import files as xf
from xchat.client.client import Client
from xchat.client.group_book import GroupInfo
from xchat.client.model import GROUP_PEER_PREFIX
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

log = logging.getLogger("xchat.app.server")

MAX_JSON_BYTES = 64 * 1024
MAX_FILE_BYTES = 25 * 1024 * 1024  # per upload from the page (base64 inside JSON)
MAX_UPLOAD_JSON = MAX_FILE_BYTES * 4 // 3 + 64 * 1024
PREVIEW_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}
STATE_FILE = "app-state.json"


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

    def flag(self, key: str) -> bool:
        """A UI-only yes/no remembered across restarts (e.g. "restored": say why there is
        no history until the user dismissed it)."""
        return bool(self._load().get(key))

    def set_flag(self, key: str, value: bool) -> None:
        data = self._load()
        if bool(data.get(key)) != value:
            data[key] = value
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
    if isinstance(exc, ServerUnreachable):  # the relay, not this app process (issue #19)
        return f"the relay is unreachable ({exc}); XChat keeps trying"
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
