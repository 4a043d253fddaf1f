"""Relay benchmark: durable end-to-end throughput, latency vs offered load, server CPU per
message, idle-socket memory, and (``--connections N``) how many sockets one process holds.

    .venv/bin/python bench/relay_bench.py [--quick] [--connections 50000] [--profile]

A real server process (``xchat serve``, PoW 1 bit, rate limits off) and 100 sender/recipient
pairs. Two load processes: *recipients* hold 100 authenticated sockets and ACK every DELIVER
at once; *senders* hold 100 anonymous sockets (sealed sender, delivery-token access) and
send one 256-byte envelope per SEND. A message counts when its recipient has it:
send → durable group commit → DELIVER (+ SEND_RESULT) → ACK → delete.

- **Closed loop (max)**: each sender socket keeps ``--window`` SENDs in flight.
- **Open loop (curve)**: one 1 ms ticker sends at a fixed offered rate, round-robin over the
  sockets, with no in-flight limit (so a slow server cannot slow the schedule: no
  coordinated omission); latency is measured from the *scheduled* send time.
- Latency = recipient receive time − the send time stamped in the first 8 content bytes
  (CLOCK_MONOTONIC is system-wide), for every message in the measurement window.
- CPU: utime+stime of the server and of both load processes from /proc/<pid>/stat over the
  window; ``server_cpu_us_per_msg`` = server CPU ÷ messages delivered in the window.

The load generator speaks RFC 6455 itself over raw asyncio protocols (uvloop) so it costs
less CPU than the server it measures; its client frames use the all-zero masking key (legal
on the wire; the server still unmasks every byte). Then idle sockets (10,000, from several
127.0.0.x source addresses) and the server's RSS per socket. Writes bench/results/relay.json
(schema: bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import struct
import subprocess
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
from xchat import testing
from xchat.testing import running_server

PAIRS = 100
CONTENT = 256
PER_SOURCE_IP = 10_000  # sockets per 127.0.0.x source address (ephemeral ports ≈ 28k each)
PER_LOAD_PROCESS = 15_000  # client sockets per load process (RLIMIT_NOFILE may be 20k)
MAX_FAILURES = 256  # per load process: after this many failed opens, stop trying


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in (1_048_576, hard):
        if lim == resource.RLIM_INFINITY:
            lim = 1_048_576
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim, max(lim, hard)))
            return lim
        except (ValueError, OSError):
            continue
    return soft


def register(c: httpx.Client) -> dict[str, Any]:
    """A minimal account (no one-time prekeys) with a delivery token."""
    a = testing.register(c, n_ec=0, n_kem=0)
    return {"address": a.address, "token": a.token, "delivery_token": a.delivery_token}


# --- a minimal RFC 6455 client over a raw asyncio protocol --------------------------------


def client_frame(payload: bytes) -> bytes:
    """A final binary client frame, masked with the all-zero key (payload unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class WsClient(asyncio.Protocol):
    """Opens with a handshake, then hands each complete server message to ``on_message``."""

    def __init__(
        self, host: str, token: str | None, on_message: Callable[[bytes], None] | None
    ) -> None:
        self.host = host
        self.token = token
        self.on_message = on_message
        self.transport: Any = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.is_open = False
        self.lost = False
        self.on_batch: Callable[[], None] | None = None  # after each data_received

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        transport.write(
            (
                f"GET /api/v1/ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{auth}\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.is_open:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.opened.set_exception(RuntimeError(buf[:200].decode("latin-1")))
                self.transport.close()
                return
            self.is_open = True
            self.opened.set_result(None)
            buf = buf[i + 4 :]
        pos, n = 0, len(buf)
        on_message = self.on_message
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            end = head + length
            if end > n:
                break
            if buf[pos] & 0x0F == 2 and on_message is not None:
                on_message(buf[head:end])
            pos = end
        self.buf = buf[pos:] if pos < n else b""
        if self.on_batch is not None:
            self.on_batch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before open"))


async def ws_open(
    host: str,
    port: int,
    token: str | None = None,
    on_message: Callable[[bytes], None] | None = None,
    local_addr: tuple[str, int] | None = None,
) -> WsClient:
    loop = asyncio.get_running_loop()
    _t, proto = await loop.create_connection(
        lambda: WsClient(f"{host}:{port}", token, on_message), host, port, local_addr=local_addr
    )
    await asyncio.wait_for(proto.opened, 15)
    return proto


def quiet_gc() -> None:
    """The load processes' collector off for good (after setup): a collection pause in a
    load process would show up as relay latency. They allocate per message but make no
    reference cycles that matter over a run; everything alive now is frozen."""
    gc.collect()
    gc.freeze()
    gc.disable()


# --- recipients process -------------------------------------------------------------------


def recipients_main(host: str, port: int, tokens: list[str], conn: Any) -> None:
    import uvloop

    uvloop.run(_recipients(host, port, tokens, conn))


async def _recipients(host: str, port: int, tokens: list[str], conn: Any) -> None:
    recs: list[tuple[int, int, int]] = []  # (recv_ns, latency_ns, from_actual_send_ns)
    drained = [0]
    socks: list[WsClient] = []
    unpack_item = struct.Struct(">16sQI").unpack_from

    def make_handler(idx: int) -> Callable[[bytes], None]:
        def on_message(m: bytes) -> None:
            kind = m[0]
            if kind == 0x11:
                now = time.monotonic_ns()
                n = int.from_bytes(m[1:3], "big")
                pos = 3
                ids = []
                for _ in range(n):
                    eid, _ts, ln = unpack_item(m, pos)
                    pos += 28
                    recs.append(
                        (
                            now,
                            now - int.from_bytes(m[pos : pos + 8], "big"),
                            now - int.from_bytes(m[pos + 8 : pos + 16], "big"),
                        )
                    )
                    pos += ln
                    ids.append(eid)
                socks[idx].transport.write(
                    client_frame(b"\x02" + n.to_bytes(2, "big") + b"".join(ids))
                )
            elif kind == 0x12:
                drained[0] += 1

        return on_message

    for i, t in enumerate(tokens):
        socks.append(await ws_open(host, port, t, make_handler(i)))
    while drained[0] < len(socks):
        await asyncio.sleep(0.01)
    quiet_gc()
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "count":
            conn.send(len(recs))
        elif cmd[0] == "collect":  # latencies (ns) of deliveries received in [t0, t1)
            _, t0, t1 = cmd
            conn.send([(lat, lat2) for (t, lat, lat2) in recs if t0 <= t < t1])
            recs.clear()
        elif cmd[0] == "stop":
            conn.send("bye")
            return


# --- senders process ----------------------------------------------------------------------


def senders_main(host: str, port: int, dests: list[dict[str, Any]], conn: Any) -> None:
    import uvloop

    uvloop.run(_senders(host, port, dests, conn))


async def _senders(host: str, port: int, dests: list[dict[str, Any]], conn: Any) -> None:
    state: dict[str, Any] = {"errors": 0, "sent": 0, "closed_loop": False, "end_ns": 0}
    inflight = [0] * len(dests)
    owed = [0] * len(dests)

    def make_handler(idx: int) -> Callable[[bytes], None]:
        def on_message(m: bytes) -> None:
            if m[0] != 0x10:
                return
            if m[5:7] != b"\x00\xc8":
                state["errors"] += 1
            inflight[idx] -= 1
            if state["closed_loop"]:
                owed[idx] += 1

        return on_message

    def make_batch(idx: int) -> Callable[[], None]:
        def on_batch() -> None:  # closed loop: one write per socket per read
            k = owed[idx]
            if not k:
                return
            owed[idx] = 0
            now = time.monotonic_ns()
            if now >= state["end_ns"]:
                return
            inflight[idx] += k
            state["sent"] += k
            socks[idx].transport.write(b"".join([frame(idx, now) for _ in range(k)]))

        return on_batch

    socks = [await ws_open(host, port, None, make_handler(i)) for i in range(len(dests))]
    for i, sock in enumerate(socks):
        sock.on_batch = make_batch(i)
    heads = []
    for d in dests:
        addr = d["address"].encode()
        head = b"\x00\x01" + bytes([len(addr)]) + addr + b"\x01\x00\x10" + d["delivery_token"]
        heads.append(head + b"\x00\x01\x00\x00\x00\x01")  # n_env=1, device 1
    pad = os.urandom(CONTENT - 16)
    prefix = os.urandom(8)
    counter = [0]
    req = [0]
    tail = CONTENT.to_bytes(4, "big")
    quiet_gc()

    def frame(i: int, stamp_ns: int) -> bytes:
        counter[0] += 1
        req[0] = (req[0] + 1) & 0xFFFFFFFF
        body = b"".join(
            (
                b"\x01",
                req[0].to_bytes(4, "big"),
                heads[i],
                prefix,
                counter[0].to_bytes(8, "big"),
                tail,
                stamp_ns.to_bytes(8, "big"),
                time.monotonic_ns().to_bytes(8, "big"),
                pad,
            )
        )
        return client_frame(body)

    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "stop":
            conn.send("bye")
            return
        _, rate, window, start_at, end_at = cmd
        state.update(errors=0, sent=0)
        owed[:] = [0] * len(owed)
        n = len(socks)
        end_ns = int(end_at * 1e9)
        while time.monotonic() < start_at:
            await asyncio.sleep(0.001)
        if rate == 0:  # closed loop: keep `window` SENDs in flight per socket
            state["end_ns"] = end_ns
            state["closed_loop"] = True
            now = time.monotonic_ns()
            for i in range(n):
                inflight[i] += window
                state["sent"] += window
                socks[i].transport.write(b"".join([frame(i, now) for _ in range(window)]))
            await asyncio.sleep(max(0.0, end_at - time.monotonic()))
            state["closed_loop"] = False
        else:  # open loop: fixed schedule, 1 ms ticks, round-robin over sockets
            interval_ns = 1e9 / rate
            t0 = int(start_at * 1e9)
            k = 0
            rr = 0
            while True:
                now = time.monotonic_ns()
                if now >= end_ns:
                    break
                due = int((now - t0) / interval_ns) + 1
                per: dict[int, list[bytes]] = {}
                while k < due:
                    stamp = t0 + int(k * interval_ns)
                    per.setdefault(rr, []).append(frame(rr, stamp))
                    inflight[rr] += 1
                    rr = (rr + 1) % n
                    k += 1
                for i, frames in per.items():
                    socks[i].transport.write(b"".join(frames))
                state["sent"] = k
                await asyncio.sleep(0.001)
        # wait (bounded) for outstanding SEND_RESULTs
        deadline = time.monotonic() + 30
        while sum(inflight) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        conn.send({"sent": state["sent"], "errors": state["errors"]})


# --- load windows -------------------------------------------------------------------------


class Load:
    """The two load processes, kept running across windows."""

    def __init__(self, srv: Any, accounts: list[dict[str, Any]]) -> None:
        ctx = mp.get_context("spawn")
        host, port = "127.0.0.1", srv.port
        self.srv = srv
        recipients = accounts[:PAIRS]
        self.rconn, rchild = ctx.Pipe()
        self.sconn, schild = ctx.Pipe()
        self.rp = ctx.Process(
            target=recipients_main, args=(host, port, [r["token"] for r in recipients], rchild)
        )
        self.sp = ctx.Process(target=senders_main, args=(host, port, recipients, schild))
        self.rp.start()
        self.sp.start()
        assert self.rconn.recv() == "ready" and self.sconn.recv() == "ready"

    def window(
        self, rate: float, window: int, duration: float, warmup: float, profile: Path | None
    ) -> dict[str, Any]:
        delivered_before = self._ask(("count",))
        start_at = time.monotonic() + 0.5
        t0, t1 = start_at + warmup, start_at + warmup + duration
        self.sconn.send(("run", rate, window, start_at, t1 + 0.05))
        pids = {"server": self.srv.pid, "senders": self.sp.pid, "recipients": self.rp.pid}
        spy = None
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = {k: common.proc_cpu_seconds(p) for k, p in pids.items()}
        th0 = thread_cpu(self.srv.pid)
        rq0 = thread_runq_wait(self.srv.pid)
        psi0 = cpu_pressure_us()
        w0 = time.monotonic()
        if profile is not None and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(self.srv.pid),
                    "--duration",
                    str(int(duration)),
                    "--rate",
                    "250",
                    "--threads",
                    "--gil",
                    "--format",
                    "raw",
                    "-o",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = {k: common.proc_cpu_seconds(p) for k, p in pids.items()}
        th1 = thread_cpu(self.srv.pid)
        rq1 = thread_runq_wait(self.srv.pid)
        psi1 = cpu_pressure_us()
        wall = time.monotonic() - w0
        sres = self.sconn.recv()
        # let the tail land, then take latencies of what arrived inside [t0, t1)
        deadline = time.monotonic() + 30
        while self._ask(("count",)) - delivered_before < sres["sent"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        pairs = self._ask(("collect", int(t0 * 1e9), int(t1 * 1e9)))
        lats = sorted(p[0] for p in pairs)
        lats_actual = sorted(p[1] for p in pairs)
        if spy is not None:
            spy.wait(60)
        store = server_summaries(self.srv)
        n = len(lats)
        cpu = {k: cpu1[k] - cpu0[k] for k in pids}

        def pct(p: float) -> float | None:
            return round(common.percentile(lats, p) / 1e6, 3) if lats else None

        return {
            "offered": rate or None,
            "closed_loop": rate == 0,
            "window": window if rate == 0 else None,
            "msgs_per_s": round(n / duration, 1),
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "p999_ms": pct(99.9),
            "max_ms": pct(100),
            # from the actual send instead of the schedule: the gap is load-generator lag
            "p50_from_send_ms": (
                round(common.percentile(lats_actual, 50) / 1e6, 3) if lats_actual else None
            ),
            "p99_from_send_ms": (
                round(common.percentile(lats_actual, 99) / 1e6, 3) if lats_actual else None
            ),
            "delivered_in_window": n,
            "sent_total": sres["sent"],
            "send_errors": sres["errors"],
            "server_cpu_util": round(cpu["server"] / wall, 3),
            "server_cpu_us_per_msg": round(cpu["server"] / n * 1e6, 1) if n else None,
            "server_thread_us_per_msg": (
                {k: round((v - th0.get(k, 0.0)) / n * 1e6, 1) for k, v in th1.items()}
                if n
                else None
            ),
            # per second of wall time, how long each server thread was runnable but not
            # running (waiting for a CPU): > 0.1 means the machine, not the relay, was short
            "server_runqueue_wait_per_s": {
                k: round((v - rq0.get(k, 0.0)) / wall, 3) for k, v in rq1.items()
            },
            # machine-wide share of time some task was waiting for a CPU (PSI "some")
            "cpu_pressure_some": (
                round((psi1 - psi0) / 1e6 / wall, 3)
                if psi0 is not None and psi1 is not None
                else None
            ),
            "senders_cpu_util": round(cpu["senders"] / wall, 3),
            "recipients_cpu_util": round(cpu["recipients"] / wall, 3),
            "store_txn_ms_p50": store.get("store_transaction_seconds_0.5"),
            "store_txn_ms_p99": store.get("store_transaction_seconds_0.99"),
            "store_commit_ms_p50": store.get("store_commit_seconds_0.5"),
            "store_commit_ms_p99": store.get("store_commit_seconds_0.99"),
            "store_batch_ops_p50": store.get("store_batch_ops_0.5"),
            "store_batch_ops_p99": store.get("store_batch_ops_0.99"),
            "loadgen_cpu_us_per_msg": (
                round((cpu["senders"] + cpu["recipients"]) / n * 1e6, 1) if n else None
            ),
        }

    def _ask(self, cmd: tuple[Any, ...]) -> Any:
        self.rconn.send(cmd)
        return self.rconn.recv()

    def close(self) -> None:
        for c in (self.sconn, self.rconn):
            c.send(("stop",))
            c.recv()
        self.sp.join(10)
        self.rp.join(10)


# --- idle / many connections --------------------------------------------------------------


def conns_main(port: int, n: int, first_ip: int, q: Any, hold: Any) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_conns(port, n, first_ip, q, hold))


async def _conns(port: int, n: int, first_ip: int, q: Any, hold: Any) -> None:
    socks: list[WsClient] = []
    sem = asyncio.Semaphore(256)
    failed = [0]
    first_error: list[str] = []

    async def one(i: int) -> None:
        src = f"127.0.0.{first_ip + i // PER_SOURCE_IP}"
        async with sem:
            if failed[0] >= MAX_FAILURES:  # the server is at its limit: stop knocking
                failed[0] += 1
                return
            try:
                socks.append(await ws_open("127.0.0.1", port, local_addr=(src, 0)))
            except Exception as exc:
                failed[0] += 1
                if not first_error:
                    first_error.append(repr(exc)[:200])

    step = 1000
    for k in range(0, n, step):
        await asyncio.gather(*(one(i) for i in range(k, min(n, k + step))))
        q.put(("progress", len(socks)))
    q.put(("opened", len(socks), failed[0], first_error[0] if first_error else None))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, hold.wait)
    alive = sum(1 for s in socks if not s.lost)
    for s in socks:
        s.transport.abort()
    q.put(("alive", alive))


def open_connections(srv: Any, n: int, checkpoints: list[int]) -> dict[str, Any]:
    """Open ``n`` idle anonymous sockets from 127.0.0.2.. (PER_SOURCE_IP each) in load
    processes of PER_LOAD_PROCESS sockets; record server RSS at each checkpoint."""
    ctx = mp.get_context("spawn")
    hold = ctx.Event()
    # one keep-alive HTTP connection opened first: at the descriptor limit the server can
    # accept no new connection, but can still answer on this one
    probe = httpx.Client(base_url=srv.url, timeout=10, headers=srv.metrics_headers)
    probe.get("/healthz")
    rss0 = common.proc_rss_bytes(srv.pid)
    kmem0 = tcp_kernel_mem_kib()
    procs = []
    opened = failed = 0
    errors: list[str] = []
    rss_curve = [{"connections": 0, "rss_mb": round(rss0 / 2**20, 1)}]
    t = time.monotonic()
    done = 0
    for start in range(0, n, PER_LOAD_PROCESS):
        count = min(PER_LOAD_PROCESS, n - start)
        q = ctx.Queue()
        first_ip = 2 + start // PER_SOURCE_IP
        p = ctx.Process(target=conns_main, args=(srv.port, count, first_ip, q, hold))
        p.start()
        procs.append((p, q))
        while True:
            msg = q.get(timeout=600)
            if msg[0] == "progress":
                total = done + msg[1]
                if total in checkpoints:
                    time.sleep(0.5)
                    rss = common.proc_rss_bytes(srv.pid)
                    rss_curve.append({"connections": total, "rss_mb": round(rss / 2**20, 1)})
                continue
            _, got, bad, err = msg
            opened += got
            failed += bad
            if err:
                errors.append(err)
            done += got
            break
        if failed >= MAX_FAILURES:  # no point starting more load processes
            failed += n - start - count
            break
    elapsed = time.monotonic() - t
    time.sleep(1.0)
    rss1 = common.proc_rss_bytes(srv.pid)
    kmem1 = tcp_kernel_mem_kib()
    gauge = server_gauge(probe, "ws_connections")
    try:
        healthy = probe.get("/healthz").status_code == 200
    except httpx.HTTPError:
        healthy = False
    probe.close()
    server_alive = os.path.exists(f"/proc/{srv.pid}")
    hold.set()
    alive = 0
    for p, q in procs:
        while True:
            msg = q.get(timeout=120)
            if msg[0] == "alive":
                alive += msg[1]
                break
        p.join(30)
    if rss_curve[-1]["connections"] != opened:
        rss_curve.append({"connections": opened, "rss_mb": round(rss1 / 2**20, 1)})
    return {
        "requested": n,
        "connections": opened,
        "failed": failed,
        "first_error": errors[0] if errors else None,
        "server_ws_connections_gauge": gauge,
        "still_open_at_end": alive,
        "server_healthy_while_held": healthy and server_alive,
        "rss_before_kib": rss0 // 1024,
        "rss_after_kib": rss1 // 1024,
        "kib_per_connection": round((rss1 - rss0) / 1024 / opened, 2) if opened else None,
        "open_seconds": round(elapsed, 2),
        # both ends of every socket are on this machine: client and server side together
        "tcp_kernel_mem_delta_kib": (
            kmem1 - kmem0 if kmem0 is not None and kmem1 is not None else None
        ),
        "rss_curve": rss_curve,
    }


def tcp_kernel_mem_kib() -> int | None:
    """Kernel memory of all TCP sockets (pages in /proc/net/sockstat), in KiB: not part of
    any process's RSS, reported next to it for completeness."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1]) * resource.getpagesize() // 1024
    return None


def server_gauge(client: httpx.Client, name: str) -> float | None:
    try:
        text = client.get("/metrics").text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(f"xchat_{name} "):
            return float(line.split()[1])
    return None


def cpu_pressure_us() -> int | None:
    """Total µs some task waited for a CPU (/proc/pressure/cpu, PSI), machine-wide."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def thread_runq_wait(pid: int) -> dict[str, float]:
    """Seconds each OS thread (by name) spent runnable but waiting for a CPU
    (/proc/<pid>/task/*/schedstat, field 2): how much the machine starved the server."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            wait_ns = int((task / "schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[name] = out.get(name, 0.0) + wait_ns / 1e9
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per OS thread name of a process (/proc/<pid>/task/*/stat)."""
    out: dict[str, float] = {}
    tick = common.clock_ticks()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def server_summaries(srv: Any) -> dict[str, float]:
    """Quantiles of the store's recent group commits from /metrics (commit time in ms)."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(srv.url + "/metrics", timeout=10, headers=srv.metrics_headers).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for name in ("store_transaction_seconds", "store_commit_seconds", "store_batch_ops"):
            prefix = f'xchat_{name}{{quantile="'
            if line.startswith(prefix):
                q = line[len(prefix) :].split('"', 1)[0]
                v = float(line.rsplit(" ", 1)[1])
                out[f"{name}_{q}"] = round(v * 1000, 2) if "seconds" in name else v
    return out


def server_nofile(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


# --- profile digest -----------------------------------------------------------------------


def digest_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self-time and inclusive-time tops from py-spy's collapsed stacks (event-loop thread
    and store writer thread separated)."""
    by_thread: dict[str, dict[str, dict[str, int]]] = {}
    totals: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = "writer" if "xchat-store-writer" in frames[0] or "_run (xchat" in stack else "loop"
        totals[thread] = totals.get(thread, 0) + count
        d = by_thread.setdefault(thread, {"self": {}, "incl": {}})
        leaf = frames[-1]
        d["self"][leaf] = d["self"].get(leaf, 0) + count
        for f in set(frames[1:]):
            d["incl"][f] = d["incl"].get(f, 0) + count
    out: dict[str, Any] = {"samples": totals}
    for thread, d in by_thread.items():
        tot = totals[thread]
        for kind in ("self", "incl"):
            ranked = sorted(d[kind].items(), key=lambda kv: -kv[1])[:top]
            out[f"{thread}_{kind}"] = [[f, round(100 * c / tot, 1)] for f, c in ranked]
    return out


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--profile",
        choices=["max", "half"],
        default=None,
        help="py-spy the server during the max-load or the half-load window",
    )
    ap.add_argument("--connections", type=int, default=0, help="also hold N sockets (50000)")
    ap.add_argument("--window", type=int, default=8, help="closed-loop SENDs in flight/socket")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for server")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument(
        "--compare-asgi",
        action="store_true",
        help="also measure idle sockets with XCHAT_WS_FAST=0 (uvicorn + Starlette)",
    )
    ap.add_argument(
        "--half-repeats",
        type=int,
        default=None,
        help="extra runs of the half-load point (median p99 reported; default 2, quick 0)",
    )
    ap.add_argument("--output", default=None, help="result name (default relay)")
    args = ap.parse_args()
    duration, warmup, idle_n = (3.0, 1.0, 1000) if args.quick else (8.0, 2.0, 10_000)
    if args.duration:
        duration = args.duration
    fractions = [0.5] if args.quick else [0.1, 0.25, 0.5, 0.75, 0.9]
    low_point = 50.0  # ≈ Synapse's max: the latency ratio is read here (bench/README.md)
    raise_nofile()
    # Load from 127.0.0.x: rate limits off and no cap on sockets per IP bucket (PROTOCOL III §6).
    # Commit first (XCHAT_DELIVERY_HOLD_MS=0): this benchmark is the durable path as its
    # target defines it (send -> commit -> deliver -> ack -> delete); with the default,
    # mail ACKed within the hold is never written (PROTOCOL Part III §7), and
    # tail_bench.py measures that design beside this one. --server-env can override it.
    env: dict[str, Any] = {"rate_limits": False, "max_sockets_per_ip": 0, "delivery_hold_ms": 0}
    for kv in args.server_env:
        k, _, v = kv.partition("=")
        env[k] = v
    doc = common.new_result(
        "relay",
        quick=args.quick,
        params={
            "pairs": PAIRS,
            "payload_bytes": CONTENT,
            "window": args.window,
            "duration_s": duration,
            "warmup_s": warmup,
            "idle_connections": idle_n,
            "server_env": env,
        },
    )
    profile_path = common.RESULTS_DIR / "relay_profile.txt" if args.profile else None
    with tempfile.TemporaryDirectory() as tmp, running_server(tmp, pow_bits=1, **env) as srv:
        if not args.skip_load:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                accounts = [register(c) for _ in range(PAIRS)]
            load = Load(srv, accounts)
            try:
                mx = load.window(
                    0,
                    args.window,
                    duration,
                    warmup,
                    profile_path if args.profile == "max" else None,
                )
                print("max", json.dumps(mx), flush=True)
                points = []
                rates = [low_point] + [round(f * mx["msgs_per_s"]) for f in fractions]
                for rate in rates:
                    spy = profile_path if args.profile == "half" and rate == rates[-1] else None
                    if args.profile == "half" and not args.quick:
                        spy = profile_path if rate == rates[3] else None
                    pt = load.window(rate, args.window, duration, warmup, spy)
                    print("open", json.dumps(pt), flush=True)
                    points.append(pt)
                half0 = min(points, key=lambda p: abs(p["offered"] - mx["msgs_per_s"] / 2))
                repeats = [half0]
                extra = (
                    args.half_repeats if args.half_repeats is not None else (0 if args.quick else 2)
                )
                for _ in range(extra):
                    pt = load.window(half0["offered"], args.window, duration, warmup, None)
                    print("half", json.dumps(pt), flush=True)
                    repeats.append(pt)
            finally:
                load.close()
            # the machine is shared: report the repeat with the median p99, keep them all
            half = sorted(repeats, key=lambda p: p["p99_ms"] or 0)[len(repeats) // 2]
            doc["half_load_repeats"] = repeats
            doc["max_load"] = mx
            doc["half_load"] = half
            doc["open_loop"] = points
            doc["curve"] = [
                {
                    "offered": p["offered"],
                    "achieved": p["msgs_per_s"],
                    "p50_ms": p["p50_ms"],
                    "p99_ms": p["p99_ms"],
                }
                for p in points
            ] + [
                {
                    "offered": mx["msgs_per_s"],
                    "achieved": mx["msgs_per_s"],
                    "p50_ms": mx["p50_ms"],
                    "p99_ms": mx["p99_ms"],
                    "closed_loop": True,
                }
            ]
            if profile_path is not None and profile_path.exists():
                doc["profile"] = digest_profile(profile_path)
    # Memory on a fresh server: after the load windows freed memory would be reused by new
    # sockets and hide their real cost.
    checkpoints = sorted({1000, 2500, 5000, 10_000, 20_000, 30_000, 40_000, 50_000})
    with tempfile.TemporaryDirectory() as tmp, running_server(tmp, pow_bits=1, **env) as srv:
        doc["server_nofile_limit"] = server_nofile(srv.pid)
        idle = open_connections(srv, idle_n, [c for c in checkpoints if c <= idle_n])
        doc["idle"] = idle
        doc["rss_curve"] = idle["rss_curve"]
    if args.compare_asgi:
        asgi_env = {**env, "ws_fast": False}
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_server(tmp, pow_bits=1, **asgi_env) as srv,
        ):
            doc["idle_asgi"] = open_connections(
                srv, idle_n, [c for c in checkpoints if c <= idle_n]
            )
    if args.connections:
        with tempfile.TemporaryDirectory() as tmp, running_server(tmp, pow_bits=1, **env) as srv:
            doc["many"] = open_connections(
                srv, args.connections, [c for c in checkpoints if c <= args.connections]
            )
    summary: dict[str, Any] = {}
    if "max_load" in doc:
        mx, half = doc["max_load"], doc["half_load"]
        summary.update(
            msgs_per_s=mx["msgs_per_s"],
            p50_ms=mx["p50_ms"],
            p99_ms=mx["p99_ms"],
            half_load_offered=half["offered"],
            half_load_p50_ms=half["p50_ms"],
            half_load_p99_ms=half["p99_ms"],
            half_load_p99_ms_all=[p["p99_ms"] for p in doc["half_load_repeats"]],
            half_load_server_runqueue_wait_per_s=half["server_runqueue_wait_per_s"],
            half_load_cpu_pressure_some=half["cpu_pressure_some"],
            max_load_server_runqueue_wait_per_s=mx["server_runqueue_wait_per_s"],
            cpu_ms_per_msg=(
                round(mx["server_cpu_us_per_msg"] / 1000, 4)
                if mx["server_cpu_us_per_msg"]
                else None
            ),
            server_cpu_us_per_msg=mx["server_cpu_us_per_msg"],
            loadgen_cpu_us_per_msg=mx["loadgen_cpu_us_per_msg"],
        )
    summary["rss_kb_per_idle_socket"] = doc["idle"]["kib_per_connection"]
    summary["idle_connections"] = doc["idle"]["connections"]
    if "many" in doc:
        summary["max_connections_held"] = doc["many"]["connections"]
        summary["max_connections_rss_mb"] = round(doc["many"]["rss_after_kib"] / 1024, 1)
    doc["summary"] = summary
    doc["targets"] = {
        "msgs_per_s": ">= 10000",
        "half_load_p99_ms": "<= 25",
        "rss_kb_per_idle_socket": "<= 16 (at 10,000)",
        "max_connections_held": ">= 50000 in one process",
    }
    common.finish_result(doc)
    path = common.write_json(args.output or "relay", doc)
    print_table(doc, path)


