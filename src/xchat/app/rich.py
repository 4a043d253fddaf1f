"""The web app's rich-messaging routes (PROTOCOL.md Part VIII): replies, reactions, edits,
deletes, read state, typing, disappearing timers, requests, blocking, leaving, search.

Thin calls into ``Client.messaging``; every peer-supplied string goes back to the page
as JSON data, which ``static/rich.js`` renders with ``textContent`` only. A conversation
is named by ``conv`` as everywhere in the app: a contact's address or ``group:<gid>``.
A rule refusal (``NotAllowed``: a non-author's edit, after 24 h, a blocked contact) is
HTTP 403; bad input 400.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import (
    AppState,
    HttpError,
    _handles,
    _is_group,
    _require_account,
    _str,
    read_json,
)
from xchat.client import events as ev
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.messaging import GROUP_PREFIX, author_of, conv_of_peer
from xchat.errors import ClientError, DecodeError, NotAllowed

_ID_LEN = 32


def _conv_args(conv: str) -> tuple[str | None, str | None]:
    """(to, group) for ``Client.messaging`` from a page conversation id."""
    if _is_group(conv):
        gid = conv[len(GROUP_PREFIX) :]
        if len(gid) != _ID_LEN:
            raise HttpError(404, "unknown group")
        return None, gid
    return conv, None


def _msg_id(data: dict[str, Any]) -> str:
    msg_id = _str(data, "id", limit=64)
    if len(msg_id) != _ID_LEN or any(ch not in "0123456789abcdef" for ch in msg_id):
        raise HttpError(400, "'id' must be a message id (32 hex digits)")
    return msg_id


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except NotAllowed as exc:
        raise HttpError(403, str(exc)) from None
    except DecodeError as exc:
        raise HttpError(400, str(exc)) from None


def _conv_state(st: AppState, conv: str) -> dict[str, Any]:
    rs = st.client.messaging.state
    return {
        "conv": conv,
        "state": rs.state(conv) or ("accepted" if _is_group(conv) else None),
        "timer": rs.timer(conv),
        "read_receipts": rs.setting("read-receipts"),
        "typing": rs.setting("typing"),
    }


# --- reading -------------------------------------------------------------------------------


async def conversation(request: Request, st: AppState) -> Response:
    """Per-message Part VIII state of a conversation (keyed by message id), its notices
    and its state (request/blocked, timer, settings)."""
    _require_account(st)
    conv = request.query_params.get("peer", "")
    _, group = _conv_args(conv)
    m = st.client.messaging
    if group is not None:
        info = st.client.group_info(group)
        members = max(0, len(info.members) - 1)
    else:
        if st.client.find_contact(conv) is None:
            raise HttpError(404, "unknown conversation")
        members = None
    handles = _handles(st)
    out: dict[str, Any] = {}
    for msg in m.state.rs.conversation_messages(conv)[-500:]:
        d = m.state.describe(msg, members=members)
        quote = d.get("quote")
        if quote is not None and quote.get("author"):
            quote["handle"] = handles(quote["author"])
            quote["mine"] = quote["author"] == st.client.address
        d["author"] = author_of(msg, st.client.address)
        d["mine"] = msg.direction == "out"
        out[msg.id] = d
    notices = m.state.notices(conv)
    return JSONResponse({**_conv_state(st, conv), "messages": out, "notices": notices})


async def message_info(request: Request, st: AppState) -> Response:
    """One message's receipts per member and its earlier versions (the Info dialog)."""
    _require_account(st)
    conv = request.query_params.get("peer", "")
    msg_id = _msg_id({"id": request.query_params.get("id", "")})
    _conv_args(conv)
    m = st.client.messaging.state
    target = m._find_any_author(conv, msg_id)
    if target is None:
        raise HttpError(404, "no such message")
    handles = _handles(st)
    receipts = [
        {"member": who, "handle": handles(who), "delivered_ms": d, "read_ms": r}
        for who, d, r in m.rs.receipts(target.peer, target.id)
    ]
    return JSONResponse(
        {
            "id": msg_id,
            "receipts": receipts,
            "versions": m.versions(conv, msg_id),
            **m.describe(target),
        }
    )


