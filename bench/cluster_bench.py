"""Scale-out benchmark (issue #16): durable messages/s and p99 for 1, 2 and 3 relay nodes on
PostgreSQL + Redis behind HAProxy, beside the SQLite single node and Matrix Synapse on the
same PostgreSQL, in one run; then per-message costs and a sizing on paper.

    .venv/bin/python bench/cluster_bench.py [--quick] [--no-synapse]

Load: bench/relay_bench.py's generator, unchanged (100 pairs; recipients hold authenticated
sockets and ACK every DELIVER; senders send sealed-sender 256-byte envelopes with
delivery-token access, ``--window`` SENDs in flight per socket). A message counts when its
recipient has it: SEND → durable group commit (PostgreSQL ``synchronous_commit=on``, or
SQLite ``synchronous=FULL``) → wake-up (Redis when the recipient's socket is on another
node) → DELIVER → ACK → delete. Closed loop for the max, then an open-loop point at half of
it for latency. Every configuration starts fresh (``xchat.ops.cluster``: its own PostgreSQL,
Redis, HAProxy and nodes), all on this machine's 2 cores together with the load generator.

Per-message costs are measured over the closed-loop window: CPU of every relay node, of all
PostgreSQL processes, of Redis and HAProxy (utime+stime from /proc), PostgreSQL WAL bytes
(``pg_current_wal_lsn``), and Redis memory per routed device (``INFO memory`` around 10,000
route keys of the production shape).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import relay_bench as rb
from xchat.ops.cluster import Cluster
from xchat.ops.services import Postgres
from xchat.testing import running_server

METRICS_TOKEN = "cluster-bench"
USERS = 100_000_000
MSGS_PER_USER_DAY = 50
PEAK_FACTOR = 3.0  # peak hour vs the daily average
DEVICES_PER_USER = 1.5
ONLINE = 0.2  # share of devices holding a socket at peak
SOCKETS_PER_PROCESS = 50_000  # the relay's per-process socket target (bench/relay_bench.py)
SOCKET_BYTES = 10_000  # ~1.8 KiB measured in the relay + kernel socket buffers, rounded up
WAL_MB_S = 50.0  # WAL a single PostgreSQL primary sustains comfortably (replicas, archiving)
DIRECTORY_BYTES = 300  # per account in a node's in-memory directory cache (address, keys…)


class Target:
    """What relay_bench.Load needs: the port the load connects to, the pid it profiles."""

    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.pid = pid
        self.metrics_headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def cpu_of(groups: dict[str, list[int]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for name, pids in groups.items():
        s = 0.0
        for p in pids:
            try:
                s += common.proc_cpu_seconds(p)
            except (OSError, ValueError, IndexError):
                continue
        total[name] = s
    return total


def wal_lsn(dsn: str) -> int | None:
    psql = shutil.which("psql") or "/usr/bin/psql"
    r = subprocess.run(
        [psql, dsn, "-Atc", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"],
        capture_output=True,
        text=True,
    )
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


def redis_bytes_per_route(url: str, n: int = 10_000) -> float:
    import redis

    r = redis.Redis.from_url(url)
    before = int(r.info("memory")["used_memory"])
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"xchat:dev:{10_000_000 + i}", f"3f2a9c41d0e7:{i}", ex=120)
    pipe.execute()
    after = int(r.info("memory")["used_memory"])
    r.delete(*[f"xchat:dev:{10_000_000 + i}" for i in range(n)])
    r.close()
    return (after - before) / n


def run_load(
    target: Target, groups: dict[str, list[int]], args: argparse.Namespace, dsn: str | None
) -> dict[str, Any]:
    with httpx.Client(base_url=target.url, timeout=30) as c:
        accounts = [rb.register(c) for _ in range(rb.PAIRS)]
    load = rb.Load(target, accounts)
    try:
        cpu0, wal0 = cpu_of(groups), wal_lsn(dsn) if dsn else None
        mx = load.window(0, args.window, args.duration, args.warmup, None)
        cpu1, wal1 = cpu_of(groups), wal_lsn(dsn) if dsn else None
        half = load.window(
            max(50, round(mx["msgs_per_s"] / 2)), args.window, args.duration, args.warmup, None
        )
    finally:
        load.close()
    sent = mx["sent_total"] or 1
    cost = {f"{k}_cpu_us_per_msg": round((cpu1[k] - cpu0[k]) / sent * 1e6, 1) for k in groups}
    if wal0 is not None and wal1 is not None:
        cost["pg_wal_bytes_per_msg"] = round((wal1 - wal0) / sent, 1)
    return {
        "msgs_per_s": mx["msgs_per_s"],
        "p99_ms_at_max": mx["p99_ms"],
        "p50_ms_at_max": mx["p50_ms"],
        "half_offered": half["offered"],
        "half_msgs_per_s": half["msgs_per_s"],
        "half_p50_ms": half["p50_ms"],
        "half_p99_ms": half["p99_ms"],
        "send_errors": mx["send_errors"] + half["send_errors"],
        "store_batch_ops_p50": mx.get("store_batch_ops_p50"),
        "costs": cost,
    }


def bench_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    # commit first, as the PostgreSQL nodes always do (PROTOCOL Part III §7)
    env = {"rate_limits": False, "max_sockets_per_ip": 0, "metrics_token": METRICS_TOKEN,
           "delivery_hold_ms": 0}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, running_server(tmp, pow_bits=1, **env) as srv:
        return run_load(Target(srv.url, srv.pid), {"relay": [srv.pid]}, args, None)


def bench_cluster(n: int, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"xchat-bench-{n}n-"))
    cluster = Cluster(
        root,
        nodes=n,
        node_env={
            "XCHAT_RATE_LIMITS": "0",
            "XCHAT_MAX_SOCKETS_PER_IP": "0",
            "XCHAT_METRICS_TOKEN": METRICS_TOKEN,
            "XCHAT_LOG_LEVEL": "warning",
        },
        node_args=["--pow-bits", "1"],
    )
    try:
        cluster.start()
        pg = cluster.pg.pid
        groups = {
            "nodes": [x.pid for x in cluster.nodes],
            "postgres": [pg, *children(pg)],
            "redis": [cluster.redis.pid],
            "haproxy": [cluster.proxy.pid],
        }
        out = run_load(Target(cluster.url, cluster.nodes[0].pid), groups, args, cluster.database)
        out["redis_bytes_per_route"] = round(redis_bytes_per_route(cluster.redis.url), 1)
        return out
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_synapse(args: argparse.Namespace) -> dict[str, Any] | None:
    root = Path(tempfile.mkdtemp(prefix="xchat-bench-synapse-pg-"))
    os.chmod(root, 0o755)
    pg = Postgres(root / "pgdata")
    try:
        pg.start()
        psql = shutil.which("psql") or "/usr/bin/psql"
        subprocess.run(
            [
                psql,
                pg.dsn("postgres"),
                "-qc",
                "CREATE DATABASE synapse ENCODING 'UTF8'"
                " LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0",
            ],
            check=True,
            capture_output=True,
        )
        out = common.RESULTS_DIR / "synapse_pg.json"
        cmd = [sys.executable, str(Path(__file__).parent / "synapse_bench.py"),
               "--database", pg.dsn("synapse"), "--out", str(out),
               "--duration", str(args.duration), "--warmup", str(args.warmup),
               "--fractions", "0.5", "1.0"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            return None
        doc = json.loads(out.read_text())
        return {
            "msgs_per_s": common.get_metric(doc, *rb_keys("msgs")),
            "p99_ms": common.get_metric(doc, *rb_keys("p99")),
            "cpu_ms_per_msg": common.get_metric(doc, "cpu_ms_per_msg", "server_cpu_ms_per_msg"),
        }
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def rb_keys(kind: str) -> tuple[str, ...]:
    if kind == "msgs":
        return ("msgs_per_s", "max_load.msgs_per_s", "throughput_msgs_per_s", "msgs_per_sec")
    return ("p99_ms", "max_load.p99_ms", "latency.p99_ms", "latency_p99_ms")


def sizing(three: dict[str, Any]) -> dict[str, Any]:
    """100 M users × 50 messages/day from the 3-node run's measured per-message costs."""
    c = three["costs"]
    avg = USERS * MSGS_PER_USER_DAY / 86400
    peak = avg * PEAK_FACTOR
    node_us = c.get("nodes_cpu_us_per_msg", 0.0)
    pg_us = c.get("postgres_cpu_us_per_msg", 0.0)
    redis_us = c.get("redis_cpu_us_per_msg", 0.0)
    core_util = 0.6  # keep every core at most 60 % busy at peak
    node_cores = peak * node_us / 1e6 / core_util
    pg_cores = peak * pg_us / 1e6 / core_util
    per_pg_shard_cores = 16
    wal = c.get("pg_wal_bytes_per_msg", 0.0)
    return {
        "avg_msgs_per_s": round(avg),
        "peak_msgs_per_s": round(peak),
        "relay_cores": round(node_cores),
        "relay_nodes_8_cores": max(1, math.ceil(node_cores / 8)),
        "pg_cores": round(pg_cores),
        # by CPU or by WAL volume (~50 MB/s per primary), whichever needs more
        "pg_shards_16_cores": max(
            1, math.ceil(pg_cores / per_pg_shard_cores), math.ceil(peak * wal / 1e6 / WAL_MB_S)
        ),
        "pg_wal_mb_per_s_peak": round(peak * wal / 1e6, 1),
        "redis_cores": round(peak * redis_us / 1e6 / core_util, 1),
        "online_devices": round(USERS * DEVICES_PER_USER * ONLINE),
        "socket_processes": round(USERS * DEVICES_PER_USER * ONLINE / SOCKETS_PER_PROCESS),
        "socket_ram_gb": round(USERS * DEVICES_PER_USER * ONLINE * SOCKET_BYTES / 1e9),
        "directory_cache_gb_per_node": round(USERS * DIRECTORY_BYTES / 1e9),
        "redis_bytes_per_route": three.get("redis_bytes_per_route", 0.0),
        "redis_gb_for_routes_20pct_online": round(
            USERS * DEVICES_PER_USER * ONLINE * three.get("redis_bytes_per_route", 0.0) / 1e9, 1
        ),
    }


