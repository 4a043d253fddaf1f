"""The web app's composing routes: send with an outbox, retry, and one draft per
conversation (docs: README "Web app"; issue #19 bugs 1 and 2).

Sending. A message the client has stored is *accepted*: it is on its way even when the
relay is down, because the client re-sends every unconfirmed row under its ORIGINAL id
on each reconnection (``Client.retry_pending``, PROTOCOL Part IV §3.8). So the page must
never be told "not sent" for it (the user would press Send again and the recipient would
get two). ``POST /api/messages/send`` therefore answers:

* 200 ``{"id", "status": "sent"}`` — the relay acknowledged it;
* 202 ``{"id", "status": "pending"}`` — stored, the relay is unreachable or busy
  (ServerUnreachable, 429, 5xx); it goes out once the relay is back;
* 202 ``{"id", "status": "failed", "error"}`` — stored, refused for its own reason (a 4xx
  such as 413); the page offers Retry, which re-sends the same row (same id);
* an error status — nothing was stored (e.g. the contact's safety number changed): the page
  puts the text back in the box.

Stored statuses 'sending'/'failed' are shown as "pending" unless a real failure was
recorded for the row (then "failed" with its reason). After each reconnection the app
runs a retry pass itself and tells the page (``{"type": "outbox"}``) so pending bubbles
turn into Sent in place.

Drafts live in the client store's sealed ``meta`` table (AES-GCM under the profile key,
like message bodies), never in the browser's storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import (
    AppState,
    HttpError,
    _contact,
    _group,
    _is_group,
    _require_account,
    _str,
    read_json,
)
from xchat.client import events as ev
from xchat.clock import now_ms
from xchat.errors import ApiError, ServerUnreachable, XChatError

log = logging.getLogger(__name__)

DRAFTS_META = "app.drafts"
FAILED_META = "app.send_failures"
MAX_DRAFT = 16 * 1024
MAX_DRAFTS = 500
MAX_TEXT = 16 * 1024
UNCONFIRMED = ("sending", "failed")


def transient(exc: XChatError) -> bool:
    """The relay is unreachable or asks to come back later: the row waits, not fails."""
    if isinstance(exc, ServerUnreachable):
        return True
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


def human_error(exc: XChatError) -> str:
    if isinstance(exc, ApiError) and exc.status == 413:
        return "the relay refused it as too large"
    if isinstance(exc, ApiError):
        return f"the relay refused it: {exc.message} (HTTP {exc.status})"
    return str(exc) or type(exc).__name__


# --- sealed per-profile maps ---------------------------------------------------------------


def _meta_map(st: AppState, key: str) -> dict[str, str]:
    raw = st.client.store.get_meta(key)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def _put_meta_map(st: AppState, key: str, data: dict[str, str]) -> None:
    st.client.store.put_meta(key, json.dumps(data, separators=(",", ":")).encode())


def failures(st: AppState) -> dict[str, str]:
    """``"peer/message id" -> reason`` of rows refused for their own reason."""
    return _meta_map(st, FAILED_META)


def _set_failure(st: AppState, peer: str, msg_id: str, reason: str | None) -> None:
    data = failures(st)
    key = f"{peer}/{msg_id}"
    if reason is None:
        if data.pop(key, None) is None:
            return
    else:
        data[key] = reason
    _put_meta_map(st, FAILED_META, data)


def apply_status(st: AppState, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn stored send states into what the page shows (see the module docstring)."""
    failed: dict[str, str] | None = None
    for m in items:
        if m.get("direction") != "out" or m.get("status") not in UNCONFIRMED:
            continue
        if failed is None:
            failed = failures(st)
        reason = failed.get(f"{m['peer']}/{m['id']}")
        m["status"] = "failed" if reason is not None else "pending"
        if reason is not None:
            m["error"] = reason
    return items


# --- sending -----------------------------------------------------------------------------------


def _stored_row(st: AppState, conv: str, text: str, since_ms: int) -> Any:
    """The row the client stored for a send that raised, if it got that far."""
    if _is_group(conv):
        rows = st.client.store.group_history(_group(st, conv).id, 20)
    else:
        rows = st.client.store.history(_contact(st, conv).address, 20)
    for m in reversed(rows):
        if m.direction != "out" or m.status not in UNCONFIRMED or m.ts_ms < since_ms:
            continue
        try:
            body = json.loads(m.body)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("text") == text:
            return m
    return None


