"""The web app's backup routes (PROTOCOL.md Part X §10): set a PIN after onboarding, backup
status and "Back up now" in Settings, "Restore from backup" on the first screen, and the
daily backup while the app runs.

Routes (JSON)::

    GET  /api/backup/status              {enabled, realms, threshold, last_backup_ms,
                                          last_backup_size, messages, realms_offered,
                                          reminder}
    POST /api/backup/enable              {pin, realms?: [url], threshold?}  -> status
    POST /api/backup/now                 {}                                  -> status
    POST /api/backup/skip                {}   "not now": remind again in a week
    POST /api/backup/disable             {}   -> {realms, blobs} deleted
    POST /api/backup/restore             {server, target, pin}  -> {account, history}

A wrong PIN is 403 ``{"error", "guesses_remaining"}``. The PIN only passes through this
process (to Argon2id and the OPRF); it is never stored or logged. Event (SSE ``type``):
``backup`` with the status after each automatic backup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import AppState, HttpError, _account, _require_account, _str, read_json
from xchat.client import backup as bk
from xchat.client import events as ev
from xchat.client import realms as rl
from xchat.clock import now_ms
from xchat.errors import WrongPin, XChatError

log = logging.getLogger("xchat.app.backup")

REMIND_AFTER_MS = 7 * 86_400_000  # "Not now" hides the PIN prompt this long
CHECK_EVERY_S = 3600.0  # the daily backup is checked hourly while the app runs
SKIP_KEY = "backup_skipped_ms"


def _status(st: AppState, realms_offered: bool = True) -> dict[str, Any]:
    s = bk.status(st.client).to_json()
    skipped = st._load().get(SKIP_KEY)
    recent = isinstance(skipped, int) and now_ms() - skipped < REMIND_AFTER_MS
    s["realms_offered"] = realms_offered
    s["reminder"] = not s["enabled"] and not recent and realms_offered
    return s


async def _realms_offered(st: AppState) -> bool:
    """Whether the relay recommends any realm (no realms: no PIN prompt; the user can still
    name realms)."""
    cached = getattr(st, "_realms_offered", None)
    if isinstance(cached, tuple) and time.monotonic() - cached[0] < 600:
        return bool(cached[1])
    try:
        offered = bool(await rl.resolve_realms(None, st.client.api))
    except XChatError:
        offered = False
    st._realms_offered = (time.monotonic(), offered)  # type: ignore[attr-defined]
    return offered


async def get_status(request: Request, st: AppState) -> Response:
    _require_account(st)
    return JSONResponse(_status(st, await _realms_offered(st)))


async def enable(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    pin = _str(data, "pin", limit=1024)
    realms = data.get("realms")
    urls = [str(u) for u in realms if isinstance(u, str)] if isinstance(realms, list) else None
    threshold = data.get("threshold")
    t = threshold if isinstance(threshold, int) and not isinstance(threshold, bool) else None
    await bk.enable(st.client, pin, urls or None, t)
    return JSONResponse(_status(st))


async def now(request: Request, st: AppState) -> Response:
    _require_account(st)
    await read_json(request)
    await bk.backup_now(st.client)
    return JSONResponse(_status(st))


async def skip(request: Request, st: AppState) -> Response:
    _require_account(st)
    await read_json(request)
    data = st._load()
    data[SKIP_KEY] = now_ms()
    st._store(data)
    return JSONResponse(_status(st))


async def disable(request: Request, st: AppState) -> Response:
    _require_account(st)
    await read_json(request)
    return JSONResponse(await bk.disable(st.client))


async def restore(request: Request, st: AppState) -> Response:
    if st.client.profile.initialised:
        raise HttpError(409, "this profile already has an account")
    data = await read_json(request)
    server = _str(data, "server", limit=2048).strip()
    if not server.startswith(("http://", "https://")):
        raise HttpError(400, "Enter the server URL, e.g. http://127.0.0.1:8080")
    target = _str(data, "target", limit=128)
    pin = _str(data, "pin", limit=1024)
    try:
        _, restored = await bk.restore_with_pin(st.client, server, target, pin)
    except WrongPin as exc:
        return JSONResponse(
            {"error": str(exc), "guesses_remaining": exc.guesses_remaining}, status_code=403
        )
    await st.start_receiving()
    history = None if restored is None else {"messages": restored.messages}
    return JSONResponse({"account": _account(st), "history": history})


async def _daily(st: AppState) -> None:
    while True:
        try:
            if st.client.profile.initialised and await bk.maybe_backup(st.client):
                st.broadcast({"type": "backup", **_status(st)})
        except XChatError as exc:  # offline, relay down: try again next hour
            log.info("automatic backup skipped", extra={"error_type": type(exc).__name__})
        await asyncio.sleep(CHECK_EVERY_S)


def attach(st: AppState) -> None:
    """Start the daily backup once the client is connected (the loop runs by then)."""

    def on_event(e: ev.Event) -> None:
        if isinstance(e, ev.ConnectionChanged) and e.connected and not hasattr(st, "_backup"):
            task = asyncio.get_running_loop().create_task(_daily(st))
            st._backup = task  # type: ignore[attr-defined]
            task.add_done_callback(_log_failure)

    st.client.on_event(on_event)


def _log_failure(t: asyncio.Task[None]) -> None:
    if t.cancelled():
        return
    with contextlib.suppress(asyncio.CancelledError):
        exc = t.exception()
        if exc is not None:
            log.error("daily backup loop stopped", extra={"error_type": type(exc).__name__})


ROUTES = [
    ("GET", "/api/backup/status", get_status),
    ("POST", "/api/backup/enable", enable),
    ("POST", "/api/backup/now", now),
    ("POST", "/api/backup/skip", skip),
    ("POST", "/api/backup/disable", disable),
    ("POST", "/api/backup/restore", restore),
]
