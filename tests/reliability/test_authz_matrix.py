"""Authorization matrix against a real relay (RELIABILITY.md §4).

Every authenticated endpoint and the authenticated WebSocket x every kind of bad credential
(none, empty, wrong scheme, garbage, truncated, forged MAC, expired, revoked by
re-registration) must be refused: HTTP 401 (PROTOCOL Part III), WebSocket close 4401 (§5). A
valid token of *another* device must not reach the victim's resources: acks of the
victim's envelope ids delete nothing, fetches and deliveries never show them, another
account's blob cannot be appended to. Each request is otherwise well-formed, so the only
thing wrong is the credential.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from _rel_helpers import Account, b64, b64url, queued_ids, register, send

from _relay_helpers import close_code, ws_connect
from xchat.protocol import frames as F
from xchat.testing import ServerProcess, running_server


@dataclass
class Ctx:
    """One relay with a victim (queued envelope, a blob), an attacker, a revoked token."""

    server: ServerProcess
    client: httpx.Client
    victim: Account
    attacker: Account
    victim_envelope: bytes
    victim_blob: str
    revoked_token: str
    expired_token: str | None = None


def _setup(server: ServerProcess, client: httpx.Client) -> Ctx:
    victim = register(client)
    attacker = register(client)
    env_id = os.urandom(16)
    assert send(client, victim, b"secret envelope", env_id).status_code == 200
    r = client.post("/api/v1/blobs", json={"size": 10}, headers=victim.headers)
    assert r.status_code == 201, r.text
    blob = r.json()["id"]
    # revoked: a device's token from before it re-registered (restore bumps the epoch)
    stale = register(client)
    old_token = stale.token
    register(client, stale.identity)
    return Ctx(server, client, victim, attacker, env_id, blob, old_token)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    with (
        running_server(tmp_path_factory.mktemp("authz"), pow_bits=4, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as client,
    ):
        yield _setup(srv, client)


@pytest.fixture(scope="module")
def short_ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    """A relay whose tokens live 1 s (XCHAT_TOKEN_TTL_SECONDS), for the expired column."""
    with (
        running_server(
            tmp_path_factory.mktemp("authz-short"),
            pow_bits=4,
            rate_limits=False,
            token_ttl_seconds=1,
        ) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as client,
    ):
        c = _setup(srv, client)
        c.expired_token = register(client).token
        # Wait on the condition (the token is refused), not for a fixed time.
        deadline = time.monotonic() + 30
        expired = {"Authorization": f"Bearer {c.expired_token}"}
        while client.get("/api/v1/keys/count", headers=expired).status_code != 401:
            assert time.monotonic() < deadline, "tokens never expired"
            time.sleep(0.05)
        yield c


# --- the matrix -----------------------------------------------------------------------------

Req = tuple[str, Callable[[Ctx], str], Callable[[Ctx], dict[str, Any]]]


def _none(c: Ctx) -> dict[str, Any]:
    return {}


ENDPOINTS: dict[str, Req] = {
    "put_handle": ("PUT", lambda c: "/api/v1/handle", lambda c: {"json": {"handle": "mallory"}}),
    "put_keys": ("PUT", lambda c: "/api/v1/keys", lambda c: {"json": {}}),
    "keys_count": ("GET", lambda c: "/api/v1/keys/count", _none),
    "bundles": ("GET", lambda c: f"/api/v1/bundles/{c.victim.address}", _none),
    "delivery_token": (
        "PUT",
        lambda c: "/api/v1/delivery-token",
        lambda c: {"json": {"token_hash": b64(bytes(32))}},
    ),
    "sender_certificate": ("GET", lambda c: "/api/v1/sender-certificate", _none),
    "fetch": ("GET", lambda c: "/api/v1/messages", _none),
    "delete_one": ("DELETE", lambda c: f"/api/v1/messages/{b64url(c.victim_envelope)}", _none),
    "ack": (
        "POST",
        lambda c: "/api/v1/messages/ack",
        lambda c: {"json": {"ids": [b64(c.victim_envelope)]}},
    ),
    "blob_create": ("POST", lambda c: "/api/v1/blobs", lambda c: {"json": {"size": 10}}),
    "blob_append": (
        "PATCH",
        lambda c: f"/api/v1/blobs/{c.victim_blob}",
        lambda c: {
            "content": b"0123456789",
            "headers": {
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        },
    ),
}


def _forged(c: Ctx) -> str:
    body = struct.pack(">BQIQ", 1, 1, 0, 2**62)  # device ref 1, epoch 0, far future
    return "Bearer " + b64url(body + os.urandom(16))


CREDENTIALS: dict[str, Callable[[Ctx], str | None]] = {
    "none": lambda c: None,
    "bare_bearer": lambda c: "Bearer",
    "wrong_scheme": lambda c: "Basic " + base64.b64encode(b"victim:password").decode(),
    "garbage": lambda c: "Bearer not-a-token!!",
    "truncated": lambda c: "Bearer " + c.attacker.token[:-4],
    "forged_mac": _forged,
    "revoked": lambda c: "Bearer " + c.revoked_token,
    "expired": lambda c: "Bearer " + (c.expired_token or ""),
}


def _ctx_for(cred: str, request: pytest.FixtureRequest) -> Ctx:
    return request.getfixturevalue("short_ctx" if cred == "expired" else "ctx")


@pytest.mark.parametrize("cred", list(CREDENTIALS))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_http_bad_credentials_refused(
    endpoint: str, cred: str, request: pytest.FixtureRequest
) -> None:
    c = _ctx_for(cred, request)
    method, path, kwargs_of = ENDPOINTS[endpoint]
    kwargs = kwargs_of(c)
    headers = dict(kwargs.pop("headers", {}))
    auth = CREDENTIALS[cred](c)
    if auth is not None:
        headers["Authorization"] = auth
    r = c.client.request(method, path(c), headers=headers, **kwargs)
    assert r.status_code == 401, (endpoint, cred, r.status_code, r.text)
    assert isinstance(r.json()["error"], str)
    # nothing of the victim's was touched
    assert c.victim_envelope in queued_ids(c.client, _fresh(c))


def _fresh(c: Ctx) -> Account:
    """The victim with a currently valid token (short_ctx's tokens are all expired)."""
    if c.expired_token is None:
        return c.victim
    r = c.client.post("/api/v1/challenge")
    ch = base64.b64decode(r.json()["challenge"])
    r = c.client.post(
        "/api/v1/auth",
        json={
            "address": c.victim.address,
            "device_id": 1,
            "challenge": b64(ch),
            "signature": b64(c.victim.identity.sign(b"XChat-v1-auth" + ch)),
        },
    )
    assert r.status_code == 200, r.text
    return Account(c.victim.identity, c.victim.address, r.json()["token"])


WS_CREDENTIALS = [k for k in CREDENTIALS if k != "none"]


@pytest.mark.parametrize("cred", WS_CREDENTIALS)
async def test_ws_bad_credentials_closed_4401(cred: str, request: pytest.FixtureRequest) -> None:
    c = _ctx_for(cred, request)
    auth = CREDENTIALS[cred](c)
    assert auth is not None
    ws = await ws_connect(c.server.ws_url, headers={"Authorization": auth})
    try:
        assert await close_code(ws) == F.CLOSE_UNAUTHORIZED
    finally:
        await ws.close()
    assert c.victim_envelope in queued_ids(c.client, _fresh(c))


async def test_ws_without_credentials_cannot_ack(ctx: Ctx) -> None:
    """An unauthenticated socket (sealed-sender sends) may not ACK: 4403, nothing deleted."""
    ws = await ws_connect(ctx.server.ws_url)
    try:
        await ws.send(F.encode_frame(F.Ack((ctx.victim_envelope,))))
        assert await close_code(ws) == F.CLOSE_FORBIDDEN
    finally:
        await ws.close()
    assert ctx.victim_envelope in queued_ids(ctx.client, ctx.victim)


# --- another device's valid token on the victim's resources ---------------------------------


def test_cross_device_delete_deletes_nothing(ctx: Ctx) -> None:
    r = ctx.client.delete(
        f"/api/v1/messages/{b64url(ctx.victim_envelope)}", headers=ctx.attacker.headers
    )
    assert r.status_code in (200, 404) and r.json().get("deleted", 0) == 0, r.text
    assert ctx.victim_envelope in queued_ids(ctx.client, ctx.victim)


def test_cross_device_ack_deletes_nothing(ctx: Ctx) -> None:
    r = ctx.client.post(
        "/api/v1/messages/ack",
        json={"ids": [b64(ctx.victim_envelope)]},
        headers=ctx.attacker.headers,
    )
    assert r.status_code in (200, 404) and r.json().get("deleted", 0) == 0, r.text
    assert ctx.victim_envelope in queued_ids(ctx.client, ctx.victim)


def test_cross_device_fetch_sees_nothing(ctx: Ctx) -> None:
    assert ctx.victim_envelope not in queued_ids(ctx.client, ctx.attacker)


def test_cross_device_blob_append_forbidden(ctx: Ctx) -> None:
    r = ctx.client.patch(
        f"/api/v1/blobs/{ctx.victim_blob}",
        content=b"0123456789",
        headers={
            **ctx.attacker.headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status_code in (403, 404), r.text
    head = ctx.client.head(f"/api/v1/blobs/{ctx.victim_blob}")
    assert head.headers.get("Upload-Offset") == "0"


def test_cross_device_key_upload_does_not_touch_victim(ctx: Ctx) -> None:
    before = ctx.client.get("/api/v1/keys/count", headers=ctx.victim.headers).json()
    r = ctx.client.put("/api/v1/keys", json={}, headers=ctx.attacker.headers)
    assert r.status_code == 200, r.text
    assert ctx.client.get("/api/v1/keys/count", headers=ctx.victim.headers).json() == before


async def test_cross_device_ws_ack_and_delivery(ctx: Ctx) -> None:
    """The attacker's own authenticated socket: ACKing the victim's id deletes nothing and
    the victim's envelope is never delivered to it."""
    ws = await ws_connect(ctx.server.ws_url, headers=ctx.attacker.headers)
    try:
        delivered: list[bytes] = []
        while True:
            frame = F.decode_frame(await asyncio.wait_for(ws.recv(), 5))
            if isinstance(frame, F.Deliver):
                delivered += [d.envelope_id for d in frame.envelopes]
            if isinstance(frame, F.Drained):
                break
        assert ctx.victim_envelope not in delivered
        await ws.send(F.encode_frame(F.Ack((ctx.victim_envelope,))))
        # A round trip ordered after the ACK: the relay's one writer commits in arrival
        # order, so a SEND on this socket answered 200 means the ACK was applied before it.
        me = ctx.attacker
        marker = F.Destination(
            me.address, F.TokenAccess(me.delivery_token), (F.OutEnvelope(1, os.urandom(16), b"m"),)
        )
        await ws.send(F.encode_frame(F.Send(77, (marker,))))
        while True:
            frame = F.decode_frame(await asyncio.wait_for(ws.recv(), 5))
            if isinstance(frame, F.SendResult) and frame.req_id == 77:
                assert frame.status == 200
                break
    finally:
        await ws.close()
    assert ctx.victim_envelope in queued_ids(ctx.client, ctx.victim)


async def test_revoked_device_live_socket_is_cut(ctx: Ctx) -> None:
    """Revocation must also cut a socket the old epoch already holds: after the identity
    re-registers, the stale socket gets 4401 instead of the new envelope."""
    victim = register(ctx.client)
    ws = await ws_connect(ctx.server.ws_url, headers=victim.headers)
    try:
        while not isinstance(F.decode_frame(await asyncio.wait_for(ws.recv(), 5)), F.Drained):
            pass
        fresh = register(ctx.client, victim.identity)  # restore elsewhere: epoch bump
        env = os.urandom(16)
        assert send(ctx.client, fresh, b"for the new device only", env).status_code == 200
        got: list[bytes] = []
        code = None
        try:
            while True:
                frame = F.decode_frame(await asyncio.wait_for(ws.recv(), 2))
                if isinstance(frame, F.Deliver):
                    got += [d.envelope_id for d in frame.envelopes]
        except TimeoutError:
            pass
        except Exception as exc:  # ConnectionClosed
            rcvd = getattr(exc, "rcvd", None)
            code = rcvd.code if rcvd else None
        assert env not in got, "stale socket received the new device's envelope"
        assert code == F.CLOSE_UNAUTHORIZED
    finally:
        await ws.close()


def test_matrix_size() -> None:
    """Recorded in RELIABILITY.md §4."""
    n_http = len(ENDPOINTS) * len(CREDENTIALS)
    n_ws = len(WS_CREDENTIALS) + 1
    n_cross = 6
    assert (n_http, n_ws, n_cross) == (88, 8, 6)