async def search(request: Request, st: AppState) -> Response:
    _require_account(st)
    q = request.query_params.get("q", "")
    if not q.strip() or len(q) > 256:
        raise HttpError(400, "'q' must be 1 to 256 characters")
    conv = request.query_params.get("peer") or None
    to, group = _conv_args(conv) if conv else (None, None)
    hits = st.client.messaging.search(q, to=to, group=group, limit=50)
    handles = _handles(st)
    me = st.client.address
    return JSONResponse(
        {
            "results": [
                {
                    "id": h.id,
                    "conv": h.conv,
                    "author": h.author,
                    "mine": h.author == me,
                    "handle": handles(h.author),
                    "ts_ms": h.ts_ms,
                    "text": h.text,
                }
                for h in hits
            ]
        }
    )


async def requests(request: Request, st: AppState) -> Response:
    _require_account(st)
    rows = st.client.messaging.requests()
    blocked = st.client.messaging.state.rs.conversations_in("blocked")
    return JSONResponse(
        {
            "requests": [
                {
                    "conv": r.address,
                    "address": r.address,
                    "handle": r.handle,
                    "messages": r.messages,
                    "last_text": r.last_text,
                    "ts_ms": r.last_ts,
                }
                for r in rows
            ],
            "blocked": blocked,
        }
    )


async def get_settings(request: Request, st: AppState) -> Response:
    _require_account(st)
    m = st.client.messaging
    return JSONResponse(
        {"read_receipts": m.setting("read-receipts"), "typing": m.setting("typing")}
    )


# --- actions -------------------------------------------------------------------------------


async def send(request: Request, st: AppState) -> Response:
    """A text, optionally a reply (``reply_to``): the quote is added by the client."""
    _require_account(st)
    data = await read_json(request)
    conv = _str(data, "conv", limit=128)
    text = _str(data, "text", limit=16 * 1024)
    reply_to = _msg_id({"id": data["reply_to"]}) if data.get("reply_to") else None
    to, group = _conv_args(conv)
    if group is not None:
        msg_id = await _call(st.client.send_group(group, text, reply_to=reply_to))
    else:
        assert to is not None
        msg_id = await _call(st.client.send_text(to, text, reply_to=reply_to))
    return JSONResponse({"id": msg_id})


