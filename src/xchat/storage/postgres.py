"""PostgreSQL backend of :class:`~xchat.storage.base.Store` for N nodes (PROTOCOL Part III §8).

Why it looks like ``sqlite.py``: the relay's hot path relies on the same two properties
whatever the engine — group commit (many sends share one durable transaction, acks go out
after COMMIT) and a directory cache that answers ``get_account`` without I/O.

Group commit: callers on the event loop append operations to a pending list; one writer
task takes everything pending and runs it in ONE transaction on its own connection
(``synchronous_commit=on``: COMMIT returns after the WAL is flushed): all enqueues of the
batch as one ``INSERT ... SELECT FROM unnest(...)``, all deletes as one ``DELETE ... USING
unnest(...)``, then the other operations in order (each in a savepoint, so one failing
operation does not fail the batch). Callers are resolved after the commit.

Several nodes share the database, so the directory cache is kept fresh two ways:

- every directory write sends ``NOTIFY xchat_directory`` in its transaction; each node
  LISTENs and re-reads the named account (and fires :attr:`Store.on_epoch_change` when a
  device's epoch moved, so a revoked device's socket is cut on whichever node holds it);
- a negative answer may be stale (an account registered on another node a millisecond
  ago): :meth:`sync` waits for every change committed before it, and the server retries
  a refused request once when the cache moved (``server/consistency.py``).

Lost connections raise :class:`~xchat.errors.StorageUnavailable` (503 + Retry-After); the
writer reconnects on the next batch, the listener reconnects and reloads the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from xchat.clock import now_ms
from xchat.errors import StorageUnavailable
from xchat.storage import pg_sql as q
from xchat.storage.base import AccountRecord, DeviceRecord, NewEnvelope, StoredEnvelope
from xchat.storage.pg_directory import DIRECTORY_CHANNEL, PgDirectory
from xchat.storage.pg_schema import migrate
from xchat.storage.sqlite import StoreStats

log = logging.getLogger("xchat.storage.postgres")

MAX_BATCH = 4096  # operations per transaction
USAGE_SECONDS = 5.0  # how often the per-device mailbox usage is re-read from the database
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 15.0
CHALLENGE_CHANNEL = "xchat_challenge"
SETTINGS_CHANNEL = "xchat_settings"

#: Errors that mean "the database is not reachable", as opposed to a bad statement.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)

_CALL, _ENQUEUE, _ACK = 0, 1, 2


@dataclass(slots=True)
class _Op:
    kind: int
    payload: Any
    future: asyncio.Future[Any] | None
    after_commit: Callable[[Any], object] | None = None
    result: Any = None
    error: BaseException | None = None
    callback: Callable[[Any, BaseException | None], None] | None = None


Conn = Any  # asyncpg.Connection (untyped library)


class PostgresStore(PgDirectory):
    """Shared durable state of every node, in the database named by ``dsn``.

    The directory part (cache, account and device writes) is inherited from
    :class:`~xchat.storage.pg_directory.PgDirectory`; this class is the writer around it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stats = StoreStats()
        self._conn: Conn | None = None
        self._listen: Conn | None = None
        self._pending: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._accounts: dict[str, AccountRecord] = {}
        self._handles: dict[str, str] = {}
        self._devices: dict[int, DeviceRecord] = {}
        self._used: dict[bytes, int] = {}
        self._settings: dict[str, str] = {}
        self._sync_lock = asyncio.Lock()
        #: Queued (envelopes, bytes) per device for the mailbox quota: this node's commits
        #: applied at once, every node's re-read every USAGE_SECONDS (see _watch).
        self._usage: dict[int, tuple[int, int]] = {}
        self._usage_delta: dict[int, tuple[int, int]] = {}
        #: Bumped on every change of the directory cache (see :meth:`sync`).
        self.generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle ---

    async def open(self) -> None:
        self._wake = asyncio.Event()
        conn = await self._connect()
        try:
            await migrate(conn)
            await self._load_directory(conn)
            await conn.execute("DELETE FROM used_challenges WHERE expires_ms <= $1", now_ms())
            rows = await conn.fetch("SELECT challenge, expires_ms FROM used_challenges")
            self._used = {bytes(r[0]): int(r[1]) for r in rows}
            rows = await conn.fetch("SELECT key, value FROM settings")
            self._settings = {str(r[0]): str(r[1]) for r in rows}
            self._usage = await q.mailbox_usage(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        await self._start_listener()
        self._writer = asyncio.create_task(self._run(), name="xchat-pg-writer")
        self._watcher = asyncio.create_task(self._watch(), name="xchat-pg-listener")

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        if self._writer is not None and self._wake is not None:
            self._wake.set()
            with contextlib.suppress(BaseException):
                await self._writer
        for task in list(self._tasks):
            task.cancel()
        for c in (self._conn, self._listen):
            if c is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(c.close(), 2)
        self._conn = self._listen = None

    async def _connect(self) -> Conn:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"synchronous_commit": "on", "application_name": "xchat-relay"},
        )

    async def _start_listener(self) -> None:
        conn = await self._connect()
        await conn.add_listener(DIRECTORY_CHANNEL, self._on_notify)
        await conn.add_listener(CHALLENGE_CHANNEL, self._on_notify)
        await conn.add_listener(SETTINGS_CHANNEL, self._on_notify)
        self._listen = conn

    async def _watch(self) -> None:
        """Reconnect the LISTEN connection when it drops; a node that may have missed
        notifications reloads the whole directory (and fires epoch hooks for changes)."""
        next_usage = time.monotonic() + USAGE_SECONDS
        while not self._closing:
            await asyncio.sleep(0.5)
            if time.monotonic() >= next_usage:
                next_usage = time.monotonic() + USAGE_SECONDS
                with contextlib.suppress(Exception):
                    fresh = await self._call(q.mailbox_usage)
                    self._usage = fresh
                    self._usage_delta.clear()
            if self._listen is not None and not self._listen.is_closed():
                continue
            try:
                await self._start_listener()
                assert self._listen is not None
                await self._load_directory(self._listen)
                log.info("database listener reconnected")
            except UNAVAILABLE:
                self._listen = None
            except Exception:
                log.exception("listener reconnect failed")
                self._listen = None

    def _on_notify(self, conn: Conn, pid: int, channel: str, payload: str) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                if pid == self._conn.get_server_pid():
                    return  # our own change: already applied after the commit
        if channel == CHALLENGE_CHANNEL:
            hexed, _, expires = payload.partition(" ")
            with contextlib.suppress(ValueError):
                ch, exp = bytes.fromhex(hexed), int(expires)
                self._used[ch] = exp
                if self.on_challenge_used is not None:
                    self.on_challenge_used(ch, exp)
            return
        if channel == SETTINGS_CHANNEL:
            key, _, value = payload.partition("=")
            self._settings[key] = value
            if self.on_setting is not None:
                self.on_setting(key, value)
            return
        self._spawn(self._refresh_address(payload))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except UNAVAILABLE:
                pass
            except Exception:
                log.exception("directory refresh failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync(self) -> int:
        """Wait until every directory change committed anywhere before this call is in
        this node's cache; return the cache generation (it grows with every change).

        Notifications committed before a query on the LISTEN connection arrive before its
        reply (PostgreSQL sends them ahead of ReadyForQuery), so one round trip there plus
        the re-reads it triggered is a barrier. Handlers use it before refusing: a 404 for
        an account registered through another node a millisecond ago becomes a retry."""
        async with self._sync_lock:
            conn = self._listen
            if conn is None or conn.is_closed():
                await self._call(self._load_directory)
            else:
                try:
                    await conn.fetchval("SELECT 1")
                except UNAVAILABLE:
                    raise StorageUnavailable() from None
            await asyncio.sleep(0)  # the listener callbacks scheduled by that reply
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return self.generation

    # --- the writer ---

    def _put(self, op: _Op) -> None:
        if self._writer is None or self._wake is None:
            raise RuntimeError("store is not open")
        self._pending.append(op)
        if len(self._pending) == 1:
            self._wake.set()

    def _submit(
        self, kind: int, payload: Any, after_commit: Callable[[Any], object] | None = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Op(kind, payload, fut, after_commit))
        return fut

    async def _call(
        self,
        fn: Callable[[Conn], Awaitable[Any]],
        after_commit: Callable[[Any], object] | None = None,
    ) -> Any:
        return await self._submit(_CALL, fn, after_commit)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            t0 = time.perf_counter()
            await self._execute(batch)
            self.stats.recent.append((len(batch), time.perf_counter() - t0, self.stats.last_commit))
            self._resolve(batch)

    async def _writer_conn(self) -> Conn:
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = None
            conn = await self._connect()
            self._conn = conn
        return conn

    async def _execute(self, batch: list[_Op]) -> None:
        try:
            conn = await self._writer_conn()
            enq = [op for op in batch if op.kind == _ENQUEUE]
            acks = [op for op in batch if op.kind == _ACK]
            if len(enq) + len(acks) == len(batch):
                await self._mailbox_only(conn, enq, acks)
            else:
                await self._transaction(conn, batch, enq, acks)
        except UNAVAILABLE as exc:
            self._usage_delta.clear()
            log.warning("database unavailable", extra={"error_type": type(exc).__name__})
            if self._conn is not None:
                with contextlib.suppress(BaseException):
                    self._conn.terminate()
                self._conn = None
            err = StorageUnavailable()
            for op in batch:
                op.error = err
        except Exception as exc:  # the whole transaction failed (deadlock, ...)
            self._usage_delta.clear()
            log.error("store batch failed", extra={"error_type": type(exc).__name__})
            for op in batch:
                op.error = exc
        self.stats.transactions += 1
        self.stats.operations += len(batch)

    async def _mailbox_only(self, conn: Conn, enq: list[_Op], acks: list[_Op]) -> None:
        """The hot path: a batch of only sends and acks is ONE statement (data-modifying
        CTEs) in its own implicit transaction — one round trip, durable when it returns —
        instead of BEGIN, INSERT, DELETE, COMMIT."""
        ins = q.enqueue_args([op.payload for op in enq])
        dels = q.ack_args([op.payload for op in acks])
        tc = time.perf_counter()
        rows = await conn.fetch(q.COMBINED_SQL, *ins, *dels)
        self.stats.last_commit = time.perf_counter() - tc
        self._apply_enqueue(enq, [r for r in rows if r[0] == 0])
        self._apply_ack(acks, [(r[1], r[2], r[4]) for r in rows if r[0] == 1])
        self._apply_usage()

    async def _transaction(
        self, conn: Conn, batch: list[_Op], enq: list[_Op], acks: list[_Op]
    ) -> None:
        """A batch with other operations: one explicit transaction, each other operation in
        a savepoint (one failing operation does not fail the batch)."""
        tr = conn.transaction()
        await tr.start()
        try:
            if enq:
                rows = await conn.fetch(q.INSERT_SQL, *q.enqueue_args([op.payload for op in enq]))
                self._apply_enqueue(enq, [(0, r[0], r[1], r[2], r[3]) for r in rows])
            if acks:
                rows = await conn.fetch(q.DELETE_SQL, *q.ack_args([op.payload for op in acks]))
                self._apply_ack(acks, [(r[0], r[1], r[2]) for r in rows])
            for op in batch:
                if op.kind == _CALL:
                    await self._run_call(conn, op)
            tc = time.perf_counter()
            await tr.commit()
            self.stats.last_commit = time.perf_counter() - tc
            self._apply_usage()
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(BaseException):
                    await tr.rollback()
            raise

    @staticmethod
    async def _run_call(conn: Conn, op: _Op) -> None:
        try:
            async with conn.transaction():  # a savepoint inside the batch
                op.result = await op.payload(conn)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            op.error = exc

    def _apply_enqueue(self, run: list[_Op], rows: list[Any]) -> None:
        """Rows ``(kind, seq, device_ref, envelope_id, length)`` of the inserted envelopes;
        an envelope not among them was already queued (``None``: an idempotent retry)."""
        got = {(r[2], bytes(r[3])): r[1] for r in rows}
        self.stats.envelopes_stored += len(rows)
        for r in rows:
            self._note_usage(r[2], 1, r[4])
        for op in run:
            op.result = [got.pop((e.device_ref, e.envelope_id), None) for e in op.payload]

    def _apply_ack(self, run: list[_Op], rows: list[tuple[int, int, int]]) -> None:
        """Rows ``(op index, device_ref, length)`` of the deleted envelopes."""
        for op in run:
            op.result = 0
        for i, ref, size in rows:
            run[i].result += 1
            self._note_usage(ref, -1, -size)
        self.stats.envelopes_deleted += len(rows)

    @staticmethod
    def _resolve(batch: list[_Op]) -> None:
        """Hand results out; a failing callback is logged, never fatal to the writer."""
        for op in batch:
            if op.error is None and op.after_commit is not None:
                try:
                    op.after_commit(op.result)
                except Exception as exc:
                    log.exception("store cache update failed")
                    op.error = exc
            cb = op.callback
            if cb is not None:
                try:
                    cb(op.result if op.error is None else None, op.error)
                except Exception:
                    log.exception("store callback failed")
                continue
            fut = op.future
            if fut is None or fut.done():
                continue
            if op.error is not None:
                fut.set_exception(op.error)
            else:
                fut.set_result(op.result)

    # --- mailbox ---

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[int | None]:
        if not envelopes:
            return []
        result: list[int | None] = await self._submit(_ENQUEUE, envelopes)
        return result

    def enqueue_cb(
        self,
        envelopes: list[NewEnvelope],
        callback: Callable[[list[int | None] | None, BaseException | None], None],
    ) -> None:
        """Hot path of the WebSocket SEND (as ``SqliteStore.enqueue_cb``)."""
        self._put(_Op(_ENQUEUE, envelopes, None, None, None, None, callback))

    async def fetch(
        self, device_ref: int, after_seq: int, limit: int, now_ms: int
    ) -> list[StoredEnvelope]:
        async def op(conn: Conn) -> list[StoredEnvelope]:
            rows = await conn.fetch(
                "SELECT seq, envelope_id, ts_ms, content FROM mailbox WHERE device_ref = $1"
                " AND seq > $2 AND expires_ms > $3 ORDER BY seq LIMIT $4",
                device_ref,
                after_seq,
                now_ms,
                limit,
            )
            return [StoredEnvelope(r[0], bytes(r[1]), r[2], bytes(r[3])) for r in rows]

        result: list[StoredEnvelope] = await self._call(op)
        return result

    async def pending_for(
        self, refs: list[int], before_ms: int, now_ms: int, limit: int
    ) -> list[tuple[int, StoredEnvelope]]:
        """Queued envelopes of many devices stored before ``before_ms`` (the fan-out's
        catch-up: a wake-up lost in Redis is found here)."""

        async def op(conn: Conn) -> list[tuple[int, StoredEnvelope]]:
            rows = await conn.fetch(
                "SELECT device_ref, seq, envelope_id, ts_ms, content FROM mailbox"
                " WHERE device_ref = ANY($1::bigint[]) AND ts_ms <= $2 AND expires_ms > $3"
                " ORDER BY seq LIMIT $4",
                refs,
                before_ms,
                now_ms,
                limit,
            )
            return [(r[0], StoredEnvelope(r[1], bytes(r[2]), r[3], bytes(r[4]))) for r in rows]

        result: list[tuple[int, StoredEnvelope]] = await self._call(op)
        return result

    async def ack(self, device_ref: int, envelope_ids: list[bytes]) -> int:
        result: int = await self._submit(_ACK, (device_ref, envelope_ids))
        return result

    def ack_nowait(self, device_ref: int, envelope_ids: list[bytes]) -> None:
        if self._writer is None:
            return
        self._put(_Op(_ACK, (device_ref, envelope_ids), None))

    async def sweep_expired(self, now_ms: int) -> int:
        async def op(conn: Conn) -> int:
            await conn.execute("DELETE FROM used_challenges WHERE expires_ms <= $1", now_ms)
            status = await conn.execute("DELETE FROM mailbox WHERE expires_ms <= $1", now_ms)
            return int(status.split()[-1])

        result: int = await self._call(op)
        return result

    # --- mailbox quota (PROTOCOL Part III §6) ---

    def _note_usage(self, ref: int, envelopes: int, size: int) -> None:
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

    def mailbox_usage(self, device_ref: int) -> tuple[int, int]:
        """From memory (hot path). Across nodes it lags by up to USAGE_SECONDS: the quota
        can be overshot by what other nodes queue for the device in that time."""
        return self._usage.get(device_ref, (0, 0))

    # --- used challenges ---

    def used_challenges(self) -> dict[bytes, int]:
        return dict(self._used)

    def challenge_used_nowait(self, challenge: bytes, expires_ms: int) -> None:
        """Joins the next group commit and tells the other nodes (NOTIFY), which add it to
        their in-memory set: a challenge used on one node is refused on every node."""
        if self._writer is None:
            return

        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO used_challenges (challenge, expires_ms) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                challenge,
                expires_ms,
            )
            await q.notify(conn, CHALLENGE_CHANNEL, f"{challenge.hex()} {expires_ms}")

        self._put(_Op(_CALL, op, None))

    # --- operator settings and statistics (xchat admin) ---

    def settings(self) -> dict[str, str]:
        return dict(self._settings)
