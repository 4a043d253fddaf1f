"""The relay's blob API from the client side (PROTOCOL Part VI §4): create, resume, upload and
download one blob, with retry and backoff across broken connections.

Split from :mod:`xchat.client.files`, which encrypts files into blobs and back: this module
knows nothing about keys or manifests, only bytes, offsets and the relay's answers. Bodies
above a few KiB travel through :mod:`xchat.client.blobhttp` (a plain socket in a worker
thread); control requests, TLS relays and injected transports use httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import httpx

from xchat.client import blobhttp
from xchat.errors import (
    ApiError,
    DecryptionError,
    ProtocolError,
    ServerUnreachable,
)

BLOBS: Final = "/api/v1/blobs"
DEFAULT_RETRIES: Final = 8
BLOB_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")

Progress = Callable[[int, int], None]
#: Where downloaded bytes go: a plain callable, or one returning an awaitable.
Sink = Callable[[bytes], object]


# --- HTTP ---------------------------------------------------------------------------------


class BlobClient:
    """The blob API over one httpx pool (PROTOCOL Part VI §4), with retry/backoff for transfers.

    ``token``/``reauth`` authenticate uploads only; downloads are sent without any
    ``Authorization`` header so the relay cannot tell who fetches a blob.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        reauth: Callable[[], Awaitable[str]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.reauth = reauth
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        # Blob bodies over plain sockets in worker threads (blobhttp: ~10x less CPU than
        # httpx); an injected transport or an https:// relay keeps everything on httpx.
        self._raw = blobhttp.usable(self.base_url) if transport is None else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            trust_env=False,
        )

    @classmethod
    def from_api(cls, api: Any, **kwargs: Any) -> BlobClient:
        """Share the base URL and token (and re-auth callback) of a client ``Api``."""
        client = cls(api.base_url, token=api.token, reauth=api.reauth, **kwargs)
        client._api = api
        return client

    _api: Any = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BlobClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _auth_headers(self, renew: bool = False) -> dict[str, str]:
        if self._api is not None and not renew:
            self.token = self._api.token
        if (renew or self.token is None) and self.reauth is not None:
            self.token = await self.reauth()
            if self._api is not None:
                self._api.token = self.token
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _request(
        self, method: str, url: str, *, auth: bool = False, **kw: Any
    ) -> httpx.Response:
        for renew in (False, True):
            headers = dict(kw.pop("headers", {}))
            if auth:
                headers.update(await self._auth_headers(renew))
            resp = await _call(self._http.request(method, url, headers=headers, **kw))
            retry = kw.get("content") is None  # a streamed body cannot be replayed
            if resp.status_code == 401 and auth and retry and not renew and self.reauth:
                kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def create(self, size: int) -> str:
        """``POST /api/v1/blobs``; the new blob's id."""
        resp = await self._request("POST", BLOBS, auth=True, json={"size": size})
        _raise_for(resp)
        blob_id = _json(resp).get("id")
        if not isinstance(blob_id, str) or not BLOB_ID_RE.match(blob_id):
            raise ProtocolError("server sent an invalid blob id")
        return blob_id

    async def offset(self, blob_id: str) -> int:
        """``HEAD``: the server's confirmed offset of a blob."""
        resp = await self._request("HEAD", f"{BLOBS}/{blob_id}")
        _raise_for(resp)
        try:
            return int(resp.headers["Upload-Offset"])
        except (KeyError, ValueError):
            raise ProtocolError("server sent no Upload-Offset") from None

    async def upload(
        self,
        blob_id: str,
        total: int,
        pieces: Callable[[int], AsyncIterator[bytes]],
        progress: Progress | None = None,
        *,
        offset: int | None = None,
    ) -> None:
        """Upload ``total`` bytes; ``pieces(skip)`` yields the blob's bytes from ``skip``.
        ``offset`` is the known confirmed offset (0 for a fresh blob), else asked with
        ``HEAD``. After a broken connection ask the server's offset and continue (§5)."""
        try:
            await self._upload(blob_id, total, pieces, progress, offset)
        finally:
            blobhttp.give_back_memory()

    async def _upload(
        self,
        blob_id: str,
        total: int,
        pieces: Callable[[int], AsyncIterator[bytes]],
        progress: Progress | None,
        offset: int | None,
    ) -> None:
        failures = 0
        confirmed = offset if offset is not None else await self._offset_retrying(blob_id)
        while confirmed < total:
            sent_before = confirmed
            headers = {
                "Upload-Offset": str(confirmed),
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(total - confirmed),
            }
            body = _counting(pieces(confirmed), confirmed, total, progress)
            try:
                if self._raw is not None:
                    resp = await self._patch_raw(self._raw, blob_id, headers, body)
                else:
                    resp = await self._request(
                        "PATCH", f"{BLOBS}/{blob_id}", auth=True, headers=headers, content=body
                    )
                if resp.status_code == 401 and self.reauth is not None:
                    await self._auth_headers(renew=True)
                    raise ServerUnreachable("token expired during upload")
                if resp.status_code == 409 or resp.status_code >= 500:
                    raise ServerUnreachable(f"upload interrupted (HTTP {resp.status_code})")
                _raise_for(resp)
                reported = _json(resp).get("upload_offset")
                if not isinstance(reported, int) or not sent_before <= reported <= total:
                    raise ProtocolError("server sent an invalid upload offset")
                confirmed = reported
            except ServerUnreachable:
                failures += 1
                if failures > self.retries:
                    raise
                await asyncio.sleep(min(self.backoff * 2 ** (failures - 1), 10.0))
                confirmed = await self._offset_retrying(blob_id)
            if confirmed > sent_before:
                failures = 0
            if progress is not None:
                progress(confirmed, total)

    async def _patch_raw(
        self,
        where: tuple[str, int],
        blob_id: str,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
    ) -> httpx.Response:
        """One PATCH whose body a worker thread writes to a plain socket (blobhttp); the
        response as an :class:`httpx.Response` so both paths share the checks above. A
        response that arrives although sending failed (an early 409/413) is still used."""
        headers = {**headers, **(await self._auth_headers())}
        conn, _ = await asyncio.to_thread(
            blobhttp.Connection.request,
            *where,
            self.timeout,
            "PATCH",
            f"{BLOBS}/{blob_id}",
            headers,
            read_head=False,
        )
        try:
            failure = await blobhttp.send_body(conn, body)
            try:
                head = await asyncio.to_thread(conn.read_head)
                content = await asyncio.to_thread(conn.read_small_body, head)
            except ServerUnreachable:
                if failure is not None:
                    raise failure from None
                raise
            return httpx.Response(head.status, headers=head.raw, content=content)
        finally:
            conn.close()

    async def _offset_retrying(self, blob_id: str) -> int:
        return await self._retrying(lambda: self.offset(blob_id))

    async def _retrying(self, op: Callable[[], Awaitable[int]]) -> int:
        failures = 0
        while True:
            try:
                return await op()
            except ServerUnreachable:
                failures += 1
                if failures > self.retries:
                    raise
                await asyncio.sleep(min(self.backoff * 2 ** (failures - 1), 10.0))

    async def download(
        self, blob_id: str, total: int, sink: Sink, progress: Progress | None
    ) -> None:
        """Stream the blob into ``sink``; on a broken connection continue with ``Range``
        from the bytes already received. ProtocolError if the server sends more or other
        than ``total`` bytes."""
        try:
            await self._download(blob_id, total, sink, progress)
        finally:
            blobhttp.give_back_memory()

    async def _download(
        self, blob_id: str, total: int, sink: Sink, progress: Progress | None
    ) -> None:
        received = 0
        failures = 0
        while True:
            before = received
            try:
                received = await self._download_once(blob_id, received, total, sink, progress)
                if received == total:
                    return
                raise ServerUnreachable("download ended early")
            except ServerUnreachable:
                if received > before:
                    failures = 0
                failures += 1
                if failures > self.retries:
                    raise
                await asyncio.sleep(min(self.backoff * 2 ** (failures - 1), 10.0))

    async def _download_once(
        self,
        blob_id: str,
        start: int,
        total: int,
        sink: Sink,
        progress: Progress | None,
    ) -> int:
        if self._raw is not None:
            return await self._download_once_raw(self._raw, blob_id, start, total, sink, progress)
        headers = {"Range": f"bytes={start}-"} if start else {}
        received = start
        try:
            async with self._http.stream("GET", f"{BLOBS}/{blob_id}", headers=headers) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    if resp.status_code >= 500:
                        raise ServerUnreachable(f"download failed (HTTP {resp.status_code})")
                    _raise_for(resp)
                expected = 206 if start else 200
                if resp.status_code != expected:
                    raise ProtocolError(f"server answered {resp.status_code} to a download")
                if _advertised_total(resp) not in (None, total):
                    raise DecryptionError("blob size does not match the file manifest")
                async for piece in resp.aiter_raw():
                    if received + len(piece) > total:
                        raise DecryptionError("blob is longer than its manifest says")
                    pending = sink(piece)
                    if inspect.isawaitable(pending):
                        await pending
                    received += len(piece)
                    if progress is not None:
                        progress(received, total)
        except httpx.TimeoutException:
            raise ServerUnreachable("download timed out") from None
        except (httpx.TransportError, OSError) as exc:
            if received > start:
                return received
            raise ServerUnreachable(f"download failed ({type(exc).__name__})") from None
        return received

    async def _download_once_raw(
        self,
        where: tuple[str, int],
        blob_id: str,
        start: int,
        total: int,
        sink: Sink,
        progress: Progress | None,
    ) -> int:
        """:meth:`_download_once` over a plain socket: a worker thread receives ~1 MiB
        blocks (blobhttp.stream_body) while ``sink`` consumes the previous ones."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        received = start
        conn, head = await asyncio.to_thread(
            blobhttp.Connection.request,
            *where,
            self.timeout,
            "GET",
            f"{BLOBS}/{blob_id}",
            headers,
            read_head=True,
        )
        assert head is not None
        try:
            if head.status >= 400:
                content = await asyncio.to_thread(conn.read_small_body, head)
                if head.status >= 500:
                    raise ServerUnreachable(f"download failed (HTTP {head.status})")
                _raise_for(httpx.Response(head.status, headers=head.raw, content=content))
            expected = 206 if start else 200
            if head.status != expected:
                raise ProtocolError(f"server answered {head.status} to a download")
            if _advertised_total(httpx.Response(head.status, headers=head.raw)) not in (
                None,
                total,
            ):
                raise DecryptionError("blob size does not match the file manifest")
            length = head.length
            if length is None or "chunked" in head.headers.get("transfer-encoding", ""):
                raise ProtocolError("server sent a blob without a Content-Length")
            if start + length > total:
                raise DecryptionError("blob is longer than its manifest says")
            try:
                async for piece in blobhttp.stream_body(conn, head, length):
                    pending = sink(piece)
                    if inspect.isawaitable(pending):
                        await pending
                    received += len(piece)
                    if progress is not None:
                        progress(received, total)
            except ServerUnreachable:
                if received > start:
                    return received
                raise
        finally:
            conn.close()
        return received


def _advertised_total(resp: httpx.Response) -> int | None:
    """The blob's full length according to a download response, if it says."""
    try:
        if resp.status_code == 206:
            return int(resp.headers["Content-Range"].rsplit("/", 1)[1])
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError, IndexError):
        return None


async def _call(coro: Awaitable[httpx.Response]) -> httpx.Response:
    try:
        return await coro
    except httpx.TimeoutException:
        raise ServerUnreachable("server timed out") from None
    except (httpx.TransportError, OSError) as exc:
        raise ServerUnreachable(f"cannot reach server ({type(exc).__name__})") from None


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    message = f"HTTP {resp.status_code}"
    with contextlib.suppress(ValueError, httpx.ResponseNotRead):
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
    retry = resp.headers.get("Retry-After")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None
    raise ApiError(resp.status_code, message, retry_after)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        raise ProtocolError("server sent a non-JSON response") from None
    if not isinstance(body, dict):
        raise ProtocolError("server sent an unexpected response shape")
    return body


async def _counting(
    source: AsyncIterator[bytes], start: int, total: int, progress: Progress | None
) -> AsyncIterator[bytes]:
    done = start
    async for piece in source:
        yield piece
        done += len(piece)
        if progress is not None:
            progress(done, total)
