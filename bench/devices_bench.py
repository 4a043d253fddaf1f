"""Linked devices: the cost of a 1:1 message to many devices, and of a history transfer.

Usage: ``.venv/bin/python bench/devices_bench.py [--quick] [--runs N] [--messages N] [--out PATH]``

Workloads, against a real relay process (``xchat.testing.running_server``, PoW 2 bits, rate
limits off), with real SDK clients linked through the real linking flow (PROTOCOL Part VII):

- fan-out: the recipient account has 5 devices, the sender has 4 other devices (9 target
  devices). Sessions are warmed up first (a message each way), then N texts of 100
  characters are sent. Per message: client CPU (``time.process_time`` around
  ``send_text``: content encoding, 9 ratchet steps on the 32-byte key, one AES-GCM body,
  ``seal_multi``, the SEND_MULTI frame; the relay runs in another process), the number of
  upload frames (counted at the send channel: must be 1), and bytes uploaded (the length of
  the SEND_MULTI frame). Compared with (a) the same text to a one-device account from a
  one-device sender (one SEND frame: "the ciphertext"), so per extra device = (fan-out bytes
  - one-device bytes) / 8, and (b) Signal's approach, a full sealed ciphertext per device
  in one request (9 x the one-device envelope).
- history transfer: an account with 10,000 stored messages (texts of 20-200 characters,
  written straight into its store) links a new device: seconds from ``device add`` to the new
  device having imported everything, split into approve (export, encrypt, upload) and link
  completion (download, decrypt, import), and the archive's bytes on the wire.
- history with an attachment: an account holding one 32 MB attachment (random bytes, so
  incompressible) links a new device with ``--max-attachments 64``: seconds, client CPU
  (both devices run in this process), the archive's bytes, and the peak of Python memory
  allocations (``tracemalloc``) from ``device add`` to the new device holding the file.
  The attachment travels as its own file blob (PROTOCOL Part VII §6). The same workload on
  the tree before that change (inline base64 in the archive, commit aaa5b97:
  ``git archive aaa5b97 src | tar -x -C /tmp/old && python bench/devices_bench.py --src
  /tmp/old/src --only-attachments --out bench/results/devices_attach_before.json``) gives
  the "before" column, read from that file.

Results go to stdout and ``bench/results/devices.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: ``--src DIR`` runs the workloads against another source tree (a before/after figure)
_SRC = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--src"), None)
sys.path.insert(0, _SRC or str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
BEFORE = ROOT / "bench" / "results" / "devices_attach_before.json"
ATTACHMENT_BYTES = 32 * 1024 * 1024

import common  # noqa: E402
from xchat.client import content as ct  # noqa: E402
from xchat.client import transport  # noqa: E402
from xchat.client.client import Client  # noqa: E402
from xchat.client.model import now_ms  # noqa: E402
from xchat.crypto.keys import IdentityKeyPair  # noqa: E402
from xchat.protocol import frames as fr  # noqa: E402
from xchat.testing import running_server  # noqa: E402

TEXT = "x" * 100


class Counter:
    """Counts upload frames (SEND and SEND_MULTI) and their bytes, at the send channel."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        orig_multi = transport.SendChannel.send_multi
        orig_send = transport.SendChannel.send
        counter = self

        async def send_multi(self: Any, shared: bytes, dests: Any) -> int:
            n: int = await orig_multi(self, shared, dests)
            counter.frames += 1
            counter.bytes += n
            return n

        async def send(self: Any, dests: Any) -> Any:
            counter.frames += 1
            counter.bytes += len(fr.encode_frame(fr.Send(0, tuple(dests))))
            return await orig_send(self, dests)

        transport.SendChannel.send_multi = send_multi  # type: ignore[method-assign]
        transport.SendChannel.send = send  # type: ignore[method-assign]


async def link(existing: Client, path: Path, url: str, name: str) -> Client:
    new = Client(path)
    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        new.link_device(url, name=name, on_code=lambda c, _u: code.set_result(c))
    )
    await existing.approve_device(await code)
    await task
    return new


