"""Inputs tried per decoder in this pytest run (printed at the end, see conftest.py)."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()
