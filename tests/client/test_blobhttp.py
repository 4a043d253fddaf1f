"""Blob bodies over plain sockets (xchat.client.blobhttp) against a real relay: the fast path
and the httpx path give the same bytes, and errors stay typed on the fast path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from xchat.client import blobhttp
from xchat.client import files as xf
from xchat.client.client import Client
from xchat.errors import ApiError, ServerUnreachable
from xchat.testing import ServerProcess


def test_only_plain_http_without_a_transport_takes_the_socket_path() -> None:
    assert blobhttp.usable("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert blobhttp.usable("http://relay.example") == ("relay.example", 80)
    assert blobhttp.usable("https://relay.example") is None
    assert xf.BlobClient("http://127.0.0.1:1")._raw == ("127.0.0.1", 1)
    injected = xf.BlobClient("http://127.0.0.1:1", transport=httpx.AsyncHTTPTransport())
    assert injected._raw is None


@pytest.mark.parametrize("fast", [True, False])
async def test_both_paths_roundtrip_exact_bytes_across_block_edges(
    blob_profile: Path, tmp_path: Path, fast: bool
) -> None:
    """A file a few bytes past three socket blocks, sent and fetched by either path; the
    other path reads it back too (same wire)."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * blobhttp.BLOCK + 4097))
    transport = None if fast else httpx.AsyncHTTPTransport()
    async with Client(blob_profile) as c:
        async with xf.BlobClient.from_api(c.api, transport=transport) as blobs:
            assert (blobs._raw is not None) is fast
            m = await xf.send_file(blobs, src)
            got = await xf.receive_file(blobs, m, tmp_path / "a")
        other = httpx.AsyncHTTPTransport() if fast else None
        async with xf.BlobClient(c.api.base_url, transport=other) as blobs:
            again = await xf.receive_file(blobs, m, tmp_path / "b")
    assert got.read_bytes() == src.read_bytes() == again.read_bytes()


async def test_range_download_from_mid_block(blob_profile: Path) -> None:
    data = os.urandom(blobhttp.BLOCK + 1000)

    async def pieces(skip: int) -> AsyncIterator[bytes]:
        yield data[skip:]

    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        blob = await blobs.create(len(data))
        await blobs.upload(blob, len(data), pieces)
        got: list[bytes] = []
        start = 12345
        n = await blobs._download_once(blob, start, len(data), got.append, None)
    assert n == len(data)
    assert b"".join(got) == data[start:]


async def test_errors_stay_typed_on_the_socket_path(
    blob_profile: Path, blob_relay: ServerProcess
) -> None:
    async def too_much(skip: int) -> AsyncIterator[bytes]:
        yield os.urandom(2000 - skip)

    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api, retries=0) as blobs:
        assert blobs._raw is not None
        blob = await blobs.create(1000)
        with pytest.raises(ApiError) as exc:  # 413: past the declared size
            await blobs.upload(blob, 2000, too_much, offset=0)
        assert exc.value.status == 413
        with pytest.raises(ApiError) as exc:  # 404 as JSON, read off the raw socket
            await blobs.download("0" * 32, 10, lambda b: None, None)
        assert exc.value.status == 404
        empty = await blobs.create(1000)
        with pytest.raises(ApiError) as exc:  # 409: upload incomplete
            await blobs.download(empty, 1000, lambda b: None, None)
        assert exc.value.status == 409
    closed = xf.BlobClient(f"http://127.0.0.1:{_free_port()}", retries=0, backoff=0.0)
    async with closed:
        with pytest.raises(ServerUnreachable):
            await closed.download("0" * 32, 10, lambda b: None, None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cancelled_download_ends_its_socket_thread(tmp_path: Path) -> None:
    """A transfer cancelled while its worker thread is blocked in ``recv_into`` (the server
    sent a head, then stalls) shuts the socket so the thread ends with it: the server sees
    the connection closed, and the cancellation returns instead of waiting for the
    60-second socket timeout."""
    got_request = asyncio.Event()
    closed = asyncio.Event()

    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + bytes(1000))
        await w.drain()
        got_request.set()
        await r.read()  # EOF once the client's socket is shut down
        closed.set()
        w.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen: list[int] = []
    async with server, xf.BlobClient(f"http://127.0.0.1:{port}", retries=0) as blobs:
        task = asyncio.create_task(
            blobs.download_blocks("0" * 32, 10_000_000, lambda v: seen.append(len(v)))
        )
        await got_request.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await closed.wait()
    assert sum(seen) <= 1000
