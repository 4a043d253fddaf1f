"""Unit tests for the benchmark suite's helpers (bench/common.py, run_all ratios, plots data).

The bench scripts are plain scripts, not a package, so they are loaded by file path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # run_all and plots import `common` by name
    spec = importlib.util.spec_from_file_location(f"xchat_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    return mod


common = _load("common")
run_all = _load("run_all")


# --------------------------------------------------------------------------- statistics


def test_percentile_nearest_rank() -> None:
    xs = list(range(1, 101))  # 1..100
    assert common.percentile(xs, 50) == 50
    assert common.percentile(xs, 99) == 99
    assert common.percentile(xs, 100) == 100
    assert common.percentile(xs, 0) == 1
    assert common.percentile([7.0], 99) == 7.0
    assert common.percentile([3, 1, 2], 50) == 2  # unsorted input


@pytest.mark.parametrize("bad", [-1, 101])
def test_percentile_rejects_bad_pct(bad: float) -> None:
    with pytest.raises(ValueError):
        common.percentile([1.0], bad)


def test_empty_samples_rejected() -> None:
    for fn in (lambda: common.percentile([], 50), lambda: common.median([])):
        with pytest.raises(ValueError):
            fn()
    with pytest.raises(ValueError):
        common.spread([])


def test_median_and_spread() -> None:
    assert common.median([1, 3, 2]) == 2
    assert common.median([1, 2, 3, 4]) == 2.5
    assert common.spread([90, 100, 110]) == pytest.approx(0.2)
    assert common.spread([5]) == 0
    assert common.spread([0, 0]) == 0


def test_latency_summary() -> None:
    s = common.latency_summary([float(i) for i in range(1, 201)])
    assert s["n"] == 200
    assert s["p50_ms"] == 100
    assert s["p99_ms"] == 198
    assert s["max_ms"] == 200
    assert common.latency_summary([])["p99_ms"] is None


def test_interpolate() -> None:
    pts = [(10.0, 1.0), (30.0, 3.0), (20.0, 2.0)]
    assert common.interpolate(pts, 15) == pytest.approx(1.5)
    assert common.interpolate(pts, 5) == 1.0  # clamps low
    assert common.interpolate(pts, 99) == 3.0  # clamps high
    assert common.interpolate([], 1) is None


# --------------------------------------------------------------------------- formatting


def test_fmt_num() -> None:
    assert common.fmt_num(None) == "—"
    assert common.fmt_num(0) == "0"
    assert common.fmt_num(12345.6) == "12,346"
    assert common.fmt_num(1.23456) == "1.23"
    assert common.fmt_num(0.012345) == "0.0123"
    assert common.fmt_num("text") == "text"


def test_md_table() -> None:
    t = common.md_table(["a", "b"], [["x", 1.5], ["y", None]])
    assert t.splitlines() == ["| a | b |", "|---|---|", "| x | 1.50 |", "| y | — |"]


# --------------------------------------------------------------------------- sections


def test_replace_section_appends_then_replaces_in_place() -> None:
    text = "# Benchmarks\n\nHand-written intro.\n"
    once = common.replace_section(text, "relay", "first")
    assert once.startswith(text)
    assert "<!-- bench:relay -->\nfirst\n<!-- /bench:relay -->" in once
    tail = "\nTrailing notes stay.\n"
    twice = common.replace_section(once + tail, "relay", "second\n")
    assert "first" not in twice
    assert twice.endswith(tail)
    assert twice.count("<!-- bench:relay -->") == 1
    assert twice.startswith(text)


def test_replace_section_leaves_other_sections_alone() -> None:
    text = common.replace_section("", "a", "A")
    text = common.replace_section(text, "b", "B")
    text = common.replace_section(text, "a", "A2")
    assert "A2" in text and "\nB\n" in text
    assert text.index("bench:a") < text.index("bench:b")


@pytest.mark.parametrize(
    "text",
    [
        "<!-- bench:x -->\nno end\n",
        "no start\n<!-- /bench:x -->\n",
        "<!-- /bench:x -->\n<!-- bench:x -->\n",
    ],
)
def test_replace_section_refuses_unbalanced_markers(text: str) -> None:
    with pytest.raises(ValueError):
        common.replace_section(text, "x", "body")


def test_section_name_validated() -> None:
    with pytest.raises(ValueError):
        common.replace_section("", "bad name -->", "x")


def test_write_section_creates_file(tmp_path: Path) -> None:
    md = tmp_path / "B.md"
    common.write_section(md, "s", "hello")
    common.write_section(md, "s", "bye")
    assert md.read_text() == "<!-- bench:s -->\nbye\n<!-- /bench:s -->\n"


# --------------------------------------------------------------------------- results I/O


def test_write_and_read_json(tmp_path: Path) -> None:
    path = common.write_json("demo", {"summary": {"msgs_per_s": 3}}, tmp_path)
    assert path == tmp_path / "demo.json"
    assert common.read_json(path) == {"summary": {"msgs_per_s": 3}}
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.json").write_text("{not json")
    assert common.read_json(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1]")
    assert common.read_json(tmp_path / "list.json") is None
    assert common.read_json(tmp_path / "missing.json") is None


def test_get_metric_prefers_summary_and_follows_dots() -> None:
    doc = {
        "summary": {"msgs_per_s": 10},
        "msgs_per_s": 99,
        "latency": {"p99_ms": 4.5},
        "flag": True,
    }
    assert common.get_metric(doc, "msgs_per_s") == 10
    assert common.get_metric(doc, "nope", "latency.p99_ms") == 4.5
    assert common.get_metric(doc, "flag") is None  # booleans are not numbers
    assert common.get_metric({}, "x") is None


def test_new_result_has_schema_fields() -> None:
    doc = common.new_result("demo", argv=["bench/demo.py", "--quick"], quick=True)
    assert doc["schema"] == common.SCHEMA_VERSION
    assert doc["command"] == "python bench/demo.py --quick"
    assert doc["quick"] is True
    m = doc["machine"]
    assert m["cores"] == os.cpu_count()
    assert "cryptography" in m["versions"]
    assert common.machine_line(m)
    json.dumps(doc)  # serialisable


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_proc_stats_of_self() -> None:
    first = common.proc_cpu_seconds(os.getpid())
    assert isinstance(first, float) and first >= 0.0
    assert common.proc_cpu_seconds(os.getpid()) >= first  # a counter: never goes back
    assert common.proc_rss_bytes(os.getpid()) > 1_000_000


# --------------------------------------------------------------------------- run_all ratios


def test_ratios_met_and_missing() -> None:
    docs = {
        "relay": {
            "summary": {"msgs_per_s": 12000.0, "p99_ms": 40.0},
            "curve": [{"offered": 50, "p99_ms": 1.0}, {"offered": 1000, "p99_ms": 2.0}],
        },
        "synapse": {"summary": {"msgs_per_s": 60.0, "p99_ms": 100.0}},
        "forwarder": {"summary": {"msgs_per_s": 20000.0}},
    }
    thr, p99, fwd, _, _ = run_all.compute_ratios(docs)
    assert thr["value"] == pytest.approx(200) and thr["met"] is True
    assert p99["value"] == pytest.approx((1.0 + 10 / 950) / 100)
    assert p99["met"] is True
    assert fwd["value"] == pytest.approx(0.6) and fwd["met"] is True
    docs["relay"]["summary"]["cpu_ms_per_msg"] = 0.05
    docs["synapse"]["summary"]["cpu_ms_per_msg"] = 15.0
    docs["forwarder"]["summary"]["server_cpu_us_per_msg"] = 40.0
    cpu_syn, cpu_fwd = run_all.compute_ratios(docs)[3:]
    assert cpu_syn["value"] == pytest.approx(300) and cpu_syn["met"] is True
    assert cpu_fwd["value"] == pytest.approx(0.8) and cpu_fwd["met"] is True
    none = run_all.compute_ratios({})
    assert all(x["value"] is None and x["met"] is None for x in none)


def test_ratio_p99_falls_back_to_summary_without_curve() -> None:
    docs = {
        "relay": {"summary": {"msgs_per_s": 100.0, "p99_ms": 30.0}},
        "synapse": {"summary": {"msgs_per_s": 50.0, "p99_ms": 100.0}},
    }
    p99 = run_all.compute_ratios(docs)[1]
    assert p99["value"] == pytest.approx(0.3)
    assert p99["met"] is False
    assert "upper bound" in p99["how"]


def test_render_doc_handles_peer_comparison_shape() -> None:
    doc = {
        "one-direction": {
            "unit": "pairs/s",
            "xchat": {"median": 100.0, "spread_pct": 2.0},
            "vodozemac": {"median": 50.0},
            "ratio": 2.0,
        }
    }
    md = run_all.render_doc("crypto", doc)
    assert "one-direction" in md and "vodozemac: 50.0" in md
    assert run_all.render_doc("x", {"markdown": "own text"}) == "own text"


# --------------------------------------------------------------------------- plots data


def test_plot_data_readers_skip_bad_rows() -> None:
    plots = _load("plots")
    docs = {
        "relay": {
            "curve": [
                {"offered": 100, "achieved": 99, "p99_ms": 2},
                {"offered": 10, "achieved": 10, "p99": 1},
                {"offered": "x"},
                7,
            ],
            "rss_curve": [{"connections": 1000, "rss_mb": 40}, {"connections": 0}],
        },
        "synapse": {"curve": "not a list", "extra_curves": {"other": [{"offered": 5}]}},
    }
    curves = plots.load_curves(docs)
    assert [p["offered"] for p in curves["XChat relay"]] == [10, 100]
    assert curves["XChat relay"][0]["p99"] == 1
    assert "Matrix Synapse" not in curves and curves["other"][0]["offered"] == 5
    assert plots.grouped(docs, "rss_curve", ["connections"], ["rss_mb"]) == {
        "XChat relay": [(1000.0, 40.0)]
    }
    assert plots.grouped(docs, "file_curve", ["size_bytes"], ["mb_per_s"]) == {}


# --------------------------------------------------------------------------- run_all runner


def _script(bench: Path, name: str, body: str) -> None:
    (bench / name).write_text("import json, os, subprocess, sys, time\n" + body + "\n")


def test_run_one_statuses(tmp_path: Path) -> None:
    bench, results = tmp_path / "bench", tmp_path / "results"
    bench.mkdir()
    results.mkdir()
    _script(bench, "good.py", f"open({str(results / 'good.json')!r}, 'w').write('{{}}')")
    _script(bench, "bad.py", "print('boom'); sys.exit(2)")
    _script(bench, "silent.py", "pass")

    def run(script: str) -> str:
        name = script.removesuffix(".py")
        o = run_all.run_one(name, script, (), True, 30, results, bench)
        return str(o.status)

    assert run("good.py") == "ok"
    assert run("bad.py") == "failed"
    assert run("silent.py") == "no-results"
    assert run("absent.py") == "missing"
    assert "boom" in (results / "bad.log").read_text()


def test_run_one_timeout_ends_the_whole_group(tmp_path: Path) -> None:
    bench, results = tmp_path / "bench", tmp_path / "results"
    bench.mkdir()
    results.mkdir()
    pidfile = tmp_path / "child.pid"
    _script(
        bench,
        "hang.py",
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)",
    )
    o = run_all.run_one("hang", "hang.py", (), False, 2, results, bench)
    assert o.status == "timeout"
    child = int(pidfile.read_text())
    # The grandchild got SIGTERM with its group; it may linger a moment as a zombie.
    for _ in range(50):
        try:
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("grandchild still running after timeout")
