"""Encrypted file transfer benchmark (PROTOCOL.md Part VI).

    .venv/bin/python bench/file_bench.py [--quick] [--size-mb N] [--out PATH]

Through a real relay process on loopback (``xchat.testing.running_server``) it measures:

* ``e2e``: encrypt + upload + download + decrypt of one file of ``--size-mb`` (default
  1024) MB with :mod:`xchat.client.files` (metadata stripping does not apply: random data);
* ``plain``: the same bytes uploaded and downloaded *unencrypted* through the same blob API
  and the same client code path (no cipher, no digest);
* ``aes_gcm``: raw AES-256-GCM speed of ``cryptography`` on 256 KiB chunks (the ceiling);
* ``curve``: end-to-end throughput for 1 MB, 10 MB, 100 MB, 1 GB files;
* peak RSS of the client (this process) and of the relay process.

Throughput = file bytes / wall time of the whole round trip (upload then download, run
one after the other). Results go to ``bench/results/files.json``. Both the relay's blobs
and the client's files live under ``$TMPDIR`` (``TMPDIR=/dev/shm`` takes the disk out of
the measurement; ``workdir`` and the load average are recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.client import files as xf
from xchat.client.client import Client
from xchat.testing import ServerProcess, running_server

MB = 1_000_000
TARGET_MBPS = 300.0
TARGET_RATIO = 0.5


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        left = size
        i = 0
        while left > 0:
            piece = (block[i % 997 :] + block[: i % 997])[: min(left, len(block))]
            fh.write(piece)
            left -= len(piece)
            i += 1


def rss_peak_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_self_s() -> float:
    """CPU seconds (user + system, all threads) of this process and its finished children
    (curl): robust against a loaded machine where wall time mostly measures the queue."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_pid_s(pid: int) -> float:
    """CPU seconds of the relay process so far (``/proc/PID/stat`` utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time plus client and relay CPU time of one phase."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid

    def __enter__(self) -> Meter:
        self.t, self.c, self.s = time.perf_counter(), cpu_self_s(), cpu_pid_s(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t
        self.client_cpu = cpu_self_s() - self.c
        self.server_cpu = cpu_pid_s(self.pid) - self.s


def cpu_fields(size: int, phases: dict[str, Meter]) -> dict[str, Any]:
    """CPU seconds per GB (10^9 bytes of file) of each phase, client and relay side."""
    gb = size / 1e9
    out: dict[str, Any] = {}
    for name, m in phases.items():
        out[f"{name}_client_cpu_s_per_gb"] = round(m.client_cpu / gb, 3)
        out[f"{name}_server_cpu_s_per_gb"] = round(m.server_cpu / gb, 3)
    return out


def rss_peak_pid_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rates(size: int, up: Meter, down: Meter) -> dict[str, Any]:
    return {
        "size_bytes": size,
        "upload_s": round(up.wall, 3),
        "download_s": round(down.wall, 3),
        "upload_mbps": round(size / up.wall / MB, 1),
        "download_mbps": round(size / down.wall / MB, 1),
        "mbps": round(size / (up.wall + down.wall) / MB, 1),
        **cpu_fields(size, {"upload": up, "download": down}),
    }


async def e2e(blobs: xf.BlobClient, src: Path, out: Path, pid: int) -> dict[str, Any]:
    with Meter(pid) as up:
        m = await xf.send_file(blobs, src, keep_metadata=True)
    with Meter(pid) as down:
        got = await xf.receive_file(blobs, m, out)
    got.unlink()
    return {"blob_bytes": m.blob_size, **_rates(src.stat().st_size, up, down)}


async def plain(blobs: xf.BlobClient, src: Path, out: Path, pid: int) -> dict[str, Any]:
    """Same API and client code, no encryption: the file's bytes go up and down as-is."""
    size = src.stat().st_size

    async def pieces(skip: int) -> AsyncIterator[bytes]:
        with open(src, "rb") as fh:
            fh.seek(skip)
            while piece := fh.read(xf.SEND_PIECE):
                yield piece
                await asyncio.sleep(0)

    with Meter(pid) as up:
        blob = await blobs.create(size)
        await blobs.upload(blob, size, pieces)
    target = out / "plain.bin"
    with Meter(pid) as down, open(target, "wb", buffering=1 << 20) as fh:
        await blobs.download(blob, size, fh.write, None)
    target.unlink()
    return _rates(size, up, down)


