"""SQLite backend of :class:`~xchat.storage.base.Store` with group commit (PROTOCOL Part III §8).

One dedicated writer thread owns the connection. Callers on the event loop put operations
on a queue (no thread hop per call); the thread drains everything pending (commits start at
least GROUP_COMMIT_SPACING apart, so a busy relay gathers more per commit), runs it in ONE
transaction (runs of consecutive enqueues/acks become one multi-row statement), commits with
``synchronous=FULL`` in WAL mode, and then resolves all the callers' futures with one
``call_soon_threadsafe``. A send is acknowledged only after that commit, or (delivered
before commit, ``hold_seconds`` > 0) once the recipient's ACK made writing it unnecessary:
see ``storage/holdback.py``. Queue seqs are assigned on the event loop, so a delivery can
carry its seq before the envelope is written.

Reads go through the same queue, so they observe every write queued before them and the
exactly-once hand-out of one-time prekeys needs no extra locking. The directory (accounts,
devices, token hashes) is small and cached in memory, updated after each commit.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xchat.clock import now_ms
from xchat.storage import sqlite_sql as sql
from xchat.storage.base import (
    AccountRecord,
    BundleDevice,
    DeviceRecord,
    HandleTaken,
    NewEnvelope,
    PreKeySet,
    Store,
    StoredEnvelope,
)
from xchat.storage.holdback import Callback, Holdback
from xchat.storage.migrations import migrate

MAX_BATCH = 2048  # ~operations per transaction (whole hand-overs); bounds commit latency
#: Group commit by time budget: a commit starts at least this long after the previous one
#: started. Idle, or busier than one commit per 2 ms, it never waits; in between (a quarter
#: to half of the maximum rate on the benchmark machine) commits would be short and many,
#: each paying the fixed cost of a transaction (BEGIN, WAL writes, fsync: ~260 µs of CPU)
#: and a handful of thread hand-offs. Spacing them cut relay CPU per message by 25-35% at
#: 3,750-7,500 msgs/s for 1-2 ms more median latency (issue #20, bench/tail_bench.py).
GROUP_COMMIT_SPACING = 0.002
CHECKPOINT_SECONDS = 0.25  # how often the checkpointer thread copies the WAL into the db

_CALL, _ENQUEUE, _ACK = 0, 1, 2


@dataclass(slots=True)
class _Op:
    kind: int
    payload: Any
    future: asyncio.Future[Any] | None
    after_commit: Callable[[Any], None] | None = None
    result: Any = None
    error: BaseException | None = None
    #: Hot-path alternative to ``future``: called as ``callback(result, error)`` on the
    #: event loop right after the commit (no future, no extra loop iteration per op).
    callback: Callable[[Any, BaseException | None], None] | None = None


@dataclass(slots=True)
class StoreStats:
    """Aggregate counters exported by /metrics."""

    transactions: int = 0
    operations: int = 0
    envelopes_stored: int = 0
    envelopes_deleted: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    #: (ops, seconds, commit_seconds) of the most recent transactions: batch size,
    #: BEGIN→COMMIT time, and the COMMIT statement alone (the WAL write + fsync);
    #: exported as quantiles by /metrics (PROTOCOL Part III §9).
    recent: deque[tuple[int, float, float]] = field(default_factory=lambda: deque(maxlen=2048))
    last_commit: float = 0.0


class SqliteStore(Store):
    """Embedded one-machine store in ``<data>/xchat.db``."""

    def __init__(self, path: Path, hold_seconds: float = 0.0) -> None:
        self.path = path
        #: > 0: envelopes delivered before commit wait this long for their ACK (holdback.py)
        self.hold_seconds = hold_seconds
        self._holdback: Holdback | None = None
        #: Unresolved operations during which nothing may be delivered before its commit:
        #: mailbox and directory changes (a device revoked, removed or re-registered must
        #: get nothing accepted after the change was asked for, as with commit-first
        #: delivery) and commit-first sends (a later early delivery must not overtake theirs).
        self._ordered = 0
        self.stats = StoreStats()
        self._conn: sqlite3.Connection | None = None
        # The loop thread collects operations in _pending and hands them to the writer
        # thread as ONE list per event-loop pass (one thread wake-up per pass, not per op).
        self._queue: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self._pending: list[_Op] = []
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accounts: dict[str, AccountRecord] = {}
        self._handles: dict[str, str] = {}
        self._devices: dict[int, DeviceRecord] = {}
        self._used: dict[bytes, int] = {}
        self._settings: dict[str, str] = {}
        self._next_seq = 1
        #: device ref -> (envelopes, bytes) queued: the mailbox quota (PROTOCOL Part III §6),
        #: read by the event loop, changed by the writer only after a commit.
        self._usage: dict[int, tuple[int, int]] = {}
        self._usage_delta: dict[int, tuple[int, int]] = {}

    # --- lifecycle ---

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_sync)
        if self.hold_seconds > 0:
            self._holdback = Holdback(self.hold_seconds, self._release_held, self._loop)
        self._thread = threading.Thread(target=self._run, name="xchat-store-writer", daemon=True)
        self._thread.start()
        self._stop_checkpoints.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="xchat-store-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """WAL checkpoints off the commit path (PROTOCOL Part III §7): the writer connection has
        ``wal_autocheckpoint=0``, so no commit ever pays for copying the WAL into the
        database file and fsyncing it; this thread does a PASSIVE checkpoint (never blocks
        the writer) every CHECKPOINT_SECONDS with its own connection."""
        _name_os_thread(b"xchat-ckpt")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            while not self._stop_checkpoints.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue
        finally:
            conn.close()

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        migrate(conn)
        for address, ik, handle, th in conn.execute(
            "SELECT address, identity_key, handle, token_hash FROM accounts"
        ):
            self._accounts[address] = AccountRecord(address, ik, handle, th, ())
            if handle:
                self._handles[handle] = address
        for ref, address, device_id, epoch in conn.execute(
            "SELECT ref, address, device_id, epoch FROM devices ORDER BY address, device_id"
        ):
            self._cache_device(DeviceRecord(ref, address, device_id, epoch))
        row = conn.execute("SELECT MAX(seq) FROM mailbox").fetchone()
        self._next_seq = (row[0] or 0) + 1
        self._usage = {
            ref: (n, size)
            for ref, n, size in conn.execute(
                "SELECT device_ref, COUNT(*), SUM(LENGTH(content)) FROM mailbox GROUP BY device_ref"
            )
        }
        now = now_ms()
        conn.execute("DELETE FROM used_challenges WHERE expires_ms <= ?", (now,))
        self._used = dict(conn.execute("SELECT challenge, expires_ms FROM used_challenges"))
        self._settings = dict(conn.execute("SELECT key, value FROM settings"))
        self._conn = conn

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._thread is not None:
            if self._holdback is not None:
                self._holdback.release_all()
            self._hand_over()
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- cache ---

    def _cache_device(self, dev: DeviceRecord) -> None:
        old = self._devices.get(dev.ref)
        self._devices[dev.ref] = dev
        acct = self._accounts[dev.address]
        others = tuple(d for d in acct.devices if d.ref != dev.ref)
        devices = tuple(sorted((*others, dev), key=lambda d: d.device_id))
        self._accounts[dev.address] = replace(acct, devices=devices)
        hook = self.on_epoch_change
        if old is not None and old.epoch != dev.epoch and hook is not None:
            hook(dev)

    def get_account(self, address: str) -> AccountRecord | None:
        return self._accounts.get(address)

    def get_account_by_handle(self, handle: str) -> AccountRecord | None:
        address = self._handles.get(handle)
        return self._accounts.get(address) if address else None

    def get_device(self, ref: int) -> DeviceRecord | None:
        return self._devices.get(ref)

    # --- the writer thread ---

    def _submit(
        self,
        kind: int,
        payload: Any,
        after_commit: Callable[[Any], None] | None = None,
    ) -> asyncio.Future[Any]:
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._put(_Op(kind, payload, fut, after_commit))
        return fut

    def _put(self, op: _Op) -> None:
        """Queue an operation (event-loop thread only); handed over at the end of the pass."""
        pending = self._pending
        pending.append(op)
        if len(pending) == 1:
            assert self._loop is not None
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._queue.put(batch)

    def _run(self) -> None:
        _name_os_thread(b"xchat-writer")
        q = self._queue
        stop = False
        started = 0.0
        while not stop:
            wait = started + GROUP_COMMIT_SPACING - time.perf_counter()
            if wait > 0:  # the previous commit was quick: let this one gather more
                time.sleep(wait)
            first = q.get()
            if first is None:
                break
            started = time.perf_counter()
            batch = first
            while len(batch) < MAX_BATCH:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.extend(item)
            t0 = time.perf_counter()
            self._execute(batch)
            self.stats.recent.append((len(batch), time.perf_counter() - t0, self.stats.last_commit))
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._resolve, batch)
            except RuntimeError:  # loop closed during shutdown
                return

    def _execute(self, batch: list[_Op]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(batch):
                kind = batch[i].kind
                j = i + 1
                if kind != _CALL:
                    while j < len(batch) and batch[j].kind == kind:
                        j += 1
                run = batch[i:j]
                if kind == _ENQUEUE:
                    self._run_enqueue(conn, run)
                elif kind == _ACK:
                    self._run_ack(conn, run)
                else:
                    self._run_call(conn, run[0])
                i = j
            tc = time.perf_counter()
            conn.execute("COMMIT")
            self.stats.last_commit = time.perf_counter() - tc
            self._apply_usage()
        except BaseException as exc:  # commit failed: nothing of this batch is durable
            self._usage_delta.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in batch:
                op.error = exc
        self.stats.transactions += 1
        self.stats.operations += len(batch)

    def _count(self, ref: int, envelopes: int, size: int) -> None:
        """Record a mailbox change of this transaction (applied after its commit)."""
        n, b = self._usage_delta.get(ref, (0, 0))
        self._usage_delta[ref] = (n + envelopes, b + size)

    def _apply_usage(self) -> None:
        usage = self._usage
        for ref, (dn, db) in self._usage_delta.items():
            n, b = usage.get(ref, (0, 0))
            if n + dn > 0:
                usage[ref] = (n + dn, max(0, b + db))
            else:
                usage.pop(ref, None)
        self._usage_delta.clear()

    async def account_created_ms(self, address: str) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT created_ms FROM accounts WHERE address = ?", (address,)
            ).fetchone()
            return None if row is None else int(row[0])

        result: int | None = await self._call(op, mailbox=False)
        return result

    def mailbox_usage(self, device_ref: int) -> tuple[int, int]:
        return self._usage.get(device_ref, (0, 0))

    @staticmethod
    def _run_call(conn: sqlite3.Connection, op: _Op) -> None:
        conn.execute("SAVEPOINT op")
        try:
            op.result = op.payload(conn)
            conn.execute("RELEASE op")
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            op.error = exc

    def _run_enqueue(self, conn: sqlite3.Connection, run: list[_Op]) -> None:
        rows = []
        for op in run:  # op.result: the seqs reserved on the event loop
            for seq, env in zip(op.result, op.payload, strict=True):
                rows.append((seq, *env))  # NewEnvelope is a tuple in column order
        before = conn.total_changes
        sql.insert_rows(conn, rows)
        inserted = conn.total_changes - before
        self.stats.envelopes_stored += inserted
        if inserted == len(rows):
            for row in rows:
                self._count(row[1], 1, len(row[5]))
            return
        # Some (device, envelope_id) were already queued: find which (rare path).
        for op in run:
            out: list[int | None] = []
            for env, s in zip(op.payload, op.result, strict=True):
                got = conn.execute(
                    "SELECT seq FROM mailbox WHERE device_ref = ? AND envelope_id = ?",
                    (env.device_ref, env.envelope_id),
                ).fetchone()
                stored = got is not None and got[0] == s
                out.append(s if stored else None)
                if stored:
                    self._count(env.device_ref, 1, len(env.content))
            op.result = out

    def _run_ack(self, conn: sqlite3.Connection, run: list[_Op]) -> None:
        """Deletes: fire-and-forget ACKs (no future) share statements; awaited ones (HTTP,
        which report a count) get their own."""
        shared: list[tuple[int, bytes]] = []
        for op in run:
            ref, ids = op.payload
            if op.future is None and op.callback is None:
                shared.extend([(ref, eid) for eid in ids])
                continue
            op.result = self._delete(conn, [(ref, eid) for eid in ids])
        if shared:
            self._delete(conn, shared)

    def _delete(self, conn: sqlite3.Connection, keys: list[tuple[int, bytes]]) -> int:
        total = 0
        for dref, n, size in sql.delete_rows(conn, keys):
            self._count(dref, -n, -size)
            total += n
        self.stats.envelopes_deleted += total
        return total

    @staticmethod
    def _resolve(batch: list[_Op]) -> None:
        for op in batch:
            if op.error is None and op.after_commit is not None:
                op.after_commit(op.result)
            cb = op.callback
            if cb is not None:
                cb(op.result, op.error)
                continue
            fut = op.future
            if fut is None or fut.done():
                continue
            if op.error is not None:
                fut.set_exception(op.error)
            else:
                fut.set_result(op.result)

    async def _call(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        after_commit: Callable[[Any], None] | None = None,
        *,
        mailbox: bool = True,
    ) -> Any:
        """Run ``fn`` in the writer's next transaction. ``mailbox=False``: ``fn`` neither
        reads nor changes queued mail, so envelopes held for their ACK may stay held."""
        if not mailbox or self._holdback is None:
            return await self._submit(_CALL, fn, after_commit)
        self._holdback.release_all()  # the read must see every envelope accepted so far
        fut = self._submit(_CALL, fn, after_commit)
        self._ordered += 1
        fut.add_done_callback(self._ordered_done)
        return await fut

    def _ordered_done(self, _: object = None) -> None:
        self._ordered -= 1

    def early_delivery(self) -> SqliteStore | None:
        return self if self._holdback is not None and not self._ordered else None

    # --- directory ---

    async def register(
        self, address: str, identity_key: bytes, keys: PreKeySet, now_ms: int
    ) -> DeviceRecord:
        def op(conn: sqlite3.Connection) -> tuple[AccountRecord, DeviceRecord]:
            conn.execute(
                "INSERT OR IGNORE INTO accounts (address, identity_key, created_ms)"
                " VALUES (?, ?, ?)",
                (address, identity_key, now_ms),
            )
            row = conn.execute(
                "SELECT ref, epoch FROM devices WHERE address = ? AND device_id = 1", (address,)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO devices (address, device_id, epoch, created_ms)"
                    " VALUES (?, 1, 1, ?)",
                    (address, now_ms),
                )
                assert cur.lastrowid is not None
                dev = DeviceRecord(cur.lastrowid, address, 1, 1)
            else:
                dev = DeviceRecord(row[0], address, 1, row[1] + 1)
                conn.execute("UPDATE devices SET epoch = ? WHERE ref = ?", (dev.epoch, dev.ref))
                conn.execute("DELETE FROM otk_ec WHERE device_ref = ?", (dev.ref,))
                conn.execute("DELETE FROM otk_kem WHERE device_ref = ?", (dev.ref,))
            sql.put_keys(conn, dev.ref, keys)
            h, th = conn.execute(
                "SELECT handle, token_hash FROM accounts WHERE address = ?", (address,)
            ).fetchone()
            return AccountRecord(address, identity_key, h, th, ()), dev

        def cache(result: tuple[AccountRecord, DeviceRecord]) -> None:
            acct, dev = result
            old = self._accounts.get(address)
            self._accounts[address] = replace(acct, devices=old.devices if old else ())
            self._cache_device(dev)

        result = await self._call(op, cache)
        dev: DeviceRecord = result[1]
        return dev

    async def set_handle(self, address: str, handle: str | None, skeleton: str | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "UPDATE accounts SET handle = ?, skeleton = ? WHERE address = ?",
                    (handle, skeleton, address),
                )
            except sqlite3.IntegrityError:
                raise HandleTaken(handle) from None

        def cache(_: None) -> None:
            acct = self._accounts[address]
            if acct.handle:
                self._handles.pop(acct.handle, None)
            if handle:
                self._handles[handle] = address
            self._accounts[address] = replace(acct, handle=handle)

        await self._call(op, cache)

    async def set_token_hash(self, address: str, token_hash: bytes) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE accounts SET token_hash = ? WHERE address = ?", (token_hash, address)
            )

        def cache(_: None) -> None:
            self._accounts[address] = replace(self._accounts[address], token_hash=token_hash)

        await self._call(op, cache)

    async def put_prekeys(self, device_ref: int, keys: PreKeySet) -> tuple[int, int]:
        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            sql.put_keys(conn, device_ref, keys)
            return sql.count_prekeys(conn, device_ref)

        result: tuple[int, int] = await self._call(op, mailbox=False)
        return result

    # --- linked devices (PROTOCOL Part VII §2) ---

    async def add_device(
        self,
        address: str,
        device_id: int,
        keys: PreKeySet,
        device_list: bytes,
        list_version: int,
        now_ms: int,
    ) -> DeviceRecord:
        def op(conn: sqlite3.Connection) -> DeviceRecord:
            cur = conn.execute(
                "INSERT INTO devices (address, device_id, epoch, created_ms) VALUES (?, ?, 1, ?)",
                (address, device_id, now_ms),
            )
            assert cur.lastrowid is not None
            sql.put_keys(conn, cur.lastrowid, keys)
            sql.put_list(conn, address, list_version, device_list, device_id)
            return DeviceRecord(cur.lastrowid, address, device_id, 1)

        dev: DeviceRecord = await self._call(op, self._cache_device)
        return dev

    async def set_device_list(
        self, address: str, device_list: bytes, list_version: int, remove: tuple[int, ...]
    ) -> None:
        acct = self._accounts.get(address)
        gone = [d for d in (acct.devices if acct else ()) if d.device_id in remove]

        def op(conn: sqlite3.Connection) -> None:
            for d in gone:
                for table in ("otk_ec", "otk_kem", "mailbox"):
                    conn.execute(f"DELETE FROM {table} WHERE device_ref = ?", (d.ref,))
                conn.execute("DELETE FROM devices WHERE ref = ?", (d.ref,))
            top = max((d.device_id for d in (acct.devices if acct else ())), default=1)
            sql.put_list(conn, address, list_version, device_list, top)

        def cache(_: None) -> None:
            current = self._accounts.get(address)
            if current is None:
                return
            refs = {d.ref for d in gone}
            kept = tuple(d for d in current.devices if d.ref not in refs)
            self._accounts[address] = replace(current, devices=kept)
            for d in gone:
                self._devices.pop(d.ref, None)
                if self.on_epoch_change is not None:
                    self.on_epoch_change(replace(d, epoch=-1))

        await self._call(op, cache)

    async def get_device_list(self, address: str) -> tuple[int, bytes, int] | None:
        def op(conn: sqlite3.Connection) -> tuple[int, bytes, int] | None:
            row = conn.execute(
                "SELECT version, list, max_device_id FROM device_lists WHERE address = ?",
                (address,),
            ).fetchone()
            return (int(row[0]), bytes(row[1]), int(row[2])) if row else None

        result: tuple[int, bytes, int] | None = await self._call(op, mailbox=False)
        return result

    async def count_prekeys(self, device_ref: int) -> tuple[int, int]:
        result: tuple[int, int] = await self._call(
            lambda conn: sql.count_prekeys(conn, device_ref), mailbox=False
        )
        return result

    async def take_bundle(self, address: str, *, one_time: bool = True) -> list[BundleDevice]:
        acct = self._accounts.get(address)
        if acct is None:
            return []
        devices = acct.devices

        def op(conn: sqlite3.Connection) -> list[BundleDevice]:
            return [sql.take_one(conn, dev, one_time) for dev in devices]

        result: list[BundleDevice] = await self._call(op, mailbox=False)
        return result

    # --- mailbox ---

    def reserve_seqs(self, n: int) -> list[int]:
        """Queue seqs for ``n`` envelopes about to be enqueued (event-loop thread)."""
        first = self._next_seq
        self._next_seq = first + n
        return list(range(first, first + n))

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[int | None]:
        if not envelopes:
            return []
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        fut: asyncio.Future[list[int | None]] = self._loop.create_future()
        self._put(_Op(_ENQUEUE, envelopes, fut, None, self.reserve_seqs(len(envelopes))))
        return await fut

    def enqueue_cb(
        self,
        envelopes: list[NewEnvelope],
        callback: Callable[[list[int | None] | None, BaseException | None], None],
    ) -> None:
        """Hot path of the WebSocket SEND: like :meth:`enqueue`, but ``callback(seqs,
        error)`` runs on the event loop after the group commit; no future is created."""
        if self._holdback is not None:
            callback = self._ordered_callback(callback)
        self.enqueue_reserved(envelopes, self.reserve_seqs(len(envelopes)), callback)

    def _ordered_callback(self, callback: Callback) -> Callback:
        """Count a commit-first send in ``_ordered`` until its callback runs."""
        self._ordered += 1

        def resolved(seqs: Any, exc: BaseException | None) -> None:
            self._ordered -= 1
            callback(seqs, exc)

        return resolved

    def enqueue_reserved(
        self, envelopes: list[NewEnvelope], seqs: list[int], callback: Callback, hold: bool = False
    ) -> None:
        """Enqueue with seqs from :meth:`reserve_seqs`. ``hold``: the envelopes were
        already delivered, so they wait ``hold_seconds`` for their ACK first and are
        written only if it does not come (``callback`` then runs after that commit, or at
        the ACK of the last of them)."""
        if self._thread is None:
            raise RuntimeError("store is not open")
        if hold and self._holdback is not None:
            self._holdback.hold_send(envelopes, seqs, callback)
            return
        self._release_held(envelopes, seqs, callback)

    def _release_held(self, envelopes: list[NewEnvelope], seqs: list[int], cb: Callback) -> None:
        self._put(_Op(_ENQUEUE, envelopes, None, None, seqs, None, cb))

    def acked_unwritten(self) -> int:
        return 0 if self._holdback is None else self._holdback.acked_unwritten

    async def fetch(
        self, device_ref: int, after_seq: int, limit: int, now_ms: int
    ) -> list[StoredEnvelope]:
        def op(conn: sqlite3.Connection) -> list[StoredEnvelope]:
            return [
                StoredEnvelope(*row)
                for row in conn.execute(
                    "SELECT seq, envelope_id, ts_ms, content FROM mailbox WHERE device_ref = ?"
                    " AND seq > ? AND expires_ms > ? ORDER BY seq LIMIT ?",
                    (device_ref, after_seq, now_ms, limit),
                )
            ]

        result: list[StoredEnvelope] = await self._call(op)
        return result

    async def ack(self, device_ref: int, envelope_ids: list[bytes]) -> int:
        rest = self._unhold(device_ref, envelope_ids)
        result: int = await self._submit(_ACK, (device_ref, rest)) if rest else 0
        return result + len(envelope_ids) - len(rest)

    def ack_nowait(self, device_ref: int, envelope_ids: list[bytes]) -> None:
        if self._thread is None:
            return
        rest = self._unhold(device_ref, envelope_ids)
        if rest:
            self._put(_Op(_ACK, (device_ref, rest), None))

    def _unhold(self, device_ref: int, envelope_ids: list[bytes]) -> list[bytes]:
        """The ids of an ACK that still need a delete (the rest were held, never written)."""
        if self._holdback is None:
            return envelope_ids
        return self._holdback.cancel(device_ref, envelope_ids)

    async def sweep_expired(self, now_ms: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM used_challenges WHERE expires_ms <= ?", (now_ms,))
            gone = conn.execute(
                "DELETE FROM mailbox WHERE expires_ms <= ? RETURNING device_ref, LENGTH(content)",
                (now_ms,),
            ).fetchall()
            for ref, size in gone:
                self._count(ref, -1, -size)
            return len(gone)

        result: int = await self._call(op)
        return result

    def used_challenges(self) -> dict[bytes, int]:
        return dict(self._used)

    def settings(self) -> dict[str, str]:
        return dict(self._settings)

    def challenge_used_nowait(self, challenge: bytes, expires_ms: int) -> None:
        """Joins the next group commit (before any operation queued after it, e.g. the
        registration the challenge authorizes)."""
        if self._thread is None:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO used_challenges (challenge, expires_ms) VALUES (?, ?)",
                (challenge, expires_ms),
            )

        self._put(_Op(_CALL, op, None))


def _name_os_thread(name: bytes) -> None:
    """Best effort: name the OS thread (Linux ``comm``) so per-thread CPU in
    /proc/<pid>/task and profilers can tell the writer from the event loop."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
