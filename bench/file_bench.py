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


def rss_peak_pid_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def e2e(blobs: xf.BlobClient, src: Path, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    m = await xf.send_file(blobs, src, keep_metadata=True)
    t1 = time.perf_counter()
    got = await xf.receive_file(blobs, m, out)
    t2 = time.perf_counter()
    size = src.stat().st_size
    got.unlink()
    return {
        "size_bytes": size,
        "blob_bytes": m.blob_size,
        "upload_s": round(t1 - t0, 3),
        "download_s": round(t2 - t1, 3),
        "upload_mbps": round(size / (t1 - t0) / MB, 1),
        "download_mbps": round(size / (t2 - t1) / MB, 1),
        "mbps": round(size / (t2 - t0) / MB, 1),
    }


async def plain(blobs: xf.BlobClient, src: Path, out: Path) -> dict[str, Any]:
    """Same API and client code, no encryption: the file's bytes go up and down as-is."""
    size = src.stat().st_size

    async def pieces(skip: int) -> AsyncIterator[bytes]:
        with open(src, "rb") as fh:
            fh.seek(skip)
            while piece := fh.read(xf.SEND_PIECE):
                yield piece
                await asyncio.sleep(0)

    t0 = time.perf_counter()
    blob = await blobs.create(size)
    await blobs.upload(blob, size, pieces)
    t1 = time.perf_counter()
    target = out / "plain.bin"
    with open(target, "wb", buffering=1 << 20) as fh:
        await blobs.download(blob, size, fh.write, None)
    t2 = time.perf_counter()
    target.unlink()
    return {
        "size_bytes": size,
        "upload_mbps": round(size / (t1 - t0) / MB, 1),
        "download_mbps": round(size / (t2 - t1) / MB, 1),
        "mbps": round(size / (t2 - t0) / MB, 1),
    }


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
                r = await e2e(blobs, src, work / "dl")
                src.unlink()
                curve.append(r)
                print(f"curve {mb:>5} MB: {r['mbps']} MB/s", file=sys.stderr)
            src = work / "main.bin"
            make_file(src, args.size_mb * MB)
            enc = await e2e(blobs, src, work / "dl")
            print(f"e2e   {args.size_mb} MB: {enc}", file=sys.stderr)
            pl = await plain(blobs, src, work / "dl")
            print(f"plain {args.size_mb} MB: {pl}", file=sys.stderr)
    return {"curve": curve, "e2e": enc, "plain": pl}


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