def disk(src: Path, out: Path, pid: int) -> dict[str, Any]:
    """What the work directory's file system does on its own: copy ``src`` to ``out`` with
    1 MiB writes and an fsync (the relay's write pattern), then read ``out`` back. The read
    is usually served from the page cache, as the relay's downloads are here."""
    size = src.stat().st_size
    buf = bytearray(1 << 20)
    with Meter(pid) as up, open(src, "rb", buffering=0) as fi, open(out, "wb", buffering=0) as fo:
        while n := fi.readinto(buf):
            fo.write(memoryview(buf)[:n])
        os.fsync(fo.fileno())
    with Meter(pid) as down, open(out, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    out.unlink()
    r = _rates(size, up, down)
    return {
        "size_bytes": size,
        "write_mbps": r["upload_mbps"],
        "read_mbps": r["download_mbps"],
        "mbps": r["mbps"],
    }


def curl(base_url: str, token: str, blob_id: str, src: Path, out: Path, pid: int) -> dict[str, Any]:
    """The unencrypted ceiling through the same relay: ``curl`` PATCHes the file's bytes
    into a fresh blob (streamed with ``-T``, no ``Expect: 100-continue``), then GETs them
    back into a file; the same bytes, the same API, a C HTTP stack."""
    size = src.stat().st_size
    url = f"{base_url}{xf.BLOBS}/{blob_id}"
    up_cmd = [
        "curl", "-sS", "--fail", "-o", "/dev/null", "-X", "PATCH", "-T", str(src),
        "-H", f"Authorization: Bearer {token}", "-H", "Upload-Offset: 0", "-H", "Expect:",
        "-H", "Content-Type: application/offset+octet-stream", url,
    ]  # fmt: skip
    with Meter(pid) as up:
        subprocess.run(up_cmd, check=True)
    with Meter(pid) as down:
        subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    if out.stat().st_size != size:
        raise SystemExit("curl download returned the wrong size")
    out.unlink()
    return _rates(size, up, down)


def aes_gcm_mbps(total: int = 512 << 20, chunk: int = 256 * 1024) -> float:
    aead = AESGCM(os.urandom(32))
    data = os.urandom(chunk)
    nonce = os.urandom(12)
    n = total // chunk
    t0 = time.perf_counter()
    for _ in range(n):
        aead.encrypt(nonce, data, None)  # nonce reuse is fine for a speed test only
    return round(n * chunk / (time.perf_counter() - t0) / MB, 1)


async def run(args: argparse.Namespace, srv: ServerProcess, work: Path) -> dict[str, Any]:
    profile = work / "profile"
    async with Client(profile) as c:
        await c.create_account(srv.url, use_keyring=False)
        async with xf.BlobClient.from_api(c.api, timeout=600) as blobs:
            curve_sizes = [1, 10, 50] if args.quick else [1, 10, 100, 1000]
            curve = []
            for mb in curve_sizes:
                src = work / f"curve-{mb}.bin"
                make_file(src, mb * MB)
                r = await e2e(blobs, src, work / "dl", srv.pid)
                src.unlink()
                curve.append(r)
                print(f"curve {mb:>5} MB: {r['mbps']} MB/s", file=sys.stderr)
            src = work / "main.bin"
            make_file(src, args.size_mb * MB)
            enc = await e2e(blobs, src, work / "dl", srv.pid)
            print(f"e2e   {args.size_mb} MB: {enc}", file=sys.stderr)
            pl = await plain(blobs, src, work / "dl", srv.pid)
            print(f"plain {args.size_mb} MB: {pl}", file=sys.stderr)
            dk = disk(src, work / "dl" / "disk.bin", srv.pid)
            print(f"disk  {args.size_mb} MB: {dk}", file=sys.stderr)
            blob = await blobs.create(src.stat().st_size)
            cu = curl(srv.url, str(c.api.token), blob, src, work / "dl" / "curl.bin", srv.pid)
            print(f"curl  {args.size_mb} MB: {cu}", file=sys.stderr)
    return {"curve": curve, "e2e": enc, "plain": pl, "disk": dk, "curl": cu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (development)")
    ap.add_argument("--size-mb", type=int, default=None, help="main file size in MB")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "files.json"))
    args = ap.parse_args()
    if args.size_mb is None:
        args.size_mb = 100 if args.quick else 1000
    os.environ["XCHAT_NO_KEYRING"] = "1"
    with tempfile.TemporaryDirectory(prefix="xchat-file-bench-") as tmp:
        work = Path(tmp)
        (work / "dl").mkdir()
        with running_server(
            work / "relay",
            pow_bits=2,
            rate_limits=False,
            max_request=16 << 30,
            blob_quota_bytes=64 << 30,
            blob_max_bytes=8 << 30,
            blob_quota_new_bytes=64 << 30,
        ) as srv:
            results = asyncio.run(run(args, srv, work))
            server_rss = rss_peak_pid_mb(srv.pid)
    e2e_mbps = results["e2e"]["mbps"]
    plain_mbps = results["plain"]["mbps"]
    report = {
        "bench": "files",
        "quick": args.quick,
        "machine": {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "workdir": tempfile.gettempdir(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "size_mb": args.size_mb,
        "chunk_size": xf.FILE_CHUNK_SIZE,
        **results,
        "aes_gcm_mbps": aes_gcm_mbps(),
        "rss_mb": {
            "client_peak": round(rss_peak_self_mb(), 1),
            "server_peak": None if server_rss is None else round(server_rss, 1),
        },
        "targets": {
            "e2e_mbps": TARGET_MBPS,
            "ratio_to_plain": TARGET_RATIO,
            "e2e_met": e2e_mbps >= TARGET_MBPS,
            "ratio": round(e2e_mbps / plain_mbps, 3) if plain_mbps else None,
            "ratio_met": plain_mbps > 0 and e2e_mbps / plain_mbps >= TARGET_RATIO,
            "rss_met": rss_peak_self_mb() < 100 and (server_rss or 0) < 100,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
