"""Reliability suite plumbing: the shared decoder registry (``fuzz/xchat_decoders.py``) on
``sys.path``, and a terminal summary of how many inputs each decoder was fuzzed with.

Set ``XCHAT_FUZZ_COUNTS=<file>`` to also write the counts as JSON (RELIABILITY.md is
updated from that file by hand, so a test run never edits tracked docs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from _fuzz_stats import COUNTS

    if not COUNTS:
        return
    total = sum(COUNTS.values())
    terminalreporter.write_sep("-", f"decoder fuzzing: {total} inputs over {len(COUNTS)} decoders")
    for name, n in sorted(COUNTS.items()):
        terminalreporter.write_line(f"  {name:28s} {n:7d}")
    out = os.environ.get("XCHAT_FUZZ_COUNTS")
    if out:
        Path(out).write_text(json.dumps(dict(sorted(COUNTS.items())), indent=1) + "\n")
