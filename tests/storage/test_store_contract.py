"""The Store contract on both backends (issue #16): SQLite and a real PostgreSQL, the same
tests. Then what only a shared store has to get right: two stores on one database (two
relay nodes) hand out each one-time prekey once, see each other's directory changes
(NOTIFY, the sync barrier, the epoch hook) and each other's used challenges."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.storage.base import DeviceRecord, NewEnvelope, PreKeySet, SignedKey, Store
from xchat.storage.postgres import PostgresStore
from xchat.storage.sqlite import SqliteStore

ADDR = "xc1" + "q" * 50


def keys(n_ec: int = 3, n_kem: int = 3, start: int = 1) -> PreKeySet:
    return PreKeySet(
        signed_prekey=SignedKey(1, b"\x05" + os.urandom(32), os.urandom(64)),
        kem_last_resort=SignedKey(100_000, b"\x08" + os.urandom(16), os.urandom(64)),
        one_time_ec=tuple(
            SignedKey(i, b"\x05" + os.urandom(32)) for i in range(start, start + n_ec)
        ),
        one_time_kem=tuple(
            SignedKey(i, b"\x08" + os.urandom(16), os.urandom(64))
            for i in range(start, start + n_kem)
        ),
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, backend_env: Callable[[str], dict[str, Any]]
) -> AsyncIterator[Callable[[], Any]]:
    """``await make_store()`` opens a store; on PostgreSQL every call is another node on the
    same database."""
    opened: list[Store] = []
    dsn = backend_env(request.param).get("database") if request.param == "postgres" else None

    async def make() -> Store:
        store: Store = PostgresStore(dsn) if dsn else SqliteStore(tmp_path / "xchat.db")
        await store.open()
        opened.append(store)
        return store

    yield make
    for s in opened:
        await s.close()


def env(ref: int, eid: bytes, content: bytes = b"x", now: int = 1_000) -> NewEnvelope:
    return NewEnvelope(ref, eid, now, now + 60_000, content)


async def test_register_cache_and_restore(make_store: Callable[[], Any]) -> None:
    s = await make_store()
    dev = await s.register(ADDR, b"\x01" * 65, keys(), 1)
    assert dev.device_id == 1 and dev.epoch == 1
    assert s.get_account(ADDR).devices == (dev,)
    assert s.get_device(dev.ref) == dev
    await s.set_handle(ADDR, "alice", "alice")
    assert s.get_account_by_handle("alice").address == ADDR
    await s.set_token_hash(ADDR, b"\x02" * 32)
    assert s.get_account(ADDR).token_hash == b"\x02" * 32
    again = await s.register(ADDR, b"\x01" * 65, keys(1, 1), 2)  # restore: epoch moves
    assert again.ref == dev.ref and again.epoch == 2
    assert await s.count_prekeys(dev.ref) == (1, 1)


async def test_mailbox_enqueue_fetch_ack_idempotent(make_store: Callable[[], Any]) -> None:
    s = await make_store()
    dev = await s.register(ADDR, b"\x01" * 65, keys(), 1)
    a, b = os.urandom(16), os.urandom(16)
    seqs = await s.enqueue([env(dev.ref, a, b"A"), env(dev.ref, b, b"B")])
    assert all(isinstance(x, int) for x in seqs) and seqs[0] < seqs[1]
    assert await s.enqueue([env(dev.ref, a, b"A")]) == [None]  # a retry is stored once
    rows = await s.fetch(dev.ref, 0, 10, 2_000)
    assert [(r.envelope_id, r.content) for r in rows] == [(a, b"A"), (b, b"B")]
    assert await s.fetch(dev.ref, rows[0].seq, 10, 2_000) == rows[1:]
    assert await s.fetch(dev.ref, 0, 10, 10_000_000) == []  # expired rows are not handed out
    assert await s.ack(dev.ref, [a, os.urandom(16)]) == 1
    s.ack_nowait(dev.ref, [b])
    assert await s.ack(dev.ref, [b]) in (0, 1)  # whichever delete ran first took it
    assert await s.fetch(dev.ref, 0, 10, 2_000) == []
    await s.enqueue([env(dev.ref, os.urandom(16), now=1)])
    assert await s.sweep_expired(10_000_000) == 1


async def test_bundles_consume_one_time_keys_once(make_store: Callable[[], Any]) -> None:
    s = await make_store()
    dev = await s.register(ADDR, b"\x01" * 65, keys(2, 2), 1)
    b1, b2, b3 = [(await s.take_bundle(ADDR))[0] for _ in range(3)]
    assert {b1.one_time_ec.id, b2.one_time_ec.id} == {1, 2} and b3.one_time_ec is None
    assert b3.kem_last_resort and b3.kem_prekey.id == 100_000
    assert await s.put_prekeys(dev.ref, keys(2, 2, start=10)) == (2, 2)


async def test_two_nodes_never_hand_out_a_one_time_key_twice(
    make_store: Callable[[], Any],
) -> None:
    a = await make_store()
    b = await make_store()
    if not isinstance(b, PostgresStore):
        pytest.skip("one SQLite store per data directory: no second node")
    await a.register(ADDR, b"\x01" * 65, keys(40, 40), 1)
    await b.sync()
    taken = await asyncio.gather(*[(a if i % 2 else b).take_bundle(ADDR) for i in range(60)])
    ec = [t[0].one_time_ec.id for t in taken if t and t[0].one_time_ec]
    assert len(ec) == len(set(ec)) == 40


async def test_nodes_see_each_others_directory_writes(make_store: Callable[[], Any]) -> None:
    a = await make_store()
    b = await make_store()
    if not isinstance(b, PostgresStore):
        pytest.skip("one SQLite store per process: nothing to propagate")
    changed: list[DeviceRecord] = []
    b.on_epoch_change = changed.append
    used: list[bytes] = []
    b.on_challenge_used = lambda ch, exp: used.append(ch)
    dev = await a.register(ADDR, b"\x01" * 65, keys(), 1)
    await b.sync()
    assert b.get_device(dev.ref) == dev  # NOTIFY, applied before the barrier returned
    await a.set_handle(ADDR, "bob", "bob")
    await b.sync()
    assert b.get_account_by_handle("bob") is not None
    again = await a.register(ADDR, b"\x01" * 65, keys(), 2)
    await b.sync()
    assert [d.epoch for d in changed] == [again.epoch]  # b would cut the old socket
    a.challenge_used_nowait(b"c" * 41, 10**13)
    await a.count_prekeys(dev.ref)  # a round trip through a's group commit
    await b.sync()
    assert used == [b"c" * 41]


async def test_linked_devices_and_device_list(make_store: Callable[[], Any]) -> None:
    s = await make_store()
    await s.register(ADDR, b"\x01" * 65, keys(), 1)
    cut: list[DeviceRecord] = []
    s.on_epoch_change = cut.append
    dev2 = await s.add_device(ADDR, 2, keys(2, 2), b"list-v2", 2, 5)
    assert dev2.device_id == 2 and dev2.epoch == 1
    assert [d.device_id for d in s.get_account(ADDR).devices] == [1, 2]
    assert await s.get_device_list(ADDR) == (2, b"list-v2", 2)
    await s.enqueue([env(dev2.ref, os.urandom(16))])
    await s.set_device_list(ADDR, b"list-v3", 3, (2,))
    assert [d.device_id for d in s.get_account(ADDR).devices] == [1]
    assert s.get_device(dev2.ref) is None and [d.epoch for d in cut] == [-1]
    assert await s.fetch(dev2.ref, 0, 10, 2_000) == []  # its mail went with it
    assert await s.get_device_list(ADDR) == (3, b"list-v3", 2)  # ids are never reused
