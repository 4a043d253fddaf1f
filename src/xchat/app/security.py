"""The local web app's front door: who may talk to the in-process client (docs/app-readme.md).

The app serves one user's keys on a loopback port, so every other program on the machine
and every web page the user visits is a potential attacker. This ASGI middleware runs in
front of every route and enforces, in order:

1. ``Host`` must be exactly ``127.0.0.1:PORT`` or ``localhost:PORT`` (DNS rebinding: a
   hostile domain re-pointed at 127.0.0.1 still sends its own name) -> 403.
2. ``Origin``, when present, must be exactly ``http://127.0.0.1:PORT`` or
   ``http://localhost:PORT``; ``Sec-Fetch-Site``, when present, must be ``same-origin`` or
   ``none`` -> 403. (Cross-site reads are also blocked by the absence of CORS headers.)
3. ``/api/*`` needs the per-launch secret in ``X-XChat-Secret``, compared in constant time
   with :func:`hmac.compare_digest`, or a *browser session* -> 401. The secret travels in
   the URL *fragment*, which browsers never send to servers or in ``Referer`` (a ``?s=``
   query secret is not accepted: queries end up in history, logs and Referer).

   A browser session lets the page be reopened after a restart without the terminal
   (:mod:`xchat.app.session`). It is two random 32-byte halves, both required on every
   request: an ``HttpOnly; SameSite=Strict; Path=/api`` cookie named after the port
   (``xchat_<port>``), and ``X-XChat-Key`` from the page's ``localStorage``. The cookie
   keeps the session away from page scripts and from every cross-site request; the key
   is origin-scoped (port included), which cookies are not, so another program listening
   on a different 127.0.0.1 port that lures the browser gets at most the cookie, which is
   useless alone; and as a custom header it cannot be sent cross-origin without a CORS
   preflight, which is never answered. (SameSite does not separate ports: a page on
   ``http://127.0.0.1:9999`` is the *same site*, and its requests carry the cookie. They
   still lack the key, carry a foreign ``Origin`` and ``Sec-Fetch-Site: same-site``, and
   each of those alone gets them refused.) Only the launch secret can create a session.
4. ``/api/*`` accepts only GET (reads) and POST with ``Content-Type: application/json``
   (writes): an HTML form cannot produce that without a CORS preflight, which we never
   answer -> 405 / 415.

Every response gets a strict CSP (no inline script, nothing from elsewhere),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, ``nosniff``, COOP/CORP, and
``Cache-Control: no-store``; any ``Access-Control-*`` header is stripped on the way out.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

SECRET_HEADER = "x-xchat-secret"
KEY_HEADER = "x-xchat-key"
AUTH_SCOPE_KEY = "xchat.auth"  # "secret" or "session": which credential let the request in

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=(), payment=()"),
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware enforcing the rules in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        secret: str,
        port: int,
        sessions: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.app = app
        self._secret = secret.encode("ascii")
        self.port = port
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.cookie_name = cookie_name(port)
        self._sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here: events go over SSE
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4403})
            return
        headers = _headers(scope)
        status, reason = self.check(scope["method"], scope["path"], headers, scope.get("client"))
        if status:
            await _deny(send, status, reason)
            return
        scope[AUTH_SCOPE_KEY] = self.credential(headers)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not k.lower().startswith(b"access-control-")
                    and k.lower() not in {h for h, _ in SECURITY_HEADERS}
                ]
                message["headers"] = kept + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_secured)

    def check(
        self, method: str, path: str, headers: dict[str, str], client: Any = None
    ) -> tuple[int, str]:
        """(0, "") if the request may pass, else (status, reason)."""
        if client is not None and client[0] not in ("127.0.0.1", "::1"):
            return 403, "loopback only"
        if headers.get("host") not in self.hosts:
            return 403, "bad Host header"
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, "foreign Origin"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request"
        if not path.startswith("/api/"):
            if method not in ("GET", "HEAD"):
                return 405, "method not allowed"
            return 0, ""
        if self.credential(headers) is None:
            return 401, "missing or wrong app secret"
        if method == "GET":
            return 0, ""
        if method != "POST":
            return 405, "method not allowed"
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return 415, "POST bodies must be application/json"
        return 0, ""

    def credential(self, headers: dict[str, str]) -> str | None:
        """Which credential the request carries: "secret", "session", or None."""
        given = headers.get(SECRET_HEADER, "").encode("ascii", "replace")
        if hmac.compare_digest(given, self._secret):
            return "secret"
        cookie = cookie_value(headers.get("cookie", ""), self.cookie_name)
        key = headers.get(KEY_HEADER, "")
        if self._sessions is not None and cookie and key and self._sessions(cookie, key):
            return "session"
        return None


def cookie_name(port: int) -> str:
    """Cookies are not port-scoped: each app's cookie carries its port in its name."""
    return f"xchat_{port}"


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header; None if absent or repeated (a
    second copy could be planted by another 127.0.0.1 port: fail closed)."""
    found = None
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            if found is not None:
                return None
            found = v
    return found


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        name = k.decode("latin-1").lower()
        if name in out:  # a repeated security header is suspicious: make it fail closed
            out[name] = "\x00duplicate"
        else:
            out[name] = v.decode("latin-1")
    return out


async def _deny(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
