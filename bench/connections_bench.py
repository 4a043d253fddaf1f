"""Idle authenticated WebSockets across relay processes sharing one port (issue #20).

    .venv/bin/python bench/connections_bench.py [--sockets 50000] [--relays 4] [--quick]

Why several processes: this machine's hard ``RLIMIT_NOFILE`` is 20,000 per process and
cannot be raised, so one relay process can never hold 50,000 sockets here. ``xchat serve
--reuse-port`` lets ``--relays`` processes bind the same port (SO_REUSEPORT; the kernel
hashes each new connection to one of them); they share a real PostgreSQL (accounts, mail)
and a real Redis (which process holds each device's socket), started here by
``xchat.ops.services``, and one data directory (the relay's keys).

1. Register one account per socket (PoW 1 bit, rate limits off) from two processes over
   HTTP: a WebSocket is authenticated per device, and a newer socket of the same device
   replaces the older (close 4409), so 50,000 sockets need 50,000 devices.
2. Open one authenticated socket per account from load processes of at most
   PER_LOAD_PROCESS sockets each (each under its own 20,000-descriptor limit), from several
   127.0.0.x source addresses (PER_SOURCE_IP each: the ephemeral port range is ~28,000 per
   source/destination pair). A socket counts when the relay has sent it DRAINED (the device's
   backlog is done: the socket is registered in the relay and its route in Redis).
3. While all are held: each relay's RSS growth and descriptor count, the kernel's TCP memory
   (both ends are on this machine), Redis memory per route; then a message to a sample of
   held devices, each sent over HTTP to whichever process the kernel picks, must reach the
   device's socket (on any process) -- the held sockets are alive, not just counted.

Writes bench/results/connections.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import relay_bench as rb
from xchat import testing
from xchat.ops.services import Postgres, Redis
from xchat.testing import ServerProcess, env_from_kwargs

PER_SOURCE_IP = 10_000
PER_LOAD_PROCESS = 12_500
REGISTER_PROCS = 4  # spread over the relays by the kernel like any client
SAMPLE = 50  # held devices that get a message at the end


# --- registration -------------------------------------------------------------------------


def register_main(url: str, n: int, q: Any) -> None:
    out = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(n):
            a = testing.register(c, n_ec=0, n_kem=0, delivery_token=False)
            out.append((a.address, a.token))
            if len(out) % 2000 == 0:
                print(f"  registered {len(out)} of {n} ({os.getpid()})", flush=True)
    q.put(out)


def register_all(url: str, n: int) -> tuple[list[tuple[str, str]], float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = [
        n // REGISTER_PROCS + (1 if i < n % REGISTER_PROCS else 0) for i in range(REGISTER_PROCS)
    ]
    t = time.monotonic()
    procs = [ctx.Process(target=register_main, args=(url, k, q)) for k in per]
    for p in procs:
        p.start()
    accounts: list[tuple[str, str]] = []
    for _ in procs:
        accounts.extend(q.get(timeout=3600))
    for p in procs:
        p.join(30)
    return accounts, time.monotonic() - t


# --- holders ------------------------------------------------------------------------------


def hold_main(port: int, tokens: list[str], first_ip: int, q: Any, cmd: Any) -> None:
    import uvloop

    rb.raise_nofile()
    uvloop.run(_hold(port, tokens, first_ip, q, cmd))


async def _hold(port: int, tokens: list[str], first_ip: int, q: Any, cmd: Any) -> None:
    socks: list[rb.WsClient] = []
    drained = [0]
    delivered: dict[int, int] = {}
    failed = [0]
    first_error: list[str] = []
    sem = asyncio.Semaphore(200)

    def handler(i: int) -> Callable[[bytes], None]:
        def on_message(m: bytes) -> None:
            if m[0] == 0x12:
                drained[0] += 1
            elif m[0] == 0x11:
                delivered[i] = delivered.get(i, 0) + int.from_bytes(m[1:3], "big")

        return on_message

    async def one(i: int) -> None:
        src = f"127.0.0.{first_ip + i // PER_SOURCE_IP}"
        async with sem:
            try:
                socks.append(await rb.ws_open("127.0.0.1", port, tokens[i], handler(i), (src, 0)))
            except Exception as exc:
                failed[0] += 1
                if not first_error:
                    first_error.append(repr(exc)[:200])

    for k in range(0, len(tokens), 1000):
        await asyncio.gather(*(one(i) for i in range(k, min(len(tokens), k + 1000))))
    deadline = time.monotonic() + 120
    while drained[0] < len(socks) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    q.put(("opened", len(socks), drained[0], failed[0], first_error[0] if first_error else None))
    loop = asyncio.get_running_loop()
    while True:
        c = await loop.run_in_executor(None, cmd.get)
        if c[0] == "delivered":  # which of these token indexes received a DELIVER
            q.put(("delivered", [i for i in c[1] if delivered.get(i)]))
        elif c[0] == "stop":
            alive = sum(1 for s in socks if not s.lost)
            for s in socks:
                s.transport.abort()
            q.put(("alive", alive))
            return


# --- measurements -------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_memory(url: str) -> int:
    import redis

    r = redis.Redis.from_url(url)
    try:
        return int(r.info("memory")["used_memory"])
    finally:
        r.close()


def send_sample(url: str, accounts: list[tuple[str, str]], idx: list[int]) -> int:
    """Publish a delivery token for each sampled device and send it one envelope over a
    fresh connection each (so the kernel spreads the sends over the processes)."""
    ok = 0
    for i in idx:
        address, token = accounts[i]
        dt = os.urandom(16)
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.put(
                "/api/v1/delivery-token",
                json={"token_hash": testing.b64(hashlib.sha256(dt).digest())},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
        body = {
            "destinations": [
                {
                    "address": address,
                    "delivery_token": testing.b64(dt),
                    "envelopes": [
                        {
                            "device_id": 1,
                            "id": testing.b64(os.urandom(16)),
                            "content": base64.b64encode(b"are you there").decode(),
                        }
                    ],
                }
            ]
        }
        with httpx.Client(base_url=url, timeout=30) as c:
            ok += c.post("/api/v1/messages", json=body).status_code == 200
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=50_000)
    ap.add_argument("--relays", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="2,000 sockets over 3 relays")
    args = ap.parse_args()
    n, relays = (2000, 3) if args.quick else (args.sockets, args.relays)
    rb.raise_nofile()
    doc = common.new_result(
        "connections",
        quick=args.quick,
        params={"sockets": n, "relays": relays, "per_load_process": PER_LOAD_PROCESS},
    )
    with tempfile.TemporaryDirectory(prefix="xchat-conns-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # PostgreSQL may run as the postgres user
        pg = Postgres(root / "pgdata")
        redis = Redis(root / "redis.log")
        pg.start()
        redis.start()
        servers: list[ServerProcess] = []
        try:
            env = env_from_kwargs(
                {
                    "database": pg.create_database("xchat_conns"),
                    "redis": redis.url,
                    "reuse_port": True,
                    "rate_limits": False,
                    "max_sockets_per_ip": 0,
                }
            )
            data = root / "shared"
            first = ServerProcess(data, 1, dict(env))
            first.start()
            servers.append(first)
            for _ in range(relays - 1):
                s = ServerProcess(data, 1, {**env, **_same_token(first)}, port=first.port)
                s.start()
                servers.append(s)
            nofile = [rb.server_nofile(s.pid) for s in servers]
            print(f"{relays} relays on port {first.port}, nofile {nofile}", flush=True)
            accounts, reg_s = register_all(first.url, n)
            print(f"registered {len(accounts)} in {reg_s:.1f} s", flush=True)
            time.sleep(1.0)
            rss0 = {s.pid: common.proc_rss_bytes(s.pid) for s in servers}
            fd0 = {s.pid: fd_count(s.pid) for s in servers}
            kmem0 = rb.tcp_kernel_mem_kib()
            redis0 = redis_memory(redis.url)
            ctx = mp.get_context("spawn")
            holders = []
            opened = drained = failed = 0
            errors: list[str] = []
            t = time.monotonic()
            for start in range(0, n, PER_LOAD_PROCESS):
                chunk = [tok for _, tok in accounts[start : start + PER_LOAD_PROCESS]]
                q, cmd = ctx.Queue(), ctx.Queue()
                first_ip = 2 + start // PER_SOURCE_IP
                p = ctx.Process(target=hold_main, args=(first.port, chunk, first_ip, q, cmd))
                p.start()
                _, got, dr, bad, err = q.get(timeout=1200)
                holders.append((p, q, cmd, start))
                opened, drained, failed = opened + got, drained + dr, failed + bad
                if err:
                    errors.append(err)
                print(f"holding {opened} ({drained} drained, {failed} failed)", flush=True)
            open_s = time.monotonic() - t
            time.sleep(2.0)
            rss1 = {s.pid: common.proc_rss_bytes(s.pid) for s in servers}
            fd1 = {s.pid: fd_count(s.pid) for s in servers}
            kmem1 = rb.tcp_kernel_mem_kib()
            redis1 = redis_memory(redis.url)
            per_relay = [
                {
                    "pid": s.pid,
                    "sockets": fd1[s.pid] - fd0[s.pid],
                    "rss_before_mb": round(rss0[s.pid] / 2**20, 1),
                    "rss_after_mb": round(rss1[s.pid] / 2**20, 1),
                    "nofile_limit": nofile[k],
                }
                for k, s in enumerate(servers)
            ]
            # a message to a sample of held devices must reach their sockets
            sample = sorted(random.Random(20).sample(range(opened), min(SAMPLE, opened)))
            sent_ok = send_sample(first.url, accounts, sample)
            reached: list[int] = []
            deadline = time.monotonic() + 30
            while len(reached) < len(sample) and time.monotonic() < deadline:
                reached = []
                for _p, q, cmd, start in holders:
                    mine = [i - start for i in sample if start <= i < start + PER_LOAD_PROCESS]
                    cmd.put(("delivered", mine))
                    reached += [start + i for i in q.get(timeout=60)[1]]
                time.sleep(0.2)
            healthy = all(
                httpx.get(s.url + "/healthz", timeout=10).status_code == 200 for s in servers
            )
            alive = 0
            for p, q, cmd, _start in holders:
                cmd.put(("stop",))
                while True:
                    msg = q.get(timeout=120)
                    if msg[0] == "alive":
                        alive += msg[1]
                        break
                p.join(30)
        finally:
            for s in reversed(servers):
                s.stop()
            redis.stop()
            pg.stop("immediate")
    rss_delta = sum(rss1[p] - rss0[p] for p in rss1)
    doc["relays"] = per_relay
    doc["summary"] = {
        "relays": relays,
        "sockets_requested": n,
        "authenticated_sockets_held": drained,
        "connections_opened": opened,
        "failed": failed,
        "first_error": errors[0] if errors else None,
        "still_open_at_end": alive,
        "max_sockets_in_one_relay": max(int(r["sockets"] or 0) for r in per_relay),
        "relay_rss_kib_per_socket": round(rss_delta / 1024 / opened, 2) if opened else None,
        "kernel_tcp_kib_per_socket_both_ends": (
            round((kmem1 - kmem0) / opened, 2)
            if opened and kmem0 is not None and kmem1 is not None
            else None
        ),
        "redis_bytes_per_route": round((redis1 - redis0) / opened, 1) if opened else None,
        "register_per_s": round(len(accounts) / reg_s, 1),
        "open_seconds": round(open_s, 1),
        "sample_sent": sent_ok,
        "sample_reached": len(reached),
        "sample_size": len(sample),
        "relays_healthy_while_held": healthy,
    }
    doc["targets"] = {
        "authenticated_sockets_held": ">= 50000 across >= 3 relay processes",
        "relay_rss_kib_per_socket": "<= 16",
    }
    common.finish_result(doc)
    doc["markdown"] = markdown(doc)
    path = common.write_json("connections", doc)
    print(json.dumps(doc["summary"], indent=1))
    print(
        f"loadavg {doc['machine'].get('loadavg_at_start')} -> "
        f"{doc['machine'].get('loadavg_at_end')}; results in {path}"
    )


def markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md section (bench/run_all.py copies it between the markers)."""
    s, m = doc["summary"], doc["machine"]
    held = s["authenticated_sockets_held"]
    rows = [
        ["authenticated WebSockets held (DRAINED received)", f"{held:,}",
         ">= 50,000 across >= 3 processes", "yes" if held >= 50_000 and s["relays"] >= 3 else "no"],
        ["relay processes on one port (`--reuse-port`)", str(s["relays"]), ">= 3", ""],
        ["most sockets in one process (hard RLIMIT_NOFILE 20,000)",
         f"{s['max_sockets_in_one_relay']:,}", "< 20,000", ""],
        ["relay RSS per socket (all processes' growth ÷ sockets)",
         f"{s['relay_rss_kib_per_socket']} KiB", "<= 16 KiB",
         "yes" if (s["relay_rss_kib_per_socket"] or 99) <= 16 else "no"],
        ["kernel TCP memory per connection (both ends, not in RSS)",
         _kib(s["kernel_tcp_kib_per_socket_both_ends"]), "", ""],
        ["Redis memory per route (device → process)", f"{s['redis_bytes_per_route']} B", "", ""],
        ["still open at the end / failed opens",
         f"{s['still_open_at_end']:,} / {s['failed']}", "", ""],
        ["sampled held devices sent a message over HTTP → got it on their socket",
         f"{s['sample_reached']} of {s['sample_size']}", "all", ""],
        ["registrations/s (2 cores shared; one account per socket)",
         str(s["register_per_s"]), "", ""],
        ["seconds to open all sockets", str(s["open_seconds"]), "", ""],
    ]  # fmt: skip
    per = [[str(r["pid"]), f"{r['sockets']:,}", r["rss_before_mb"], r["rss_after_mb"]]
           for r in doc["relays"]]  # fmt: skip
    load = f"{m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end"
    return "\n\n".join(
        [
            f"Command: `{doc['command']}`",
            f"Machine: {common.machine_line(m)}. 1/5/15-min load average {load}: the 2 cores "
            "were shared with other engineers' test runs; the figures here are memory and "
            "counts, which the load does not change (it slows only the timings).",
            common.md_table(["metric", "value", "target", "met"], rows),
            "Per process:\n\n"
            + common.md_table(["pid", "sockets", "RSS before MB", "RSS with sockets MB"], per),
            "- The hard RLIMIT_NOFILE is 20,000 per process here and cannot be raised, so one "
            "process cannot hold 50,000; `xchat serve --reuse-port` (SO_REUSEPORT) lets "
            f"{s['relays']} processes on one port share them, on PostgreSQL + Redis.",
            "- Side by side with one process (`relay_bench.py`: 1.76 KiB per *anonymous* idle "
            f"socket at 10,000): {s['relay_rss_kib_per_socket']} KiB per authenticated socket "
            f"is {(s['relay_rss_kib_per_socket'] or 0) / 1.76:.2f}× that; it also holds the "
            "device's connection state, its Redis route registration and the backlog page "
            "it was drained with.",
            "- RSS before is measured after the registrations: each process's directory cache "
            "of all accounts (~40 MB for 50,000 here) is not counted per socket.",
        ]
    )


def _kib(v: float | None) -> str:
    return "not recorded" if v is None else f"{v} KiB"


def _same_token(first: ServerProcess) -> dict[str, str]:
    return {"XCHAT_METRICS_TOKEN": first.env["XCHAT_METRICS_TOKEN"]}


if __name__ == "__main__":
    main()
