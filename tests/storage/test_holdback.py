"""Delivery before commit (xchat.storage.holdback, PROTOCOL Part III §7): what an ACK removes
is never written, what is not ACKed in time is, and the sender is told only once every
envelope of its send is durable (on the relay's disk or ACKed by its device)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from xchat.storage.base import NewEnvelope, PreKeySet
from xchat.storage.holdback import Holdback
from xchat.storage.sqlite import SqliteStore

HOLD = 0.05


def env(ref: int, content: bytes = b"x") -> NewEnvelope:
    return NewEnvelope(ref, os.urandom(16), 1, 2**62, content)


class Recorder:
    """The store side of a Holdback: what was released, and which sends were reported."""

    def __init__(self) -> None:
        self.released: list[list[NewEnvelope]] = []
        self.done: list[str] = []

    def release(self, rows: list[NewEnvelope], seqs: list[int], cb: Any) -> None:
        assert len(rows) == len(seqs)
        self.released.append(rows)
        cb(seqs, None)  # as if committed at once

    def callback(self, name: str) -> Any:
        return lambda seqs, exc: self.done.append(name)


async def test_an_acked_send_is_never_released_and_is_reported_at_the_ack() -> None:
    rec = Recorder()
    hb = Holdback(HOLD, rec.release, asyncio.get_running_loop())
    a, b = env(1), env(2)
    hb.hold_send([a, b], [1, 2], rec.callback("s"))
    assert hb.cancel(1, [a.envelope_id, os.urandom(16)]) != []  # the unknown id is passed on
    assert rec.done == []  # one envelope is still neither written nor ACKed
    assert hb.cancel(2, [b.envelope_id]) == []
    assert rec.done == ["s"] and hb.acked_unwritten == 2 and len(hb) == 0
    await asyncio.sleep(HOLD * 3)
    assert rec.released == [] and rec.done == ["s"]


async def test_what_is_not_acked_in_time_is_released_without_the_acked_part() -> None:
    rec = Recorder()
    hb = Holdback(HOLD, rec.release, asyncio.get_running_loop())
    a, b = env(1), env(2)
    hb.hold_send([a, b], [1, 2], rec.callback("s"))
    hb.cancel(1, [a.envelope_id])
    await asyncio.sleep(HOLD * 3)
    assert rec.released == [[b]] and rec.done == ["s"]
    assert hb.cancel(2, [b.envelope_id]) == [b.envelope_id]  # now the store deletes it


async def test_an_ack_for_another_device_does_not_cancel() -> None:
    rec = Recorder()
    hb = Holdback(HOLD, rec.release, asyncio.get_running_loop())
    a = env(1)
    hb.hold_send([a], [1], rec.callback("s"))
    assert hb.cancel(2, [a.envelope_id]) == [a.envelope_id]
    assert rec.done == []
    hb.release_all()
    assert rec.released == [[a]] and rec.done == ["s"]


async def test_a_retry_of_a_held_envelope_writes_the_first_copy() -> None:
    """Two sends of the same (device, id): the first sender is told only once its copy is
    on disk, never because the second copy's ACK came in."""
    rec = Recorder()
    hb = Holdback(HOLD, rec.release, asyncio.get_running_loop())
    a = env(1)
    hb.hold_send([a], [1], rec.callback("first"))
    hb.hold_send([a], [2], rec.callback("retry"))
    assert rec.released == [[a]] and rec.done == ["first"]
    hb.cancel(1, [a.envelope_id])
    assert rec.done == ["first", "retry"]
    await asyncio.sleep(HOLD * 3)
    assert len(rec.released) == 1


def stored_ids(path: Path) -> set[bytes]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT envelope_id FROM mailbox")}


async def open_store(tmp_path: Path) -> tuple[SqliteStore, int]:
    store = SqliteStore(tmp_path / "xchat.db", HOLD)
    await store.open()
    dev = await store.register("xc1test", b"k" * 32, PreKeySet(None, None, [], []), 1)
    return store, dev.ref


async def test_sqlite_store_writes_only_what_was_not_acked(tmp_path: Path) -> None:
    store, ref = await open_store(tmp_path)
    acked, unacked, offline = env(ref, b"acked"), env(ref, b"unacked"), env(ref, b"offline")
    results: list[Any] = []

    def cb(seqs: Any, exc: BaseException | None) -> None:
        results.append(exc)

    for e, hold in ((acked, True), (unacked, True), (offline, False)):
        store.enqueue_reserved([e], store.reserve_seqs(1), cb, hold=hold)
    store.ack_nowait(ref, [acked.envelope_id])
    assert results == [None]  # the ACKed send is durable on its device already
    for _ in range(250):  # the hold, then the writer thread's commit
        if len(results) == 3:
            break
        await asyncio.sleep(0.02)
    assert results == [None, None, None]
    assert store.acked_unwritten() == 1
    await store.close()
    assert stored_ids(tmp_path / "xchat.db") == {unacked.envelope_id, offline.envelope_id}


async def test_sqlite_store_reads_see_held_mail_and_close_writes_it(tmp_path: Path) -> None:
    store, ref = await open_store(tmp_path)
    first, second = env(ref, b"first"), env(ref, b"second")
    done: list[Any] = []
    store.enqueue_reserved([first], store.reserve_seqs(1), lambda s, e: done.append(e), hold=True)
    rows = await store.fetch(ref, 0, 10, 2)  # a read hands every held send to the writer
    assert [r.content for r in rows] == [b"first"] and done == [None]
    assert await store.ack(ref, [first.envelope_id]) == 1  # now a real delete
    store.enqueue_reserved([second], store.reserve_seqs(1), lambda s, e: done.append(e), hold=True)
    assert await store.count_prekeys(ref) == (0, 0)  # no mailbox read: stays held
    assert done == [None]
    await store.close()  # shutdown writes what is held
    assert done == [None, None]
    assert stored_ids(tmp_path / "xchat.db") == {second.envelope_id}


async def test_an_awaited_ack_counts_held_envelopes(tmp_path: Path) -> None:
    store, ref = await open_store(tmp_path)
    held, written = env(ref), env(ref)
    assert await store.enqueue([written]) != [None]
    store.enqueue_reserved([held], store.reserve_seqs(1), lambda s, e: None, hold=True)
    assert await store.ack(ref, [held.envelope_id, written.envelope_id, os.urandom(16)]) == 2
    await store.close()
    assert stored_ids(tmp_path / "xchat.db") == set()


async def test_nothing_is_delivered_first_while_a_change_or_a_commit_first_send_is_open(
    tmp_path: Path,
) -> None:
    """A revocation asked for must cut the device before anything accepted after it, as
    with commit-first delivery; and an early delivery must not overtake a commit-first
    one (per-device order)."""
    store, ref = await open_store(tmp_path)
    assert store.early_delivery() is not None
    change = asyncio.ensure_future(store.set_token_hash("xc1test", b"h" * 32))
    await asyncio.sleep(0)
    assert store.early_delivery() is None
    await change
    await asyncio.sleep(0)
    assert store.early_delivery() is not None
    done: list[Any] = []
    store.enqueue_cb([env(ref)], lambda seqs, exc: done.append(exc))
    assert store.early_delivery() is None
    for _ in range(250):
        if done:
            break
        await asyncio.sleep(0.02)
    assert done == [None] and store.early_delivery() is not None
    assert await store.count_prekeys(ref) == (0, 0)  # a read of keys changes nothing
    assert store.early_delivery() is not None
    await store.close()
    assert SqliteStore(tmp_path / "other.db").early_delivery() is None  # hold 0: never