async def fanout(url: str, root: Path, runs: int, counter: Counter) -> dict[str, Any]:
    r1 = Client(root / "r1")
    await r1.create_account(url, "recv")
    recv = [r1] + [await link(r1, root / f"r{i}", url, f"r{i}") for i in range(2, 6)]
    s1 = Client(root / "s1")
    await s1.create_account(url, "send")
    sender = [s1] + [await link(s1, root / f"s{i}", url, f"s{i}") for i in range(2, 6)]
    one_a, one_b = Client(root / "oa"), Client(root / "ob")
    await one_a.create_account(url, "onea")
    await one_b.create_account(url, "oneb")
    # warm up: sessions in both directions become normal (non-PreKey) messages
    for _ in range(2):
        await s1.send_text(r1.address, "warm")
        for c in recv + sender[1:]:
            await c.receive()
        await r1.send_text(s1.address, "warm back")
        for c in sender + recv[1:]:
            await c.receive()
    await one_a.send_text(one_b.address, "warm")
    await one_b.receive()
    await one_b.send_text(one_a.address, "warm")
    await one_a.receive()
    cpu, frames, sizes, single = [], [], [], []
    for _ in range(runs):
        counter.frames = counter.bytes = 0
        t = time.process_time()
        await s1.send_text(r1.address, TEXT)
        cpu.append((time.process_time() - t) * 1000)
        frames.append(counter.frames)
        sizes.append(counter.bytes)
        counter.frames = counter.bytes = 0
        await one_a.send_text(one_b.address, TEXT)
        single.append(counter.bytes)
    for c in recv + sender + [one_a, one_b]:
        await c.close()
    fan_bytes = statistics.median(sizes)
    one_bytes = statistics.median(single)
    devices = 9
    per_extra = (fan_bytes - one_bytes) / (devices - 1)
    signal_like = one_bytes + (devices - 1) * (one_bytes - 30)  # one frame, 9 envelopes
    return {
        "devices": devices,
        "cpu_ms": {"median": statistics.median(cpu), "spread_pct": common.spread(cpu)},
        "upload_frames": max(frames),
        "bytes_uploaded": fan_bytes,
        "one_device_bytes": one_bytes,
        "per_extra_device_bytes": per_extra,
        "per_device_ciphertext_bytes": signal_like,
        "ratio_vs_per_device": signal_like / fan_bytes,
    }


def _fill(client: Client, n: int, peer: str) -> None:
    rnd = random.Random(1)
    t = now_ms() - n * 1000
    store = client.store
    store.ensure_contact(peer, t)
    with store.transaction():
        for i in range(n):
            text = "".join(rnd.choices(string.ascii_letters + " ", k=rnd.randint(20, 200)))
            msg = ct.Content(id=ct.new_message_id(), type="text", ts=t + i * 1000, text=text)
            direction = "out" if i % 2 else "in"
            store.add_message(msg.id, peer, direction, msg.ts, "delivered", msg.encode(), t)


async def history(url: str, root: Path, messages: int) -> dict[str, Any]:
    old = Client(root / "h1")
    await old.create_account(url, "hist")
    peer = IdentityKeyPair.generate().public.address()
    _fill(old, messages, peer)
    new = Client(root / "h2")
    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        new.link_device(url, name="new", on_code=lambda c, _u: code.set_result(c))
    )
    text = await code
    t0 = time.perf_counter()
    approval = await old.approve_device(text)
    t1 = time.perf_counter()
    res = await task
    t2 = time.perf_counter()
    assert res.messages == messages, res
    for c in (old, new):
        await c.close()
    return {
        "messages": messages,
        "seconds": t2 - t0,
        "approve_seconds": t1 - t0,
        "archive_bytes": approval.history_bytes,
        "bytes_per_message": approval.history_bytes / messages,
        "imported": res.messages,
    }