def print_table(doc: dict[str, Any], path: Path) -> None:
    s = doc["summary"]

    def f(x: Any, d: int = 1) -> str:
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{d}f}"

    rows = []
    if "msgs_per_s" in s:
        rows += [
            ("durable end-to-end msgs/s (closed loop)", f(s["msgs_per_s"], 0), ">= 10000"),
            ("p50 / p99 at max load (ms)", f"{f(s['p50_ms'])} / {f(s['p99_ms'])}", ""),
            (
                f"p50 / p99 at half load ({f(s['half_load_offered'], 0)}/s) (ms)",
                f"{f(s['half_load_p50_ms'])} / {f(s['half_load_p99_ms'])}",
                "p99 <= 25",
            ),
            ("server CPU µs per message (max load)", f(s["server_cpu_us_per_msg"]), ""),
            ("load generator CPU µs per message", f(s["loadgen_cpu_us_per_msg"]), ""),
        ]
    rows.append(
        (
            f"KiB per idle WebSocket ({s['idle_connections']:,})",
            f(s["rss_kb_per_idle_socket"]),
            "<= 16",
        )
    )
    if "max_connections_held" in s:
        rows.append(
            (
                f"sockets held by one process (of {doc['many']['requested']:,})",
                f"{s['max_connections_held']:,}",
                ">= 50000",
            )
        )
    print(f"{'metric':<48}{'value':>16}{'target':>12}")
    for name, val, target in rows:
        print(f"{name:<48}{val:>16}{target:>12}")
    for pt in doc.get("open_loop", []):
        print(
            f"  offered {pt['offered']:>8,.0f}/s -> {pt['msgs_per_s']:>8,.0f}/s  "
            f"p50 {f(pt['p50_ms'])} ms  p99 {f(pt['p99_ms'])} ms  "
            f"server {f(pt['server_cpu_us_per_msg'])} µs/msg"
        )
    print(
        f"loadavg {doc['machine'].get('loadavg_at_start')} -> "
        f"{doc['machine'].get('loadavg_at_end')}; results in {path}"
    )


if __name__ == "__main__":
    main()
