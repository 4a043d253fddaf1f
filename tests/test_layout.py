"""The test tree's own rules, checked so that a new file cannot break the whole run.

Test directories are not packages (helpers such as ``_relay_helpers`` are imported by bare
name), so pytest's default import mode gives every test module its basename as module name:
two ``test_tokens.py`` in different directories make collection of the whole suite fail,
although each directory passes on its own. Mirror the package layout and disambiguate with a
suffix (``tests/server/test_tokens_api.py`` beside ``tests/crypto/test_tokens.py``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py")
    clashes = sorted(name for name, n in names.items() if n > 1)
    assert not clashes, f"rename one of each (module names clash): {clashes}"
