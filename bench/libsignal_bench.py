"""XChat pairwise sessions vs libsignal (Signal's own library, through its Node binding).

Usage: ``.venv/bin/python bench/libsignal_bench.py [--quick] [--runs N] [--core C]``

Same workloads and message size as ``crypto_bench.py`` (256-byte messages): one-direction
pairs, ping-pong, and session setup with a Kyber prekey (initiate from a bundle, encrypt the
first message, the responder decrypts it; no one-time EC prekey on either side).

How it runs: this process pins itself to one core (``--core``, default the last one) before
anything else; the Node child inherits the affinity, so both libraries run on the same core,
one at a time. Runs are interleaved (XChat, libsignal, XChat, ...) so background load hits
both alike, and every figure is reported by wall clock and by CPU time.

What it measures, plainly: libsignal 0.103 *through Node* (``@signalapp/libsignal-client``
from the npm registry, prebuilt native code inside the package). Every call crosses the
N-API bridge and its store callbacks are JavaScript (in memory), so both are part of its
cost here, as they are in Signal Desktop. libsignal 0.103 runs the SPQR triple ratchet on
every message (XChat has no PQ ratchet yet) and uses round-3 Kyber1024 (XChat: ML-KEM-1024,
FIPS 203). The numbers compare two complete libraries as applications use them, not two
ratchet designs at equal work.

Node is required; without it the benchmark writes a result saying it was skipped. The
package is installed on first use into ``bench/libsignal/node_modules`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import crypto_bench

LIBSIGNAL_VERSION = "0.103.0"
NODE_DIR = common.BENCH_DIR / "libsignal"
WORKLOADS = (
    ("one-direction", "pairs/s", crypto_bench.xchat_one_direction, 20000),
    ("ping-pong", "msgs/s", crypto_bench.xchat_ping_pong, 4000),
    ("setup", "setups/s", crypto_bench.xchat_setup, 400),
)


def ensure_libsignal(node: str) -> str:
    """Install the pinned npm package if missing; return its version."""
    pkg = NODE_DIR / "node_modules" / "@signalapp" / "libsignal-client" / "package.json"
    if not pkg.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("libsignal_bench: npm not found (Node is present)")
        print(f"installing @signalapp/libsignal-client@{LIBSIGNAL_VERSION} ...", flush=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--silent",
                f"@signalapp/libsignal-client@{LIBSIGNAL_VERSION}",
            ],
            cwd=NODE_DIR,
            check=True,
        )
    return str(json.loads(pkg.read_text())["version"])


def libsignal_run(node: str, workload: str, n: int) -> tuple[float, float]:
    out = subprocess.run(
        [node, str(NODE_DIR / "bench.mjs"), workload, str(n)],
        cwd=NODE_DIR,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    return float(doc["wall_per_s"]), float(doc["cpu_per_s"])


def _med(values: list[float]) -> float:
    return statistics.median(values)


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Command: `{results['command']}`",
        f"Ran {results['finished_at']}; both pinned to core {results['core']} of "
        f"{m['cores']}; 1-min load avg start {m['loadavg_at_start'][0]:.2f}, end "
        f"{m['loadavg_at_end'][0]:.2f}. libsignal {results['libsignal_version']} via Node "
        f"{results['node_version']}; {results['runs']} interleaved runs, medians.",
        "",
        "| workload | unit | XChat (wall) | libsignal (wall) | ratio wall | ratio CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, unit, _fn, _n in WORKLOADS:
        r = results[name]
        lines.append(
            f"| {name} | {unit} | {r['xchat']['wall']:,.0f} | {r['libsignal']['wall']:,.0f} | "
            f"{r['ratio_wall']:.2f}× | {r['ratio_cpu']:.2f}× |"
        )
    lines += [
        "",
        "- This measures libsignal *through its Node binding*: the N-API bridge and the "
        "JavaScript store callbacks are part of its cost here (as in Signal Desktop).",
        "- libsignal 0.103 runs the SPQR triple ratchet on every message; XChat has no PQ "
        "ratchet yet, so per-message work is not equal. Its PQXDH uses round-3 Kyber1024; "
        "XChat's uses ML-KEM-1024 (FIPS 203).",
        "- Setup = initiate from a bundle with a Kyber prekey + first message encrypted and "
        "decrypted by the responder, no one-time EC prekey, on both sides.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts, 3 runs")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--core", type=int, default=(os.cpu_count() or 1) - 1)
    args = ap.parse_args()
    out = common.RESULTS_DIR / "libsignal.json"
    command = "python bench/libsignal_bench.py" + (" --quick" if args.quick else "")
    node = shutil.which("node")
    if node is None:
        print("libsignal_bench: Node.js not found; skipping libsignal (install nodejs to run it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "command": command,
                    "skipped": "Node.js not found",
                    "markdown": "Skipped: Node.js is not installed on this machine.",
                }
            )
        )
        return
    version = ensure_libsignal(node)
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    os.sched_setaffinity(0, {args.core})  # the Node child inherits it
    runs = args.runs or (3 if args.quick else 7)
    scale = 0.1 if args.quick else 1.0
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    results: dict[str, Any] = {
        "command": command,
        "started_at": started,
        "core": args.core,
        "runs": runs,
        "libsignal_version": version,
        "node_version": node_version.strip(),
        "message_bytes": len(crypto_bench.MESSAGE),
    }
    for name, unit, ours, n in WORKLOADS:
        n = max(int(n * scale), 20)
        ours(max(n // 10, 10))  # warm-up (libsignal's bench.mjs warms itself up)
        xw, xc, lw, lc = [], [], [], []
        for _ in range(runs):
            w, c = ours(n)
            xw.append(w)
            xc.append(c)
            w, c = libsignal_run(node, name, n)
            lw.append(w)
            lc.append(c)
        results[name] = {
            "unit": unit,
            "n_per_run": n,
            "xchat": {"wall": _med(xw), "cpu": _med(xc), "runs_wall": [round(v) for v in xw]},
            "libsignal": {"wall": _med(lw), "cpu": _med(lc), "runs_wall": [round(v) for v in lw]},
            "ratio_wall": _med([a / b for a, b in zip(xw, lw, strict=True)]),
            "ratio_cpu": _med([a / b for a, b in zip(xc, lc, strict=True)]),
        }
        r = results[name]
        print(
            f"{name:<14} xchat {r['xchat']['wall']:>9,.0f} {unit:<9} libsignal "
            f"{r['libsignal']['wall']:>9,.0f}  ratio {r['ratio_wall']:.2f}× (cpu "
            f"{r['ratio_cpu']:.2f}×)",
            flush=True,
        )
    machine["loadavg_at_end"] = os.getloadavg()
    results["machine"] = machine
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["markdown"] = render(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
