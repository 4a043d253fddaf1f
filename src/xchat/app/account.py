"""The web app's account routes: state, create (with the recovery phrase shown once and 3
words confirmed), restore, handle, the connection (displaced or not), written for people:
"That handle is taken", which recovery word is wrong, a phrase accepted as written down.

A restored account has no history on this device (messages were encrypted for the old
device and the relay keeps nothing once delivered), so the app remembers that it was
restored and the page says so until the user dismisses it. If another copy of the same
device connects to the relay, ours is *displaced* (close 4409): the client does not
reconnect by itself (the two copies would trade the connection forever); the page says
"This account is now used on another device" and offers ``POST /api/connection/reconnect``.
"""

from __future__ import annotations

import difflib
import re
import secrets
from typing import Any

from mnemonic import Mnemonic
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import AppState, HttpError, _account, _require_account, _str, read_json
from xchat.client import events as ev
from xchat.errors import ApiError, InvalidMnemonic

CONFIRM_WORDS = 3
PHRASE_WORDS = 24
HANDLE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,31}")
HANDLE_RULE = "A handle is 3–32 letters, digits or _, starting with a letter."
TAKEN = "That handle is taken: try another one."
_WORDLIST: list[str] = Mnemonic("english").wordlist
_WORDS = frozenset(_WORDLIST)
RESTORED_KEY = "restored"  # in app-state.json: the "no history here" note is still shown


def phrase_words(text: str) -> list[str]:
    """A recovery phrase as people write it down: numbered ("1. abandon 2) ability"),
    on several lines, with commas, extra spaces or capitals."""
    cleaned = re.sub(r"\b\d+\s*[.):-]?", " ", text.lower())
    return [w for w in re.split(r"[\s,;·•]+", cleaned) if w]


def phrase_problem(words: list[str]) -> str | None:
    """Which word is wrong, in words a person can act on; None if each word is valid."""
    if len(words) != PHRASE_WORDS:
        return f"A recovery phrase has {PHRASE_WORDS} words; this one has {len(words)}."
    for n, w in enumerate(words, 1):
        if w not in _WORDS:
            close = difflib.get_close_matches(w, _WORDLIST, n=1, cutoff=0.6)
            hint = f" Did you mean “{close[0]}”?" if close else ""
            return f"Word {n} (“{w}”) is not a recovery word.{hint}"
    return None


def _handle(data: dict[str, Any], *, required: bool) -> str | None:
    handle = _str(data, "handle", required=required, limit=64).strip().removeprefix("@")
    if not handle:
        return None
    if not HANDLE_RE.fullmatch(handle):
        raise HttpError(400, HANDLE_RULE)
    return handle


def _server(data: dict[str, Any]) -> str:
    server = _str(data, "server", limit=2048).strip()
    if not server.startswith(("http://", "https://")):
        raise HttpError(400, "The server URL starts with http:// or https://.")
    return server


async def displaced(st: AppState) -> str | None:
    """Why our receive socket is closed and stays so, if another copy took it."""
    if not st.started:
        return None
    loop = await st.client.start()  # the running receive loop (started once)
    return loop.displaced


def restored(st: AppState) -> bool:
    return st.flag(RESTORED_KEY)


def set_restored(st: AppState, value: bool) -> None:
    st.set_flag(RESTORED_KEY, value)


async def get_state(request: Request, st: AppState) -> Response:
    return JSONResponse(
        {
            "account": _account(st),
            "default_server": st.default_server,
            "connected": st.connected,
            "displaced": await displaced(st),
            "restored": restored(st),
            "phrase_pending": st.pending_phrase is not None,
            "confirm_indices": [i + 1 for i in st.confirm_indices],
        }
    )


async def create_account(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    server = _server(data)
    handle = _handle(data, required=False)
    try:
        info = await st.client.create_account(server, handle)
    except ApiError as exc:
        if exc.status == 409:
            raise HttpError(409, TAKEN) from None
        raise
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
    wrong = []
    for i, w in zip(st.confirm_indices, words, strict=True):
        given = (w if isinstance(w, str) else "").strip().lower().encode()
        if not secrets.compare_digest(given, st.pending_phrase[i].encode()):
            wrong.append(f"#{i + 1}")
    if wrong:
        which = " and ".join(wrong)
        raise HttpError(
            400,
            f"These words do not match your recovery phrase: word {which} is different. "
            "Show the phrase again to check.",
        )
    st.pending_phrase = None
    st.confirm_indices = []
    return JSONResponse({"ok": True})


async def restore_account(request: Request, st: AppState) -> Response:
    data = await read_json(request)
    server = _server(data)
    words = phrase_words(_str(data, "phrase", limit=2048))
    problem = phrase_problem(words)
    if problem is not None:
        raise HttpError(400, problem)
    try:
        await st.client.restore_account(server, " ".join(words))
    except InvalidMnemonic:
        raise HttpError(
            400,
            "Every word is a recovery word, but together they are not a valid recovery "
            "phrase: one is wrong or two are swapped. Compare them with your written copy.",
        ) from None
    set_restored(st, True)
    await st.start_receiving()
    return JSONResponse({"account": _account(st)})


async def dismiss_restored(request: Request, st: AppState) -> Response:
    await read_json(request)
    set_restored(st, False)
    return JSONResponse({"ok": True})


async def set_handle(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    handle = _handle(data, required=True)
    assert handle is not None
    try:
        await st.client.set_handle(handle)
    except ApiError as exc:
        if exc.status == 409:
            raise HttpError(409, TAKEN) from None
        raise
    return JSONResponse({"account": _account(st)})


async def reconnect(request: Request, st: AppState) -> Response:
    """Use this copy again after being displaced (displaces the other copy in turn)."""
    _require_account(st)
    await read_json(request)
    if st.started:
        (await st.client.start()).resume()
    return JSONResponse({"ok": True})


def attach(st: AppState) -> None:
    """Tell the page when the connection is lost because another copy holds it."""

    async def listener(e: ev.Event) -> None:
        if isinstance(e, ev.ConnectionChanged) and not e.connected:
            reason = await displaced(st)
            if reason is not None:
                st.broadcast({"type": "connection", "connected": False, "displaced": reason})

    st.client.on_event(listener)


ROUTES = [
    ("GET", "/api/state", get_state),
    ("POST", "/api/account/create", create_account),
    ("POST", "/api/account/phrase", recovery_phrase),
    ("POST", "/api/account/confirm", confirm_phrase),
    ("POST", "/api/account/restore", restore_account),
    ("POST", "/api/account/restored-seen", dismiss_restored),
    ("POST", "/api/account/handle", set_handle),
    ("POST", "/api/connection/reconnect", reconnect),
]
