"""The web app's call routes: signalling for the page's own WebRTC (PROTOCOL.md Part IX §8).

The page holds only the media keys of the running call (its RTCPeerConnection makes and
keeps the DTLS certificate and the SRTP keys). This process holds the identity and session
keys: it carries the page's offer/answer and ICE candidates as E2EE call signals through
the SDK's :class:`~xchat.client.calls.CallManager` (``external_media=True``) and pushes the
peer's ones back over the event stream. So a compromised page can at worst misdirect its
own call's media; it never sees a key that outlives the call.

Routes (JSON)::

    GET  /api/calls/ice                 {ice_servers: [{urls, username, credential}]}
    GET  /api/calls/live                {call: CALL | null, sdp}  (after a page reload)
    GET  /api/calls/history?peer=ADDR   {calls: [ENTRY, ...]} newest first
    POST /api/calls/place               {to, sdp, video}      -> {call: CALL}
    POST /api/calls/answer              {call_id, sdp}        -> {call: CALL}
    POST /api/calls/decline             {call_id}
    POST /api/calls/hangup              {call_id}
    POST /api/calls/ice                 {call_id, candidates: [{candidate, sdpMid, sdpMLineIndex}]}
    POST /api/calls/media               {call_id, state: "connected" | "failed", reason?}

Events (SSE ``type``): ``call_incoming`` {call, sdp}, ``call_state`` {call_id, state},
``call_answer`` {call_id, sdp}, ``call_ice`` {call_id, candidates}, ``call_ended``
{call_id, conv, state, reason, duration_s}.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import AppState, HttpError, _require_account, _str, read_json
from xchat.client import events as ev
from xchat.client.call_log import CallRecord
from xchat.client.call_state import MAX_CANDIDATES, MAX_SDP_CHARS, parse_signal
from xchat.client.calls import (
    Call,
    CallEnded,
    CallEvent,
    CallIncoming,
    CallManager,
    CallRemoteCandidates,
    CallRemoteDescription,
    CallStateChanged,
)
from xchat.errors import DecodeError

MAX_CALL_JSON = MAX_SDP_CHARS + 8 * 1024
HISTORY_LIMIT = 200


def manager(st: AppState) -> CallManager:
    """The app's one call manager, made once the profile has an account."""
    mgr: CallManager | None = getattr(st, "_calls", None)
    if mgr is None:
        _require_account(st)
        mgr = CallManager(st.client, external_media=True)
        mgr.on_event(lambda e: _broadcast(st, e))
        mgr.start_nowait(listen=False)
        st._calls = mgr  # type: ignore[attr-defined]
    return mgr


def attach(st: AppState) -> None:
    """Called by ``build_app``: route the client's call signals to the manager."""

    def on_event(e: ev.Event) -> None:
        if isinstance(e, ev.CallSignalReceived):
            manager(st).feed(e)

    st.client.on_event(on_event)


def call_json(st: AppState, call: Call) -> dict[str, Any]:
    c = st.client.store.get_contact(call.peer)
    return {
        "call_id": call.id,
        "peer": call.peer,
        "conv": call.peer,
        "handle": call.handle,
        "direction": call.direction,
        "video": call.video,
        "state": call.state,
        # the in-call screen shows whether the person on the line is the verified one
        "verified": bool(c.verified) if c is not None else False,
        "identity_changed": bool(c.identity_changed) if c is not None else False,
    }


def _broadcast(st: AppState, e: CallEvent) -> None:
    mgr = manager(st)
    if isinstance(e, CallIncoming):
        call = mgr.get(e.call_id)
        st.add_chat(call.peer)  # the caller's conversation holds the call entry
        st.broadcast({"type": "call_incoming", "call": call_json(st, call), "sdp": call.remote_sdp})
    elif isinstance(e, CallStateChanged):
        st.broadcast({"type": "call_state", "call_id": e.call_id, "state": e.state})
    elif isinstance(e, CallRemoteDescription):
        st.broadcast({"type": "call_answer", "call_id": e.call_id, "sdp": e.sdp})
    elif isinstance(e, CallRemoteCandidates):
        st.broadcast(
            {
                "type": "call_ice",
                "call_id": e.call_id,
                "candidates": [c.to_json() for c in e.candidates],
            }
        )
    elif isinstance(e, CallEnded):
        r = e.result
        st.add_chat(r.peer)  # also for calls that never rang here (busy, stale offers)
        st.broadcast(
            {
                "type": "call_ended",
                "call_id": e.call_id,
                "conv": r.peer,
                "peer": r.peer,
                "state": r.state,
                "reason": r.reason,
                "duration_s": r.duration_s,
            }
        )


