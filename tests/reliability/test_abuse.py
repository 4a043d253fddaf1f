"""Abuse against a real relay with its default limits on (RELIABILITY.md §6).

* a registration flood without valid proof-of-work stamps: every attempt 4xx, relay healthy;
* oversize bodies: 413, with and without a Content-Length;
* slowloris: connections that never finish their request head or body must be cut off;
* too many sockets from one IP bucket must be capped;
* (slow) a 60-second mixed abuse run while an honest client keeps sending and receiving:
  relay RSS and the honest client's send->deliver latency are measured.

Attackers connect from 127.0.1.1, a different /24 rate-limit bucket than the honest client
on 127.0.0.1 (both are loopback on Linux), as they would be on the Internet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _rel_helpers import Account, b64, register

from _relay_helpers import close_code, ws_connect
from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.prekeys import KemPreKeyRecord, SignedPreKeyRecord, prekey_upload
from xchat.protocol import frames as F
from xchat.testing import ServerProcess, running_server

ATTACKER_IP = "127.0.1.1"
SLOWLORIS_WAIT = float(os.environ.get("XCHAT_SLOWLORIS_WAIT", "7"))  # > uvicorn's 5 s keep-alive
SOCKETS_PER_IP = int(os.environ.get("XCHAT_SOCKETS_PER_IP", "300"))


def _can_bind(ip: str = ATTACKER_IP) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def attacker_client(url: str, ip: str = ATTACKER_IP) -> httpx.Client:
    """An HTTP client whose requests come from ``ip`` (each test its own /24 bucket, so one
    test's rate-limit debt does not leak into the next)."""
    local = ip if _can_bind(ip) else None
    return httpx.Client(
        base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address=local)
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Default limits, PoW at 20 bits so a guessed nonce fails (p = 2^-20)."""
    with running_server(tmp_path_factory.mktemp("abuse"), pow_bits=20) as srv:
        yield srv


# --- registration flood ---------------------------------------------------------------------


def test_registration_flood_without_stamps(relay: ServerProcess) -> None:
    statuses: dict[int, int] = {}
    with attacker_client(relay.url) as c:
        ik = IdentityKeyPair.generate()
        r = c.post("/api/v1/challenge")
        ch = base64.b64decode(r.json()["challenge"])
        body = {
            "identity_key": b64(ik.public.encode()),
            "challenge": b64(ch),
            "signature": b64(ik.sign(b"XChat-v1-register" + ch)),
            "pow_nonce": 0,
            "handle": None,
            "keys": prekey_upload(
                signed_prekey=SignedPreKeyRecord.generate(ik, 1),
                kem_last_resort=KemPreKeyRecord.generate(ik, 2, last_resort=True),
            ),
        }
        for i in range(200):
            body["pow_nonce"] = i
            if i % 3 == 1:  # mix in garbage and missing-field bodies
                r = c.post("/api/v1/accounts", content=b'{"identity_key": 5}')
            else:
                r = c.post("/api/v1/accounts", json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert all(400 <= s < 500 for s in statuses), statuses
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/api/v1/server").status_code == 200
        assert c.post("/api/v1/challenge").status_code == 200  # honest bucket unaffected
    print("registration flood statuses:", statuses)


# --- oversize bodies ---------------------------------------------------------------------------


def test_oversize_body_with_content_length_413(relay: ServerProcess) -> None:
    with attacker_client(relay.url, "127.0.2.1") as c:
        r = c.post(
            "/api/v1/messages",
            content=b"x" * (2 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413, r.text


def test_oversize_chunked_body_413(relay: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"[" * 65536

    with attacker_client(relay.url, "127.0.3.1") as c:
        r = c.post(
            "/api/v1/accounts", content=chunks(), headers={"content-type": "application/json"}
        )
    assert r.status_code == 413, r.text
    assert "error" in r.json()


async def test_oversize_ws_frame_closed(relay: ServerProcess) -> None:
    ws = await ws_connect(relay.ws_url)
    try:
        await ws.send(b"\x01" + bytes(3 * 1024 * 1024))
        assert await close_code(ws) in (F.CLOSE_TOO_LARGE, 1009)
    finally:
        await ws.close()


# --- slowloris ---------------------------------------------------------------------------------

SLOW_CASES = {
    "idle_after_connect": b"",
    "partial_http_head": b"GET /healthz HTTP/1.1\r\nHost: relay\r\n",
    "partial_ws_head": b"GET /api/v1/ws HTTP/1.1\r\nHost: relay\r\n",
    "partial_body": b"POST /api/v1/accounts HTTP/1.1\r\nHost: relay\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    "drip_head_byte_per_500ms": b"",
}
DRIP = b"GET /api/v1/server HTTP/1.1\r\nX-Pad: " + b"a" * 200


@pytest.fixture(scope="module")
def slowloris(relay: ServerProcess) -> dict[str, bool]:
    """Open every slow connection at once, wait SLOWLORIS_WAIT seconds (dripping one header
    byte every 0.5 s on the drip socket), and report which ones the relay closed."""
    socks: dict[str, socket.socket] = {}
    for name, first in SLOW_CASES.items():
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        if first:
            s.sendall(first)
        socks[name] = s
    closed = dict.fromkeys(socks, False)
    deadline = time.monotonic() + SLOWLORIS_WAIT
    drip_at, drip_pos = 0.0, 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= drip_at and drip_pos < len(DRIP) and not closed["drip_head_byte_per_500ms"]:
            try:
                socks["drip_head_byte_per_500ms"].send(DRIP[drip_pos : drip_pos + 1])
            except OSError:
                closed["drip_head_byte_per_500ms"] = True
            drip_pos, drip_at = drip_pos + 1, now + 0.5
        open_socks = [s for n, s in socks.items() if not closed[n]]
        readable, _, _ = select.select(open_socks, [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data or b"408" in data.split(b"\r\n", 1)[0]:
                closed[next(n for n, x in socks.items() if x is s)] = True
    for s in socks.values():
        s.close()
    print("slowloris: closed within", SLOWLORIS_WAIT, "s:", closed)
    return closed


def test_slowloris_idle_connection_cut(slowloris: dict[str, bool]) -> None:
    _assert_closed(slowloris, "idle_after_connect")


def test_slowloris_partial_http_head_cut(slowloris: dict[str, bool]) -> None:
    _assert_closed(slowloris, "partial_http_head")


def test_slowloris_partial_ws_head_cut(slowloris: dict[str, bool]) -> None:
    _assert_closed(slowloris, "partial_ws_head")


def test_slowloris_partial_body_cut(slowloris: dict[str, bool]) -> None:
    _assert_closed(slowloris, "partial_body")


def test_slowloris_drip_cut(slowloris: dict[str, bool]) -> None:
    _assert_closed(slowloris, "drip_head_byte_per_500ms")


def _assert_closed(closed: dict[str, bool], case: str) -> None:
    assert closed[case], f"{case}: still open after {SLOWLORIS_WAIT} s"


# --- sockets per IP bucket -----------------------------------------------------------------------


async def test_sockets_per_ip_bucket_capped(relay: ServerProcess) -> None:
    local = ATTACKER_IP if _can_bind() else None
    opened: list[Any] = []
    refused = 0
    try:
        for _ in range(SOCKETS_PER_IP):
            try:
                from websockets.asyncio.client import connect

                ws = await connect(
                    relay.ws_url,
                    compression=None,
                    open_timeout=5,
                    local_addr=(local, 0) if local else None,
                )
            except Exception:
                refused += 1
                continue
            opened.append(ws)
        await asyncio.sleep(0.3)
        alive = sum(1 for ws in opened if ws.close_code is None)
        print(f"sockets per IP: {alive} of {SOCKETS_PER_IP} alive, {refused} refused")
        assert alive < SOCKETS_PER_IP, "every socket from one /24 was accepted"
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


# --- 60-second abuse run with an honest client (slow) -------------------------------------------


async def _honest(relay: ServerProcess, acct: Account, stop: float, lat: list[float]) -> int:
    """Send to ourselves over an unauthenticated socket, receive on an authenticated one."""
    failures = 0
    rx = await ws_connect(relay.ws_url, headers=acct.headers)
    tx = await ws_connect(relay.ws_url)
    sent: dict[bytes, float] = {}

    async def reader() -> None:
        while True:
            frame = F.decode_frame(await rx.recv())
            if isinstance(frame, F.Deliver):
                ids = [d.envelope_id for d in frame.envelopes]
                now = time.monotonic()
                for i in ids:
                    if i in sent:
                        lat.append(now - sent.pop(i))
                await rx.send(F.encode_frame(F.Ack(tuple(ids))))

    task = asyncio.create_task(reader())
    req = 0
    try:
        while time.monotonic() < stop:
            env = os.urandom(16)
            dest = F.Destination(
                acct.address, F.TokenAccess(acct.delivery_token), (F.OutEnvelope(1, env, b"hi"),)
            )
            sent[env] = time.monotonic()
            await tx.send(F.encode_frame(F.Send(req, (dest,))))
            res = F.decode_frame(await asyncio.wait_for(tx.recv(), 10))
            if not isinstance(res, F.SendResult) or res.status != 200:
                failures += 1
            req += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
    finally:
        task.cancel()
        await rx.close()
        await tx.close()
    return failures + len(sent)  # unanswered or undelivered


def _attacker_http(url: str, stop: float, counts: dict[str, int]) -> None:
    with attacker_client(url) as c:
        while time.monotonic() < stop:
            for path, body in (
                ("/api/v1/accounts", b'{"identity_key": "AAAA"}'),
                ("/api/v1/messages", b"x" * (1024 * 1024 + 10)),
                ("/api/v1/auth", b"[" * 5000),
            ):
                try:
                    r = c.post(path, content=body, headers={"content-type": "application/json"})
                    key = str(r.status_code)
                except httpx.HTTPError:
                    key = "error"
                counts[key] = counts.get(key, 0) + 1


async def _attacker_ws(url: str, stop: float, counts: dict[str, int]) -> None:
    from websockets.asyncio.client import connect

    local = ATTACKER_IP if _can_bind() else None
    while time.monotonic() < stop:
        try:
            ws = await connect(
                url, compression=None, open_timeout=5, local_addr=(local, 0) if local else None
            )
            await ws.send(os.urandom(64))  # garbage frame: expect 4400
            await ws.wait_closed()
            counts[f"ws_{ws.close_code}"] = counts.get(f"ws_{ws.close_code}", 0) + 1
        except Exception as exc:
            counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1


@pytest.mark.slow
async def test_abuse_run_60s(tmp_path: Path) -> None:
    duration = float(os.environ.get("XCHAT_ABUSE_SECONDS", "60"))
    with running_server(tmp_path / "relay", pow_bits=20) as relay:
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            acct = register(c)
        rss_start = rss_kib(relay.pid)
        stop = time.monotonic() + duration
        counts: dict[str, int] = {}
        lat: list[float] = []
        rss_peak = rss_start
        idle = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(200)]

        async def sample_rss() -> None:
            nonlocal rss_peak
            while time.monotonic() < stop:
                rss_peak = max(rss_peak, rss_kib(relay.pid))
                await asyncio.sleep(0.5)

        loop = asyncio.get_running_loop()
        http_attackers = [
            loop.run_in_executor(None, _attacker_http, relay.url, stop, counts) for _ in range(3)
        ]
        results = await asyncio.gather(
            _honest(relay, acct, stop, lat),
            _attacker_ws(relay.ws_url, stop, counts),
            sample_rss(),
            *http_attackers,
        )
        failures = results[0]
        for s in idle:
            s.close()
        rss_end = rss_kib(relay.pid)
        healthy = httpx.get(relay.url + "/healthz", timeout=5).status_code == 200
    lat_ms = sorted(x * 1000 for x in lat)
    report = {
        "duration_s": duration,
        "rss_kib": {"start": rss_start, "peak": rss_peak, "end": rss_end},
        "honest": {
            "messages": len(lat_ms),
            "failures": failures,
            "latency_ms_p50": round(statistics.median(lat_ms), 2) if lat_ms else None,
            "latency_ms_p99": round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 2) if lat_ms else None,
            "latency_ms_max": round(lat_ms[-1], 2) if lat_ms else None,
        },
        "attack_results": counts,
        "healthy_after": healthy,
    }
    print("abuse run:", json.dumps(report))
    out = os.environ.get("XCHAT_ABUSE_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    assert healthy
    assert failures == 0, report
    assert lat_ms, report