async def react(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    remove = data.get("remove") is True
    emoji = "" if remove else _str(data, "emoji", limit=64)
    sent = await _call(
        st.client.messaging.react(to, _msg_id(data), emoji, remove=remove, group=group)
    )
    return JSONResponse({"id": sent})


async def edit(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    text = _str(data, "text", limit=16 * 1024)
    sent = await _call(st.client.messaging.edit(to, _msg_id(data), text, group=group))
    return JSONResponse({"id": sent})


async def delete(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    everyone = data.get("for_everyone") is True
    sent = await _call(
        st.client.messaging.delete(to, _msg_id(data), for_everyone=everyone, group=group)
    )
    return JSONResponse({"id": sent})


async def set_timer(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    seconds = data.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        raise HttpError(400, "'seconds' must be an integer or null")
    try:
        rc.check_timer(seconds or None)
    except DecodeError as exc:
        raise HttpError(400, str(exc)) from None
    await _call(st.client.messaging.set_timer(to, seconds or None, group=group))
    return JSONResponse({"timer": seconds or None})


async def read(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    ids = await _call(st.client.messaging.mark_read(to, group))
    return JSONResponse({"read": ids})


async def typing(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    sent = await _call(
        st.client.messaging.typing(to, data.get("started") is not False, group=group)
    )
    return JSONResponse({"sent": sent})


async def accept(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    address = await _call(st.client.messaging.accept(_str(data, "conv", limit=128)))
    st.add_chat(address)
    return JSONResponse({"conv": address})


async def block(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    to, group = _conv_args(_str(data, "conv", limit=128))
    m = st.client.messaging
    conv = await _call(m.unblock(to, group) if data.get("unblock") is True else m.block(to, group))
    return JSONResponse(_conv_state(st, conv))


async def delete_request(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    try:
        n = await st.client.messaging.decline(_str(data, "conv", limit=128))
    except ClientError as exc:
        raise HttpError(404, str(exc)) from None
    return JSONResponse({"deleted": n})


async def leave(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    _, group = _conv_args(_str(data, "conv", limit=128))
    if group is None:
        raise HttpError(400, "only a group can be left")
    await _call(st.client.messaging.leave_group(group))
    return JSONResponse({"left": True})


async def put_settings(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    m = st.client.messaging
    for key, name in (("read_receipts", "read-receipts"), ("typing", "typing")):
        if key in data:
            if not isinstance(data[key], bool):
                raise HttpError(400, f"{key!r} must be true or false")
            await _call(m.set_setting(name, data[key]))  # and on our other devices
    return JSONResponse(
        {"read_receipts": m.setting("read-receipts"), "typing": m.setting("typing")}
    )


ROUTES = [
    ("GET", "/api/rich/conversation", conversation),
    ("GET", "/api/rich/info", message_info),
    ("GET", "/api/rich/search", search),
    ("GET", "/api/rich/requests", requests),
    ("GET", "/api/rich/settings", get_settings),
    ("POST", "/api/rich/send", send),
    ("POST", "/api/rich/react", react),
    ("POST", "/api/rich/edit", edit),
    ("POST", "/api/rich/delete", delete),
    ("POST", "/api/rich/timer", set_timer),
    ("POST", "/api/rich/read", read),
    ("POST", "/api/rich/typing", typing),
    ("POST", "/api/rich/accept", accept),
    ("POST", "/api/rich/block", block),
    ("POST", "/api/rich/requests/delete", delete_request),
    ("POST", "/api/rich/leave", leave),
    ("POST", "/api/rich/settings", put_settings),
]


# --- live events ---------------------------------------------------------------------------


def rich_event_json(e: ev.Event) -> dict[str, Any] | None:
    """A Part VIII event as the page's SSE JSON (``type`` ``rich``, ``kind`` the event)."""
    if isinstance(e, rev.TypingChanged):
        return {
            "type": "rich",
            "kind": "typing",
            "conv": e.conv,
            "peer": e.sender,
            "started": e.started,
            "ts_ms": e.ts_ms,
        }
    if isinstance(e, rev.ReactionChanged | rev.MessageEdited | rev.MessageDeleted):
        kind = {
            rev.ReactionChanged: "reaction",
            rev.MessageEdited: "edit",
            rev.MessageDeleted: "delete",
        }[type(e)]
        return {"type": "rich", "kind": kind, "conv": e.conv, "peer": e.sender, "id": e.target_id}
    if isinstance(e, rev.RichReceipt):
        return {
            "type": "rich",
            "kind": "receipt",
            "conv": e.conv,
            "peer": e.sender,
            "receipt": e.kind,
            "ids": list(e.message_ids),
        }
    if isinstance(e, rev.TimerChanged):
        return {
            "type": "rich",
            "kind": "timer",
            "conv": e.conv,
            "peer": e.sender,
            "seconds": e.seconds,
        }
    if isinstance(e, rev.GroupNotice):
        return {
            "type": "rich",
            "kind": "notice",
            "conv": f"{GROUP_PREFIX}{e.group}",
            "text": e.text,
        }
    if isinstance(e, rev.MessageRequest):
        return {"type": "rich", "kind": "request", "conv": e.address, "peer": e.address}
    if isinstance(e, rev.MessagesExpired):
        return {"type": "rich", "kind": "expired", "conv": e.conv, "ids": list(e.ids)}
    if isinstance(e, rev.RichRejected):
        return {
            "type": "rich",
            "kind": "rejected",
            "conv": e.conv,
            "peer": e.sender,
            "reason": e.reason,
        }
    return None


def attach(st: AppState) -> None:
    """Forward Part VIII events to the page (common.event_json knows only Part IV/V)."""

    def forward(e: ev.Event) -> None:
        item = rich_event_json(e)
        if item is not None:
            st.broadcast(item)

    st.client.on_event(forward)


__all__ = ["ROUTES", "attach", "conv_of_peer", "rich_event_json"]
