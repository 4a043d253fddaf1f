"""A minimal test client for the relay's HTTP/WS API (PROTOCOL Part III), built on the
crypto modules only, so server tests do not depend on the client SDK."""

from __future__ import annotations

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


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


@dataclass
class Account:
    identity: IdentityKeyPair
    address: str
    token: str
    delivery_token: bytes = field(default=b"")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def key_upload(
    ik: IdentityKeyPair, n_ec: int = 3, n_kem: int = 3, start: int = 1
) -> dict[str, Any]:
    return prekey_upload(
        signed_prekey=SignedPreKeyRecord.generate(ik, 1),
        kem_last_resort=KemPreKeyRecord.generate(ik, 100_000, last_resort=True),
        one_time_ec=generate_one_time_prekeys(start, n_ec),
        one_time_kem=generate_kem_prekeys(ik, start, n_kem),
    )


def get_challenge(client: httpx.Client) -> tuple[bytes, int]:
    r = client.post("/api/v1/challenge")
    assert r.status_code == 200, r.text
    return unb64(r.json()["challenge"]), r.json()["pow_bits"]


def register_body(
    client: httpx.Client,
    ik: IdentityKeyPair,
    handle: str | None = None,
    n_ec: int = 3,
    n_kem: int = 3,
    valid_pow: bool = True,
) -> dict[str, Any]:
    ch, bits = get_challenge(client)
    nonce = solve(ch, ik.public.encode(), bits)
    if not valid_pow:
        nonce = next(
            n
            for n in range(nonce + 1, nonce + 10_000)
            if hashlib.sha256(b"").digest() and not _ok(ch, ik, n, bits)
        )
    return {
        "identity_key": b64(ik.public.encode()),
        "challenge": b64(ch),
        "signature": b64(ik.sign(b"XChat-v1-register" + ch)),
        "pow_nonce": nonce,
        "handle": handle,
        "keys": key_upload(ik, n_ec, n_kem),
    }


def _ok(ch: bytes, ik: IdentityKeyPair, nonce: int, bits: int) -> bool:
    from xchat.crypto.pow import stamp_ok

    return stamp_ok(ch, ik.public.encode(), nonce, bits)


def register(
    client: httpx.Client,
    handle: str | None = None,
    n_ec: int = 3,
    n_kem: int = 3,
    ik: IdentityKeyPair | None = None,
    delivery_token: bool = True,
) -> Account:
    ik = ik or IdentityKeyPair.generate()
    r = client.post("/api/v1/accounts", json=register_body(client, ik, handle, n_ec, n_kem))
    assert r.status_code == 200, r.text
    j = r.json()
    acct = Account(ik, j["address"], j["token"])
    if delivery_token:
        acct.delivery_token = os.urandom(16)
        r = client.put(
            "/api/v1/delivery-token",
            json={"token_hash": b64(hashlib.sha256(acct.delivery_token).digest())},
            headers=acct.headers,
        )
        assert r.status_code == 200, r.text
    return acct


def send_body(to: Account, contents: list[bytes], token: bytes | None = None) -> dict[str, Any]:
    return {
        "destinations": [
            {
                "address": to.address,
                "delivery_token": b64(token if token is not None else to.delivery_token),
                "envelopes": [
                    {"device_id": 1, "id": b64(os.urandom(16)), "content": b64(c)} for c in contents
                ],
            }
        ]
    }


async def ws_connect(server_ws_url: str, token: str | None = None) -> Any:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await connect(server_ws_url, additional_headers=headers, compression=None)


async def recv_frame(ws: Any, timeout: float = 5.0) -> Any:
    import asyncio

    from xchat.protocol.frames import decode_frame

    return decode_frame(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until_drained(ws: Any) -> list[Any]:
    """All envelopes delivered before DRAINED."""
    from xchat.protocol.frames import Deliver, Drained

    out = []
    while True:
        f = await recv_frame(ws)
        if isinstance(f, Drained):
            return out
        if isinstance(f, Deliver):
            out.extend(f.envelopes)


async def close_code(ws: Any, timeout: float = 5.0) -> int | None:
    import asyncio

    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
