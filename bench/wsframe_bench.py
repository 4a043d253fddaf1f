"""Microbenchmark of the fast path's per-frame cost, in process: RFC 6455 parse + unmask of
client frames and serialization of server frames, through ``FastConnection`` exactly as the
relay drives it, but with the relay's message handler and the socket stubbed out.

    .venv/bin/python bench/wsframe_bench.py [--frames 200000] [--size 300] [--batch 8]
        [--wsfast OLD.py]   # e.g. git show REV:src/xchat/server/wsfast.py > OLD.py

Why: ``relay_bench.py`` measures the whole relay (storage, fan-out, two load processes) and
its throughput swings with the load of a shared machine; this isolates the WebSocket layer,
reports CPU time (``time.process_time``) per frame, and runs in a few seconds, so a change to
the framing code can be compared before/after on the same machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import importlib.util
import types

from xchat.server import wsfast as current_wsfast

MASK = b"\x11\x22\x33\x44"


def client_frame(payload: bytes) -> bytes:
    """One masked, final binary client frame (7- or 16-bit length)."""
    n = len(payload)
    head = bytes((0x82, 0x80 | n)) if n < 126 else bytes((0x82, 0xFE)) + n.to_bytes(2, "big")
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


class _Limiter:
    enabled = False


class _Config:
    max_request = 1 << 20
    ws_outbox_limit = 8 << 20


class _Relay:
    config = _Config()
    send_limiter = _Limiter()
    send_bytes_limiter = _Limiter()


class _Transport:
    """Enough of an asyncio transport for FastConnection; counts what is written."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str) -> Any:
        return None

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def load_wsfast(path: str | None) -> types.ModuleType:
    """The fast path under test: this tree's, or another version's file (same interface:
    ``Hub(ping_interval)`` and ``FastConnection(relay, hub, transport, device, state, direct)``),
    which is how a before/after pair is measured in one session."""
    if path is None:
        return current_wsfast
    spec = importlib.util.spec_from_file_location("wsfast_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(wsfast: types.ModuleType, frames: int, size: int, batch: int) -> dict[str, Any]:
    class Conn(wsfast.FastConnection):  # type: ignore[name-defined,misc]
        received = 0

        def handle_message(self, data: bytes) -> tuple[int, str] | None:
            self.received += 1
            return None

    hub = wsfast.Hub(0)
    transport = _Transport()
    conn = Conn(_Relay(), hub, transport, None, None, False)
    chunk = client_frame(os.urandom(size)) * batch
    rounds = frames // batch
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        conn.data_received(chunk)
    c1 = time.process_time()
    assert conn.received == rounds * batch, conn.received
    out = [os.urandom(size)] * batch
    c2 = time.process_time()
    for _ in range(rounds):
        conn.out.extend(out)
        conn.out_bytes += size * batch
        conn.flush()
    c3, t1 = time.process_time(), time.perf_counter()
    n = rounds * batch
    return {
        "frames": n,
        "payload_bytes": size,
        "batch": batch,
        "parse_cpu_ns_per_frame": round((c1 - c0) * 1e9 / n),
        "serialize_cpu_ns_per_frame": round((c3 - c2) * 1e9 / n),
        "wall_s": round(t1 - t0, 2),
        "loadavg": list(os.getloadavg()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="best of N runs is reported")
    ap.add_argument("--wsfast", default=None, help="measure this wsfast.py instead")
    args = ap.parse_args()
    wsfast = load_wsfast(args.wsfast)

    async def go() -> list[dict[str, Any]]:
        return [run(wsfast, args.frames, args.size, args.batch) for _ in range(args.repeat)]

    runs = asyncio.run(go())
    best = min(runs, key=lambda r: r["parse_cpu_ns_per_frame"] + r["serialize_cpu_ns_per_frame"])
    best["parse_runs"] = [r["parse_cpu_ns_per_frame"] for r in runs]
    best["serialize_runs"] = [r["serialize_cpu_ns_per_frame"] for r in runs]
    best["wsfast"] = args.wsfast or "this tree"
    print(json.dumps(best))


if __name__ == "__main__":
    main()
