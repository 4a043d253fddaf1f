"""SQLite group commit: runs of enqueues and ACKs become one multi-row statement, padded to
a power of two with copies of the last row (issue #20). The padding must never store,
delete or count anything twice: checked here across the chunk and padding boundaries,
with duplicate keys, and against the mailbox quota's accounting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from xchat.storage.base import NewEnvelope, PreKeySet
from xchat.storage.sqlite import SqliteStore

ADDRS = ["xc1" + c * 50 for c in "qpz"]


def env(ref: int, eid: bytes, size: int) -> NewEnvelope:
    return NewEnvelope(ref, eid, 1_000, 10**15, os.urandom(size))


@pytest.mark.parametrize("n", [1, 3, 5, 17, 255, 256, 257, 600])
async def test_padded_runs_store_delete_and_count_each_envelope_once(
    tmp_path: Path, n: int
) -> None:
    store = SqliteStore(tmp_path / "xchat.db")
    await store.open()
    try:
        refs = [(await store.register(a, b"\x01" * 65, PreKeySet(), 1)).ref for a in ADDRS]
        items = [(refs[i % 3], os.urandom(16), 10 + i % 7) for i in range(n)]
        # one pass of the event loop: every enqueue joins the same group commit
        seqs = await asyncio.gather(*(store.enqueue([env(r, e, sz)]) for r, e, sz in items))
        assert all(s[0] is not None for s in seqs)
        again = await store.enqueue([env(r, e, sz) for r, e, sz in items[-3:]])
        assert again == [None] * min(3, n)  # retries are stored once, padding or not
        for ref in refs:
            mine = [(e, sz) for r, e, sz in items if r == ref]
            assert store.mailbox_usage(ref) == (
                (len(mine), sum(sz for _, sz in mine)) if mine else (0, 0)
            )
            assert len(await store.fetch(ref, 0, 1000, 2_000)) == len(mine)
        first = refs[0]
        ids = [e for r, e, _ in items if r == first]
        # an awaited ACK with a repeated id and an unknown one counts what it deleted
        assert await store.ack(first, [*ids, ids[-1], os.urandom(16)]) == len(ids)
        assert store.mailbox_usage(first) == (0, 0)
        for ref in refs[1:]:  # fire-and-forget ACKs of the rest, in one commit
            store.ack_nowait(ref, [e for r, e, _ in items if r == ref])
        assert await store.ack(refs[1], []) == 0  # a round trip behind them
        for ref in refs:
            assert store.mailbox_usage(ref) == (0, 0)
            assert await store.fetch(ref, 0, 1000, 2_000) == []
        assert store.stats.envelopes_stored == n
        assert store.stats.envelopes_deleted == n
    finally:
        await store.close()
