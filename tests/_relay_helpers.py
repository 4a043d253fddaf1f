"""A minimal test client for the relay's HTTP/WS API (PROTOCOL Part III), built on the
crypto modules only, so the relay's tests (tests/server, tests/reliability, tests/ops) do
not depend on the client SDK. At the top of tests/, which the root conftest puts on
``sys.path``, so that every directory imports the same helpers."""

from __future__ import annotations

import base64
import os
from typing import Any

from xchat.testing import (  # noqa: F401  (re-exported for the server tests)
    Account,
    b64,
    get_challenge,
    key_upload,
    register,
    register_body,
)


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


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


async def ws_connect(
    server_ws_url: str, token: str | None = None, *, headers: dict[str, str] | None = None
) -> Any:
    """A WebSocket to the relay, authenticated with a bearer ``token`` or raw ``headers``."""
    from websockets.asyncio.client import connect

    if token:
        headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
    return await connect(
        server_ws_url, additional_headers=headers, compression=None, open_timeout=10
    )


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
    """Read until the server closes; the close code it sent (None if none)."""
    import asyncio

    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
