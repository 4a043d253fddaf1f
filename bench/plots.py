"""PNG plots from whatever bench/results/*.json exist (schema: bench/README.md).

Why a separate step: benchmarks are run at different times by different scripts; the plots
are redrawn from the stored JSON so a figure never mixes a fresh run with a hand-edited one.
A plot whose data is absent is skipped, not drawn empty.

Plots (each only if some result carries the data):
- throughput.png   achieved vs offered msgs/s          (`curve`, `extra_curves`)
- latency_p99.png  p99 delivery latency vs offered load (`curve`, `extra_curves`)
- rss.png          server RSS vs idle connections       (`rss_curve`)
- group.png        group-send cost vs group size        (`group_curve`)
- files.png        file throughput vs file size         (`file_curve`)
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import common

LABELS = {
    "relay": "XChat relay",
    "synapse": "Matrix Synapse",
    "forwarder": "forwarder (4 frames/msg)",
    "group": "XChat groups",
    "groups": "XChat groups",
    "files": "XChat files (E2EE)",
    "crypto": "XChat crypto",
}


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> document for every readable results/*.json (summary.json excluded)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        if path.stem == "summary":
            continue
        doc = common.read_json(path)
        if doc is not None:
            out[path.stem] = doc
    return out


_num = common.num_field
load_points = common.load_points


def load_curves(docs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Series label -> sorted points {offered, achieved, p50, p99} from curve/extra_curves."""
    series: dict[str, list[dict[str, float]]] = {}

    def add(label: str, rows: Any) -> None:
        pts = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, Mapping):
                continue
            offered = _num(row, "offered")
            if offered is None or offered <= 0:
                continue
            pt = {"offered": offered, "closed_loop": 1.0 if row.get("closed_loop") else 0.0}
            for key, names in (
                ("achieved", ("achieved",)),
                ("p50", ("p50_ms", "p50")),
                ("p99", ("p99_ms", "p99")),
            ):
                v = _num(row, *names)
                if v is not None:
                    pt[key] = v
            pts.append(pt)
        if pts:
            series[label] = sorted(pts, key=lambda p: p["offered"])

    for name, doc in docs.items():
        add(LABELS.get(name, name), load_points(doc))
        extra = doc.get("extra_curves")
        if isinstance(extra, Mapping):
            for label, rows in extra.items():
                add(str(label), rows)
    return series


def grouped(
    docs: Mapping[str, Mapping[str, Any]],
    keys: str | Iterable[str],
    x: Iterable[str],
    y: Iterable[str],
) -> dict[str, list[tuple[float, float]]]:
    """Series label -> sorted (x, y) from every doc's list under the first of `keys` that
    holds rows with both an x and a y field; row["series"] splits one file into series.
    """
    xs, ys = tuple(x), tuple(y)
    names = (keys,) if isinstance(keys, str) else tuple(keys)
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, doc in docs.items():
        rows: Any = []
        for key in names:
            cand = doc.get(key)
            if isinstance(cand, list) and any(
                isinstance(r, Mapping) and _num(r, *xs) is not None and _num(r, *ys) is not None
                for r in cand
            ):
                rows = cand
                break
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            xv, yv = _num(row, *xs), _num(row, *ys)
            if xv is not None and yv is not None:
                out[str(row.get("series") or LABELS.get(name, name))].append((xv, yv))
    return {k: sorted(v) for k, v in out.items()}


def _figure(title: str, xlabel: str, ylabel: str, logx: bool, logy: bool) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _save(fig: Any, ax: Any, path: Path, subtitle: str) -> Path:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, subtitle, fontsize=6, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_series(ax: Any, label: str, pts: list[dict[str, float]], ykey: str) -> bool:
    """Open-loop points as a line; the closed-loop max (window-limited) as a lone star."""
    line = [(p["offered"], p[ykey]) for p in pts if p.get(ykey) and not p["closed_loop"]]
    star = [(p["offered"], p[ykey]) for p in pts if p.get(ykey) and p["closed_loop"]]
    color = None
    if line:
        (handle,) = ax.plot(*zip(*line, strict=True), marker="o", label=label)
        color = handle.get_color()
    if star:
        ax.plot(
            *zip(*star, strict=True),
            marker="*",
            ms=12,
            ls="none",
            color=color,
            label=f"{label}: closed-loop max",
        )
    return bool(line or star)


