"""Run the whole benchmark suite, compare against the peers, update BENCHMARKS.md and plots.

Why one runner: the headline claims are ratios between benchmarks (relay vs Synapse, relay
vs a bare forwarder), which only mean something when all of them ran on the same machine
in the same session. Each benchmark is a separate script run as a subprocess (so one
crashing does not take the rest down) that writes bench/results/<name>.json; this runner
collects those files, computes the ratios against their targets, and rewrites only its
own marked sections of BENCHMARKS.md (`<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`).

Exit status: 0 if every benchmark that was present ran and produced fresh results, 1 if
any failed (the others still ran and were written up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common

#: (result name, script, other file names the script may use). Synapse runs before the
#: relay so its max rate is known first.
BENCHMARKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("crypto", "crypto_bench.py", ()),
    ("libsignal", "libsignal_bench.py", ()),
    ("group", "group_bench.py", ("groups",)),
    ("files", "file_bench.py", ("file",)),
    ("forwarder", "forwarder_bench.py", ()),
    ("synapse", "synapse_bench.py", ()),
    ("relay", "relay_bench.py", ()),
    ("backup", "backup_bench.py", ()),
    ("cluster", "cluster_bench.py", ("synapse_pg",)),
    ("calls", "call_bench.py", ()),
    ("devices", "devices_bench.py", ()),
    ("tail", "tail_bench.py", ()),
    ("connections", "connections_bench.py", ()),
    ("wsframe", "wsframe_bench.py", ()),
)

TITLES = {
    "crypto": "Crypto core vs vodozemac (Olm)",
    "libsignal": "Crypto core vs libsignal (Signal's library, through Node)",
    "group": "Groups vs vodozemac (Megolm)",
    "devices": "Linked devices: fan-out and history transfer",
    "files": "Encrypted file transfer",
    "forwarder": "Raw floor: bare websockets forwarder",
    "synapse": "Peer: Matrix Synapse",
    "relay": "XChat relay",
    "backup": "Backup and recovery: restore time, realm CPU per guess, backup size",
    "cluster": "Scale-out: PostgreSQL + Redis nodes vs Synapse on PostgreSQL",
    "calls": "Calls: setup, media CPU, calls per core",
    "tail": "Tail latency vs offered load: one relay process vs several on one port",
    "connections": "Connections: idle authenticated WebSockets across relay processes",
    "wsframe": "WebSocket framing: CPU per frame vs websockets' own parser",
}

MSGS_KEYS = ("msgs_per_s", "max_load.msgs_per_s", "throughput_msgs_per_s", "msgs_per_sec")
P99_KEYS = ("p99_ms", "max_load.p99_ms", "latency.p99_ms", "latency_p99_ms")
CPU_MS_KEYS = ("cpu_ms_per_msg", "server_cpu_ms_per_msg")
CPU_US_KEYS = ("cpu_us_per_msg", "server_cpu_us_per_msg")


def cpu_ms_per_msg(doc: Mapping[str, Any] | None) -> float | None:
    """Server CPU per message in ms, from either an ms or a µs field."""
    if not doc:
        return None
    ms = common.get_metric(doc, *CPU_MS_KEYS)
    if ms is not None:
        return ms
    us = common.get_metric(doc, *CPU_US_KEYS)
    return us / 1000 if us is not None else None


@dataclass
class Outcome:
    name: str
    script: str
    status: str  # ok | failed | missing | timeout | no-results | not-run
    seconds: float = 0.0
    detail: str = ""


# --------------------------------------------------------------------------- running


def result_file(name: str, script: str, results_dir: Path, alts: tuple[str, ...] = ()) -> Path:
    """results/<name>.json, or the first existing alternative (<script stem>.json, alts)."""
    primary = results_dir / f"{name}.json"
    if primary.exists():
        return primary
    for stem in (*alts, Path(script).stem):
        alt = results_dir / f"{stem}.json"
        if alt.exists():
            return alt
    return primary


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the benchmark's process group, SIGKILL it if still there after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(
    name: str,
    script: str,
    alts: tuple[str, ...],
    quick: bool,
    timeout: float,
    results_dir: Path,
    bench_dir: Path,
) -> Outcome:
    path = bench_dir / script
    if not path.exists():
        return Outcome(name, script, "missing", detail=f"{script} not present")
    log = results_dir / f"{name}.log"
    cmd = [sys.executable, str(path), *(["--quick"] if quick else [])]
    print(f"== {name}: {' '.join(cmd[1:])} (log: {log})", flush=True)
    t0 = time.time()
    with log.open("w") as fh:
        # Own session, so on timeout the whole group (incl. a server the script started)
        # is ended, not just the script.
        proc = subprocess.Popen(
            cmd, cwd=bench_dir.parent, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            return Outcome(
                name, script, "timeout", time.time() - t0, f"ended after {timeout:.0f} s"
            )
    secs = time.time() - t0
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    if rc != 0:
        print(f"   FAILED rc={rc}\n{tail}", flush=True)
        return Outcome(name, script, "failed", secs, f"exit code {rc}: {tail.splitlines()[-1:]}")
    res = result_file(name, script, results_dir, alts)
    if not res.exists() or res.stat().st_mtime < t0 - 1:
        return Outcome(name, script, "no-results", secs, f"{res.name} not written")
    print(f"   ok in {secs:.0f} s", flush=True)
    return Outcome(name, script, "ok", secs)


# --------------------------------------------------------------------------- ratios


def relay_p99_at(relay: Mapping[str, Any], rate: float) -> tuple[float | None, str]:
    """Relay p99 at an offered load of `rate` msgs/s, and how it was obtained."""
    pts = []
    for row in common.load_points(relay):
        if not row.get("closed_loop"):
            off = common.num_field(row, "offered")
            p99 = common.num_field(row, "p99_ms", "p99")
            if off is not None and p99 is not None:
                pts.append((off, p99))
    if pts:
        how = "interpolated on relay curve"
        if rate < min(p[0] for p in pts):
            how = f"relay's lowest measured load ({min(p[0] for p in pts):,.0f} msgs/s)"
        return common.interpolate(pts, rate), how
    p99 = common.get_metric(relay, *P99_KEYS)
    return p99, "relay p99 at its own max (no curve): an upper bound"


def compute_ratios(docs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The three headline ratios with their targets; value None when an input is missing."""
    relay, syn, fwd = docs.get("relay"), docs.get("synapse"), docs.get("forwarder")
    r_msgs = common.get_metric(relay, *MSGS_KEYS) if relay else None
    s_msgs = common.get_metric(syn, *MSGS_KEYS) if syn else None
    s_p99 = common.get_metric(syn, "p99_ms") if syn else None
    f_msgs = common.get_metric(fwd, "msgs_per_s") if fwd else None
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: str, ok: bool | None, how: str) -> None:
        out.append({"ratio": name, "value": value, "target": target, "met": ok, "how": how})

    v = r_msgs / s_msgs if r_msgs and s_msgs else None
    add(
        "relay msgs/s ÷ Synapse msgs/s",
        v,
        "≥ 150×",
        None if v is None else v >= 150,
        f"{common.fmt_num(r_msgs)} ÷ {common.fmt_num(s_msgs)}",
    )
    r_p99, how = relay_p99_at(relay, s_msgs) if relay and s_msgs else (None, "inputs missing")
    v = r_p99 / s_p99 if r_p99 is not None and s_p99 else None
    add(
        "relay p99 at Synapse's max load ÷ Synapse p99",
        v,
        "≤ 1/20 (0.05)",
        None if v is None else v <= 0.05,
        f"{common.fmt_num(r_p99)} ms ({how}) ÷ {common.fmt_num(s_p99)} ms",
    )
    v = r_msgs / f_msgs if r_msgs and f_msgs else None
    add(
        "relay msgs/s ÷ bare forwarder (4-frame) msgs/s",
        v,
        "≥ 50 %",
        None if v is None else v >= 0.5,
        f"{common.fmt_num(r_msgs)} ÷ {common.fmt_num(f_msgs)}",
    )
    # CPU-normalised twins of the throughput ratios: server CPU per message barely moves
    # when other work shares the cores, while msgs/s falls with the CPU share it gets.
    r_cpu, s_cpu, f_cpu = cpu_ms_per_msg(relay), cpu_ms_per_msg(syn), cpu_ms_per_msg(fwd)
    v = s_cpu / r_cpu if s_cpu and r_cpu else None
    add(
        "Synapse CPU/msg ÷ relay CPU/msg (CPU-normalised throughput)",
        v,
        "≥ 150×",
        None if v is None else v >= 150,
        f"{common.fmt_num(s_cpu)} ms ÷ {common.fmt_num(r_cpu)} ms",
    )
    v = f_cpu / r_cpu if f_cpu and r_cpu else None
    add(
        "forwarder CPU/msg ÷ relay CPU/msg (CPU-normalised)",
        v,
        "≥ 50 %",
        None if v is None else v >= 0.5,
        f"{common.fmt_num(f_cpu)} ms ÷ {common.fmt_num(r_cpu)} ms",
    )
    return out


