"""``xchat serve`` collector tuning (issue #20): start-up objects are frozen out of full
collections and the young generation is larger, so a full collection no longer stops the
event loop for tens of milliseconds under load."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from xchat.server.serve import GC_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_startup_objects_and_raises_gen0() -> None:
    alive = [[i] for i in range(1000)]  # tracked containers alive at "start-up"
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    # a full collection now only visits what was allocated after the freeze
    assert len(gc.get_objects(2)) < len(alive)
    # and still frees new cycles
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
