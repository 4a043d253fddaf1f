"""Relay benchmark: durable end-to-end throughput, delivery latency, idle socket memory.

    .venv/bin/python bench/relay_bench.py [--quick]

Starts a real server process (low PoW, rate limits off), registers 100 sender/recipient
pairs; the recipients (one load process) hold authenticated sockets and ACK every DELIVER
at once; the senders (another load process) send 256-byte envelopes over anonymous sockets
with delivery tokens, each socket keeping a window of sends in flight. A message counts when
the recipient has it: send -> durable group commit -> SEND_RESULT + DELIVER -> ACK -> delete.
Latency = recipient receive time - sender send time (CLOCK_MONOTONIC is system-wide).
Then: 10,000 idle WebSockets from several 127.0.0.x source addresses; server RSS delta / N.
Writes bench/results/relay.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.pow import solve
from xchat.crypto.prekeys import KemPreKeyRecord, SignedPreKeyRecord, prekey_upload
from xchat.protocol import frames as F
from xchat.testing import running_server

PAIRS = 100
CONTENT = 256


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_000_000
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 1_048_576), hard))


def b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def register(c: httpx.Client) -> dict[str, Any]:
    ik = IdentityKeyPair.generate()
    ch_j = c.post("/api/v1/challenge").json()
    import base64

    ch = base64.b64decode(ch_j["challenge"])
    body = {
        "identity_key": b64(ik.public.encode()),
        "challenge": ch_j["challenge"],
        "signature": b64(ik.sign(b"XChat-v1-register" + ch)),
        "pow_nonce": solve(ch, ik.public.encode(), ch_j["pow_bits"]),
        "keys": prekey_upload(
            signed_prekey=SignedPreKeyRecord.generate(ik, 1),
            kem_last_resort=KemPreKeyRecord.generate(ik, 2, last_resort=True),
        ),
    }
    j = c.post("/api/v1/accounts", json=body).json()
    token = os.urandom(16)
    c.put(
        "/api/v1/delivery-token",
        json={"token_hash": b64(hashlib.sha256(token).digest())},
        headers={"Authorization": f"Bearer {j['token']}"},
    )
    return {"address": j["address"], "token": j["token"], "delivery_token": token}


# --- recipients process ---------------------------------------------------------------


def recipients_main(ws_url: str, tokens: list[str], ready: Any, stop: Any, out: Any) -> None:
    import uvloop

    uvloop.run(_recipients(ws_url, tokens, ready, stop, out))


async def _recipients(ws_url: str, tokens: list[str], ready: Any, stop: Any, out: Any) -> None:
    from websockets.asyncio.client import connect

    recs: list[tuple[int, int]] = []  # (recv_ns, latency_ns)
    socks = [
        await connect(
            ws_url,
            additional_headers={"Authorization": f"Bearer {t}"},
            compression=None,
            max_size=None,
        )
        for t in tokens
    ]

    async def run(ws: Any) -> None:
        drained = False
        async for raw in ws:
            f = F.decode_frame(raw)
            if isinstance(f, F.Deliver):
                now = time.monotonic_ns()
                for e in f.envelopes:
                    recs.append((now, now - int.from_bytes(e.content[:8], "big")))
                await ws.send(F.encode_frame(F.Ack(tuple(e.envelope_id for e in f.envelopes))))
            elif isinstance(f, F.Drained) and not drained:
                drained = True
                counter[0] += 1
                if counter[0] == len(socks):
                    ready.set()

    counter = [0]
    tasks = [asyncio.create_task(run(ws)) for ws in socks]
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let in-flight deliveries land
    for t in tasks:
        t.cancel()
    out.put(recs)


# --- senders process ------------------------------------------------------------------


def senders_main(
    ws_url: str,
    dests: list[dict[str, Any]],
    window: int,
    rate: float,
    start_at: float,
    duration: float,
    out: Any,
) -> None:
    import uvloop

    uvloop.run(_senders(ws_url, dests, window, rate, start_at, duration, out))


async def _senders(
    ws_url: str,
    dests: list[dict[str, Any]],
    window: int,
    rate: float,
    start_at: float,
    duration: float,
    out: Any,
) -> None:
    from websockets.asyncio.client import connect

    socks = [await connect(ws_url, compression=None, max_size=None) for _ in dests]
    sent = [0]
    errors = [0]

    async def run(ws: Any, dest: dict[str, Any]) -> None:
        addr = dest["address"].encode()
        head = struct.pack(">H", 1) + bytes([len(addr)]) + addr + b"\x01\x00\x10"
        head += dest["delivery_token"] + struct.pack(">HI", 1, 1)
        pad = os.urandom(CONTENT - 8)
        sem = asyncio.Semaphore(window)
        interval = (len(dests) / rate) if rate else 0.0

        async def reader() -> None:
            async for raw in ws:
                if raw[0] == F.SEND_RESULT:
                    if struct.unpack_from(">H", raw, 5)[0] != 200:
                        errors[0] += 1
                    sem.release()

        rt = asyncio.create_task(reader())
        while time.monotonic() < start_at:
            await asyncio.sleep(0.001)
        end = start_at + duration
        req = 0
        next_t = time.monotonic()
        while time.monotonic() < end:
            await sem.acquire()
            if interval:
                next_t += interval
                delay = next_t - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            req += 1
            content = time.monotonic_ns().to_bytes(8, "big") + pad
            frame = (
                b"\x01"
                + struct.pack(">I", req)
                + head
                + os.urandom(16)
                + struct.pack(">I", CONTENT)
                + content
            )
            await ws.send(frame)
            sent[0] += 1
        await asyncio.sleep(0.3)
        rt.cancel()

    await asyncio.gather(*[run(ws, d) for ws, d in zip(socks, dests, strict=True)])
    out.put({"sent": sent[0], "errors": errors[0]})


def load_run(
    server: Any,
    accounts: list[dict[str, Any]],
    window: int,
    rate: float,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    rq, sq = ctx.Queue(), ctx.Queue()
    recipients = accounts[:PAIRS]
    rp = ctx.Process(
        target=recipients_main,
        args=(server.ws_url, [r["token"] for r in recipients], ready, stop, rq),
    )
    rp.start()
    ready.wait(60)
    start_at = time.monotonic() + 2.0
    sp = ctx.Process(
        target=senders_main,
        args=(server.ws_url, recipients, window, rate, start_at, warmup + duration, sq),
    )
    sp.start()
    sres = sq.get(timeout=120)
    stop.set()
    recs = rq.get(timeout=120)
    sp.join()
    rp.join()
    t0 = int((start_at + warmup) * 1e9)
    t1 = int((start_at + warmup + duration) * 1e9)
    window_recs = [lat for (t, lat) in recs if t0 <= t < t1]
    lats = sorted(window_recs)

    def pct(p: float) -> float:
        return lats[min(len(lats) - 1, int(p * len(lats)))] / 1e6 if lats else float("nan")

    return {
        "msgs_per_s": len(window_recs) / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "delivered_total": len(recs),
        "sent_total": sres["sent"],
        "send_errors": sres["errors"],
        "window": window,
        "offered_rate": rate or None,
    }


# --- idle connections -----------------------------------------------------------------


def idle_main(ws_url: str, n: int, q: Any, hold: Any) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_idle(ws_url, n, q, hold))


async def _idle(ws_url: str, n: int, q: Any, hold: Any) -> None:
    from websockets.asyncio.client import connect

    socks = []
    per_ip = 5000
    for i in range(n):
        src = f"127.0.0.{2 + i // per_ip}"
        socks.append(
            await connect(
                ws_url, compression=None, local_addr=(src, 0), ping_interval=None, open_timeout=30
            )
        )
    q.put(len(socks))
    while not hold.is_set():
        await asyncio.sleep(0.1)
    for ws in socks:
        ws.transport.abort()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_run(server: Any, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q, hold = ctx.Queue(), ctx.Event()
    before = rss_kib(server.pid)
    p = ctx.Process(target=idle_main, args=(server.ws_url, n, q, hold))
    t = time.monotonic()
    p.start()
    opened = q.get(timeout=600)
    elapsed = time.monotonic() - t
    time.sleep(1.0)
    after = rss_kib(server.pid)
    hold.set()
    p.join()
    return {
        "connections": opened,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / opened,
        "open_seconds": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true", help="run the server under pyinstrument")
    args = ap.parse_args()
    duration, warmup, idle_n = (3.0, 1.0, 1000) if args.quick else (8.0, 2.0, 10_000)
    raise_nofile()
    env: dict[str, Any] = {"rate_limits": False}
    if args.profile:
        env["XCHAT_PROFILE"] = "bench/results/relay_profile.html"
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp, running_server(tmp, pow_bits=1, **env) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            accounts = [register(c) for _ in range(2 * PAIRS)]
        results["max_load"] = load_run(
            srv, accounts, window=64, rate=0, duration=duration, warmup=warmup
        )
        half = results["max_load"]["msgs_per_s"] / 2
        results["half_load"] = load_run(
            srv, accounts, window=64, rate=half, duration=duration, warmup=warmup
        )
        results["idle"] = idle_run(srv, idle_n)
    out = Path(__file__).parent / "results" / "relay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    m, h, i = results["max_load"], results["half_load"], results["idle"]
    print(f"{'metric':<42}{'value':>14}{'target':>14}")
    print(f"{'durable end-to-end msgs/s (max load)':<42}{m['msgs_per_s']:>14.0f}{'>= 10000':>14}")
    print(f"{'p50 / p99 latency at max load (ms)':<42}{m['p50_ms']:>7.1f} /{m['p99_ms']:>5.1f}")
    print(
        f"{'p50 / p99 latency at half load (ms)':<42}{h['p50_ms']:>7.1f} /{h['p99_ms']:>5.1f}"
        f"{'p99 <= 25':>14}"
    )
    print(
        f"{'KiB per idle WebSocket (' + str(i['connections']) + ')':<42}"
        f"{i['kib_per_connection']:>14.1f}{'<= 16':>14}"
    )
    print(f"send errors: {m['send_errors'] + h['send_errors']}; results in {out}")


if __name__ == "__main__":
    main()