def entry_json(r: CallRecord) -> dict[str, Any]:
    """A call as an entry of the conversation (kind "call", rendered by calls.js)."""
    return {
        "id": r.id,
        "peer": r.peer,
        "conv": r.peer,
        "sender": r.peer if r.direction == "in" else None,
        "sender_handle": None,
        "direction": r.direction,
        "ts_ms": r.started_ms,
        "status": r.state,
        "kind": "call",
        "text": None,
        "file": None,
        "call": {
            "state": r.state,
            "video": r.video,
            "duration_s": r.duration_s,
            "reason": r.reason,
        },
    }


def conversation_entries(st: AppState, address: str) -> list[dict[str, Any]]:
    """Call entries of a 1:1 conversation, for ``GET /api/messages`` to merge in."""
    mgr: CallManager | None = getattr(st, "_calls", None)
    rows = (mgr.log if mgr is not None else _log(st)).list(address, HISTORY_LIMIT)
    return [entry_json(r) for r in rows]


def _log(st: AppState) -> Any:
    from xchat.client.call_log import CallLog

    return CallLog(st.client.store)


def _sdp(data: dict[str, Any]) -> str:
    sdp = _str(data, "sdp", limit=MAX_SDP_CHARS)
    if not sdp.startswith("v=0"):
        raise HttpError(400, "'sdp' must be an SDP offer or answer")
    return sdp


# --- routes ----------------------------------------------------------------------------------


async def ice(request: Request, st: AppState) -> Response:
    servers = await manager(st).ice_servers()
    return JSONResponse(
        {
            "ice_servers": [
                {"urls": list(s.urls), "username": s.username, "credential": s.credential}
                for s in servers
            ]
        }
    )


async def live(request: Request, st: AppState) -> Response:
    """The live call after a page (re)load: a ringing one comes with its offer, so the
    page can still answer it; any other lost its media with the old page."""
    call = manager(st).live()
    if call is None:
        return JSONResponse({"call": None})
    sdp = call.remote_sdp if call.state == "incoming" else None
    return JSONResponse({"call": call_json(st, call), "sdp": sdp})


async def history(request: Request, st: AppState) -> Response:
    _require_account(st)
    peer = request.query_params.get("peer") or None
    return JSONResponse(
        {"calls": [entry_json(r) for r in manager(st).history(peer, HISTORY_LIMIT)]}
    )


async def place(request: Request, st: AppState) -> Response:
    data = await read_json(request, MAX_CALL_JSON)
    to = _str(data, "to", limit=128).strip()
    video = data.get("video", False)
    if not isinstance(video, bool):
        raise HttpError(400, "'video' must be true or false")
    call = await manager(st).place(to, video=video, sdp=_sdp(data))
    return JSONResponse({"call": call_json(st, call)})


async def answer(request: Request, st: AppState) -> Response:
    data = await read_json(request, MAX_CALL_JSON)
    call = await manager(st).answer(_str(data, "call_id", limit=32), sdp=_sdp(data))
    return JSONResponse({"call": call_json(st, call)})


async def decline(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    call = await manager(st).decline(_str(data, "call_id", limit=32))
    return JSONResponse({"call": call_json(st, call)})


async def hangup(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    call = await manager(st).hangup(_str(data, "call_id", limit=32))
    return JSONResponse({"call": call_json(st, call)})


async def send_ice(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    call_id = _str(data, "call_id", limit=32)
    raw = data.get("candidates")
    if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
        raise HttpError(400, f"'candidates' must be a list of at most {MAX_CANDIDATES}")
    try:  # the same validation the peer applies (PROTOCOL Part IX §2)
        sig = parse_signal("call_ice", {"id": call_id, "candidates": raw})
    except DecodeError as exc:
        raise HttpError(400, str(exc)) from None
    await manager(st).send_candidates(call_id, sig.candidates)
    return JSONResponse({"ok": True})


async def media(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    call_id = _str(data, "call_id", limit=32)
    state = data.get("state")
    mgr = manager(st)
    if state == "connected":
        await mgr.media_connected(call_id)
    elif state == "failed":
        reason = data.get("reason")
        why = reason[:200] if isinstance(reason, str) and reason else "the browser's media failed"
        await mgr.media_failed(call_id, why)
    else:
        raise HttpError(400, "'state' must be 'connected' or 'failed'")
    return JSONResponse({"call": call_json(st, mgr.get(call_id))})


ROUTES = [
    ("GET", "/api/calls/ice", ice),
    ("GET", "/api/calls/live", live),
    ("GET", "/api/calls/history", history),
    ("POST", "/api/calls/place", place),
    ("POST", "/api/calls/answer", answer),
    ("POST", "/api/calls/decline", decline),
    ("POST", "/api/calls/hangup", hangup),
    ("POST", "/api/calls/ice", send_ice),
    ("POST", "/api/calls/media", media),
]
