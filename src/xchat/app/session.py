"""Browser sessions: reopening ``http://127.0.0.1:8471/`` after a restart without going back
to the terminal (issue #19; the design and its reasons are in :mod:`xchat.app.security`).

``POST /api/session`` — only with the per-launch secret (the URL ``xchat app`` printed) —
creates a session: a random cookie half, set ``HttpOnly; SameSite=Strict; Path=/api``,
and a random key half returned in the body for the page's ``localStorage``. The profile
keeps only ``SHA-256(cookie || key)`` (``app-sessions.json``, 0600, at most
:data:`MAX_SESSIONS`, oldest dropped), so reading that file gives no access.
``POST /api/session/forget`` ends the session the request carries.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import AppState, HttpError, read_json
from xchat.app.security import AUTH_SCOPE_KEY, KEY_HEADER, cookie_name, cookie_value

SESSIONS_FILE = "app-sessions.json"
MAX_SESSIONS = 20
COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest Chromium keeps a cookie


def _digest(cookie: str, key: str) -> str:
    return hashlib.sha256(f"xchat-app-session|{cookie}|{key}".encode()).hexdigest()


class Sessions:
    """The session digests of one profile, on disk so they survive restarts."""

    def __init__(self, profile_dir: Path | str) -> None:
        self.path = Path(profile_dir) / SESSIONS_FILE

    def _load(self) -> list[dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        items = data.get("sessions") if isinstance(data, dict) else None
        return [s for s in items if isinstance(s, dict)] if isinstance(items, list) else []

    def _store(self, items: list[dict[str, object]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"sessions": items[-MAX_SESSIONS:]}, fh)
        os.replace(tmp, self.path)

    def create(self) -> tuple[str, str]:
        cookie, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        items = self._load()
        items.append({"digest": _digest(cookie, key), "created": int(time.time())})
        self._store(items)
        return cookie, key

    def valid(self, cookie: str, key: str) -> bool:
        if len(cookie) > 100 or len(key) > 100:
            return False
        want = _digest(cookie, key).encode()
        ok = False
        for s in self._load():
            d = s.get("digest")
            ok |= isinstance(d, str) and hmac.compare_digest(d.encode(), want)
        return ok

    def forget(self, cookie: str, key: str) -> None:
        want = _digest(cookie, key)
        items = self._load()
        kept = [s for s in items if s.get("digest") != want]
        if len(kept) != len(items):
            self._store(kept)


def sessions_for(st: AppState) -> Sessions:
    return Sessions(st.client.profile.path)


def _cookie_header(name: str, value: str, max_age: int) -> str:
    return f"{name}={value}; Max-Age={max_age}; Path=/api; HttpOnly; SameSite=Strict"


async def create_session(request: Request, st: AppState) -> Response:
    await read_json(request)
    if request.scope.get(AUTH_SCOPE_KEY) != "secret":
        raise HttpError(403, "open the URL that `xchat app` printed to sign this browser in")
    cookie, key = sessions_for(st).create()
    resp = JSONResponse({"key": key})
    resp.headers["set-cookie"] = _cookie_header(cookie_name(st.port), cookie, COOKIE_MAX_AGE)
    return resp


async def forget_session(request: Request, st: AppState) -> Response:
    await read_json(request)
    name = cookie_name(st.port)
    cookie = cookie_value(request.headers.get("cookie", ""), name)
    key = request.headers.get(KEY_HEADER, "")
    if cookie and key:
        with contextlib.suppress(OSError):
            sessions_for(st).forget(cookie, key)
    resp = JSONResponse({"ok": True})
    resp.headers["set-cookie"] = _cookie_header(name, "", 0)
    return resp


ROUTES = [
    ("POST", "/api/session", create_session),
    ("POST", "/api/session/forget", forget_session),
]
