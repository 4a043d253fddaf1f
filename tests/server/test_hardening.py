"""Connection hygiene and revocation (PROTOCOL III §3, §5, §6, §9): read timeouts, the socket cap
per IP bucket, revoked sockets cut with 4401 on both transports, chunked 413, persisted used
challenges, the request log line and ``--log-ips``."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _relay_helpers import (
    close_code,
    get_challenge,
    recv_until_drained,
    register,
    register_body,
    send_body,
    ws_connect,
)
from xchat.crypto.keys import IdentityKeyPair
from xchat.protocol import frames as F
from xchat.testing import ServerProcess, running_server


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short timeouts and a cap of 4 connections per IP bucket."""
    with running_server(
        tmp_path_factory.mktemp("strict"),
        pow_bits=4,
        rate_limits=False,
        header_timeout=0.5,
        body_timeout=0.5,
        max_sockets_per_ip=4,
        log_ips=True,
    ) as srv:
        yield srv


def _read_until_closed(s: socket.socket, limit: float = 10.0) -> bytes:
    """Everything the server sends until it closes (the test's own safety limit only)."""
    s.settimeout(limit)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return out
        if not chunk:
            return out
        out += chunk


def _connect(srv: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5)


# --- read timeouts --------------------------------------------------------------------------


def test_idle_connection_closed_silently(strict: ServerProcess) -> None:
    with _connect(strict) as s:
        assert _read_until_closed(s) == b""


@pytest.mark.parametrize(
    "head",
    [b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n"],
    ids=["http", "ws"],
)
def test_partial_head_gets_408(strict: ServerProcess, head: bytes) -> None:
    with _connect(strict) as s:
        s.sendall(head)
        out = _read_until_closed(s)
    assert out.startswith(b"HTTP/1.1 408"), out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == {"error": "request timeout"}


def test_stalled_body_gets_408(strict: ServerProcess) -> None:
    with _connect(strict) as s:
        s.sendall(
            b"POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        out = _read_until_closed(s)
    assert out.startswith(b"HTTP/1.1 408"), out


def test_keepalive_request_after_a_response_still_served(strict: ServerProcess) -> None:
    """The head deadline is per request: a second request on the connection works."""
    with httpx.Client(base_url=strict.url, timeout=5) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/api/v1/server").status_code == 200


# --- sockets per IP bucket ------------------------------------------------------------------


async def test_socket_cap_refuses_with_429_and_frees_slots(strict: ServerProcess) -> None:
    from websockets.exceptions import InvalidStatus

    open_ws = [await ws_connect(strict.ws_url) for _ in range(4)]
    try:
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(strict.ws_url)
        assert info.value.response.status_code == 429
        assert json.loads(info.value.response.body)["error"]
        with httpx.Client(base_url=strict.url, timeout=5) as c:  # plain HTTP counts too
            r = c.get("/healthz")
        assert r.status_code == 429
        assert r.headers["retry-after"]
        await open_ws.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the slot frees when the server sees the close (no timing assert)
            try:
                open_ws.append(await ws_connect(strict.ws_url))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
    finally:
        for ws in open_ws:
            await ws.close()


# --- revocation -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fast", "asgi"])
def either(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("either"),
        pow_bits=4,
        rate_limits=False,
        ws_fast=request.param == "fast",
    ) as srv:
        yield srv


async def test_reregistration_cuts_open_socket_4401(either: ServerProcess) -> None:
    with httpx.Client(base_url=either.url, timeout=10) as c:
        acct = register(c)
        ws = await ws_connect(either.ws_url, acct.token)
        try:
            await recv_until_drained(ws)
            r = c.post("/api/v1/accounts", json=register_body(c, acct.identity))
            assert r.status_code == 200, r.text
            assert c.post("/api/v1/messages", json=send_body(acct, [b"new"])).status_code == 200
            assert await close_code(ws) == F.CLOSE_UNAUTHORIZED
        finally:
            await ws.close()
        # The new device still gets the envelope (nothing was acked by the stale socket).
        fresh = r.json()["token"]
        got = c.get("/api/v1/messages", headers={"Authorization": f"Bearer {fresh}"}).json()
        assert [base64.b64decode(e["content"]) for e in got["envelopes"]] == [b"new"]


# --- 413 for a chunked body ------------------------------------------------------------------


def test_chunked_oversize_body_413(strict: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"[" * 65536

    with httpx.Client(base_url=strict.url, timeout=10) as c:
        r = c.post("/api/v1/accounts", content=chunks(), headers={"content-type": "x/y"})
    assert r.status_code == 413, r.text
    assert "larger than" in r.json()["error"]


# --- used challenges survive a restart ---------------------------------------------------------


def test_used_challenge_refused_after_restart(tmp_path: Path) -> None:
    with running_server(tmp_path / "r", pow_bits=4, rate_limits=False) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            ik = IdentityKeyPair.generate()
            body = register_body(c, ik)
            assert c.post("/api/v1/accounts", json=body).status_code == 200
            get_challenge(c)  # one more round trip: the used challenge is committed
        srv.restart()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.post("/api/v1/accounts", json=body)
    assert r.status_code == 401, r.text
    assert "used" in r.json()["error"]


# --- request log and --log-ips --------------------------------------------------------------


def _request_lines(srv: ServerProcess, route: str) -> list[dict[str, object]]:
    """The server's ``request`` log records for ``route``. The line is written after the
    response has gone out, so wait (bounded) for it to reach the log file."""
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + 5.0
    while not out and time.monotonic() < deadline:
        out = []
        for line in (srv.data_dir / "server.log").read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "request" and rec.get("route") == route:
                out.append(rec)
        if not out:
            time.sleep(0.05)
    return out


def test_request_log_has_ip_only_with_log_ips(strict: ServerProcess, tmp_path: Path) -> None:
    addr = "xc1" + "q" * 39
    with httpx.Client(base_url=strict.url, timeout=5) as c:
        c.get(f"/api/v1/accounts/{addr}")
    lines = _request_lines(strict, "/api/v1/accounts/{address}")
    assert lines and lines[-1]["client_ip"] == "127.0.0.1"
    assert lines[-1]["status"] in (400, 401, 404)  # 401: no anonymous token (Part XI)
    assert addr not in (strict.data_dir / "server.log").read_text()  # the template only
    with running_server(tmp_path / "quiet", pow_bits=4, rate_limits=False) as quiet:
        with httpx.Client(base_url=quiet.url, timeout=5) as c:
            c.get("/healthz")
        lines = _request_lines(quiet, "/healthz")
        assert lines and all("client_ip" not in r for r in lines)
        assert "127.0.0.1" not in (quiet.data_dir / "server.log").read_text()


def test_openapi_declares_bearer_and_errors(strict: ServerProcess) -> None:
    spec = httpx.get(strict.url + "/openapi.json", timeout=5).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    op = spec["paths"]["/api/v1/keys"]["put"]
    assert op["security"] == [{"bearer": []}]
    assert {"400", "401", "413", "429"} <= set(op["responses"])
    assert "security" not in spec["paths"]["/api/v1/messages"]["post"]  # sealed sender
