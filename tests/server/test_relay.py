"""Storage amplification against a real relay (issue #18 attack 4; PROTOCOL Part III §4.4, §6).

Each test performs the attack the review found and checks the relay refuses it with a
typed JSON error, storing nothing: 255 copies of ``shared`` for one device in one
SEND_MULTI, several large envelopes under one proof-of-work stamp, a mailbox filled
without bound, and stored bytes not charged to the sender.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from _relay_helpers import b64, get_challenge, recv_frame, register, send_body, ws_connect
from xchat.crypto.keys import decode_address
from xchat.crypto.pow import solve
from xchat.protocol import frames as F
from xchat.testing import Account, ServerProcess, running_server


def _queued(client: httpx.Client, acct: Account) -> list[bytes]:
    r = client.get("/api/v1/messages", headers=acct.headers)
    assert r.status_code == 200, r.text
    return [base64.b64decode(e["content"]) for e in r.json()["envelopes"]]


def _multi_body(acct: Account, shared: bytes, copies: int) -> dict[str, Any]:
    envelopes = [
        {"device_id": 1, "id": b64(os.urandom(16)), "header": b64(b"h")} for _ in range(copies)
    ]
    return {
        "shared": b64(shared),
        "destinations": [
            {
                "address": acct.address,
                "delivery_token": b64(acct.delivery_token),
                "envelopes": envelopes,
            }
        ],
    }


def test_attack_send_multi_copies_for_one_device_refused(client: httpx.Client) -> None:
    """One request of ~350 KB stored 255 copies of ``shared`` (63.8 MB) in one mailbox."""
    victim = register(client)
    r = client.post("/api/v1/messages/multi", json=_multi_body(victim, os.urandom(1400), 255))
    assert r.status_code == 400 and "one envelope per device" in r.json()["error"]
    assert _queued(client, victim) == []
    # The same address twice in one request is the same amplification.
    body = send_body(victim, [b"a"])
    body["destinations"].append(send_body(victim, [b"b"])["destinations"][0])
    r = client.post("/api/v1/messages", json=body)
    assert r.status_code == 400 and "at most once" in r.json()["error"]
    assert _queued(client, victim) == []
    ok = client.post("/api/v1/messages/multi", json=_multi_body(victim, b"S", 1))
    assert ok.status_code == 200 and _queued(client, victim) == [b"hS"]


async def test_attack_send_multi_frame_copies_refused(server: ServerProcess) -> None:
    """The WebSocket SEND_MULTI frame: 255 envelopes for one device get SEND_RESULT 400."""
    with httpx.Client(base_url=server.url) as c:
        victim = register(c)
        envs = tuple(F.MultiEnvelope(1, os.urandom(16), b"h") for _ in range(255))
        dest = F.MultiDestination(
            decode_address(victim.address), F.TokenAccess(victim.delivery_token), envs
        )
        ws = await ws_connect(server.ws_url)
        try:
            await ws.send(F.encode_send_multi(F.SendMulti(7, os.urandom(1000), (dest,))))
            result = await recv_frame(ws)
        finally:
            await ws.close()
        assert isinstance(result, F.SendResult) and (result.req_id, result.status) == (7, 400)
        assert _queued(c, victim) == []


def test_attack_one_pow_stamp_many_large_envelopes(client: httpx.Client) -> None:
    """One proof-of-work stamp authorised 3 × 200 KB envelopes for one device."""
    victim = register(client, delivery_token=False)
    ch, bits = get_challenge(client)
    body = send_body(victim, [os.urandom(200_000) for _ in range(3)])
    dest = body["destinations"][0]
    dest["delivery_token"] = None
    dest["pow"] = {"challenge": b64(ch), "nonce": solve(ch, victim.address.encode(), bits)}
    r = client.post("/api/v1/messages", json=body)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert _queued(client, victim) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_attack_mailbox_fill_gets_429_until_drained(
    tmp_path: Path, backend: str, backend_env: Callable[[str], dict[str, Any]]
) -> None:
    """A per-device quota in envelopes and in bytes: the sender is told 429 with the
    address, nothing is stored, and the mailbox takes mail again once drained."""
    with (
        running_server(
            tmp_path,
            rate_limits=False,
            max_mailbox_envelopes=3,
            max_mailbox_bytes=50_000,
            **backend_env(backend),
        ) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        victim = register(c)
        for i in range(3):
            assert (
                c.post("/api/v1/messages", json=send_body(victim, [b"m%d" % i])).status_code == 200
            )
        r = c.post("/api/v1/messages", json=send_body(victim, [b"one too many"]))
        assert r.status_code == 429
        assert r.json() == {"error": "recipient mailbox full", "address": victim.address}
        assert int(r.headers["retry-after"]) >= 1
        first = c.get("/api/v1/messages", headers=victim.headers).json()["envelopes"][0]["id"]
        acked = c.post("/api/v1/messages/ack", json={"ids": [first]}, headers=victim.headers)
        assert acked.json() == {"deleted": 1}
        assert c.post("/api/v1/messages", json=send_body(victim, [b"fits"])).status_code == 200
        # bytes: another device's mailbox takes 2 × 20 KB, not a third
        other = register(c)
        for _ in range(2):
            body = send_body(other, [os.urandom(20_000)])
            assert c.post("/api/v1/messages", json=body).status_code == 200
        r = c.post("/api/v1/messages", json=send_body(other, [os.urandom(20_000)]))
        assert r.status_code == 429 and r.json()["address"] == other.address
        assert len(_queued(c, other)) == 2
        # the quota survives a restart (counted from the database on open)
        srv.restart()
        with httpx.Client(base_url=srv.url, timeout=10) as c2:
            r = c2.post("/api/v1/messages", json=send_body(other, [os.urandom(20_000)]))
            assert r.status_code == 429


def test_attack_stored_bytes_are_rate_limited(tmp_path: Path) -> None:
    """Rate limits are charged in stored bytes per IP bucket, not per request or envelope."""
    with (
        running_server(
            tmp_path, rate_limits=True, rate_send_bytes_per_s=1, rate_send_bytes_burst=300_000
        ) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        victims = [register(c) for _ in range(4)]
        shared = os.urandom(100_000)
        body: dict[str, Any] = {"shared": b64(shared), "destinations": []}
        for v in victims[:2]:
            body["destinations"] += _multi_body(v, shared, 1)["destinations"]
        assert c.post("/api/v1/messages/multi", json=body).status_code == 200  # 200 KB stored
        body["destinations"] = []
        for v in victims[2:]:
            body["destinations"] += _multi_body(v, shared, 1)["destinations"]
        r = c.post("/api/v1/messages/multi", json=body)  # 200 KB more: over the 300 KB burst
        assert r.status_code == 429 and "stored bytes" in r.json()["error"]
        assert "retry-after" in r.headers
        assert all(_queued(c, v) == [] for v in victims[2:])


def test_blob_quota_grows_with_account_age(tmp_path: Path) -> None:
    """A new account (one 20-bit stamp) may no longer reserve 8 GiB of blobs: its quota
    starts small and grows with the account's age (issue #18)."""
    env = {"blob_quota_new_bytes": 1000, "blob_quota_per_day_bytes": 1000}
    with running_server(tmp_path, rate_limits=False, **env) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            acct = register(c)
            r = c.post("/api/v1/blobs", json={"size": 2500}, headers=acct.headers)
            assert r.status_code == 413 and "age" in r.json()["error"]
            assert (
                c.post("/api/v1/blobs", json={"size": 900}, headers=acct.headers).status_code == 201
            )
        srv.stop()
        with sqlite3.connect(Path(srv.data_dir) / "xchat.db") as db:  # the account turns 3 days old
            db.execute("UPDATE accounts SET created_ms = created_ms - 3 * 86400000")
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.post("/api/v1/blobs", json={"size": 2500}, headers=acct.headers)
            assert r.status_code == 201, r.text  # 1000 + 3 days × 1000 = 4000 ≥ 900 + 2500