# --------------------------------------------------------------------------- markdown


def _stats(side: Mapping[str, Any]) -> Mapping[str, Any]:
    """``{"median", "spread_pct"}`` of one side, flat or nested under ``wall`` (crypto_bench)."""
    wall = side.get("wall")
    return wall if "median" not in side and isinstance(wall, Mapping) else side


def _comparison_rows(doc: Mapping[str, Any]) -> list[list[Any]]:
    """Rows for peer comparisons shaped {"xchat": {"median"}, "<peer>": {"median"}, "ratio"}."""
    rows = []
    for key, val in doc.items():
        if not (isinstance(val, Mapping) and isinstance(val.get("xchat"), Mapping)):
            continue
        peers = [k for k, v in val.items() if k != "xchat" and isinstance(v, Mapping)]
        peer = peers[0] if peers else None
        xs = _stats(val["xchat"])
        p = _stats(val[peer]).get("median") if peer else None
        rows.append(
            [
                key,
                val.get("unit", ""),
                xs.get("median"),
                xs.get("spread_pct"),
                f"{peer}: {common.fmt_num(p)}" if peer else "—",
                val.get("ratio", val.get("ratio_wall")),
            ]
        )
    return rows


def render_doc(name: str, doc: Mapping[str, Any]) -> str:
    """Markdown body for one benchmark: its own `markdown` if given, else generic tables."""
    if isinstance(doc.get("markdown"), str):
        return str(doc["markdown"])
    parts: list[str] = []
    if doc.get("command"):
        parts.append(f"Command: `{doc['command']}`")
    machine = doc.get("machine")
    if isinstance(machine, Mapping):
        start, end = machine.get("loadavg_at_start"), machine.get("loadavg_at_end")
        when = doc.get("finished_at") or doc.get("started_at") or "?"
        load = ", ".join(f"{label} {v[0]}" for label, v in (("start", start), ("end", end)) if v)
        if load:
            parts.append(f"Ran {when}; 1-min load avg on {machine.get('cores')} cores: {load}.")
    summary = doc.get("summary")
    if isinstance(summary, Mapping) and summary:
        parts.append(common.md_table(["metric", "value"], summary.items()))
    rows = _comparison_rows(doc)
    if rows:
        headers = ["workload", "unit", "xchat (median)", "± %", "peer (median)", "ratio"]
        parts.append(common.md_table(headers, rows))
    curve = doc.get("curve")
    if isinstance(curve, list) and curve and all("size_bytes" in c for c in curve):
        frow = [
            [c["size_bytes"], c.get("upload_mbps"), c.get("download_mbps"), c.get("mbps")]
            for c in curve
        ]
        parts.append(
            "Encrypt+upload+download+decrypt by file size (MB/s):\n\n"
            + common.md_table(["bytes", "upload", "download", "end to end"], frow)
        )
        curve = None
    if isinstance(curve, list) and curve:
        crow = [
            [
                c.get("offered"),
                c.get("achieved"),
                c.get("p50_ms", c.get("p50")),
                c.get("p99_ms", c.get("p99")),
                "closed-loop max" if c.get("closed_loop") else "",
            ]
            for c in curve
            if isinstance(c, Mapping)
        ]
        parts.append(
            "Load curve:\n\n"
            + common.md_table(["offered msgs/s", "achieved msgs/s", "p50 ms", "p99 ms", ""], crow)
        )
    if not parts:
        scalars = [(k, v) for k, v in doc.items() if isinstance(v, (int, float, str))]
        parts.append(common.md_table(["key", "value"], scalars[:30]))
    notes = doc.get("notes")
    if isinstance(notes, list):
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def render_header(args: argparse.Namespace, outcomes: list[Outcome]) -> str:
    cmd = "python bench/run_all.py" + (" --quick" if args.quick else "")
    rows = [[o.name, o.script, o.status, round(o.seconds), o.detail] for o in outcomes]
    return "\n\n".join(
        [
            f"Last run: `{cmd}` at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            f"Machine: {common.machine_line(common.machine_info())}.",
            common.md_table(["benchmark", "script", "status", "seconds", "detail"], rows),
        ]
    )


