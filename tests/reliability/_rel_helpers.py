"""Small HTTP/WS helpers for the reliability tests against a real relay process.

Built on the crypto modules and raw httpx/websockets only (like tests/server's helpers), so
the reliability suite does not depend on the client SDK that is still being finished."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.pow import solve
from xchat.crypto.prekeys import (
    KemPreKeyRecord,
    SignedPreKeyRecord,
    generate_kem_prekeys,
    generate_one_time_prekeys,
    prekey_upload,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Account:
    identity: IdentityKeyPair
    address: str
    token: str
    delivery_token: bytes = field(default=b"")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register_body(client: httpx.Client, ik: IdentityKeyPair) -> dict[str, Any]:
    r = client.post("/api/v1/challenge")
    assert r.status_code == 200, r.text
    ch = base64.b64decode(r.json()["challenge"])
    bits = r.json()["pow_bits"]
    return {
        "identity_key": b64(ik.public.encode()),
        "challenge": b64(ch),
        "signature": b64(ik.sign(b"XChat-v1-register" + ch)),
        "pow_nonce": solve(ch, ik.public.encode(), bits),
        "handle": None,
        "keys": prekey_upload(
            signed_prekey=SignedPreKeyRecord.generate(ik, 1),
            kem_last_resort=KemPreKeyRecord.generate(ik, 100_000, last_resort=True),
            one_time_ec=generate_one_time_prekeys(1, 2),
            one_time_kem=generate_kem_prekeys(ik, 1, 2),
        ),
    }


def register(client: httpx.Client, ik: IdentityKeyPair | None = None) -> Account:
    """Register (or re-register: restore) an identity and publish a delivery token."""
    ik = ik or IdentityKeyPair.generate()
    r = client.post("/api/v1/accounts", json=register_body(client, ik))
    assert r.status_code == 200, r.text
    acct = Account(ik, r.json()["address"], r.json()["token"], os.urandom(16))
    r = client.put(
        "/api/v1/delivery-token",
        json={"token_hash": b64(hashlib.sha256(acct.delivery_token).digest())},
        headers=acct.headers,
    )
    assert r.status_code == 200, r.text
    return acct


def send(client: httpx.Client, to: Account, content: bytes, envelope_id: bytes) -> httpx.Response:
    """Sealed-sender HTTP send of one envelope to device 1 of ``to``."""
    body = {
        "destinations": [
            {
                "address": to.address,
                "delivery_token": b64(to.delivery_token),
                "envelopes": [{"device_id": 1, "id": b64(envelope_id), "content": b64(content)}],
            }
        ]
    }
    return client.post("/api/v1/messages", json=body)


def queued_ids(client: httpx.Client, acct: Account) -> list[bytes]:
    r = client.get("/api/v1/messages", params={"limit": 500}, headers=acct.headers)
    assert r.status_code == 200, r.text
    return [base64.b64decode(e["id"]) for e in r.json()["envelopes"]]


async def ws_connect(ws_url: str, headers: dict[str, str] | None = None) -> Any:
    from websockets.asyncio.client import connect

    return await connect(ws_url, additional_headers=headers, compression=None, open_timeout=10)


async def close_code(ws: Any, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent (None if none)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
