"""The same-port WebSocket fast path (PROTOCOL Part III §5.1): RFC 6455 framing details a library
client never exercises (fragments, pings, pipelining, chunked frames, protocol errors),
HTTP routing around it, keepalive, graceful shutdown, and the ASGI fallback."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from _relay_helpers import Account, recv_frame, recv_until_drained, register, ws_connect
from xchat.protocol import frames as F
from xchat.server.serve import raise_nofile_limit
from xchat.testing import ServerProcess, running_server

MASK = b"\x11\x22\x33\x44"
HANDSHAKE = (
    b"GET /api/v1/ws%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
)


def cframe(payload: bytes, opcode: int = 2, fin: bool = True, masked: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


async def raw_open(
    srv: ServerProcess, query: bytes = b"", token: str | None = None, extra: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    w.write(HANDSHAKE % (query, auth) + extra)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return r, w


async def read_frame(r: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(r.readexactly(2), timeout)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", await r.readexactly(8))[0]
    return b0 & 0x0F, await r.readexactly(n)


def send_frame(to: Account, req_id: int, content: bytes) -> bytes:
    dest = F.Destination(
        to.address,
        F.TokenAccess(to.delivery_token),
        (F.OutEnvelope(1, os.urandom(16), content),),
    )
    return F.encode_frame(F.Send(req_id, (dest,)))


def result_of(payload: bytes) -> tuple[int, int]:
    f = F.decode_frame(payload)
    assert isinstance(f, F.SendResult)
    return f.req_id, f.status


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> Account:
    with httpx.Client(base_url=server.url) as c:
        return register(c)


async def test_fragments_with_ping_in_between(server: ServerProcess, bob: Account) -> None:
    r, w = await raw_open(server)
    data = send_frame(bob, 7, b"fragmented")
    w.write(cframe(data[:5], opcode=2, fin=False))
    w.write(cframe(b"hi", opcode=9))  # control frames may interleave
    w.write(cframe(data[5:20], opcode=0, fin=False))
    w.write(cframe(data[20:], opcode=0, fin=True))
    assert await read_frame(r) == (10, b"hi")  # pong echoes the ping payload
    op, payload = await read_frame(r)
    assert op == 2 and result_of(payload) == (7, 200)
    w.close()


async def test_large_frame_in_small_chunks_and_pipelining(
    server: ServerProcess, bob: Account
) -> None:
    first = cframe(send_frame(bob, 1, b"pipelined behind the handshake"))
    r, w = await raw_open(server, extra=first)
    assert result_of((await read_frame(r))[1]) == (1, 200)
    big = cframe(send_frame(bob, 2, os.urandom(100_000)))
    for i in range(0, len(big), 1000):
        w.write(big[i : i + 1000])
        await w.drain()
    assert result_of((await read_frame(r))[1]) == (2, 200)
    w.close()


@pytest.mark.parametrize(
    "payload",
    [struct.pack(">H", 1000) + b"bye", b"", struct.pack(">H", 4000) + "é".encode()],
)
async def test_close_handshake_is_echoed(server: ServerProcess, payload: bytes) -> None:
    r, w = await raw_open(server, query=b"?v=1")
    w.write(cframe(payload, opcode=8))
    assert await read_frame(r) == (8, payload)
    assert await asyncio.wait_for(r.read(), 5) == b""  # the server closes TCP
    w.close()


def test_fast_path_imports_without_the_websockets_c_extension() -> None:
    """websockets ships a pure-Python apply_mask for platforms without its C speedups; the
    relay must start there too (it failed to import before)."""
    code = (
        "import sys; sys.modules['websockets.speedups'] = None\n"
        "from xchat.server import wsfast\n"
        "from xchat.protocol.ws_connection import apply_mask\n"
        "assert apply_mask(b'abcd', b'\\x01\\x02\\x03\\x04') == b'````'\n"
        "print(apply_mask.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "websockets.utils"


@pytest.mark.parametrize(
    "frame,code",
    [
        (cframe(b"\x02\x00\x00", masked=False), 1002),  # client frames must be masked
        (bytes((0xC2, 0x83)) + MASK + b"abc", 1002),  # RSV1 set, no extension negotiated
        (cframe(b"x" * 200, opcode=9), 1002),  # control frame > 125 bytes
        (cframe(b"", opcode=3), 1002),  # unknown opcode
        (cframe(b"x", opcode=0), 1002),  # continuation without a start
        (bytes((0x82, 0xFF)) + struct.pack(">Q", 10**9) + MASK, 1009),  # > 2 x max_request
        (cframe(b"text", opcode=1), F.CLOSE_MALFORMED),
        # close frames whose payload RFC 6455 §5.5.1 / §7.4 forbids
        (cframe(b"\x03", opcode=8), 1002),  # one byte: no room for a code
        (cframe(struct.pack(">H", 999), opcode=8), 1002),  # below the code range
        (cframe(struct.pack(">H", 1005), opcode=8), 1002),  # reserved: never on the wire
        (cframe(struct.pack(">H", 1006), opcode=8), 1002),  # reserved: never on the wire
        (cframe(struct.pack(">H", 5000), opcode=8), 1002),  # above the code range
        (cframe(struct.pack(">H", 1000) + b"\xff\xfe", opcode=8), 1002),  # reason not UTF-8
    ],
)
async def test_protocol_errors_close_with_code(
    server: ServerProcess, frame: bytes, code: int
) -> None:
    r, w = await raw_open(server)
    w.write(frame)
    op, payload = await read_frame(r)
    assert op == 8 and struct.unpack(">H", payload[:2])[0] == code
    w.close()


async def test_protocol_error_half_closes_and_reads_no_further(
    server: ServerProcess, bob: Account
) -> None:
    """RFC 6455 §7.1.7: after failing the connection the server processes nothing more (the
    SEND pipelined behind the bad frame is not answered) and closes its side together with
    the close frame, without waiting for ours (before: only when a 5 s timer fired)."""
    r, w = await raw_open(server)
    w.write(cframe(b"x", opcode=3) + cframe(send_frame(bob, 9, b"never sent")))
    op, payload = await read_frame(r)
    assert op == 8 and struct.unpack(">H", payload[:2])[0] == 1002
    # A round trip through the relay on another socket orders after the FIN, which left
    # in the same callback as the close frame: by then our reader has seen EOF.
    r2, w2 = await raw_open(server)
    w2.write(cframe(b"order", opcode=9))
    assert await read_frame(r2) == (10, b"order")
    assert r.at_eof()  # FIN, and nothing (no SEND_RESULT) before it
    w.close()
    w2.close()


async def test_server_close_waits_for_the_peers_close_skipping_frames(
    server: ServerProcess, bob: Account
) -> None:
    """A close the relay starts (text message → 4400): frames still arriving, even one split
    over many writes, are skipped unread; the peer's close frame completes the handshake and
    the server closes TCP."""
    r, w = await raw_open(server)
    w.write(cframe(b"text", opcode=1))
    op, payload = await read_frame(r)
    assert op == 8 and struct.unpack(">H", payload[:2])[0] == F.CLOSE_MALFORMED
    big = cframe(send_frame(bob, 10, os.urandom(50_000)))
    for i in range(0, len(big), 4096):
        w.write(big[i : i + 4096])
        await w.drain()
    w.write(cframe(struct.pack(">H", 1000), opcode=8))
    assert await asyncio.wait_for(r.read(), 30) == b""  # no SEND_RESULT, then FIN
    w.close()


async def test_bad_token_accepts_then_closes_4401(server: ServerProcess) -> None:
    r, w = await raw_open(server, token="not-a-token")
    op, payload = await read_frame(r)
    assert op == 8 and struct.unpack(">H", payload[:2])[0] == F.CLOSE_UNAUTHORIZED
    w.close()


def test_http_routing_around_the_fast_path(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as c:  # one keep-alive connection
        assert c.get("/api/v1/ws").status_code in (400, 403, 404, 405, 426)
        assert c.get("/api/v1/wsx").status_code == 404
        assert c.get("/healthz").json() == {"status": "ok"}


async def test_bad_upgrade_is_refused(server: ServerProcess) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(HANDSHAKE.replace(b"Version: 13", b"Version: 8") % (b"", b""))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert b" 426 " in head.split(b"\r\n", 1)[0] or b" 400 " in head.split(b"\r\n", 1)[0]
    w.close()


def test_raise_nofile_limit_never_lowers() -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raise_nofile_limit() >= before


async def test_keepalive_pings_then_drops_a_silent_peer(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limits=False, ws_ping_seconds=0.2) as srv:
        r, w = await raw_open(srv)
        op, _ = await read_frame(r)
        assert op == 9  # ping
        while True:  # never answered: dropped after a few intervals
            chunk = await asyncio.wait_for(r.read(1024), 10)
            if not chunk:
                break
        w.close()


async def test_graceful_shutdown_closes_fast_sockets(tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed

    with running_server(tmp_path, rate_limits=False) as srv:
        ws = await ws_connect(srv.ws_url)
        await asyncio.to_thread(srv.stop)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_asgi_route_still_serves_the_data_plane(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limits=False, ws_fast=False) as srv:
        with httpx.Client(base_url=srv.url) as c:
            carol = register(c)
        rx = await ws_connect(srv.ws_url, carol.token)
        assert await recv_until_drained(rx) == []
        tx = await ws_connect(srv.ws_url)
        await tx.send(send_frame(carol, 3, b"via starlette"))
        res = await recv_frame(tx)
        assert (res.req_id, res.status) == (3, 200)
        f = await recv_frame(rx)
        while isinstance(f, F.KeysLow):
            f = await recv_frame(rx)
        assert isinstance(f, F.Deliver) and f.envelopes[0].content == b"via starlette"
        await tx.close()
        await rx.close()


async def test_slow_receiver_is_closed_4408(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limits=False, ws_outbox_limit=65536) as srv:
        with httpx.Client(base_url=srv.url) as c:
            dave = register(c)
        r, w = await raw_open(srv, token=dave.token)  # never reads while mail piles up
        tx = await ws_connect(srv.ws_url)
        for i in range(300):  # ~19 MB: more than loopback socket buffers hold
            await tx.send(send_frame(dave, i, os.urandom(65000)))
        for _ in range(300):
            await recv_frame(tx, timeout=30)
        code = None
        while True:  # drain what was written before the close frame
            op, payload = await read_frame(r, timeout=30)
            if op == 8:
                code = struct.unpack(">H", payload[:2])[0]
                break
        assert code == F.CLOSE_TIMEOUT
        w.close()
        await tx.close()