def plot_load(series: Mapping[str, list[dict[str, float]]], out: Path, sub: str) -> list[Path]:
    """throughput.png and latency_p99.png from the load curves (log-log: peers differ 100x+)."""
    import matplotlib.pyplot as plt

    made: list[Path] = []
    specs = [
        ("throughput.png", "Throughput vs offered load", "achieved msgs/s", "achieved"),
        ("latency_p99.png", "p99 delivery latency vs offered load", "p99 ms", "p99"),
    ]
    for fname, title, ylabel, ykey in specs:
        fig, ax = _figure(title, "offered msgs/s", ylabel, True, True)
        drawn = [_draw_series(ax, label, pts, ykey) for label, pts in series.items()]
        if not any(drawn):
            plt.close(fig)
            continue
        if ykey == "achieved":
            xs = [p["offered"] for pts in series.values() for p in pts]
            ax.plot(
                [min(xs), max(xs)],
                [min(xs), max(xs)],
                ls=":",
                color="grey",
                label="achieved = offered",
            )
        made.append(_save(fig, ax, out / fname, sub))
    return made


def plot_xy(
    data: Mapping[str, list[tuple[float, float]]],
    path: Path,
    labels: tuple[str, str, str],
    sub: str,
    logx: bool = False,
) -> list[Path]:
    if not data:
        return []
    fig, ax = _figure(*labels, logx, False)
    for label, pts in data.items():
        ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    return [_save(fig, ax, path, sub)]


def make_plots(results_dir: Path = common.RESULTS_DIR) -> list[Path]:
    """Draw every plot the stored results allow; return the PNG paths written."""
    docs = load_results(results_dir)
    if not docs:
        return []
    machines = [d["machine"] for d in docs.values() if isinstance(d.get("machine"), dict)]
    machine: dict[str, Any] = max(machines, key=len, default={})
    sub = f"{machine.get('cores', '?')} cores, {machine.get('cpu_model', '')}".strip(", ")
    made = plot_load(load_curves(docs), results_dir, sub)
    rss = grouped(docs, "rss_curve", ["connections"], ["rss_mb"])
    for name, doc in docs.items():  # relay_bench's single "idle" measurement: two points
        idle = doc.get("idle")
        if LABELS.get(name, name) not in rss and isinstance(idle, Mapping):
            n, kib0, kib1 = (
                _num(idle, k) for k in ("connections", "rss_before_kib", "rss_after_kib")
            )
            if n and kib0 and kib1:
                rss[LABELS.get(name, name)] = [(0.0, kib0 / 1024), (n, kib1 / 1024)]
    made += plot_xy(
        rss,
        results_dir / "rss.png",
        ("Server RSS vs idle connections", "idle connections", "RSS MiB"),
        sub,
    )
    group = grouped(
        docs,
        ["group_curve", "group_send"],
        ["group_size", "members"],
        ["ms_per_send", "client_cpu_ms_per_message"],
    )
    made += plot_xy(
        group,
        results_dir / "group.png",
        ("Group send cost vs group size", "group members", "ms per send"),
        sub,
    )
    files = grouped(docs, ["file_curve", "curve"], ["size_bytes"], ["mb_per_s", "mbps"])
    made += plot_xy(
        files,
        results_dir / "files.png",
        ("File throughput vs size", "file size (bytes)", "MB/s"),
        sub,
        logx=True,
    )
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    args = ap.parse_args(argv)
    try:
        made = make_plots(args.results)
    except ImportError:
        print("plots: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    for p in made:
        print(f"wrote {p}")
    if not made:
        print("plots: no plottable data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