def render(doc: dict[str, Any]) -> str:
    cfgs = doc["configs"]
    syn = doc.get("synapse_pg")
    lines = [
        f"Command: `{doc['command']}`",
        common.machine_line(doc["machine"]),
        "",
        "| configuration | durable msgs/s (closed loop) | p99 ms at max | p99 ms at half load"
        " | vs Synapse on PostgreSQL |",
        "|---|---|---|---|---|",
    ]
    syn_rate = (syn or {}).get("msgs_per_s")
    for name, r in cfgs.items():
        ratio = f"{r['msgs_per_s'] / syn_rate:.0f}×" if syn_rate else "n/a"
        lines.append(
            f"| {name} | {r['msgs_per_s']:.0f} | {r['p99_ms_at_max']} | {r['half_p99_ms']}"
            f" (at {r['half_offered']}/s) | {ratio} |"
        )
    if syn:
        lines.append(
            f"| Synapse on PostgreSQL (1 process) | {syn_rate} | {syn.get('p99_ms')} | | 1× |"
        )
    lines += ["", "Per-message costs, measured over the closed-loop window:", ""]
    keys = sorted({k for r in cfgs.values() for k in r["costs"]})
    lines.append("| configuration | " + " | ".join(keys) + " |")
    lines.append("|---" * (len(keys) + 1) + "|")
    for name, r in cfgs.items():
        lines.append(f"| {name} | " + " | ".join(str(r["costs"].get(k, "")) for k in keys) + " |")
    s = doc.get("sizing")
    if s:
        per_route = s["redis_bytes_per_route"]
        lines += [
            "",
            f"On paper, from the 3-node costs: {USERS:,} users × {MSGS_PER_USER_DAY} messages/day"
            f" = {s['avg_msgs_per_s']:,} msgs/s average, {s['peak_msgs_per_s']:,} msgs/s at a"
            f" {PEAK_FACTOR:.0f}× peak. Relay CPU ≈ {s['relay_cores']} cores at 60 % ="
            f" {s['relay_nodes_8_cores']} machine(s) of 8 cores for the message rate alone;"
            f" PostgreSQL CPU ≈ {s['pg_cores']} cores, and {s['pg_wal_mb_per_s_peak']} MB/s of"
            f" WAL at peak, so ~{s['pg_shards_16_cores']} primaries of 16 cores (mailbox rows"
            f" sharded by device ref, at most {WAL_MB_S:.0f} MB/s of WAL each); Redis"
            f" {s['redis_cores']} cores and {s['redis_gb_for_routes_20pct_online']} GB of"
            f" routes with 20 % of 150 M devices online ({per_route} bytes per route key).",
            "",
            "What changes first at that scale, in order:",
            "",
            f"1. **Open sockets, not messages, size the node fleet.** {s['online_devices']:,}"
            f" online devices at {SOCKETS_PER_PROCESS:,} sockets per process is"
            f" ~{s['socket_processes']} relay processes (~{s['socket_ram_gb']} GB of socket"
            " memory in all), against the handful of cores the message rate needs.",
            f"2. **The per-node directory cache** (every account in memory,"
            f" ~{s['directory_cache_gb_per_node']} GB per node at {DIRECTORY_BYTES} B/account)"
            " must become a bounded LRU over PostgreSQL, and the NOTIFY fan-out of directory"
            " changes to hundreds of nodes must move to a Redis stream or be partitioned.",
            f"3. **PostgreSQL write volume**: {s['pg_wal_mb_per_s_peak']} MB/s of WAL at peak"
            " (an insert and a delete per message, with their index entries) is past what one"
            " primary sustains comfortably: shard the mailbox by device ref (the relay"
            " already addresses every row by it), keep accounts/prekeys on their own"
            " cluster, and tune autovacuum for a queue that is emptied as fast as it fills.",
            "4. **Redis** stays small (routes are soft state) but a node loss makes"
            " its devices reconnect at once: connection storms, not memory, bound it;"
            " shard routes by ref with Redis Cluster when one instance is not enough.",
        ]
    lines += [""] + [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(x for x in lines if x is not None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--no-synapse", action="store_true")
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3])
    args = ap.parse_args()
    args.duration = args.duration or (4.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    rb.raise_nofile()
    doc = common.new_result("cluster", quick=args.quick)
    doc["command"] = "python bench/cluster_bench.py" + (" --quick" if args.quick else "")
    configs: dict[str, Any] = {}
    configs["SQLite, 1 node"] = bench_sqlite(args)
    print("sqlite", json.dumps(configs["SQLite, 1 node"]), flush=True)
    for n in args.nodes:
        name = f"{n} node{'s' if n > 1 else ''} PG+Redis"
        configs[name] = bench_cluster(n, args)
        print(name, json.dumps(configs[name]), flush=True)
    doc["configs"] = configs
    if not args.no_synapse:
        doc["synapse_pg"] = bench_synapse(args)
        print("synapse on postgres", json.dumps(doc["synapse_pg"]), flush=True)
    three = configs.get("3 nodes PG+Redis")
    if three:
        doc["sizing"] = sizing(three)
        syn = (doc.get("synapse_pg") or {}).get("msgs_per_s")
        doc["summary"] = {
            "msgs_per_s": three["msgs_per_s"],
            "p99_ms": three["p99_ms_at_max"],
            "target_msgs_per_s": 5000,
            "vs_synapse_pg": round(three["msgs_per_s"] / syn, 1) if syn else None,
        }
    doc["notes"] = [
        "All processes (load generator, HAProxy, nodes, PostgreSQL, Redis) share the 2 cores:"
        " adding nodes on one 2-core machine adds contention, not capacity; the per-message"
        " costs are what carries over to real machines.",
        "Cluster configurations go through HAProxy (one more hop than the SQLite node).",
    ]
    doc = common.finish_result(doc)
    doc["markdown"] = render(doc)
    path = common.write_json("cluster", doc)
    print(doc["markdown"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
