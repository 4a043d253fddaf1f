"""The relay's blob API from the client side (PROTOCOL Part VI §4): create, resume, upload and
download one blob, with retry and backoff across broken connections.

Split from :mod:`xchat.client.files`, which encrypts files into blobs and back: this module
knows nothing about keys or manifests, only bytes, offsets and the relay's answers. Bodies
travel through :mod:`xchat.client.blobhttp` (a plain socket in a worker thread) on a plain
``http://`` relay; control requests, TLS relays and injected transports use httpx.

Two ways to move a body: :meth:`BlobClient.upload`/:meth:`~BlobClient.download` with an
async producer/sink (small blobs: history archives, backup segments), and
:meth:`~BlobClient.upload_blocks`/:meth:`~BlobClient.download_blocks` with a *blocking*
producer/consumer that runs in the socket thread itself (files: no per-block hand-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final

import httpx

from xchat.client import blobhttp
from xchat.client.blobhttp import Buffer
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

        async def send(confirmed: int, headers: dict[str, str]) -> httpx.Response:
            body = _counting(pieces(confirmed), confirmed, total, progress)
            if self._raw is not None:
                return await self._patch_raw(self._raw, blob_id, headers, body)
            return await self._request(
                "PATCH", f"{BLOBS}/{blob_id}", auth=True, headers=headers, content=body
            )

        try:
            await self._upload(blob_id, total, send, progress, offset)
        finally:
            blobhttp.give_back_memory()

    async def upload_blocks(
        self,
        blob_id: str,
        total: int,
        blocks: Callable[[int], Iterator[Buffer]],
        progress: Progress | None = None,
        *,
        offset: int | None = None,
    ) -> None:
        """:meth:`upload` from a *blocking* producer: ``blocks(skip)`` yields the blob's
        bytes from ``skip`` as buffers, each valid only until the next is asked for (the
        producer may reuse one buffer). On a plain-``http`` relay the producer runs in the
        thread that writes the socket (``blobhttp.Connection.send_blocks``): reading,
        encrypting, hashing and sending one block after another, nothing copied and the
        event loop untouched per block. Elsewhere each block is copied off a worker
        thread into the httpx body."""

        async def send(confirmed: int, headers: dict[str, str]) -> httpx.Response:
            if self._raw is not None:
                return await self._patch_blocks_raw(
                    self._raw, blob_id, headers, blocks(confirmed), progress, confirmed, total
                )
            body = _counting(_copied(blocks(confirmed)), confirmed, total, progress)
            return await self._request(
                "PATCH", f"{BLOBS}/{blob_id}", auth=True, headers=headers, content=body
            )

        try:
            await self._upload(blob_id, total, send, progress, offset)
        finally:
            blobhttp.give_back_memory()

    async def _upload(
        self,
        blob_id: str,
        total: int,
        send: Callable[[int, dict[str, str]], Awaitable[httpx.Response]],
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
            try:
                resp = await send(confirmed, headers)
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

    async def _patch_blocks_raw(
        self,
        where: tuple[str, int],
        blob_id: str,
        headers: dict[str, str],
        blocks: Iterator[Buffer],
        progress: Progress | None,
        start: int,
        total: int,
    ) -> httpx.Response:
        """One PATCH whose body the producer ``blocks`` writes, block by block, from the
        thread that holds the socket; the response as an :class:`httpx.Response` so both
        paths share the checks of :meth:`_upload`. A response that arrives although
        sending failed (an early 409/413) is still used."""
        headers = {**headers, **(await self._auth_headers())}
        report = blobhttp.reporter(progress, start, total)
        conn, _ = await blobhttp.request(
            where, self.timeout, "PATCH", f"{BLOBS}/{blob_id}", headers, read_head=False
        )
        try:
            failure: ServerUnreachable | None = None
            try:
                await blobhttp.in_thread(conn, conn.send_blocks, blocks, report)
            except ServerUnreachable as exc:
                failure = exc
            try:
                head = await blobhttp.in_thread(conn, conn.read_head)
                content = await blobhttp.in_thread(conn, conn.read_small_body, head)
            except ServerUnreachable:
                if failure is not None:
                    raise failure from None
                raise
            return httpx.Response(head.status, headers=head.raw, content=content)
        finally:
            conn.close()
            # In a thread: closing runs the producer's cleanup, which may wait on the loop.
            await asyncio.to_thread(_close, blocks)

    async def _patch_raw(
        self,
        where: tuple[str, int],
        blob_id: str,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
    ) -> httpx.Response:
        """One PATCH whose async ``body`` the socket thread pulls piece by piece from the
        event loop (the path for :meth:`upload`'s async producers)."""
        return await self._patch_blocks_raw(
            where, blob_id, headers, _pulled(body, asyncio.get_running_loop()), None, 0, 0
        )

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

        async def once(start: int) -> int:
            return await self._download_once(blob_id, start, total, sink, progress)

        try:
            await self._download(once, total)
        finally:
            blobhttp.give_back_memory()

    async def download_blocks(
        self,
        blob_id: str,
        total: int,
        consume: Callable[[memoryview], None],
        progress: Progress | None = None,
    ) -> None:
        """:meth:`download` into a *blocking* consumer: ``consume(view)`` is called in a
        worker thread with the body in order, ~1 MiB at a time (the view is valid only
        during the call). On a plain-``http`` relay it runs in the thread that reads the
        socket (``blobhttp.Connection.receive_blocks``), so receiving, hashing, decrypting
        and writing take no copy and no event-loop step per block; resume as for
        :meth:`download`. The consumer's errors (a forged chunk) end the download."""
        if self._raw is None:
            batch = _Batched(consume)

            async def once(start: int) -> int:
                return await self._download_once(blob_id, start, total, batch.feed, progress)

            try:
                await self._download(once, total)
                await batch.flush()
            finally:
                blobhttp.give_back_memory()
            return
        raw = self._raw

        async def once_raw(start: int) -> int:
            return await self._download_blocks_raw(raw, blob_id, start, total, consume, progress)

        try:
            await self._download(once_raw, total)
        finally:
            blobhttp.give_back_memory()

    async def _download(self, once: Callable[[int], Awaitable[int]], total: int) -> None:
        received = 0
        failures = 0
        while True:
            before = received
            try:
                received = await once(received)
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
        """:meth:`_download_once` over a plain socket: the socket thread hands each block
        (a copy) to ``sink`` on the event loop and waits for it."""
        loop = asyncio.get_running_loop()

        def consume(view: memoryview) -> None:
            asyncio.run_coroutine_threadsafe(_fed(sink, bytes(view)), loop).result()

        return await self._download_blocks_raw(where, blob_id, start, total, consume, progress)

    async def _download_blocks_raw(
        self,
        where: tuple[str, int],
        blob_id: str,
        start: int,
        total: int,
        consume: Callable[[memoryview], None],
        progress: Progress | None,
    ) -> int:
        """One GET from ``start`` whose body the socket thread feeds to ``consume``
        (``blobhttp.Connection.receive_blocks``); the blob bytes received so far."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        conn, head = await blobhttp.request(
            where, self.timeout, "GET", f"{BLOBS}/{blob_id}", headers, read_head=True
        )
        assert head is not None
        try:
            if head.status >= 400:
                content = await blobhttp.in_thread(conn, conn.read_small_body, head)
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
            report = blobhttp.reporter(progress, start, total)
            got: int
            error: ServerUnreachable | None
            got, error = await blobhttp.in_thread(
                conn, conn.receive_blocks, head.rest, length, consume, report
            )
            if error is not None and got == 0:
                raise error
            return start + got
        finally:
            conn.close()


async def _fed(sink: Sink, data: bytes) -> None:
    pending = sink(data)
    if inspect.isawaitable(pending):
        await pending


class _Batched:
    """Gathers httpx's small pieces into ~1 MiB and hands them to a blocking consumer in a
    worker thread (the httpx fallback of :meth:`BlobClient.download_blocks`). Bytes held
    here count as received: a resumed download continues after them."""

    def __init__(self, consume: Callable[[memoryview], None]) -> None:
        self.consume = consume
        self.buf = bytearray()

    async def feed(self, piece: bytes) -> None:
        self.buf += piece
        if len(self.buf) >= blobhttp.BLOCK:
            await self.flush()

    async def flush(self) -> None:
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            await asyncio.to_thread(self.consume, memoryview(data))


async def _copied(blocks: Iterator[Buffer]) -> AsyncIterator[bytes]:
    """A blocking producer as an async iterator of copies (each made off the event loop)."""
    try:
        while (block := await asyncio.to_thread(_next_copy, blocks)) is not None:
            yield block
    finally:
        _close(blocks)


def _close(it: Iterator[Buffer]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _next_copy(blocks: Iterator[Buffer]) -> bytes | None:
    for block in blocks:
        return bytes(block)
    return None


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


def _pulled(body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """An async iterator drained from a worker thread: each piece is awaited on ``loop``."""
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(_anext(body), loop).result()
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:  # stop the producer (e.g. a file being read) now
            asyncio.run_coroutine_threadsafe(aclose(), loop).result()


async def _anext(it: AsyncIterator[bytes]) -> bytes:
    return await it.__anext__()


async def _counting(
    source: AsyncIterator[bytes], start: int, total: int, progress: Progress | None
) -> AsyncIterator[bytes]:
    done = start
    async for piece in source:
        yield piece
        done += len(piece)
        if progress is not None:
            progress(done, total)