async def attachment_history(url: str, root: Path, size: int) -> dict[str, Any]:
    old = Client(root / "a1")
    await old.create_account(url, "att")
    peer = IdentityKeyPair.generate().public.address()
    _fill(old, 10, peer)
    target = old.store.history(peer, 1)[-1]
    src = root / "big.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    old.messaging.record_file(peer, target.id, str(src))
    new = Client(root / "a2")
    totals: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        totals[phase] = total

    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        new.link_device(url, name="new", on_code=lambda c, _u: code.set_result(c))
    )
    text = await code
    del data
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    approval = await old.approve_device(text, progress=progress, max_attachments=2 * size)
    await task
    t1, c1 = time.perf_counter(), time.process_time()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    copied = new.messaging.state.rs.files(peer, target.id)
    assert len(copied) == 1 and Path(copied[0]).read_bytes() == src.read_bytes()
    for c in (old, new):
        await c.close()
    return {
        "attachment_bytes": size,
        "seconds": t1 - t0,
        "cpu_seconds": c1 - c0,
        "archive_bytes": totals["upload"],
        "wire_bytes": approval.history_bytes,
        "peak_traced_bytes": peak,
    }


def _attachment_rows(a: dict[str, Any], before: dict[str, Any] | None) -> list[list[str]]:
    mb = a["attachment_bytes"] // 2**20

    def row(name: str, key: str, fmt: Any) -> list[str]:
        now = fmt(a[key])
        if before is None:
            return [name, now, "", ""]
        was = before[key]
        return [name, now, fmt(was), f"{was / a[key]:.1f}x" if a[key] else ""]

    def mib(v: float) -> str:
        return f"{v / 2**20:.1f} MiB"

    return [
        row(f"history with one {mb} MB attachment: seconds", "seconds", lambda v: f"{v:.2f} s"),
        row("  client CPU (both devices)", "cpu_seconds", lambda v: f"{v:.2f} s"),
        row("  archive blob", "archive_bytes", lambda v: f"{v:,} B"),
        row("  peak Python allocations (tracemalloc)", "peak_traced_bytes", mib),
    ]


