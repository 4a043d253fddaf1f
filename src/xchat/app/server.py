"""The XChat web app: one in-process :class:`~xchat.client.Client` behind a loopback-only
JSON API and a Server-Sent Events stream (docs/app-readme.md).

Keys never leave the device: the browser page is only a view. It talks to this process
on ``127.0.0.1``; this process holds the profile (and its lock), does all the crypto via
the client SDK, and talks to the relay. The page authenticates with the per-launch
secret or a browser session (see :mod:`xchat.app.security` for the full list of request
checks).

A *conversation id* is a contact's address (1:1) or ``group:<32 hex>`` (a group,
PROTOCOL.md Part V §10). A message's ``peer`` is its storage key (the address, or
``group:<gid>:<sender address>``); file routes take that key.

API (all JSON; reads are GET, writes are POST with ``application/json``). This module
serves the conversation core; the feature modules in :data:`ROUTE_MODULES` add theirs::

    GET  /api/events                     SSE: one JSON object per ``data:`` line
    GET  /api/conversations              contacts and groups, last message, unread count
    POST /api/contacts/resolve           {to: "@handle" | address}
    GET  /api/messages?peer=CONV         history, oldest first (+ contact or group)
    POST /api/conversations/read         {peer: CONV}
    GET  /api/safety?peer=ADDR           60 digits, verified flags
    GET  /api/safety.svg?peer=ADDR       the safety-number QR code (SVG, segno)
    GET  /api/address.svg                QR code of our own address
    POST /api/contacts/verify            {address, verified}
    account  (app/account.py)   GET /api/state; POST /api/account/{create,phrase,confirm,
                                restore,restored-seen,handle}; POST /api/connection/reconnect
    compose  (app/compose.py)   POST /api/messages/{send,retry}; GET/POST /api/drafts
    session  (app/session.py)   POST /api/session, /api/session/forget (browser sessions)
    files    (app/files.py)     POST /api/files/{send,fetch}; GET /api/files/{message_id}
    groups   (app/groups.py)    POST /api/groups/{create,members,rename}; GET /api/groups/info

Errors are ``{"error": "..."}`` with 400/403/404/409/413/502/503.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xchat.app.account import displaced
from xchat.app.common import (  # route modules import these from xchat.app.common
    AppState,
    Handler,
    HttpError,
    _contact,
    _conv_history,
    _group,
    _handles,
    _is_group,
    _qr_svg,
    _require_account,
    _str,
    contact_json,
    event_json,
    group_conv,
    group_json,
    message_json,
    read_json,
    route,
)
from xchat.app.compose import apply_status
from xchat.app.devices import sync_read
from xchat.app.files import mark_auto_previews
from xchat.app.security import Guard
from xchat.app.session import sessions_for

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200
UNREAD_WINDOW = 100
HEARTBEAT_S = 15.0


def static_dir() -> Path:
    return Path(str(resources.files("xchat.app") / "static"))


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
    items = apply_status(st, [message_json(m, handles) for m in hist])
    mark_auto_previews(st, items)
    if "contact" in head:  # calls are entries of the 1:1 conversation (PROTOCOL Part IX §8)
        from xchat.app.calls import conversation_entries

        items = sorted(
            [*items, *conversation_entries(st, head["contact"]["address"])],
            key=lambda m: m["ts_ms"],
        )
    return JSONResponse({**head, "messages": items})


async def mark_read(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    conv = _str(data, "peer", limit=128)
    hist = _conv_history(st, conv, UNREAD_WINDOW)
    if hist:
        ts = max(m.ts_ms for m in hist)
        st.mark_read(conv, ts)
        await sync_read(st, conv, ts)  # the same read position on our other devices
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
    await st.client.mark_verified_everywhere(c, verified)  # and on our other devices
    c = st.client.find_contact(address)
    return JSONResponse({"contact": contact_json(c)})


# --- events (SSE) ----------------------------------------------------------------------------


async def events(request: Request, st: AppState) -> Response:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
    st.subscribers.add(q)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            hello = {"type": "hello", "connected": st.connected, "displaced": await displaced(st)}
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
    "xchat.app.account",
    "xchat.app.compose",
    "xchat.app.session",
    "xchat.app.files",
    "xchat.app.groups",
    "xchat.app.backup",
    "xchat.app.calls",
    "xchat.app.rich",
    "xchat.app.devices",
)

RouteSpec = tuple[str, str, Handler]

CORE_ROUTES: list[RouteSpec] = [
    ("GET", "/api/events", events),
    ("GET", "/api/conversations", conversations),
    ("POST", "/api/contacts/resolve", resolve_contact),
    ("POST", "/api/contacts/verify", verify_contact),
    ("GET", "/api/messages", messages),
    ("POST", "/api/conversations/read", mark_read),
    ("GET", "/api/safety", safety),
    ("GET", "/api/safety.svg", safety_svg),
    ("GET", "/api/address.svg", address_svg),
]


def api_routes() -> list[Route]:
    """Every /api/ route: the core ones above, then each module's in ROUTE_MODULES."""
    specs = list(CORE_ROUTES)
    for name in ROUTE_MODULES:  # feature modules share helpers via xchat.app.common
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
    for name in ROUTE_MODULES:  # a feature module may also listen to the client's events
        attach = getattr(importlib.import_module(name), "attach", None)
        if attach is not None:
            attach(state)
    return Guard(app, state.secret, state.port, sessions=sessions_for(state).valid)


def new_secret() -> str:
    """The per-launch secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


__all__ = ["AppState", "build_app", "event_json", "message_json", "new_secret"]
