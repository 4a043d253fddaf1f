"""Delivery before commit on a real relay process (PROTOCOL Part III §7): a connected device
gets its mail before the relay writes it; what it ACKs in time is never written; the sender's
SEND_RESULT 200 still means the mail survives a ``kill -9`` of the relay (or is already
ACKed by its device)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from _relay_helpers import recv_frame, recv_until_drained, register, unb64, ws_connect
from xchat.protocol import frames as F
from xchat.testing import Account, ServerProcess, running_server


def send_frame(req_id: int, to: Account, content: bytes) -> tuple[bytes, bytes]:
    eid = os.urandom(16)
    dest = F.Destination(
        to.address, F.TokenAccess(to.delivery_token), (F.OutEnvelope(1, eid, content),)
    )
    return F.encode_frame(F.Send(req_id, (dest,))), eid


def gauge(srv: ServerProcess, name: str) -> float:
    text = httpx.get(f"{srv.url}/metrics", headers=srv.metrics_headers).text
    for line in text.splitlines():
        if line.startswith(f"xchat_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no gauge {name}")


@asynccontextmanager
async def online_bob(tmp_path: Path, hold_ms: float) -> AsyncIterator[tuple[Any, ...]]:
    """A relay with ``delivery_hold_ms``; Bob's device connected (backlog read) and an
    anonymous sender socket: ``(relay, bob, bob's socket, sender socket)``."""
    with running_server(tmp_path, rate_limits=False, delivery_hold_ms=hold_ms) as srv:
        with httpx.Client(base_url=srv.url) as c:
            bob = register(c)
        rx = await ws_connect(srv.ws_url, bob.token)
        await recv_until_drained(rx)
        tx = await ws_connect(srv.ws_url)
        try:
            yield srv, bob, rx, tx
        finally:
            await tx.close()
            await rx.close()


async def next_deliver(ws: Any) -> F.Deliver:
    while True:
        f = await recv_frame(ws)
        if isinstance(f, F.Deliver):
            return f


async def test_acked_mail_is_never_written_and_unacked_mail_survives_kill9(
    tmp_path: Path,
) -> None:
    async with online_bob(tmp_path, 2000) as (srv, bob, rx, tx):
        frame, eid = send_frame(1, bob, b"read at once")
        await tx.send(frame)
        got = await next_deliver(rx)
        assert [e.content for e in got.envelopes] == [b"read at once"]
        await rx.send(F.encode_frame(F.Ack((eid,))))
        result = await recv_frame(tx)
        assert (result.req_id, result.status) == (1, 200)
        # told at the ACK, not after the hold: nothing was written, the ACK removed it
        assert gauge(srv, "envelopes_acked_unwritten") == 1
        assert gauge(srv, "envelopes_stored") == 0

        frame, eid2 = send_frame(2, bob, b"delivered, never acked")
        await tx.send(frame)
        got = await next_deliver(rx)
        assert [e.envelope_id for e in got.envelopes] == [eid2]
        result = await recv_frame(tx)  # after the hold and the commit
        assert (result.req_id, result.status) == (2, 200)
        assert gauge(srv, "envelopes_stored") == 1
        await tx.close()
        srv.kill9()
        srv.start()
        with httpx.Client(base_url=srv.url) as c:
            left = c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]
        assert [unb64(e["content"]) for e in left] == [b"delivered, never acked"]


async def test_a_device_that_drops_before_its_ack_gets_the_mail_again(tmp_path: Path) -> None:
    async with online_bob(tmp_path, 5000) as (srv, bob, rx, tx):
        frame, eid = send_frame(7, bob, b"hello")
        await tx.send(frame)
        assert [e.envelope_id for e in (await next_deliver(rx)).envelopes] == [eid]
        await rx.close()  # gone before the ACK: the reconnect reads the queue, which
        rx = await ws_connect(srv.ws_url, bob.token)  # first writes what is held
        backlog = await recv_until_drained(rx)
        assert [e.envelope_id for e in backlog] == [eid]
        result = await recv_frame(tx)  # durable on disk long before the 5-s hold is over
        assert (result.req_id, result.status) == (7, 200)
        await rx.send(F.encode_frame(F.Ack((eid,))))
        await rx.close()
        with httpx.Client(base_url=srv.url) as c:
            for _ in range(100):
                if not c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]:
                    break
                await asyncio.sleep(0.02)
            assert c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"] == []


async def test_hold_zero_commits_before_delivering(tmp_path: Path) -> None:
    async with online_bob(tmp_path, 0) as (srv, bob, rx, tx):
        frame, eid = send_frame(1, bob, b"x")
        await tx.send(frame)
        await next_deliver(rx)
        assert gauge(srv, "envelopes_stored") == 1  # written before it was pushed
        result = await recv_frame(tx)
        assert result.status == 200
        await rx.send(F.encode_frame(F.Ack((eid,))))
        for _ in range(100):
            if gauge(srv, "envelopes_deleted") == 1:
                break
            await asyncio.sleep(0.02)
        assert gauge(srv, "envelopes_deleted") == 1
        assert gauge(srv, "envelopes_acked_unwritten") == 0