def markdown(doc: dict[str, Any]) -> str:
    f, h = doc["fanout"], doc["history"]
    m = doc["machine"]
    load = f"start {m.get('loadavg_at_start')}, end {m.get('loadavg_at_end')}"
    rows = [
        [
            "client CPU per message",
            f"{f['cpu_ms']['median']:.2f} ms (± {f['cpu_ms']['spread_pct']:.0f} %)",
            "≤ 3 ms",
            "yes" if f["cpu_ms"]["median"] <= 3 else "no",
        ],
        [
            "upload frames per message",
            f["upload_frames"],
            "1",
            "yes" if f["upload_frames"] == 1 else "no",
        ],
        ["bytes uploaded (9 devices)", f"{f['bytes_uploaded']:.0f}", "", ""],
        ["same text, one device (the ciphertext)", f"{f['one_device_bytes']:.0f}", "", ""],
        [
            "per extra device",
            f"{f['per_extra_device_bytes']:.0f} B",
            "≤ 200 B",
            "yes" if f["per_extra_device_bytes"] <= 200 else "no",
        ],
        [
            "a full ciphertext per device (Signal's way)",
            f"{f['per_device_ciphertext_bytes']:.0f}",
            "",
            f"{f['ratio_vs_per_device']:.2f}x more than ours",
        ],
        [f"history transfer, {h['messages']:,} messages", f"{h['seconds']:.2f} s", "", ""],
        ["  of which approve (export, encrypt, upload)", f"{h['approve_seconds']:.2f} s", "", ""],
        [
            "archive bytes on the wire",
            f"{h['archive_bytes']:,} ({h['bytes_per_message']:.0f} B/message)",
            "",
            "",
        ],
    ]
    before = doc.get("attachments_before")
    attach = common.md_table(
        ["figure", "now (own blobs)", "before (inline base64)", "before / now"],
        _attachment_rows(doc["attachments"], before),
    )
    return "\n\n".join(
        [
            f"Command: `{doc['command']}`",
            f"Machine: {common.machine_line(m)}; 1-min load average {load}.",
            common.md_table(["figure", "value", "target", "met"], rows),
            attach,
            "A 1:1 message to a recipient with 5 devices while the sender has 4 others "
            "(PROTOCOL Part VII §4): the 100-character text is encrypted once; each device "
            "gets a 90-byte ratchet message carrying the key and a 49-byte sealed header. "
            "CPU is the sending client's process time (the relay is another process). "
            "The history archive is zlib-compressed JSON, AES-256-GCM encrypted, uploaded once "
            "to the blob store and downloaded by the new device (PROTOCOL Part VII §6). "
            "Attachments go as their own file blobs (streamed from and to disk) and the "
            "archive names them: the second table links a device holding one incompressible "
            'attachment; "before" is the same workload on the tree that carried '
            "attachments base64 inside the in-memory archive (commit aaa5b97, "
            "bench/results/devices_attach_before.json"
            + (f", load {before.get('load')}" if before else ", not measured")
            + "). Seconds and peak memory are of this process, which runs both devices.",
            "Peers: Signal encrypts and uploads a full sealed ciphertext per device (the "
            '"Signal\'s way" row, computed from our one-device envelope for the same text); '
            "WhatsApp's multi-device does the same per device. Sending once with a per-device "
            f"key message costs {f['ratio_vs_per_device']:.2f}x fewer bytes for 9 devices here. "
            "Every figure varies with the machine's load (a shared 2-core machine): earlier "
            "runs measured 4.4 ms CPU per message at load 8 before the session-parse cache "
            "and 2.1 ms after at load 13, and the 10,000-message history transfer took 1.45 s "
            "at load 8 and 4.84 s at load 13 for the same 1.73 MB archive.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--src", type=Path, default=None, help="Run against this source tree.")
    ap.add_argument("--only-attachments", action="store_true")
    args = ap.parse_args()
    runs = 10 if args.quick else args.runs
    messages = 1000 if args.quick else args.messages
    os.environ.setdefault("XCHAT_NO_KEYRING", "1")
    doc = common.new_result("devices")
    counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_server(root / "srv", pow_bits=2, rate_limits=False) as srv:
            if args.only_attachments:
                got = asyncio.run(attachment_history(srv.url, root, ATTACHMENT_BYTES))
                got["load"] = [round(x, 2) for x in os.getloadavg()]
                out = args.out or BEFORE
                out.write_text(json.dumps(got, indent=2) + "\n")
                print(json.dumps(got, indent=2))
                return
            doc["fanout"] = asyncio.run(fanout(srv.url, root, runs, counter))
            doc["history"] = asyncio.run(history(srv.url, root, messages))
            doc["attachments"] = asyncio.run(attachment_history(srv.url, root, ATTACHMENT_BYTES))
    if BEFORE.exists():
        doc["attachments_before"] = json.loads(BEFORE.read_text())
    common.finish_result(doc)
    f, h = doc["fanout"], doc["history"]
    doc["summary"] = {
        "fanout_cpu_ms": round(f["cpu_ms"]["median"], 3),
        "fanout_bytes": f["bytes_uploaded"],
        "per_extra_device_bytes": round(f["per_extra_device_bytes"], 1),
        "history_seconds": round(h["seconds"], 2),
        "history_bytes": h["archive_bytes"],
        "attachment_history_seconds": round(doc["attachments"]["seconds"], 2),
        "attachment_archive_bytes": doc["attachments"]["archive_bytes"],
        "attachment_peak_traced_bytes": doc["attachments"]["peak_traced_bytes"],
    }
    doc["markdown"] = markdown(doc)
    path = common.write_json("devices", doc, out=args.out)
    if not args.quick and args.out is None and args.src is None:
        title = "### Linked devices: fan-out and history transfer\n\n"
        common.write_section(ROOT / "BENCHMARKS.md", "devices", title + doc["markdown"])
    print(doc["markdown"])
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