def render_ratios(ratios: list[dict[str, Any]]) -> str:
    def met(m: bool | None) -> str:
        return "n/a" if m is None else ("yes" if m else "**no**")

    rows = [[r["ratio"], r["value"], r["target"], met(r["met"]), r["how"]] for r in ratios]
    return common.md_table(["ratio", "value", "target", "met", "inputs"], rows)


def render_plots(pngs: list[Path], md_path: Path) -> str:
    if not pngs:
        return "No plots (no curve data, or matplotlib missing)."
    base = md_path.resolve().parent
    rel = [Path(os.path.relpath(p.resolve(), base)) for p in pngs if p.exists()]
    return "\n\n".join(f"![{p.stem}]({p.as_posix()})" for p in rel)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--only", default="", help="comma-separated names (crypto,group,...)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--no-run", action="store_true", help="only re-read existing JSON")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    ap.add_argument("--markdown", type=Path, default=common.ROOT / "BENCHMARKS.md")
    ap.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    timeout = args.timeout or (900.0 if args.quick else 3600.0)
    args.results.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    docs: dict[str, dict[str, Any]] = {}
    stored: list[Outcome] = []  # not selected this run: their JSON still feeds the ratios
    for name, script, alts in BENCHMARKS:
        path = result_file(name, script, args.results, alts)
        if (only and name not in only) or name in skip:
            doc = common.read_json(path)
            if doc is not None:
                docs[name] = doc
                when = doc.get("finished_at") or doc.get("started_at") or "unknown time"
                stored.append(Outcome(name, script, "stored", detail=f"{path.name} from {when}"))
            continue
        if args.no_run:
            o = Outcome(name, script, "not-run", detail=f"--no-run: stored {path.name}")
        else:
            o = run_one(name, script, alts, args.quick, timeout, args.results, common.BENCH_DIR)
            path = result_file(name, script, args.results, alts)
        outcomes.append(o)
        doc = common.read_json(path)
        if doc is not None and o.status in ("ok", "not-run"):
            docs[name] = doc
        elif o.status == "not-run":
            o.status, o.detail = "no-results", "no results file"
    ratios = compute_ratios(docs)
    pngs: list[Path] = []
    if not args.no_plots:
        try:
            import plots

            pngs = plots.make_plots(args.results)
        except ImportError as e:
            print(f"plots skipped: {e}", file=sys.stderr)
    md = args.markdown
    common.write_section(md, "header", render_header(args, outcomes + stored))
    common.write_section(md, "ratios", render_ratios(ratios))
    for o in outcomes:
        title = f"### {TITLES.get(o.name, o.name)}\n\n"
        if o.name in docs:
            body = render_doc(o.name, docs[o.name])
        else:
            body = f"Not available this run: {o.status} ({o.detail})."
        common.write_section(md, o.name, title + body)
    common.write_section(md, "plots", render_plots(pngs, md))
    summary = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": common.machine_info(),
        "outcomes": [o.__dict__ for o in outcomes + stored],
        "ratios": ratios,
    }
    common.write_json("summary", summary, args.results)
    print(render_ratios(ratios))
    benign = ("ok", "missing", "not-run") + (("no-results",) if args.no_run else ())
    failed = [o for o in outcomes if o.status not in benign]
    for o in failed:
        print(f"FAILED: {o.name}: {o.status} {o.detail}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
