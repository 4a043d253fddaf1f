"""The web app's linked-device routes (PROTOCOL.md Part VII; the page side is
``static/devices.js``).

    POST /api/devices/link     {server, name, history}  -> {code, uri}: this (empty) profile
                                 waits in the background for approval; ``device_linked``
                                 or ``device_link_failed`` events follow
    GET  /api/devices/link.svg   the QR code of the pending link (relay, code, ephemeral key)
    GET  /api/devices            [{id, name, current, linked_at}]
    POST /api/devices/add      {code, history, max_attachments}  approve a new device
                                 (``max_attachments``: MB of attachments copied, 0-256,
                                 default 25, as ``xchat device add --max-attachments``)
    POST /api/devices/rename   {id, name}
    POST /api/devices/remove   {id}

Events: a message our other device sent becomes ``{"type": "message_synced", "conv",
"id", "text", "ts_ms", "device_id"}`` (it shows live), a sync ``{"type": "device_sync",
"kind", "peer"}`` (``peer``: the conversation a ``read``, ``conversation`` or ``delete``
sync names; the page refreshes its lists).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import AppState, HttpError, _qr_svg, _require_account, _str, read_json
from xchat.client import device_events as dev_ev
from xchat.client import device_history as dh
from xchat.client import events as ev
from xchat.errors import XChatError

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    uri: str
    task: asyncio.Task[None] | None = None


#: The approve screen's attachment limit, in MB as ``xchat device add --max-attachments``.
DEFAULT_MAX_ATTACHMENTS_MB = dh.DEFAULT_MAX_ATTACHMENTS // 2**20
MAX_ATTACHMENTS_MB = dh.MAX_ATTACHMENTS_LIMIT // 2**20

#: The pending link of each app process (one profile per process), by AppState identity.
_PENDING: dict[int, _Pending] = {}


def _int(data: dict[str, Any], key: str) -> int:
    v = data.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 2**31:
        raise HttpError(400, f"{key!r} must be a device id")
    return v


async def start_link(request: Request, st: AppState) -> Response:
    if st.client.profile.initialised:
        raise HttpError(409, "this profile already has an account")
    pending = _PENDING.get(id(st))
    if pending is not None and pending.task is not None and not pending.task.done():
        raise HttpError(409, "a link is already waiting for approval")
    data = await read_json(request)
    server = _str(data, "server", limit=512).strip() or (st.default_server or "")
    name = (_str(data, "name", required=False, limit=64).strip() or "browser")[:64]
    history = data.get("history", True) is not False
    code: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    def on_code(text: str, uri: str) -> None:
        if not code.done():
            code.set_result((text, uri))

    async def run() -> None:
        try:
            res = await st.client.link_device(
                server, name=name, history=history, on_code=on_code, use_keyring=True
            )
        except XChatError as exc:
            if not code.done():
                code.set_exception(exc)
            st.broadcast({"type": "device_link_failed", "error": str(exc)})
            return
        st.broadcast(
            {"type": "device_linked", "device_id": res.device_id, "messages": res.messages}
        )
        await st.start_receiving()

    task = asyncio.create_task(run())
    text, uri = await code
    _PENDING[id(st)] = _Pending(uri, task)
    return JSONResponse({"code": text, "uri": uri})


async def link_qr(request: Request, st: AppState) -> Response:
    pending = _PENDING.get(id(st))
    if pending is None:
        raise HttpError(404, "no pending link")
    return _qr_svg(pending.uri)


async def list_devices(request: Request, st: AppState) -> Response:
    _require_account(st)
    return JSONResponse({"devices": [asdict(d) for d in await st.client.devices()]})


async def add_device(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    mb = data.get("max_attachments", DEFAULT_MAX_ATTACHMENTS_MB)
    if not isinstance(mb, int) or isinstance(mb, bool) or not 0 <= mb <= MAX_ATTACHMENTS_MB:
        raise HttpError(400, f"'max_attachments' must be 0 to {MAX_ATTACHMENTS_MB} (MB)")
    res = await st.client.approve_device(
        _str(data, "code", limit=64),
        history=data.get("history", True) is not False,
        max_attachments=mb * 1024 * 1024,
    )
    return JSONResponse({"device_id": res.device_id, "name": res.name})


async def rename_device(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    devices = await st.client.rename_device(_int(data, "id"), _str(data, "name", limit=64))
    return JSONResponse({"devices": [asdict(d) for d in devices]})


async def remove_device(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    devices = await st.client.remove_device(_int(data, "id"))
    return JSONResponse({"devices": [asdict(d) for d in devices]})


async def sync_read(st: AppState, conv: str, ts_ms: int) -> None:
    """Tell our other devices how far this conversation was read (sync kind ``read``)."""
    await st.client.sync_read_position(conv, ts_ms)  # the SDK call `xchat read` makes too


def attach(st: AppState) -> None:
    """Forward device events to the page (sent messages from other devices appear live)."""

    def on_event(e: ev.Event) -> None:
        if isinstance(e, dev_ev.MessageSynced):
            st.broadcast(
                {
                    "type": "message_synced",
                    "conv": e.to,
                    "id": e.id,
                    "text": e.text,
                    "ts_ms": e.ts_ms,
                    "device_id": e.device_id,
                }
            )
        elif isinstance(e, dev_ev.DeviceSynced):
            peer, ts = e.data.get("peer", e.data.get("conv")), e.data.get("ts")
            if e.kind == "read" and isinstance(peer, str) and isinstance(ts, int):
                st.mark_read(peer, ts)  # read on another device: not unread here either
            st.broadcast({"type": "device_sync", "kind": e.kind, "peer": peer})

    st.client.on_event(on_event)


ROUTES = [
    ("POST", "/api/devices/link", start_link),
    ("GET", "/api/devices/link.svg", link_qr),
    ("GET", "/api/devices", list_devices),
    ("POST", "/api/devices/add", add_device),
    ("POST", "/api/devices/rename", rename_device),
    ("POST", "/api/devices/remove", remove_device),
]
