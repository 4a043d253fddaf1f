"""The raw floor: a minimal `websockets` forwarder on uvloop, no storage, no auth.

Why: the relay's throughput target is stated as a fraction of what a bare forwarder built on
the same stack (Python, asyncio/uvloop, `websockets`) can push on this machine. Anything
the relay does beyond this (auth, sealed-sender parsing, durable commit, queues) shows up as
the gap between the two. See bench/README.md.

The forwarder is a separate server process (`--serve`); this process is the load generator.
Clients connect to ws://127.0.0.1:PORT/<client-id>. Every frame is

    kind u8 (1 = message, 2 = ack) || peer u32 || seq u32 || t_ns u64 || payload

and the server only rewrites `peer` (destination on the way in, source on the way out)
before pushing it to the peer's socket.

Modes:
- four-frame (like XChat's relay): sender → server (send), server → receiver (push),
  receiver → server (device ack), server → sender (sender ack). 256-byte payload, 100 pairs.
- bare: one frame forwarded per message (send → push, no acks), to compare with the
  ≈60,000 frames/s reference in ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

import common

HEADER = struct.Struct(">BIIQ")  # kind, peer, seq, t_ns
MSG, ACK = 1, 2
PAYLOAD_BYTES = 256
WS_OPTS: dict[str, Any] = {"compression": None, "ping_interval": None, "max_size": 2**16}

# --------------------------------------------------------------------------- server


async def serve_forever() -> None:
    """Forward every frame to the socket named in its `peer` field; print the port."""
    conns: dict[int, ServerConnection] = {}

    async def handler(ws: ServerConnection) -> None:
        cid = int(ws.request.path.rsplit("/", 1)[1]) if ws.request else 0
        conns[cid] = ws
        src = cid.to_bytes(4, "big")
        try:
            async for frame in ws:
                if not isinstance(frame, bytes) or len(frame) < HEADER.size:
                    continue
                dest = conns.get(int.from_bytes(frame[1:5], "big"))
                if dest is not None:
                    with contextlib.suppress(Exception):
                        await dest.send(frame[:1] + src + frame[5:])
        finally:
            conns.pop(cid, None)

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, "127.0.0.1", 0, **WS_OPTS) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening {port}", flush=True)
        await stop


# --------------------------------------------------------------------------- load generator


@dataclass
class Stats:
    """Per-window counters and latency samples (ms)."""

    sent: int = 0
    delivered: int = 0
    acked: int = 0
    deliver_ms: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    last_event: float = 0.0


@dataclass
class Client:
    cid: int
    ws: ClientConnection
    peer: int
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))


class LoadGen:
    def __init__(self, url: str, pairs: int, ack: bool, window: int) -> None:
        self.url, self.pairs, self.ack, self.window = url, pairs, ack, window
        self.senders: list[Client] = []
        self.receivers: list[Client] = []
        self.stats = Stats()
        self.tasks: list[asyncio.Task[None]] = []
        self.payload = b"x" * PAYLOAD_BYTES

    async def connect(self) -> None:
        for i in range(self.pairs):
            s_id, r_id = 2 * i + 1, 2 * i + 2
            s_ws = await connect(f"{self.url}/{s_id}", **WS_OPTS)
            r_ws = await connect(f"{self.url}/{r_id}", **WS_OPTS)
            s = Client(s_id, s_ws, r_id, asyncio.Semaphore(self.window))
            r = Client(r_id, r_ws, s_id)
            self.senders.append(s)
            self.receivers.append(r)
            self.tasks.append(asyncio.create_task(self._read_sender(s)))
            self.tasks.append(asyncio.create_task(self._read_receiver(r)))

    async def close(self) -> None:
        for c in self.senders + self.receivers:
            await c.ws.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _read_receiver(self, c: Client) -> None:
        st_ref = self
        async for frame in c.ws:
            assert isinstance(frame, bytes)
            now = time.perf_counter_ns()
            st = st_ref.stats
            st.delivered += 1
            st.deliver_ms.append((now - HEADER.unpack_from(frame)[3]) / 1e6)
            st.last_event = now / 1e9
            if self.ack:
                # Device ack: header only, addressed back to the sender.
                await c.ws.send(bytes([ACK]) + frame[1 : HEADER.size])

    async def _read_sender(self, c: Client) -> None:
        async for frame in c.ws:
            assert isinstance(frame, bytes)
            now = time.perf_counter_ns()
            st = self.stats
            st.acked += 1
            st.rtt_ms.append((now - HEADER.unpack_from(frame)[3]) / 1e6)
            st.last_event = now / 1e9
            c.window.release()

    def frame(self, c: Client, seq: int, t_ns: int) -> bytes:
        return HEADER.pack(MSG, c.peer, seq & 0xFFFFFFFF, t_ns) + self.payload

    async def drain(self, timeout: float = 10.0) -> None:
        deadline = time.perf_counter() + timeout
        target = "acked" if self.ack else "delivered"
        while time.perf_counter() < deadline and getattr(self.stats, target) < self.stats.sent:
            await asyncio.sleep(0.01)

    async def closed_loop(self, duration: float) -> float:
        """Each sender keeps `window` messages in flight (bare mode: no limit but TCP)."""
        start = time.perf_counter()
        deadline = start + duration

        async def run(c: Client) -> None:
            seq = 0
            while time.perf_counter() < deadline:
                if self.ack:
                    await c.window.acquire()
                self.stats.sent += 1
                await c.ws.send(self.frame(c, seq, time.perf_counter_ns()))
                seq += 1

        await asyncio.gather(*(run(c) for c in self.senders))
        await self.drain()
        return start

    async def open_loop(self, duration: float, rate: float) -> float:
        """Offered load: messages due at start + k/rate, round-robin over pairs.

        One ticker sends every message that is due, then sleeps to the next due time; the
        timestamp in the frame is the scheduled time, so a late send counts as latency.
        """
        start_ns = time.perf_counter_ns()
        total = int(duration * rate)
        step_ns = 1e9 / rate
        k = 0
        n = len(self.senders)
        while k < total:
            now = time.perf_counter_ns()
            due = min(total, int((now - start_ns) / step_ns) + 1)
            while k < due:
                c = self.senders[k % n]
                self.stats.sent += 1
                await c.ws.send(self.frame(c, k // n, int(start_ns + k * step_ns)))
                k += 1
            next_ns = start_ns + k * step_ns
            delay = (next_ns - time.perf_counter_ns()) / 1e9
            # uvloop timers have 1 ms resolution: shorter sleeps would spin. Sending in
            # 1 ms batches is fine, the frames still carry their own scheduled times.
            await asyncio.sleep(max(delay, 0.001))
        await self.drain()
        return start_ns / 1e9


async def run_window(
    lg: LoadGen, server_pid: int, run: Callable[[], Any], offered: float | None
) -> dict[str, Any]:
    lg.stats = Stats()
    cpu0 = common.proc_cpu_seconds(server_pid)
    me0 = time.process_time()
    start = await run()
    cpu1 = common.proc_cpu_seconds(server_pid)
    st = lg.stats
    elapsed = max(st.last_event - start, 1e-9)
    done = st.acked if lg.ack else st.delivered
    out: dict[str, Any] = {
        "offered": offered,
        "sent": st.sent,
        "completed": done,
        "elapsed_s": round(elapsed, 3),
        "achieved": round(done / elapsed, 1),
        "frames_per_s": round(done * (4 if lg.ack else 1) / elapsed, 1),
        "server_cpu_util": round((cpu1 - cpu0) / elapsed, 3),
        "loadgen_cpu_util": round((time.process_time() - me0) / elapsed, 3),
        "server_cpu_us_per_msg": round((cpu1 - cpu0) * 1e6 / done, 2) if done else None,
    }
    out.update(common.latency_summary(st.deliver_ms))
    if lg.ack:
        rtt = common.latency_summary(st.rtt_ms)
        out["rtt_p50_ms"], out["rtt_p99_ms"] = rtt["p50_ms"], rtt["p99_ms"]
    return out


async def measure_mode(args: argparse.Namespace, url: str, pid: int, ack: bool) -> dict[str, Any]:
    name = "four-frame" if ack else "bare"
    lg = LoadGen(url, args.pairs, ack, args.window)
    await lg.connect()
    try:
        await run_window(lg, pid, lambda: lg.closed_loop(args.warmup), None)
        print(f"[{name}] saturation {args.duration:.0f} s, {args.pairs} pairs...", flush=True)
        sat = await run_window(lg, pid, lambda: lg.closed_loop(args.duration), None)
        print(
            f"  {sat['achieved']} msgs/s, {sat['frames_per_s']} frames/s, "
            f"p50 {sat['p50_ms']} p99 {sat['p99_ms']} ms, server cpu {sat['server_cpu_util']}"
        )
        rates = args.rate or [round(sat["achieved"] * f, 1) for f in args.fractions]
        points = []
        for rate in rates:
            pt = await run_window(
                lg, pid, functools.partial(lg.open_loop, args.duration, rate), rate
            )
            print(
                f"  offered {rate}: achieved {pt['achieved']}, "
                f"p50 {pt['p50_ms']} p99 {pt['p99_ms']} ms"
            )
            points.append(pt)
    finally:
        await lg.close()
    curve = [
        {
            "offered": p["offered"],
            "achieved": p["achieved"],
            "p50_ms": p["p50_ms"],
            "p99_ms": p["p99_ms"],
        }
        for p in points
    ]
    curve.append(
        {
            "offered": sat["achieved"],
            "achieved": sat["achieved"],
            "p50_ms": sat["p50_ms"],
            "p99_ms": sat["p99_ms"],
            "closed_loop": True,
        }
    )
    curve.sort(key=lambda c: c["offered"])
    return {"saturation": sat, "points": points, "curve": curve}


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"forwarder did not start: {line!r}")
    return proc, f"ws://127.0.0.1:{int(line.split()[1])}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--window", type=int, default=8, help="messages in flight per sender")
    ap.add_argument("--mode", choices=["four-frame", "bare", "both"], default="both")
    ap.add_argument("--rate", type=float, action="append", help="offered msgs/s (repeatable)")
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.1, 0.25, 0.5, 0.75, 0.9])
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/forwarder.json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.warmup = min(args.warmup, 0.5)
        args.fractions = [0.25, 0.5]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_forever())
        return 0
    doc = common.new_result("forwarder", quick=args.quick)
    try:
        proc, url = start_server()
    except RuntimeError as e:
        print(f"forwarder_bench: {e}", file=sys.stderr)
        return 3
    modes: dict[str, Any] = {}
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for ack in (True, False):
                name = "four-frame" if ack else "bare"
                if args.mode in (name, "both"):
                    modes[name] = runner.run(measure_mode(args, url, proc.pid, ack))
        rss = common.proc_rss_bytes(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    doc["params"] = {
        "pairs": args.pairs,
        "duration_s": args.duration,
        "window": args.window,
        "payload_bytes": PAYLOAD_BYTES,
        "header_bytes": HEADER.size,
    }
    doc["modes"] = modes
    four, bare = modes.get("four-frame"), modes.get("bare")
    main_mode = four or bare
    assert main_mode is not None
    sat = main_mode["saturation"]
    doc["summary"] = {
        "msgs_per_s": sat["achieved"],
        "frames_per_s": sat["frames_per_s"],
        "p50_ms": sat["p50_ms"],
        "p99_ms": sat["p99_ms"],
        "server_cpu_util": sat["server_cpu_util"],
        "server_cpu_us_per_msg": sat["server_cpu_us_per_msg"],
        "cpu_ms_per_msg": (
            round(sat["server_cpu_us_per_msg"] / 1000, 4) if sat["server_cpu_us_per_msg"] else None
        ),
        "bare_frames_per_s": bare["saturation"]["achieved"] if bare else None,
        "server_rss_mb": round(rss / 2**20, 1),
    }
    doc["curve"] = main_mode["curve"]
    if four and bare:
        doc["extra_curves"] = {"forwarder (bare, 1 frame/msg)": bare["curve"]}
    doc["notes"] = [
        "Server and load generator are separate processes, each one uvloop event loop.",
        "msgs_per_s (four-frame) counts messages whose sender ack came back.",
        "If loadgen_cpu_util is near 1.0 the load generator, not the server, was the limit.",
    ]
    path = common.write_json("forwarder", common.finish_result(doc), out=args.out)
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
