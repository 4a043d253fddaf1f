"""Mailbox over HTTP and WebSocket: access, ordering, ack, isolation, TTL, durability
(PROTOCOL Part III)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx

from _relay_helpers import (
    b64,
    close_code,
    get_challenge,
    recv_frame,
    recv_until_drained,
    register,
    send_body,
    unb64,
    ws_connect,
)
from xchat.crypto.pow import solve, stamp_ok
from xchat.protocol import frames as F
from xchat.testing import ServerProcess, running_server


def test_http_send_fetch_ack(client: httpx.Client) -> None:
    bob = register(client)
    for text in (b"one", b"two", b"three"):
        body = send_body(bob, [text])  # one envelope per device per destination
        assert client.post("/api/v1/messages", json=body).status_code == 200
        assert client.post("/api/v1/messages", json=body).status_code == 200  # idempotent retry
    j = client.get("/api/v1/messages", headers=bob.headers).json()
    assert [unb64(e["content"]) for e in j["envelopes"]] == [b"one", b"two", b"three"]
    page = client.get("/api/v1/messages?limit=2", headers=bob.headers).json()
    assert len(page["envelopes"]) == 2 and page["more"] is True
    first = j["envelopes"][0]["id"]
    url_id = base64.urlsafe_b64encode(unb64(first)).decode().rstrip("=")
    assert client.delete(f"/api/v1/messages/{url_id}", headers=bob.headers).json() == {"deleted": 1}
    r = client.post(
        "/api/v1/messages/ack", json={"ids": [e["id"] for e in j["envelopes"]]}, headers=bob.headers
    )
    assert r.json() == {"deleted": 2}
    assert client.get("/api/v1/messages", headers=bob.headers).json()["envelopes"] == []


def test_access_errors(client: httpx.Client) -> None:
    bob = register(client)
    no_token = register(client, delivery_token=False)
    assert (
        client.post("/api/v1/messages", json=send_body(bob, [b"x"], os.urandom(16))).status_code
        == 401
    )
    assert (
        client.post(
            "/api/v1/messages", json=send_body(no_token, [b"x"], os.urandom(16))
        ).status_code
        == 401
    )
    body = send_body(bob, [b"x"])
    del body["destinations"][0]["delivery_token"]
    assert client.post("/api/v1/messages", json=body).status_code == 401
    body = send_body(bob, [b"x"])
    real = register(client).identity.public.address()
    # a broken checksum: the last character changed (never to itself, which passed 1 in 32)
    body["destinations"][0]["address"] = real[:-1] + ("p" if real.endswith("q") else "q")
    assert client.post("/api/v1/messages", json=body).status_code in (400, 404)
    ghost = register.__globals__["IdentityKeyPair"].generate().public.address()
    body["destinations"][0]["address"] = ghost
    assert client.post("/api/v1/messages", json=body).status_code == 404
    body = send_body(bob, [b"x"])
    body["destinations"][0]["envelopes"][0]["device_id"] = 2
    r = client.post("/api/v1/messages", json=body)
    assert r.status_code == 409 and r.json()["devices"] == [1]
    assert client.get("/api/v1/messages", headers=bob.headers).json()["envelopes"] == []


def test_first_contact_with_pow_is_single_use(client: httpx.Client) -> None:
    bob = register(client, delivery_token=False)
    ch, bits = get_challenge(client)
    nonce = solve(ch, bob.address.encode(), bits)
    body = send_body(bob, [b"hi"])
    dest = body["destinations"][0]
    dest["delivery_token"] = None
    dest["pow"] = {"challenge": b64(ch), "nonce": nonce}
    assert client.post("/api/v1/messages", json=body).status_code == 200
    assert client.post("/api/v1/messages", json=body).status_code == 401  # reused challenge
    ch2, _ = get_challenge(client)
    bad = next(n for n in range(10_000) if not stamp_ok(ch2, bob.address.encode(), n, bits))
    dest["pow"] = {"challenge": b64(ch2), "nonce": bad}
    assert client.post("/api/v1/messages", json=body).status_code == 401


def test_device_cannot_touch_another_queue(client: httpx.Client) -> None:
    bob, eve = register(client), register(client)
    client.post("/api/v1/messages", json=send_body(bob, [b"secret"]))
    assert client.get("/api/v1/messages", headers=eve.headers).json()["envelopes"] == []
    eid = client.get("/api/v1/messages", headers=bob.headers).json()["envelopes"][0]["id"]
    assert client.post("/api/v1/messages/ack", json={"ids": [eid]}, headers=eve.headers).json() == {
        "deleted": 0
    }
    assert len(client.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]) == 1


async def test_ws_delivery_order_backlog_live_and_ack(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as c:
        bob = register(c)
        for i in range(5):
            c.post("/api/v1/messages", json=send_body(bob, [b"old%d" % i]))
        sender = await ws_connect(server.ws_url)
        rx = await ws_connect(server.ws_url, bob.token)
        backlog = await recv_until_drained(rx)
        assert [e.content for e in backlog] == [b"old%d" % i for i in range(5)]
        sends = [
            F.Send(
                i,
                (
                    F.Destination(
                        bob.address,
                        F.TokenAccess(bob.delivery_token),
                        (F.OutEnvelope(1, os.urandom(16), b"new%d" % i),),
                    ),
                ),
            )
            for i in range(50)
        ]
        for s in sends:
            await sender.send(F.encode_frame(s))
        results = [await recv_frame(sender) for _ in sends]
        assert sorted(r.req_id for r in results) == list(range(50))
        assert all(r.status == 200 for r in results)
        got: list[F.Delivered] = []
        while len(got) < 50:
            f = await recv_frame(rx)
            if isinstance(f, F.KeysLow):
                continue
            assert isinstance(f, F.Deliver)
            got.extend(f.envelopes)
        assert [e.content for e in got] == [b"new%d" % i for i in range(50)]
        await rx.send(F.encode_frame(F.Ack(tuple(e.envelope_id for e in backlog + got))))
        await rx.close()
        await sender.close()
        for _ in range(100):  # acks are committed asynchronously
            if not c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]:
                break
            time.sleep(0.02)
        assert c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"] == []


async def test_ws_send_errors_and_replacement(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as c:
        bob = register(c)
        s = await ws_connect(server.ws_url)
        env = (F.OutEnvelope(1, os.urandom(16), b"x"),)
        cases = [
            (F.Destination(bob.address, F.TokenAccess(os.urandom(16)), env), 401),
            (F.Destination(bob.address, None, env), 401),
            (F.Destination("xc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", None, env), 404),
            (
                F.Destination(
                    bob.address,
                    F.TokenAccess(bob.delivery_token),
                    (F.OutEnvelope(3, os.urandom(16), b"x"),),
                ),
                409,
            ),
        ]
        for i, (dest, status) in enumerate(cases):
            await s.send(F.encode_frame(F.Send(i, (dest,))))
            r = await recv_frame(s)
            assert (r.req_id, r.status) == (i, status)
        await s.send(F.encode_frame(F.Ack((os.urandom(16),))))  # anonymous socket may not ACK
        assert await close_code(s) == F.CLOSE_FORBIDDEN
        first = await ws_connect(server.ws_url, bob.token)
        await recv_until_drained(first)
        second = await ws_connect(server.ws_url, bob.token)
        assert await close_code(first) == 4409
        await second.close()
        bad = await ws_connect(server.ws_url, "garbage")
        assert await close_code(bad) == F.CLOSE_UNAUTHORIZED


def test_ttl_expiry(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, ttl_seconds=1, sweep_seconds=0.3, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        bob = register(c)
        c.post("/api/v1/messages", json=send_body(bob, [b"soon gone"]))
        assert len(c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]) == 1
        time.sleep(1.5)
        assert c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"] == []
        metrics = c.get("/metrics", headers=srv.metrics_headers).text
        assert "xchat_envelopes_expired_total 1" in metrics


def test_acknowledged_sends_survive_kill9(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limits=False) as srv:
        with httpx.Client(base_url=srv.url) as c:
            bob = register(c)
            for i in range(20):
                assert (
                    c.post("/api/v1/messages", json=send_body(bob, [b"m%d" % i])).status_code == 200
                )
        srv.kill9()
        srv.start()
        with httpx.Client(base_url=srv.url) as c:
            got = c.get("/api/v1/messages", headers=bob.headers).json()["envelopes"]
            assert [unb64(e["content"]) for e in got] == [b"m%d" % i for i in range(20)]
