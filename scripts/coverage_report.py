"""Print line coverage per package of ``xchat``, the relay's subprocesses included.

``make test`` runs pytest under coverage with ``patch = ["subprocess"]`` (pyproject.toml), so
every relay, realm and app process a test starts records its own data file; this combines
them and sums statements and misses per package (``xchat.server``, ``xchat.client``, ...).
Why per package: a single total hides that, say, the relay's handlers are exercised only
through the subprocesses, which nobody could see before.

Usage: ``python scripts/coverage_report.py [--fail-under PCT]`` (after ``coverage combine``).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import coverage
from coverage.exceptions import NoDataError


def package_of(path: str) -> str | None:
    parts = Path(path).parts
    if "xchat" not in parts:
        return None
    rest = parts[parts.index("xchat") + 1 :]
    return "xchat" if len(rest) <= 1 else f"xchat.{rest[0]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--fail-under", type=float, default=0.0)
    args = ap.parse_args()
    cov = coverage.Coverage()
    cov.load()
    data = cov.get_data()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    try:
        files = sorted(data.measured_files())
    except NoDataError:
        files = []
    for path in files:
        package = package_of(path)
        if package is None:
            continue
        try:
            _, statements, _, missing, _ = cov.analysis2(path)
        except coverage.CoverageException:
            continue
        totals[package][0] += len(statements)
        totals[package][1] += len(missing)
    if not totals:
        print("coverage: no data (was pytest run under `coverage run`?)", file=sys.stderr)
        return 1
    print(f"{'package':<20}{'statements':>11}{'missed':>8}{'cover':>8}")
    all_s = all_m = 0
    for package in sorted(totals):
        s, m = totals[package]
        all_s, all_m = all_s + s, all_m + m
        print(f"{package:<20}{s:>11}{m:>8}{100 * (s - m) / max(s, 1):>7.1f}%")
    total = 100 * (all_s - all_m) / max(all_s, 1)
    print(f"{'total':<20}{all_s:>11}{all_m:>8}{total:>7.1f}%")
    return 0 if total >= args.fail_under else 2


if __name__ == "__main__":
    sys.exit(main())
