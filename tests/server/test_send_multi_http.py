"""``POST /api/v1/messages/multi``: the JSON form of SEND_MULTI (PROTOCOL Part III §4.4a, §5.2)."""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx

from _relay_helpers import Account, b64, register


def _multi(shared: bytes, dests: list[tuple[Account, bytes]], **extra: Any) -> dict[str, Any]:
    return {
        "shared": b64(shared),
        "destinations": [
            {
                "address": a.address,
                "delivery_token": b64(a.delivery_token),
                "envelopes": [{"device_id": 1, "id": b64(os.urandom(16)), "header": b64(h)}],
                **extra,
            }
            for a, h in dests
        ],
    }


def _contents(client: httpx.Client, acct: Account) -> list[bytes]:
    r = client.get("/api/v1/messages", headers=acct.headers)
    assert r.status_code == 200, r.text
    return [base64.b64decode(e["content"]) for e in r.json()["envelopes"]]


def test_each_device_gets_header_then_shared(client: httpx.Client) -> None:
    a, b = register(client), register(client)
    r = client.post("/api/v1/messages/multi", json=_multi(b"SHARED", [(a, b"ha"), (b, b"hb")]))
    assert r.status_code == 200, r.text
    assert _contents(client, a) == [b"haSHARED"]
    assert _contents(client, b) == [b"hbSHARED"]


def test_all_or_nothing_and_errors(client: httpx.Client) -> None:
    a, b = register(client), register(client)
    bad = _multi(b"S", [(a, b"h"), (b, b"h")])
    bad["destinations"][1]["delivery_token"] = b64(bytes(16))
    r = client.post("/api/v1/messages/multi", json=bad)
    assert r.status_code == 401, r.text
    assert _contents(client, a) == []  # nothing stored for the valid destination either
    long_header = _multi(b"S", [(a, bytes(256))])
    assert client.post("/api/v1/messages/multi", json=long_header).status_code == 400
    wrong = _multi(b"S", [(a, b"h")])
    wrong["destinations"][0]["envelopes"][0]["device_id"] = 7
    r = client.post("/api/v1/messages/multi", json=wrong)
    assert r.status_code == 409 and r.json()["devices"] == [1]
    assert (
        client.post("/api/v1/messages/multi", json={"shared": "%%", "destinations": []}).status_code
        == 422
    )
