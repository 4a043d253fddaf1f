"""Tail latency against offered load: one relay process, delivering before or after the
commit, vs several on one port (issue #20).

    .venv/bin/python bench/tail_bench.py [--quick] [--relays 2] [--duration 5]

One run, three designs, the same load (bench/relay_bench.py's generator, unchanged: 100
pairs, 256-byte sealed-sender envelopes, recipients ACK every DELIVER; closed loop for the
max, then open-loop points at fixed fractions of it, latency from the *scheduled* send):

- **single**: one relay process on SQLite, as ``xchat serve`` runs by default: mail for a
  connected device is delivered before its commit and never written if the ACK comes
  within ``delivery_hold_ms`` (PROTOCOL Part III §7);
- **commit_first**: the same with ``XCHAT_DELIVERY_HOLD_MS=0``: every envelope is committed
  (and deleted again at its ACK) before it is delivered, the design before delivery before
  commit, and what every send to an offline device still costs;
- **multi**: ``--relays`` processes started with ``xchat serve --reuse-port`` on one port,
  sharing a real PostgreSQL and Redis (xchat.ops.services); the kernel spreads the 200 load
  sockets over them, so most messages cross processes through Redis.

Each point reports p50 / p99 / p99.9, the CPU of every relay process per delivered message
(CPU-normalised: the figure a busy shared machine disturbs least), how long the relay
threads waited for a core (runqueue) and the machine's CPU pressure. Writes
bench/results/tail.json and bench/results/tail_latency.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import plots
import relay_bench as rb
from xchat.ops.services import Postgres, Redis
from xchat.testing import ServerProcess, env_from_kwargs

FRACTIONS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)
TITLE = "Tail latency vs offered load: delivery before commit, commit first, several processes"
HALF_REPEATS = 2  # extra runs of the half-load point: the median p99 is reported
BASE_ENV = {"rate_limits": False, "max_sockets_per_ip": 0}


class Relays:
    """What relay_bench.Load needs (port, pid, url, metrics_headers) plus every pid."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.url = servers[0].url
        self.port = servers[0].port
        self.pid = servers[0].pid
        self.metrics_headers = servers[0].metrics_headers
        self.pids = [s.pid for s in servers]


def start_relays(root: Path, n: int, env: dict[str, Any]) -> Relays:
    base = env_from_kwargs({**BASE_ENV, **env})
    first = ServerProcess(root / "data", 1, dict(base))
    first.start()  # alone first: it creates the relay keys in the shared data directory
    servers = [first]
    for _ in range(n - 1):
        extra = {"XCHAT_METRICS_TOKEN": first.env["XCHAT_METRICS_TOKEN"]}
        s = ServerProcess(root / "data", 1, {**base, **extra}, port=first.port)
        s.start()
        servers.append(s)
    return Relays(servers)


