"""Microbenchmark of the fast path's per-frame cost, in process: RFC 6455 parse + unmask of
client frames and serialization of server frames, through ``FastConnection`` exactly as the
relay drives it, but with the relay's message handler and the socket stubbed out; side by
side in the same run with the named peer, ``websockets``' own sans-I/O ``ServerProtocol``
(its ``Frame.parse`` / ``Frame.serialize``, the parser the relay's other WebSocket path
uses), and with this tree's bare sans-I/O ``ServerConnection`` (protocol/ws_connection.py).

    .venv/bin/python bench/wsframe_bench.py [--frames 200000] [--size 300] [--batch 8]
        [--repeat 5] [--quick]
        [--wsfast OLD.py]   # e.g. git show REV:src/xchat/server/wsfast.py > OLD.py

Why: ``relay_bench.py`` measures the whole relay (storage, fan-out, two load processes) and
its throughput swings with the load of a shared machine; this isolates the WebSocket layer,
reports CPU time (``time.process_time``) per frame, and runs in a few seconds, so a change to
the framing code can be compared before/after on the same machine. Prints one JSON line and
writes bench/results/wsframe.json (with the Markdown ``bench/run_all.py`` puts in the
``wsframe`` section of BENCHMARKS.md); ``--wsfast`` runs print only (an experiment does
not replace the recorded figures).

The three sides do the same work per frame: take masked client bytes, find frame
boundaries, unmask, hand each binary message to a callback; and turn a list of payloads
into server frames written to a (stub) transport. Figures are the median of ``--repeat``
runs, CPU ns per frame.
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

from websockets.server import ServerProtocol

import common
from xchat.protocol.ws_connection import ServerConnection
from xchat.server import wsfast as current_wsfast

SIDES = ("xchat_fastpath", "xchat_sansio", "websockets")
#: the handshake a browser sends; the peer's sans-I/O protocol needs it before frames
HANDSHAKE = (
    b"GET /api/v1/ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

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


def run_fastpath(wsfast: types.ModuleType, frames: int, size: int, batch: int) -> dict[str, Any]:
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
    return _row(frames, size, batch, c1 - c0, c3 - c2, t1 - t0)


def run_sansio(frames: int, size: int, batch: int) -> dict[str, Any]:
    """This tree's bare ``ServerConnection``: receive_data + next_event until None; then
    send_binary + data_to_send, written to the stub transport."""
    conn = ServerConnection(1 << 20)
    transport = _Transport()
    chunk = client_frame(os.urandom(size)) * batch
    rounds = frames // batch
    received = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        conn.receive_data(chunk)
        while conn.next_event() is not None:
            received += 1
    c1 = time.process_time()
    assert received == rounds * batch, received
    out = [os.urandom(size)] * batch
    c2 = time.process_time()
    for _ in range(rounds):
        conn.send_binary(out)
        transport.write(conn.data_to_send())
    c3, t1 = time.process_time(), time.perf_counter()
    return _row(frames, size, batch, c1 - c0, c3 - c2, t1 - t0)


def run_websockets(frames: int, size: int, batch: int) -> dict[str, Any]:
    """The peer: ``websockets.server.ServerProtocol`` (sans-I/O) after a real handshake;
    receive_data + events_received (each a ``Frame`` from ``Frame.parse``); then one
    send_binary per payload + data_to_send, written to the stub transport."""
    proto = ServerProtocol(max_size=1 << 20)
    proto.receive_data(HANDSHAKE)
    (request,) = proto.events_received()
    proto.send_response(proto.accept(request))
    proto.data_to_send()
    transport = _Transport()
    chunk = client_frame(os.urandom(size)) * batch
    rounds = frames // batch
    received = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        proto.receive_data(chunk)
        for _frame in proto.events_received():
            received += 1
    c1 = time.process_time()
    assert received == rounds * batch, received
    out = [os.urandom(size)] * batch
    c2 = time.process_time()
    for _ in range(rounds):
        for payload in out:
            proto.send_binary(payload)
        transport.write(b"".join(proto.data_to_send()))
    c3, t1 = time.process_time(), time.perf_counter()
    return _row(frames, size, batch, c1 - c0, c3 - c2, t1 - t0)


def _row(
    frames: int, size: int, batch: int, parse_s: float, ser_s: float, wall_s: float
) -> dict[str, Any]:
    n = (frames // batch) * batch
    return {
        "frames": n,
        "payload_bytes": size,
        "batch": batch,
        "parse_cpu_ns_per_frame": round(parse_s * 1e9 / n),
        "serialize_cpu_ns_per_frame": round(ser_s * 1e9 / n),
        "wall_s": round(wall_s, 2),
        "loadavg": list(os.getloadavg()),
    }


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for what in ("parse", "serialize"):
        vals = [r[f"{what}_cpu_ns_per_frame"] for r in runs]
        out[what] = {
            "median": common.median(vals),
            "spread_pct": round(100 * common.spread(vals), 1),
            "runs": vals,
        }
    return out


def markdown(doc: dict[str, Any]) -> str:
    sides = doc["sides"]
    m = doc["machine"]
    rows = []
    for what in ("parse", "serialize"):
        peer = sides["websockets"][what]["median"]
        for side, label in (
            ("xchat_fastpath", "XChat fast path (`server/wsfast.py`, as the relay drives it)"),
            ("xchat_sansio", "XChat sans-I/O `ServerConnection` (`protocol/ws_connection.py`)"),
            ("websockets", f"peer: websockets {m['versions'].get('websockets')} `ServerProtocol`"),
        ):
            s = sides[side][what]
            ratio = f"{peer / s['median']:.2f}×" if side != "websockets" else "1×"
            rows.append([what, label, s["median"], s["spread_pct"], ratio])
    p = doc["params"]
    table = common.md_table(
        ["", "implementation", "CPU ns / frame (median)", "± %", "websockets ÷ this"], rows
    )
    return "\n\n".join(
        [
            f"Command: `{doc['command']}`",
            f"Machine: {common.machine_line(m)}. 1/5/15-min load average "
            f"{m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end: the cores "
            "are shared, so wall time is noisy; the figures are CPU time of this process "
            "(`time.process_time`), the portable ones.",
            f"Load: {p['frames']:,} masked binary client frames of {p['size']} B, "
            f"{p['batch']} per read (as one TCP read brings several), then as many server "
            f"frames of {p['size']} B, {p['batch']} per write; median of {p['repeat']} runs "
            "per side, all sides in this one run. Parse = find the frame, check it, unmask, "
            "deliver the message; serialize = header + payload to the transport.",
            table,
            "- The ratio column is websockets' CPU per frame divided by this row's: above 1× "
            "this implementation is cheaper per frame.",
            "- The peer is given the same batches and a stub transport; it also does "
            "things the relay's paths do elsewhere or not at all (its `Frame` objects, "
            "per-frame extension hooks, the close/ping state of its `Protocol`).",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="median of N runs is reported")
    ap.add_argument("--quick", action="store_true", help="50,000 frames, 3 runs")
    ap.add_argument("--wsfast", default=None, help="measure this wsfast.py instead")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.repeat = 50_000, 3
    wsfast = load_wsfast(args.wsfast)
    doc = common.new_result("wsframe")
    doc["params"] = {
        "frames": args.frames,
        "size": args.size,
        "batch": args.batch,
        "repeat": args.repeat,
        "wsfast": args.wsfast or "this tree",
    }

    async def go() -> dict[str, list[dict[str, Any]]]:  # FastConnection wants a loop
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for _ in range(args.repeat):  # interleaved: a load change hits every side alike
            runs["xchat_fastpath"].append(run_fastpath(wsfast, args.frames, args.size, args.batch))
            runs["xchat_sansio"].append(run_sansio(args.frames, args.size, args.batch))
            runs["websockets"].append(run_websockets(args.frames, args.size, args.batch))
        return runs

    runs = asyncio.run(go())
    doc["sides"] = {side: _side(r) for side, r in runs.items()}
    ws, fp = doc["sides"]["websockets"], doc["sides"]["xchat_fastpath"]
    doc["summary"] = {
        f"{what} CPU ns/frame: fast path / websockets": (
            f"{fp[what]['median']:.0f} / {ws[what]['median']:.0f}"
        )
        for what in ("parse", "serialize")
    }
    common.finish_result(doc)
    doc["markdown"] = markdown(doc)
    if args.wsfast is None:
        common.write_json("wsframe", doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "markdown"}))


if __name__ == "__main__":
    main()