async def send_message(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to = _str(data, "to", limit=128)
    text = _str(data, "text", limit=MAX_TEXT)
    since = now_ms() - 1
    try:
        if _is_group(to):
            msg_id = await st.client.send_group(_group(st, to).id, text)
        else:
            msg_id = await st.client.send_text(to, text)
    except XChatError as exc:
        row = _stored_row(st, to, text, since)
        if row is None:  # not accepted: the page puts the text back in the box
            if isinstance(exc, ServerUnreachable):
                raise HttpError(
                    503,
                    "the relay is unreachable, and a first message needs it to set up "
                    "encryption. Your text is back in the box: send it again once connected.",
                ) from None
            raise
        _clear_draft(st, to)
        if transient(exc):
            return JSONResponse({"id": row.id, "status": "pending"}, status_code=202)
        reason = human_error(exc)
        _set_failure(st, row.peer, row.id, reason)
        return JSONResponse({"id": row.id, "status": "failed", "error": reason}, status_code=202)
    _clear_draft(st, to)
    return JSONResponse({"id": msg_id, "status": "sent"})


async def retry_message(request: Request, st: AppState) -> Response:
    """Re-send one unconfirmed 1:1 message under its original id (Retry in the page)."""
    _require_account(st)
    data = await read_json(request)
    conv = _str(data, "conv", limit=128)
    msg_id = _str(data, "id", limit=64)
    if _is_group(conv):
        return await _retry_group(st, conv, msg_id)
    c = _contact(st, conv)
    m = st.client.store.get_message(c.address, msg_id)
    if m is None or m.direction != "out":
        raise HttpError(404, "no such message")
    if m.status not in UNCONFIRMED:
        return JSONResponse({"id": msg_id, "status": m.status})
    body = json.loads(m.body)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise HttpError(400, "only text messages can be retried here")
    reply_to = body.get("reply_to") if isinstance(body.get("reply_to"), str) else None
    try:
        # resume=True re-sends the stored row with its ORIGINAL id (PROTOCOL Part IV §3.8).
        sent_id = await st.client.send_text(c.address, text, reply_to=reply_to, resume=True)
    except XChatError as exc:
        if transient(exc):
            _set_failure(st, c.address, msg_id, None)
            return JSONResponse({"id": msg_id, "status": "pending"}, status_code=202)
        reason = human_error(exc)
        _set_failure(st, c.address, msg_id, reason)
        return JSONResponse({"id": msg_id, "status": "failed", "error": reason}, status_code=202)
    _set_failure(st, c.address, sent_id, None)
    st.broadcast({"type": "outbox"})
    return JSONResponse({"id": sent_id, "status": "sent"})


async def _retry_group(st: AppState, conv: str, msg_id: str) -> Response:
    """A group row is re-sent by the client's outbox pass (re-encrypted under our sender
    key, same id): run one now and report where the row stands."""
    gid = _group(st, conv).id

    def row() -> Any:
        rows = st.client.store.group_history(gid, 500)
        return next((m for m in rows if m.id == msg_id and m.direction == "out"), None)

    m = row()
    if m is None:
        raise HttpError(404, "no such message")
    if m.status in UNCONFIRMED:
        _set_failure(st, m.peer, msg_id, None)
        await outbox_pass(st)
        m = row()
    status = "sent" if m is None or m.status not in UNCONFIRMED else None
    if status is None:
        reason = failures(st).get(f"{m.peer}/{msg_id}")
        body = {"id": msg_id, "status": "failed" if reason else "pending"}
        if reason:
            body["error"] = reason
        return JSONResponse(body, status_code=202)
    return JSONResponse({"id": msg_id, "status": m.status if m is not None else status})


async def outbox_pass(st: AppState) -> None:
    """After a reconnection: re-send what waits (the client does too; the per-row check
    under its send lock makes one of the two passes send each row once), record real
    failures, and tell the page so pending bubbles update in place."""
    try:
        result = await st.client.retry_pending()
    except XChatError as exc:
        log.info("outbox pass stopped: %s", exc)
        st.broadcast({"type": "outbox"})
        return
    for item, reason in result.failed:
        _set_failure(st, item.peer, item.id, reason)
    for item in result.sent:
        _set_failure(st, item.peer, item.id, None)
    st.broadcast({"type": "outbox"})


_tasks: set[asyncio.Task[None]] = set()


def attach(st: AppState) -> None:
    """Run an outbox pass after every (re)connection of the client (server.build_app)."""

    def listener(e: ev.Event) -> None:
        if isinstance(e, ev.ConnectionChanged) and e.connected:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to send
                task = asyncio.get_running_loop().create_task(outbox_pass(st))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)

    st.client.on_event(listener)


# --- drafts ------------------------------------------------------------------------------------


def _clear_draft(st: AppState, conv: str) -> None:
    drafts = _meta_map(st, DRAFTS_META)
    if drafts.pop(conv, None) is not None:
        _put_meta_map(st, DRAFTS_META, drafts)


async def get_drafts(request: Request, st: AppState) -> Response:
    _require_account(st)
    return JSONResponse({"drafts": _meta_map(st, DRAFTS_META)})


async def put_draft(request: Request, st: AppState) -> Response:
    """``{conv, text}``; an empty text deletes the draft."""
    _require_account(st)
    data = await read_json(request)
    conv = _str(data, "conv", limit=128)
    text = _str(data, "text", required=False, limit=MAX_DRAFT)
    if _is_group(conv):
        _group(st, conv)
    else:
        _contact(st, conv)
    drafts = _meta_map(st, DRAFTS_META)
    if text:
        drafts[conv] = text
        if len(drafts) > MAX_DRAFTS:
            raise HttpError(413, f"at most {MAX_DRAFTS} drafts")
    elif drafts.pop(conv, None) is None:
        return JSONResponse({"ok": True})
    _put_meta_map(st, DRAFTS_META, drafts)
    return JSONResponse({"ok": True})


ROUTES = [
    ("POST", "/api/messages/send", send_message),
    ("POST", "/api/messages/retry", retry_message),
    ("GET", "/api/drafts", get_drafts),
    ("POST", "/api/drafts", put_draft),
]
