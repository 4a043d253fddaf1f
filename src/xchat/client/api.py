"""Thin async wrapper over the server's HTTP control plane (PROTOCOL Part III).

Every call maps failures at this boundary: a connection/timeout problem becomes
:class:`ServerUnreachable`, a non-2xx response becomes :class:`ApiError` with the server's
``{"error": ...}`` message and ``Retry-After`` seconds, and a malformed response body
becomes :class:`ProtocolError`. No ``httpx`` exception escapes.

Authenticated calls use a bearer token; if the server answers 401 and a ``reauth``
callback is set, the wrapper fetches a fresh token once and retries (tokens live 1 h).

Anonymous calls (directory lookups and bundle fetches, PROTOCOL Part XI) carry one
single-use access token from the ``anon`` callback (the profile's wallet) instead, and go
out on a connection pool of their own: a keep-alive connection shared with bearer calls
would tie the lookup to the account at the TCP level.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from xchat import encoding
from xchat.errors import ApiError, DecodeError, ProtocolError, ServerUnreachable

API = "/api/v1"
DEFAULT_TIMEOUT = 30.0


b64e = encoding.b64encode
b64url = encoding.b64url_encode


def b64d(value: object, what: str = "value") -> bytes:
    """A base64 field of a server response (``xchat.encoding``); ProtocolError if bad."""
    try:
        return encoding.b64decode(value, what)
    except DecodeError as exc:
        raise ProtocolError(f"server sent {exc}") from None


class Api:
    """One HTTP connection pool to one server."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.reauth: Callable[[], Awaitable[str]] | None = None
        #: Returns the ``Authorization`` value of one unspent anonymous token (Part XI).
        self.anon: Callable[[], Awaitable[str]] | None = None
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, trust_env=False
        )
        self._anon_http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._anon_http.aclose()

    # --- plumbing -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: bool = False,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (or None for an empty body)."""
        resp = await self._send(method, path, auth=auth, json=json, params=params)
        if resp.status_code == 401 and auth and self.reauth is not None:
            self.token = await self.reauth()
            resp = await self._send(method, path, auth=auth, json=json, params=params)
        if resp.status_code >= 400:
            raise _api_error(resp)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ProtocolError(f"server sent a non-JSON response to {method} {path}") from None

    async def anonymous(self, method: str, path: str) -> Any:
        """A request paid with one anonymous token, never with the bearer token. A token
        the relay calls spent or expired (another process of the profile, a stale stock)
        is replaced once."""
        for attempt in (0, 1):
            if self.anon is None:
                raise ApiError(401, "no anonymous access tokens available (PROTOCOL Part XI)")
            # A connection per request: one kept alive would tie this lookup to the next.
            headers = {"Authorization": await self.anon(), "Connection": "close"}
            try:
                resp = await self._anon_http.request(method, path, headers=headers)
            except httpx.TimeoutException:
                raise ServerUnreachable(f"server {self.base_url} timed out") from None
            except (httpx.TransportError, OSError) as exc:
                raise ServerUnreachable(
                    f"cannot reach server {self.base_url} ({type(exc).__name__})"
                ) from None
            if resp.status_code == 401 and attempt == 0:
                continue
            if resp.status_code >= 400:
                raise _api_error(resp)
            try:
                return resp.json()
            except ValueError:
                raise ProtocolError(f"server sent a non-JSON response to {method} {path}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, method: str, path: str, *, auth: bool, json: Any, params: dict[str, Any] | None
    ) -> httpx.Response:
        headers = {}
        if auth:
            if self.token is None and self.reauth is not None:
                self.token = await self.reauth()
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
        try:
            return await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            raise ServerUnreachable(f"server {self.base_url} timed out") from None
        except (httpx.TransportError, OSError) as exc:
            raise ServerUnreachable(
                f"cannot reach server {self.base_url} ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:  # pragma: no cover - e.g. invalid URL
            raise ServerUnreachable(f"cannot reach server {self.base_url}: {exc}") from None

    # --- endpoints (PROTOCOL Part III) --------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        return _obj(await self.request("GET", "/healthz"))

    async def server_info(self) -> dict[str, Any]:
        return _obj(await self.request("GET", f"{API}/server"))

    async def challenge(self) -> dict[str, Any]:
        return _obj(await self.request("POST", f"{API}/challenge"))

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        return _obj(await self.request("POST", f"{API}/accounts", json=body))

    async def auth(self, body: dict[str, Any]) -> dict[str, Any]:
        return _obj(await self.request("POST", f"{API}/auth", json=body))

    async def set_handle(self, handle: str) -> None:
        await self.request("PUT", f"{API}/handle", auth=True, json={"handle": handle})

    async def lookup_handle(self, handle: str) -> dict[str, Any]:
        return _obj(await self.anonymous("GET", f"{API}/handles/{handle}"))

    async def lookup_address(self, address: str) -> dict[str, Any]:
        return _obj(await self.anonymous("GET", f"{API}/accounts/{address}"))

    async def token_keys(self) -> dict[str, Any]:
        """The issuer's epoch keys, asked for anonymously (Part XI §2)."""
        try:
            resp = await self._anon_http.get(f"{API}/tokens/keys", headers={"Connection": "close"})
        except (httpx.TransportError, OSError) as exc:
            raise ServerUnreachable(
                f"cannot reach server {self.base_url} ({type(exc).__name__})"
            ) from None
        if resp.status_code >= 400:
            raise _api_error(resp)
        try:
            return _obj(resp.json())
        except ValueError:
            raise ProtocolError("server sent a non-JSON token key list") from None

    async def issue_tokens(self, epoch: int, blinded: list[bytes]) -> dict[str, Any]:
        body = {"epoch": epoch, "blinded": [b64e(b) for b in blinded]}
        return _obj(await self.request("POST", f"{API}/tokens", auth=True, json=body))

    async def put_keys(self, upload: dict[str, Any]) -> None:
        await self.request("PUT", f"{API}/keys", auth=True, json=upload)

    async def key_count(self) -> dict[str, Any]:
        return _obj(await self.request("GET", f"{API}/keys/count", auth=True))

    async def bundles(self, address: str) -> dict[str, Any]:
        return _obj(await self.anonymous("GET", f"{API}/bundles/{address}"))

    async def put_delivery_token_hash(self, token_hash: bytes) -> None:
        await self.request(
            "PUT", f"{API}/delivery-token", auth=True, json={"token_hash": b64e(token_hash)}
        )

    async def handle_certificate(self) -> dict[str, Any]:
        return _obj(await self.request("GET", f"{API}/handle-certificate", auth=True))

    async def sender_certificate(self) -> dict[str, Any]:
        return _obj(await self.request("GET", f"{API}/sender-certificate", auth=True))


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("server sent an unexpected response shape")
    return value


def _api_error(resp: httpx.Response) -> ApiError:
    message = f"HTTP {resp.status_code}"
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = body.get("error")  # the relay and the realm send only {"error": ...}
            if isinstance(err, str) and err:
                message = err
    except ValueError:
        pass
    retry: float | None = None
    ra = resp.headers.get("Retry-After")
    if ra is not None:
        try:
            retry = max(0.0, float(ra))
        except ValueError:
            retry = None
    return ApiError(resp.status_code, message, retry)
