"""Small HTTP/WS helpers for the reliability tests against a real relay process.

Built on ``xchat.testing``'s account helpers and raw httpx/websockets only, so the relay's
authorization and abuse checks do not go through the client SDK. The WebSocket helpers
are the server tests' (``_relay_helpers``)."""

from __future__ import annotations

import base64

import httpx

from xchat.crypto.keys import IdentityKeyPair
from xchat.testing import Account, b64
from xchat.testing import register as _register


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def register(client: httpx.Client, ik: IdentityKeyPair | None = None) -> Account:
    """Register (or re-register: restore) an identity and publish a delivery token."""
    return _register(client, n_ec=2, n_kem=2, ik=ik)


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
