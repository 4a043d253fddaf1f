"""Shared helpers for the XChat benchmark suite (bench/*.py).

Why one module: every benchmark must describe the machine it ran on the same way, summarise
latency samples the same way (nearest-rank percentiles), write its JSON the same way (atomic,
schema documented in bench/README.md) and update its own section of BENCHMARKS.md
without touching the rest of the file. Standard library only, so any benchmark (and the
Synapse venv's interpreter) can import it.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SYNAPSE_VENV = BENCH_DIR / ".synapse-venv"
SCHEMA_VERSION = 1

#: Packages whose versions are recorded with every result (peers and the stack under test).
TRACKED_PACKAGES = (
    "cryptography",
    "uvicorn",
    "uvloop",
    "websockets",
    "httpx",
    "starlette",
    "fastapi",
    "vodozemac",
)

# --------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    """Total RAM in GiB from /proc/meminfo, None where that file does not exist."""
    m = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    return round(int(m.group(1)) / 1024 / 1024, 1) if m else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def synapse_version(venv: Path = SYNAPSE_VENV) -> str | None:
    """matrix-synapse version installed in the bench's private venv (read from dist-info)."""
    for info in sorted(venv.glob("lib/python*/site-packages/matrix_synapse-*.dist-info")):
        return info.name[len("matrix_synapse-") : -len(".dist-info")]
    return None


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to judge a figure: hardware, load at start, software versions.

    The load average is recorded because the machine is often shared with other work; a
    figure taken with a load of 3 on 2 cores is a floor, not a ceiling.
    """
    versions: dict[str, str | None] = {p: package_version(p) for p in TRACKED_PACKAGES}
    versions["matrix-synapse"] = synapse_version()
    load = loadavg()
    return {
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "loadavg_at_start": load,
        "versions": versions,
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One-line human summary of machine_info() for Markdown headers."""
    v = info.get("versions", {})
    shown = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    load, end = info.get("loadavg_at_start"), info.get("loadavg_at_end")
    load_s = f"; 1-min load avg at start {load[0]}" if load else ""
    load_s += f", at end {end[0]}" if end else ""
    return (
        f"{info.get('cores')} cores, {info.get('ram_gib')} GiB RAM, {info.get('cpu_model')}, "
        f"{info.get('os')}, Python {info.get('python')}{load_s}; {shown}"
    )


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): the value a real sample actually had.

    Raises ValueError on an empty sequence or a pct outside [0, 100].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} outside [0, 100]")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("median of no samples")
    return float(statistics.median(samples))


def spread(samples: Sequence[float]) -> float:
    """Relative spread (max - min) / median of repeated runs, as a fraction (0.05 = 5 %).

    Used to say how much a figure moved between repetitions; 0 for a single sample.
    """
    if not samples:
        raise ValueError("spread of no samples")
    mid = median(samples)
    if mid == 0:
        return 0.0
    return (max(samples) - min(samples)) / abs(mid)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/mean of latency samples in ms; all None (n=0) if there are none."""
    if not samples_ms:
        return {
            "n": 0,
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "mean_ms": None,
        }
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 3),
        "p90_ms": round(percentile(samples_ms, 90), 3),
        "p99_ms": round(percentile(samples_ms, 99), 3),
        "max_ms": round(max(samples_ms), 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
    }


def interpolate(points: Iterable[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of y at x over (x, y) points; clamps to the nearest end point.

    Used to read a curve (e.g. relay p99 vs offered load) at another system's operating
    point (Synapse's max rate). None if there are no points.
    """
    pts = sorted(points)
    if not pts:
        return None
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            if x1 == x0:
                return y1
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


# --------------------------------------------------------------------------- process stats


def clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children's, fields 16-17) in seconds.

    Read from /proc/<pid>/stat; the comm field may contain spaces, so split after ')'.
    """
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime = field 14, stime = 15, cutime 16, cstime 17.
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / clock_ticks()


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process from /proc/<pid>/status (VmRSS)."""
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if not m:
        raise ValueError(f"no VmRSS for pid {pid}")
    return int(m.group(1)) * 1024


# --------------------------------------------------------------------------- results I/O


def result_path(name: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / f"{name}.json"


def new_result(name: str, argv: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Skeleton of a result document (schema in bench/README.md)."""
    args = list(sys.argv if argv is None else argv)
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "command": " ".join(["python", *args]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "summary": {},
    }
    doc.update(extra)
    return doc


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def finish_result(doc: dict[str, Any]) -> dict[str, Any]:
    """Stamp end time and load average: a busy shared machine shows up next to the figures."""
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["machine"]["loadavg_at_end"] = loadavg()
    return doc


def write_json(
    name: str, data: Mapping[str, Any], results_dir: Path = RESULTS_DIR, out: Path | None = None
) -> Path:
    """Write results/<name>.json (or `out`) atomically: tmp file + rename, never half a file."""
    path = out if out is not None else result_path(name, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """Load a result file; None if missing or not a JSON object (never raises on bad data)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def get_metric(doc: Mapping[str, Any], *keys: str) -> float | None:
    """First numeric value found for any of `keys` (dotted paths allowed).

    Each key is looked up in doc["summary"] first, then from the document root, so scripts
    written by different streams can be read without agreeing on every name.
    """
    for key in keys:
        for base in (doc.get("summary"), doc):
            node: Any = base
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, (int, float)) and not isinstance(node, bool):
                return float(node)
    return None


# --------------------------------------------------------------------------- result shapes


def num_field(row: Mapping[str, Any], *keys: str) -> float | None:
    """First numeric value among `keys`; a {"median": x} dict counts as x."""
    for k in keys:
        v = row.get(k)
        if isinstance(v, Mapping):
            v = v.get("median")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def load_points(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Load-curve rows of a doc: its `curve`, else top-level windows shaped like
    {"msgs_per_s", "p50_ms", "p99_ms", "offered_rate"} (offered_rate None = closed loop).
    """
    rows = doc.get("curve")
    if isinstance(rows, list) and any(isinstance(r, Mapping) and "offered" in r for r in rows):
        return [dict(r) for r in rows if isinstance(r, Mapping)]
    out: list[dict[str, Any]] = []
    for val in doc.values():
        if not isinstance(val, Mapping) or num_field(val, "msgs_per_s") is None:
            continue
        if "offered_rate" not in val and "offered" not in val:
            continue
        offered = num_field(val, "offered_rate", "offered")
        out.append(
            {
                "offered": offered if offered is not None else val["msgs_per_s"],
                "achieved": val["msgs_per_s"],
                "p50_ms": val.get("p50_ms"),
                "p99_ms": val.get("p99_ms"),
                "closed_loop": offered is None,
            }
        )
    return out


# --------------------------------------------------------------------------- markdown


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad section name {name!r}")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """Return `text` with the section between the markers for `name` set to `body`.

    Everything outside the markers is left byte-for-byte alone. A missing section is
    appended at the end. Raises ValueError if only one of the two markers is present or
    they are out of order, rather than guess and damage hand-written text.
    """
    start, end = _markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i == -1 and j == -1:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{sep}{block}\n"
    if i == -1 or j == -1 or j < i:
        raise ValueError(f"unbalanced markers for bench section {name!r}")
    return text[:i] + block + text[j + len(end) :]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) one marked section of a Markdown file, creating the file if needed."""
    text = path.read_text() if path.exists() else ""
    new = replace_section(text, name, body)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Human formatting for tables: thousands separators, `digits` significant figures."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells formatted with fmt_num."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(fmt_num(c) for c in row) + " |")
    return "\n".join(lines)
