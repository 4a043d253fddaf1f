"""SQLite backend of :class:`~xchat.storage.base.Store` with group commit (PROTOCOL Part III §8).

One writer process (:mod:`xchat.storage.sqlite_writer`) owns the connection. Callers on the
event loop put operations in a pending list (no I/O per call); at the end of each event-loop
pass the list goes to the writer as ONE pickled frame over a pipe. The writer runs what it
has in one transaction, commits with ``synchronous=FULL`` in WAL mode, and answers with one
frame; the loop (a reader on the pipe) then applies the mailbox usage deltas and the cache
updates and resolves every caller. A send is acknowledged only after that commit.

Reads go through the same pipe, so they observe every write queued before them and the
exactly-once hand-out of one-time prekeys needs no extra locking. The directory (accounts,
devices, token hashes) is small and cached in memory, updated after each commit. If the
writer process dies, every pending and later operation fails with
:class:`~xchat.errors.StorageUnavailable` (503 + Retry-After) instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xchat.errors import StorageUnavailable
from xchat.storage.base import (
    AccountRecord,
    BundleDevice,
    DeviceRecord,
    NewEnvelope,
    PreKeySet,
    Store,
    StoredEnvelope,
)
from xchat.storage.sqlite_writer import ACK, ENQUEUE, frame, split_frames

log = logging.getLogger(__name__)
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ for the relay → writer pipe: a whole busy pass fits
_CLOSE_SECONDS = 30.0  # how long close() lets the writer finish before killing it


@dataclass(slots=True)
class _Op:
    kind: str  # an operation of sqlite_writer (ENQUEUE, ACK or a name in OPS)
    #: its arguments; an enqueue's envelopes go as plain tuples (a NamedTuple pickles
    #: through a Python-level ``__getnewargs__``: twice the cost on the hot path)
    payload: tuple[Any, ...]
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

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stats = StoreStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_writer = -1  # pipe fds (non-blocking), -1 when closed
        self._from_writer = -1
        self._out = bytearray()  # frames the pipe did not take yet
        self._in = bytearray()
        # operations collected this pass, and the frames sent but not answered, in order
        self._pending: list[_Op] = []
        self._inflight: deque[list[_Op]] = deque()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._flushed: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._dead: StorageUnavailable | None = None
        self._accounts: dict[str, AccountRecord] = {}
        self._handles: dict[str, str] = {}
        self._devices: dict[int, DeviceRecord] = {}
        self._used: dict[bytes, int] = {}
        self._settings: dict[str, str] = {}
        #: device ref -> (envelopes, bytes) queued: the mailbox quota (PROTOCOL Part III §6),
        #: read by the event loop, changed only by the deltas of a committed transaction.
        self._usage: dict[int, tuple[int, int]] = {}

    @property
    def writer_pid(self) -> int | None:
        """The writer process (benchmarks add its CPU to the relay's; tests kill it)."""
        return self._proc.pid if self._proc is not None else None

    # --- lifecycle ---

    async def open(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        down_r, down_w = os.pipe()  # relay → writer
        up_r, up_w = os.pipe()  # writer → relay
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "xchat.storage.sqlite_writer", str(self.path),
                 str(down_r), str(up_w)],
                stdin=subprocess.DEVNULL,
                pass_fds=(down_r, up_w),
            )  # fmt: skip
        except BaseException:
            for fd in (down_w, up_r):
                os.close(fd)
            raise
        finally:
            os.close(down_r)
            os.close(up_w)
        self._to_writer, self._from_writer = down_w, up_r
        os.set_blocking(down_w, False)
        os.set_blocking(up_r, False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(down_w, 1031, _PIPE_BYTES)  # F_SETPIPE_SZ (Linux); best effort
        self._dead = None
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        loop.add_reader(up_r, self._readable)
        try:
            snap = await self._ready
        except BaseException:
            await self.close()
            raise
        for address, ik, handle, th in snap["accounts"]:
            self._accounts[address] = AccountRecord(address, ik, handle, th, ())
            if handle:
                self._handles[handle] = address
        for ref, address, device_id, epoch in snap["devices"]:
            self._cache_device(DeviceRecord(ref, address, device_id, epoch))
        self._usage = snap["usage"]
        self._used = snap["used"]
        self._settings = snap["settings"]

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._hand_over()
        if self._out and self._dead is None:
            assert self._loop is not None
            self._flushed = self._loop.create_future()
            await self._flushed
        if self._to_writer >= 0:  # the end of its input: the writer finishes and exits
            self._unwatch_writes()
            os.close(self._to_writer)
            self._to_writer = -1
        if self._gone is not None:
            await self._gone
        try:
            await asyncio.to_thread(proc.wait, _CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self._proc = None

    # --- the pipe to the writer ---

    def _write(self, data: bytes) -> None:
        if self._out:
            self._out += data
            return
        try:
            n = os.write(self._to_writer, data)
        except BlockingIOError:
            n = 0
        except OSError:  # EPIPE: the writer is gone; its EOF on the other pipe says why
            return
        if n < len(data):
            self._out += data[n:]
            assert self._loop is not None
            self._loop.add_writer(self._to_writer, self._writable)

    def _writable(self) -> None:
        try:
            n = os.write(self._to_writer, self._out)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._out)
        del self._out[:n]
        if not self._out:
            self._unwatch_writes()
            if self._flushed is not None and not self._flushed.done():
                self._flushed.set_result(None)

    def _unwatch_writes(self) -> None:
        if self._loop is not None and self._to_writer >= 0:
            self._loop.remove_writer(self._to_writer)

    def _readable(self) -> None:
        try:
            data = os.read(self._from_writer, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._in += data
        for msg in split_frames(self._in):
            try:
                self._on_frame(msg)
            except Exception:  # a caller's cache update or callback failed: not the others
                log.exception("sqlite store: resolving a commit failed")

    def _on_frame(self, msg: Any) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            tag, value = msg
            if tag == "ready":
                ready.set_result(value)
            else:
                ready.set_exception(value)
            return
        batches, results, errors, delta, (n, spent, commit, stored, deleted) = msg
        ops: list[_Op] = []
        for _ in range(batches):
            ops.extend(self._inflight.popleft())
        for i, op in enumerate(ops):
            op.result = results[i]
        for i, exc in errors.items():
            ops[i].error = exc
        usage = self._usage
        for ref, (dn, db) in delta.items():
            was_n, was_b = usage.get(ref, (0, 0))
            if was_n + dn > 0:
                usage[ref] = (was_n + dn, max(0, was_b + db))
            else:
                usage.pop(ref, None)
        st = self.stats
        st.transactions += 1
        st.operations += n
        st.envelopes_stored += stored
        st.envelopes_deleted += deleted
        st.last_commit = commit
        st.recent.append((n, spent, commit))
        self._resolve(ops)

    def _lost(self) -> None:
        """The writer's output ended: it exited (closed by us) or died. Fail everything
        not answered, and everything later, with StorageUnavailable."""
        if self._loop is not None and self._from_writer >= 0:
            self._loop.remove_reader(self._from_writer)
            os.close(self._from_writer)
            self._from_writer = -1
        proc = self._proc
        code = proc.poll() if proc is not None else None
        closing = self._to_writer < 0
        what = "closed" if closing else f"died (exit status {code})"
        self._dead = StorageUnavailable(f"SQLite writer process {what}")
        if not closing:
            log.error("sqlite writer process died", extra={"exit_status": code})
        failed = [op for batch in self._inflight for op in batch] + self._pending
        self._inflight.clear()
        self._pending = []
        self._out.clear()
        self._unwatch_writes()
        for op in failed:
            op.error = self._dead
        self._resolve(failed)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        for fut in (self._ready, self._flushed):
            if fut is not None and not fut.done():
                fut.set_exception(self._dead)

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

    def mailbox_usage(self, device_ref: int) -> tuple[int, int]:
        return self._usage.get(device_ref, (0, 0))

    # --- operations ---

    def _submit(
        self,
        kind: str,
        payload: tuple[Any, ...],
        after_commit: Callable[[Any], None] | None = None,
    ) -> asyncio.Future[Any]:
        if self._proc is None or self._loop is None:
            raise RuntimeError("store is not open")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._put(_Op(kind, payload, fut, after_commit))
        return fut

    def _put(self, op: _Op) -> None:
        """Queue an operation (event-loop thread only); handed over at the end of the pass."""
        assert self._loop is not None
        if self._dead is not None:
            op.error = self._dead
            self._loop.call_soon(self._resolve, [op])
            return
        pending = self._pending
        pending.append(op)
        if len(pending) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        if batch and self._dead is None:
            try:
                data = frame([(op.kind, op.payload) for op in batch])
            except Exception as exc:  # an argument that does not pickle: a bug, fail them
                for op in batch:
                    op.error = exc
                self._resolve(batch)
                return
            self._inflight.append(batch)
            self._write(data)

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
        self, name: str, *args: Any, after_commit: Callable[[Any], None] | None = None
    ) -> Any:
        return await self._submit(name, args, after_commit)

    async def account_created_ms(self, address: str) -> int | None:
        result: int | None = await self._call("created_ms", address)
        return result

    # --- directory ---

    async def register(
        self, address: str, identity_key: bytes, keys: PreKeySet, now_ms: int
    ) -> DeviceRecord:
        def cache(result: tuple[AccountRecord, DeviceRecord]) -> None:
            acct, dev = result
            old = self._accounts.get(address)
            self._accounts[address] = replace(acct, devices=old.devices if old else ())
            self._cache_device(dev)

        result = await self._call(
            "register", address, identity_key, keys, now_ms, after_commit=cache
        )
        dev: DeviceRecord = result[1]
        return dev

    async def set_handle(self, address: str, handle: str | None, skeleton: str | None) -> None:
        def cache(_: None) -> None:
            acct = self._accounts[address]
            if acct.handle:
                self._handles.pop(acct.handle, None)
            if handle:
                self._handles[handle] = address
            self._accounts[address] = replace(acct, handle=handle)

        await self._call("set_handle", address, handle, skeleton, after_commit=cache)

    async def set_token_hash(self, address: str, token_hash: bytes) -> None:
        def cache(_: None) -> None:
            self._accounts[address] = replace(self._accounts[address], token_hash=token_hash)

        await self._call("set_token_hash", address, token_hash, after_commit=cache)

    async def put_prekeys(self, device_ref: int, keys: PreKeySet) -> tuple[int, int]:
        result: tuple[int, int] = await self._call("put_prekeys", device_ref, keys)
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
        dev: DeviceRecord = await self._call(
            "add_device",
            address,
            device_id,
            keys,
            device_list,
            list_version,
            now_ms,
            after_commit=self._cache_device,
        )
        return dev

    async def set_device_list(
        self, address: str, device_list: bytes, list_version: int, remove: tuple[int, ...]
    ) -> None:
        acct = self._accounts.get(address)
        gone = [d for d in (acct.devices if acct else ()) if d.device_id in remove]
        top = max((d.device_id for d in (acct.devices if acct else ())), default=1)

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

        refs = [d.ref for d in gone]
        await self._call(
            "set_device_list", address, device_list, list_version, refs, top, after_commit=cache
        )

    async def get_device_list(self, address: str) -> tuple[int, bytes, int] | None:
        result: tuple[int, bytes, int] | None = await self._call("get_device_list", address)
        return result

    async def count_prekeys(self, device_ref: int) -> tuple[int, int]:
        result: tuple[int, int] = await self._call("count_prekeys", device_ref)
        return result

    async def take_bundle(self, address: str, *, one_time: bool = True) -> list[BundleDevice]:
        acct = self._accounts.get(address)
        if acct is None:
            return []
        result: list[BundleDevice] = await self._call("take_bundle", acct.devices, one_time)
        return result

    # --- mailbox ---

    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[int | None]:
        if not envelopes:
            return []
        result: list[int | None] = await self._submit(ENQUEUE, (list(map(tuple, envelopes)),))
        return result

    def enqueue_cb(
        self,
        envelopes: list[NewEnvelope],
        callback: Callable[[list[int | None] | None, BaseException | None], None],
    ) -> None:
        """Hot path of the WebSocket SEND: like :meth:`enqueue`, but ``callback(seqs,
        error)`` runs on the event loop after the group commit; no future is created."""
        if self._proc is None:
            raise RuntimeError("store is not open")
        self._put(_Op(ENQUEUE, (list(map(tuple, envelopes)),), None, None, None, None, callback))

    async def fetch(
        self, device_ref: int, after_seq: int, limit: int, now_ms: int
    ) -> list[StoredEnvelope]:
        rows = await self._call("fetch", device_ref, after_seq, limit, now_ms)
        return [StoredEnvelope(*row) for row in rows]

    async def ack(self, device_ref: int, envelope_ids: list[bytes]) -> int:
        result: int = await self._submit(ACK, (device_ref, envelope_ids, True))
        return result

    def ack_nowait(self, device_ref: int, envelope_ids: list[bytes]) -> None:
        if self._proc is None:
            return
        self._put(_Op(ACK, (device_ref, envelope_ids, False), None))

    async def sweep_expired(self, now_ms: int) -> int:
        result: int = await self._call("sweep_expired", now_ms)
        return result

    def used_challenges(self) -> dict[bytes, int]:
        return dict(self._used)

    def settings(self) -> dict[str, str]:
        return dict(self._settings)

    def challenge_used_nowait(self, challenge: bytes, expires_ms: int) -> None:
        """Joins the next group commit (before any operation queued after it, e.g. the
        registration the challenge authorizes)."""
        if self._proc is None:
            return
        self._put(_Op("challenge_used", (challenge, expires_ms), None))
