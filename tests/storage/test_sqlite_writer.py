"""The SQLite store's writer process (storage/sqlite_writer.py, issue #20): if it dies, what
was waiting for a commit and everything asked later fails with StorageUnavailable (the
relay answers 503 + Retry-After) instead of hanging; what it committed before stays."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from xchat.errors import StorageUnavailable
from xchat.storage.base import NewEnvelope, PreKeySet
from xchat.storage.sqlite import SqliteStore

ADDR = "xc1" + "w" * 50


def env(ref: int) -> NewEnvelope:
    return NewEnvelope(ref, os.urandom(16), 1_000, 10**15, b"hello")


async def test_a_dead_writer_fails_pending_and_later_operations(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "xchat.db")
    await store.open()
    try:
        ref = (await store.register(ADDR, b"\x01" * 65, PreKeySet(), 1)).ref
        assert (await store.enqueue([env(ref)]))[0] is not None
        pid = store.writer_pid
        assert pid is not None
        got: list[BaseException | None] = []
        pending = asyncio.ensure_future(store.enqueue([env(ref)]))
        store.enqueue_cb([env(ref)], lambda _seqs, exc: got.append(exc))
        os.kill(pid, signal.SIGKILL)  # before the pass ends: the writer never sees these
        with pytest.raises(StorageUnavailable, match="writer process died"):
            await asyncio.wait_for(pending, 10)
        assert len(got) == 1 and isinstance(got[0], StorageUnavailable)
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(store.fetch(ref, 0, 10, 2_000), 10)
        store.ack_nowait(ref, [b"x" * 16])  # fire-and-forget: dropped, no error
        assert store.get_account(ADDR) is not None  # the cache still answers
        assert store.mailbox_usage(ref) == (1, 5)
    finally:
        await asyncio.wait_for(store.close(), 10)
    again = SqliteStore(tmp_path / "xchat.db")
    await again.open()
    try:
        assert len(await again.fetch(ref, 0, 10, 2_000)) == 1  # the committed one
        assert again.mailbox_usage(ref) == (1, 5)
    finally:
        await again.close()


async def test_close_answers_everything_queued_before_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "xchat.db")
    await store.open()
    ref = (await store.register(ADDR, b"\x01" * 65, PreKeySet(), 1)).ref
    futs = [asyncio.ensure_future(store.enqueue([env(ref)])) for _ in range(50)]
    await asyncio.sleep(0)  # queued on the loop, not yet handed to the writer
    await store.close()
    seqs = [(await f)[0] for f in futs]
    assert None not in seqs and len(set(seqs)) == 50
    assert store.writer_pid is None