def curve(
    relays: Relays,
    fractions: tuple[float, ...],
    duration: float,
    warmup: float,
    half_repeats: int,
) -> dict[str, Any]:
    with httpx.Client(base_url=relays.url, timeout=60) as c:
        accounts = [rb.register(c) for _ in range(rb.PAIRS)]
    load = rb.Load(relays, accounts)
    points: list[dict[str, Any]] = []
    try:

        def written() -> float | None:
            """Envelopes the relay wrote so far (one process only: the gauge is per node)."""
            if len(relays.servers) != 1:
                return None
            with httpx.Client(base_url=relays.url, headers=relays.metrics_headers) as c:
                return rb.server_gauge(c, "envelopes_stored")

        def run(rate: float) -> dict[str, Any]:
            stored0 = written()
            cpu0 = sum(common.proc_cpu_seconds(p) for p in relays.pids)
            t0 = time.monotonic()
            pt = load.window(rate, 8, duration, warmup, None)
            wall = time.monotonic() - t0
            cpu = sum(common.proc_cpu_seconds(p) for p in relays.pids) - cpu0
            # over the whole window call (warm-up and tail included): CPU per message sent
            sent = max(1, int(pt["msgs_per_s"] * (duration + warmup)))
            pt["all_relays_cpu_util"] = round(cpu / wall, 3)
            pt["all_relays_cpu_us_per_msg"] = round(cpu / sent * 1e6, 1)
            pt["loadavg"] = common.loadavg()
            stored1 = written()
            pt["written_share"] = (
                round((stored1 - stored0) / max(1, pt["sent_total"]), 3)
                if stored0 is not None and stored1 is not None
                else None
            )
            print(
                f"  offered {rate or 'max'}: {pt['msgs_per_s']:,.0f}/s p50 {pt['p50_ms']} "
                f"p99 {pt['p99_ms']} p99.9 {pt['p999_ms']} ms, relays "
                f"{pt['all_relays_cpu_us_per_msg']} µs/msg",
                flush=True,
            )
            return pt

        mx = run(0)
        for f in fractions:
            points.append(run(round(f * mx["msgs_per_s"])))
        half0 = min(points, key=lambda p: abs(p["offered"] - mx["msgs_per_s"] / 2))
        repeats = [half0] + [run(half0["offered"]) for _ in range(half_repeats)]
    finally:
        load.close()
    # the machine is shared: one window can be ruined by a neighbour; report the median
    half = sorted(repeats, key=lambda p: p["p99_ms"] or 0)[len(repeats) // 2]
    return {"max_load": mx, "open_loop": points, "half_load": half, "half_load_repeats": repeats}


def row(p: dict[str, Any], closed: bool) -> dict[str, Any]:
    return {
        "offered": p["msgs_per_s"] if closed else p["offered"],
        "achieved": p["msgs_per_s"],
        "p50": p["p50_ms"],
        "p99": p["p99_ms"],
        "p999": p["p999_ms"],
        "closed_loop": closed,
    }


def plot(doc: dict[str, Any]) -> Path | None:
    try:
        fig, ax = plots._figure(
            "Delivery latency vs offered load (one run)", "offered msgs/s", "ms", True, True
        )
    except ImportError:
        return None
    styles = {"p50": ":", "p99": "-", "p999": "--"}
    for res in doc["designs"].values():
        pts = [row(p, False) for p in res["open_loop"]]
        color = None
        for key, ls in styles.items():
            xy = [(p["offered"], p[key]) for p in pts if p[key]]
            if not xy:
                continue
            (h,) = ax.plot(*zip(*xy, strict=True), ls=ls, marker="o", color=color,
                           label=f"{res['label']} {key.replace('p999', 'p99.9')}")  # fmt: skip
            color = h.get_color()
        half = res["max_load"]["msgs_per_s"] / 2
        ax.axvline(half, color=color, lw=0.8, ls="-.", label=f"{res['label']}: half load")
    ax.axhline(25, color="grey", lw=0.8, label="target: p99 25 ms at half load")
    out = common.RESULTS_DIR  # beside the other plots (bench/plots.py)
    m = doc["machine"]
    sub = f"{common.machine_line(m)}"
    return plots._save(fig, ax, out / "tail_latency.png", sub)


def markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md section (bench/run_all.py copies it between the markers)."""
    s, m = doc["summary"], doc["machine"]
    parts = [
        f"Command: `{doc['command']}`",
        f"Machine: {common.machine_line(m)}. 1/5/15-min load average "
        f"{m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end. The two "
        "cores may be shared with other work: the CPU-pressure column is the share of each "
        "window in which some task waited for a core, and the runqueue columns how long the "
        "relay's own threads did; where they are high, read the latencies as what a starved "
        'machine gives and the CPU per message as the portable figure. "Half load" is '
        "half of the closed-loop maximum of the same run, so it moves with the machine.",
    ]
    for d in doc["designs"].values():
        rows = []
        for p in [*d["open_loop"], d["max_load"]]:
            closed = p["closed_loop"]
            rq = p.get("server_runqueue_wait_per_s") or {}
            rows.append(
                [
                    "max (closed loop)" if closed else f"{p['offered']:,.0f}",
                    f"{p['msgs_per_s']:,.0f}",
                    p["p50_ms"],
                    p["p99_ms"],
                    p["p999_ms"],
                    p.get("p99_from_send_ms"),
                    p["all_relays_cpu_us_per_msg"],
                    "—" if p.get("written_share") is None else f"{p['written_share']:.0%}",
                    rq.get("python"),
                    rq.get("xchat-writer", "—"),
                    p["cpu_pressure_some"],
                ]
            )
        head = ["offered msgs/s", "achieved", "p50 ms", "p99 ms", "p99.9 ms",
                "p99 from actual send ms", "relay CPU µs/msg (all processes)",
                "envelopes written",
                "loop thread runqueue s/s", "writer runqueue s/s",
                "CPU pressure (some)"]  # fmt: skip
        reps = ", ".join(f"{p['p99_ms']}" for p in d.get("half_load_repeats", []))
        parts.append(f"**{d['label']}** (closed-loop max {d['max_load']['msgs_per_s']:,.0f} "
                     f"msgs/s; half-load p99 over {len(d.get('half_load_repeats', []))} runs: "
                     f"{reps} ms; the curve row is the first run, the ratio table the "
                     "median):\n\n"
                     + common.md_table(head, rows))  # fmt: skip
    keys = [k for k in ("single", "commit_first", "multi") if f"{k}_half_p99_ms" in s]
    half_ok = {k: (s[f"{k}_half_p99_ms"] or 1e9) <= 25 for k in keys}
    ratios = [
        [f"p99 at half load, {doc['designs'][k]['label']} (target ≤ 25 ms)",
         s[f"{k}_half_p99_ms"],
         f"at {s[f'{k}_half_offered']:,}/s: {'met' if half_ok[k] else 'not met'}"]
        for k in keys
    ]  # fmt: skip
    if "commit_first" in keys:
        ratios += [
            ["closed-loop max, delivery before commit ÷ commit first",
             s["single_vs_commit_first_max"],
             f"{s['single_max_msgs_per_s']:,.0f} ÷ {s['commit_first_max_msgs_per_s']:,.0f}"],
            ["relay CPU per message at half load, before commit ÷ commit first",
             s["single_vs_commit_first_cpu_per_msg"],
             f"{s['single_half_cpu_us_per_msg']} ÷ {s['commit_first_half_cpu_us_per_msg']} µs"],
        ]  # fmt: skip
    ratios += [
        ["closed-loop max, multi ÷ single", s["multi_vs_single_max"],
         f"{s['multi_max_msgs_per_s']:,.0f} ÷ {s['single_max_msgs_per_s']:,.0f}"],
        ["relay CPU per message at half load, multi ÷ single", s["multi_vs_single_cpu_per_msg"],
         f"{s['multi_half_cpu_us_per_msg']} ÷ {s['single_half_cpu_us_per_msg']} µs"],
    ]  # fmt: skip
    for key, d in doc["designs"].items():
        ok = [p for p in d["open_loop"] if p["p99_ms"] is not None and p["p99_ms"] <= 25]
        best = max(ok, key=lambda p: p["offered"], default=None)
        ratios.append(
            [f"highest offered rate with p99 ≤ 25 ms, {key}",
             f"{best['offered']:,}" if best else "none",
             f"{best['offered'] / d['max_load']['msgs_per_s']:.0%} of the closed-loop max; "
             f"p99 {best['p99_ms']} ms" if best else "—"]
        )  # fmt: skip
    parts.append(common.md_table(["ratio / figure", "value", "inputs"], ratios))
    if doc.get("plot"):
        parts.append(f"Plot: [{doc['plot']}]({doc['plot']}) (p50 dotted, p99 solid, p99.9 "
                     "dashed; log-log).")  # fmt: skip
    parts.append(
        "- Same load generator and load shape as `relay_bench.py`; all designs measured in "
        "one run, back to back. The load's recipients are online and ACK every DELIVER at "
        "once, so with delivery before commit (the default) almost nothing is written "
        "(`acked unwritten` column); the commit-first design is what the same relay costs "
        "when every envelope is written and deleted again, as mail to an offline device "
        "still is. In the multi design the kernel spreads the 200 load sockets "
        "over the processes, so a message usually crosses processes through Redis, and the "
        "durable commit is PostgreSQL's (`synchronous_commit=on`) instead of SQLite's.\n"
        "- CPU per message is over each whole window (warm-up and tail included) divided by "
        "the messages of the window; at low rates idle work (keepalives, resync polls) "
        "dominates it. It counts the relay processes only; in the multi design PostgreSQL "
        "and Redis add their own (`cluster_bench.py` measures them: ~13-18 µs and ~1 µs per "
        "message)."
    )
    parts.append(FINDINGS)
    return "\n\n".join(parts)


#: Where the half-load tail came from: a tracing run (2026-12-03, load 3-5) stamped the
#: relay's collections, group commits, checkpoints and event-loop lags with CLOCK_MONOTONIC
#: and lined them up with every late message. Static text: it explains the design, the
#: tables above are the measurement.
FINDINGS = """\
**Where the half-load tail comes from** (a tracing run on 2026-12-03, load average 3-5:
the relay's collections, group commits, WAL checkpoints and event-loop lags stamped with
CLOCK_MONOTONIC and lined up with every late message; at 7,500/s over a 5-s window,
anything that stops deliveries for more than 1% of the window sets p99):

1. *Full (gen-2) collections in the relay*: 1-5 per 4-s window, 36-114 ms of wall time each
   with the GIL held (about 84,000 tracked start-up objects, stretched by preemption), and
   each big group of late messages started within a millisecond of one. `xchat serve` now
   calls `gc.freeze()` once it is ready and raises the young-generation threshold to 10,000
   (`server/serve.py`): no gen-2 collection ran in the measured windows afterwards.
2. *Not the load generator*: at half load the senders used 0.11-0.14 of a core and the
   recipients 0.05-0.1, and p99 from the scheduled send stays close to p99 from the actual
   send (column above) except when the whole machine stalled. Its collector is now frozen
   and off during a run, so a pause there cannot be billed to the relay.
3. *Not the WAL checkpoints*: PASSIVE, in their own thread every 0.25 s, 1-17 ms each; no
   group of late messages lined up with one.
4. *What is left is the shared machine*: the writer thread, on every message's path, waited
   0.5-0.75 s per second for a core (the loop thread 0.2-0.35), and event-loop lags of
   30-300 ms matched the remaining groups of late messages. A group commit costs the writer
   8-11 voluntary context switches (the queue, the fsync, and each sqlite3 call handing the
   GIL to the event loop and waiting to get it back), each a runqueue wait on a busy machine.
   The writer now runs one padded multi-row statement per run of enqueues or ACKs and counts
   deleted mail with one row per device instead of `DELETE ... RETURNING` (one GIL hand-off
   per deleted row): 8.6-10.9 down to 7.6-8.6 switches per commit in A/B runs, CPU per
   message unchanged within the noise. Item 7 tried the writer in its own process.
5. *Why half load costs more per message than the maximum*: the relay made ~6 read/write
   system calls per message at 7,500/s open loop against ~0.9 in the closed loop
   (`/proc/<pid>/io`), since each of the 200 load sockets sees one frame at a time instead
   of eight pipelined ones, and it ran many small commits (each ~260 µs of CPU: BEGIN, WAL
   frame writes, fsync, thread hand-offs). *Group commit by time budget*
   (`storage/sqlite.py`, GROUP_COMMIT_SPACING): a commit now starts at least 2 ms after
   the previous one started, never waiting when idle or when commits are slower than that.
   A/B at load 1.2-1.6: relay CPU per message 78-87 vs 143-154 µs at 3,750/s and 55-67 vs
   84-97 µs at 7,500/s, median latency +1-2 ms, p99 5.9-8.6 vs 6.0-11.3 ms at 7,500/s,
   closed-loop maximum unchanged (41-42k vs 40-48k msgs/s).
6. *Pinning was measured and not kept*: the relay on one core and the load generator on the
   other (`taskset`-style affinity) lowered relay CPU per message (median 45 vs 62 µs: the GIL
   hand-offs stay on one core) but raised the half-load p99 (median of 9 windows ~400 ms vs
   ~90 ms unpinned, load 3-5): on a shared machine the pinned relay cannot move off a core
   that another engineer's test is using. On a dedicated machine it may be worth a rerun.
7. *The SQLite writer in its own process: measured and not kept.* A build with the writer
   as a second interpreter (named operations sent as one marshal/pickle frame per event-loop
   pass over a pipe, answers read by a reader on the loop; no GIL shared with the loop) was
   measured against the writer thread. Store alone (enqueue + ACK at 10,000/s, load
   2.5-4.6): loop thread 19.7-22.7 us per message against 13.3-17.3 with the thread (the
   frames and the pipe), writer 32-34 us either way. Relay, interleaved 3-s windows at load
   0.9-2.7: 7,000/s p99 13-68 ms against 10-108 ms; 15,000/s p99 median 74 against 111 ms
   but relay CPU per message 74-78 against 55-70 us, and one round the other way. Full
   `tail_bench.py` runs back to back on the quiet AMD EPYC VM (2026-12-03 15:47 and 15:50,
   load 0.07 at start): process closed-loop max 25,883/s, half-load p99 over 3 runs
   43 / 74 / 127 ms, 50.0 us/msg at the maximum; thread 24,173/s, 153 / 61 / 61 ms,
   43.0 us/msg. No gain in the tail, more CPU per message and ~60 ms more per relay start
   (a second interpreter), so the thread stays.
8. *Why half load is past the knee on this VM, and what was ruled out* (2026-12-03
   17:00-17:40, quiet AMD EPYC VM, load 0.4-2; one relay, 12,000/s open loop, 4-5-s
   windows). p99 swings from window to window at the same offered rate: 6.5 to 117 ms in
   26 windows, with relay CPU per message 62-87 us (not steal: 8 ticks in 40 s). The
   event-loop thread is the bottleneck: 57 us per message there (0.69 of a core) against
   24 us in the closed loop, 59 % of it in the interpreter and 33 % in the kernel (the
   reads and writes of one frame each, and on loopback each write runs the load
   generator's TCP receive and wake-up: `_raw_spin_unlock_irqrestore` alone 6.7 %,
   `perf record -t`), plus 0.15 s per second waiting for a core and the writer thread's
   share of the GIL (15 % of the wall time, `py-spy --gil`). Stamping a traced run showed
   where a message waits: 5.4 ms (p50; p99 23 ms) in the relay's socket before the loop
   reads it, about one event-loop pass (7 ms p50) before the group commit gets it, the
   transaction (2-10 ms) and again a pass before the commit is delivered. Measured and not
   kept, interleaved with the default: a 0.5 or 1 ms GIL switch interval
   (`XCHAT_GIL_SWITCH_MS`: p99 61-74 and 53-60 ms against 58-117), transport writes
   instead of direct `os.write` (`XCHAT_WS_DIRECT_WRITES=0`, 4 rounds x 2 windows: p99
   median 22 against 26 ms, spreads 18-44 and 6.5-44 ms, CPU per message the same), the
   loop thread alone on one core and everything else on the other (runqueue wait 0.004-0.012
   s per second, yet p50 18-24 ms and p99 34-116 ms: the thread is busy by itself). Young
   collections ran once per 5 s under this load (`gc.callbacks`), so the collector is not
   it either. The interpreter profile is flat (no function above 5.5 % self time:
   `receive_send` 37 % inclusive, the commit's delivery callbacks 22 %, output 9 %), so no
   single change in Python buys the ~30 % of loop time that would put half load below the
   knee. Compiling the byte-level part did not either: `protocol/frames.py` and
   `protocol/ws_connection.py` built with mypyc (a scratch build, not kept; the protocol
   and fast-path tests pass on it) gave a loop thread of 52.8-55.0 us per message at
   12,000/s against 46.2-56.6 us in 3 interleaved rounds (p99 41-119 against 58-183 ms,
   closed-loop maximum 24.0-24.5k against 18.6-23.6k/s at load 0.9-1.9): no CPU gain
   beyond the noise. Nor did moving the socket writes off the loop: a scratch build that
   handed each pass's `os.write`s to a thread (3 interleaved rounds) doubled the tail
   (p99 121-263 against 45-72 ms), since every write's return waits for the GIL the loop
   holds. What is left is a whole data plane outside the interpreter, or a load generator
   on other cores than the relay's. (The 2,993/s row of the stored run, p99
   145 ms right after the closed-loop maximum, did not recur: 6 windows at 3,000/s right
   after a maximum gave p99 4.9-14.8 ms.)
9. *Delivery before commit: kept, the default since 2026-12-04* (PROTOCOL Part III §7,
   `storage/holdback.py`). Items 4-8 left the store's writer as a third of the relay's CPU
   (20-28 us per message: the insert, the delete at the ACK, their share of each
   transaction and fsync) and its GIL share in the loop's way, for mail that in this load,
   and mostly in real use, goes to a device that is online and ACKs within milliseconds.
   Now such mail is pushed before any commit and held in memory for `delivery_hold_ms`
   (100 ms); an ACK in that time removes it and it is never written; the rest is committed
   as before; the sender's SEND_RESULT 200 still waits until the mail is durable (on the
   relay's disk, or ACKed by its device after the device's own commit). Upper bound first,
   a scratch build that skipped the store altogether: closed-loop maximum 96,272/s,
   half-load p99 8-34 ms. The real build in three full runs of this benchmark on
   2026-12-04: the one above (19:16, load 2.2 at start): nothing written below the
   maximum, half-load p99 19.2 / 8.0 / 4.2 ms at 15,420/s against 46.0 / 28.7 / 12.2 ms
   commit first at its own half (12,483/s), maximum 30,840 against 24,966/s, relay CPU
   per message 53.4 against 77.2 us; the first (18:53, load 0.15): 38.9 / 15.0 / 15.1 ms at
   19,098/s against 42.8 / 54.6 / 53.9 ms at 14,065/s, maximum 38,195 against 28,130/s,
   49.5 against 76.1 us. Extra 5-s windows at 19,000/s with one relay (load 1.4-2.3): p99
   19.3 / 15.9 / 51.6 / 16.1 / 16.4 / 10.2 / 20.8 / 15.6 / 20.9 / 17.5 ms. The event-loop
   thread is now the relay's only busy thread, ~49 us per message at 19,000/s open loop
   (0.94 of a core), so a window near the knee still spikes now and then; no gen-1 or
   gen-2 collection ran in three such windows (`gc.callbacks`), and the py-spy profile is
   flat again (the largest self time, 11 %, is where a held send's objects are freed).
   Measured and not kept (the second run, 19:13): committing at once, for 10 s, the mail
   of a device that had let a held envelope expire (to spare its senders the hold). Under
   overload every device expires, so the window after the 28,702/s point ran 100 %
   commit first and the half-load p99 was 29.0 / 77.2 / 52.7 ms: commit first costs more
   CPU exactly when the relay is short of it. The costs, stated in PROTOCOL: a sender to an
   online device hears 200 after that device's ACK, at worst `delivery_hold_ms` plus a
   commit later than before, which a serial burst to a slow device pays per message; the
   mailbox quota counts held mail only once written. The new timing also exposed a client
   race, fixed: a session the peer's PreKey message created while we fetched its bundle was
   overwritten, and the peer's next PreKey messages were dropped as replays (2 of 1,000 in
   a test under load; Part IV §3.3)."""


def finish(doc: dict[str, Any], md: Path | None) -> Path:
    """Plot, markdown, JSON; then the BENCHMARKS.md section (the same one bench/run_all.py
    would write, and only it) when ``md`` is given."""
    png = plot(doc)
    if png is not None:
        doc["plot"] = str(png.relative_to(common.BENCH_DIR.parent))
    doc["markdown"] = markdown(doc)
    path = common.write_json("tail", doc)
    if md is not None:
        common.write_section(md, "tail", f"### {TITLE}\n\n{doc['markdown']}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--relays", type=int, default=2, help="processes of the multi design")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument(
        "--half-repeats",
        type=int,
        default=None,
        help=f"extra runs of the half-load point (default {HALF_REPEATS}, quick 0)",
    )
    ap.add_argument(
        "--render",
        action="store_true",
        help="only redraw the plot and rewrite the section from bench/results/tail.json",
    )
    ap.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write the section into this file (default: BENCHMARKS.md unless --quick)",
    )
    args = ap.parse_args()
    if args.render:
        stored = common.read_json(common.result_path("tail"))
        if stored is None:
            sys.stderr.write("tail_bench: no bench/results/tail.json to render\n")
            raise SystemExit(2)
        finish(stored, args.markdown or common.ROOT / "BENCHMARKS.md")
        return
    duration, warmup = (2.0, 0.5) if args.quick else (5.0, 1.0)
    duration = args.duration or duration
    fractions = (0.5,) if args.quick else FRACTIONS
    repeats = args.half_repeats if args.half_repeats is not None else (0 if args.quick else 2)
    rb.raise_nofile()
    doc = common.new_result(
        "tail",
        quick=args.quick,
        params={"pairs": rb.PAIRS, "payload_bytes": rb.CONTENT, "window": 8,
                "duration_s": duration, "warmup_s": warmup, "relays": args.relays,
                "half_repeats": repeats},
    )  # fmt: skip
    doc["designs"] = {}
    with tempfile.TemporaryDirectory(prefix="xchat-tail-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # PostgreSQL may run as the postgres user

        def measure(name: str, n: int, env: dict[str, Any], label: str) -> None:
            print(label, flush=True)
            relays = start_relays(root / name, n, env)
            try:
                res = curve(relays, fractions, duration, warmup, repeats)
            finally:
                for s in reversed(relays.servers):
                    s.stop()
            doc["designs"][name] = {"label": label, **res}

        measure("single", 1, {}, "1 process, SQLite, delivery before commit")
        measure("commit_first", 1, {"delivery_hold_ms": 0}, "1 process, SQLite, commit first")
        pg, redis = Postgres(root / "pgdata"), Redis(root / "redis.log")
        pg.start()
        redis.start()
        try:
            env = {"database": pg.create_database("xchat_tail"), "redis": redis.url,
                   "reuse_port": True}  # fmt: skip
            label = f"{args.relays} processes, --reuse-port, PG+Redis"
            measure("multi", args.relays, env, label)
        finally:
            redis.stop()
            pg.stop("immediate")
    doc["summary"] = {
        f"{k}_{m}": v
        for k, d in doc["designs"].items()
        for m, v in (
            ("max_msgs_per_s", d["max_load"]["msgs_per_s"]),
            ("half_offered", d["half_load"]["offered"]),
            ("half_p50_ms", d["half_load"]["p50_ms"]),
            ("half_p99_ms", d["half_load"]["p99_ms"]),
            ("half_p999_ms", d["half_load"]["p999_ms"]),
            ("half_cpu_us_per_msg", d["half_load"]["all_relays_cpu_us_per_msg"]),
            ("half_runqueue_wait_per_s", d["half_load"]["server_runqueue_wait_per_s"]),
            ("half_cpu_pressure_some", d["half_load"]["cpu_pressure_some"]),
        )
    }
    s = doc["summary"]
    s["multi_vs_single_max"] = round(s["multi_max_msgs_per_s"] / s["single_max_msgs_per_s"], 3)
    s["multi_vs_single_cpu_per_msg"] = round(
        s["multi_half_cpu_us_per_msg"] / s["single_half_cpu_us_per_msg"], 3
    )
    s["single_vs_commit_first_max"] = round(
        s["single_max_msgs_per_s"] / s["commit_first_max_msgs_per_s"], 3
    )
    s["single_vs_commit_first_cpu_per_msg"] = round(
        s["single_half_cpu_us_per_msg"] / s["commit_first_half_cpu_us_per_msg"], 3
    )
    doc["targets"] = {"half_p99_ms": "<= 25"}
    common.finish_result(doc)
    path = finish(doc, args.markdown or (None if args.quick else common.ROOT / "BENCHMARKS.md"))
    for k, v in s.items():
        print(f"{k:<36} {v}")
    print(f"loadavg {doc['machine'].get('loadavg_at_start')} -> "
          f"{doc['machine'].get('loadavg_at_end')}; results in {path}")  # fmt: skip


if __name__ == "__main__":
    main()
