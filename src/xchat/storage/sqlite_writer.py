"""The SQLite store's writer process (PROTOCOL Part III §8): ``python -m
xchat.storage.sqlite_writer <db> <in fd> <out fd>``, started by
:class:`~xchat.storage.sqlite.SqliteStore`.

Why a process and not a thread: in one process the writer thread and the event loop share
one GIL, and every sqlite3 call hands it over and waits to get it back; issue #20 measured
8-11 such hand-offs per group commit, each a wait for a core on a busy machine, on every
message's path. Here the writer owns the connection alone and talks to the relay over two
pipes: about two wake-ups per commit and nothing shared.

Wire: each direction carries frames (:func:`frame`: marshal or pickle behind a length).
The relay sends one frame per event-loop pass, a list of ``(operation name, arguments)``;
the writer reads every frame pending (commits start at least GROUP_COMMIT_SPACING apart, so
a busy relay gathers more per commit), runs them in ONE transaction (runs of consecutive
enqueues/acks become one multi-row statement, every other operation gets a savepoint),
commits with ``synchronous=FULL`` in WAL mode and only then answers with one frame: how
many relay frames it covered, one result per operation, the errors by index, the mailbox
usage deltas of the transaction and its timings. The first frame it sends is the snapshot
the relay caches
(accounts, devices, mailbox usage, used challenges, settings).

The writer holds an exclusive ``flock`` on the database file for its whole life, taken
before it reads anything, so a relay restarted after a crash waits for the old writer to
finish the batch it was committing (it exits at the end of its input) before it computes
the next queue seq. It ignores SIGINT/SIGTERM: the relay closes it by closing its input.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import pickle
import select
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xchat.clock import now_ms
from xchat.errors import StorageUnavailable
from xchat.storage import sqlite_sql as sql
from xchat.storage.base import (
    AccountRecord,
    BundleDevice,
    DeviceRecord,
    HandleTaken,
    PreKeySet,
)
from xchat.storage.migrations import migrate

MAX_BATCH = 2048  # ~operations per transaction (whole relay frames); bounds commit latency
#: Group commit by time budget: a commit starts at least this long after the previous one
#: started. Idle, or busier than one commit per 2 ms, it never waits; in between (a quarter
#: to half of the maximum rate on the benchmark machine) commits would be short and many,
#: each paying the fixed cost of a transaction (BEGIN, WAL writes, fsync: ~260 µs of CPU).
#: Spacing them cut relay CPU per message by 25-35% at 3,750-7,500 msgs/s for 1-2 ms more
#: median latency (issue #20, bench/tail_bench.py).
GROUP_COMMIT_SPACING = 0.002
CHECKPOINT_SECONDS = 0.25  # how often the checkpointer thread copies the WAL into the db
LOCK_SECONDS = 10.0  # how long a new writer waits for the database's previous one
HEADER = struct.Struct("<I")
ENQUEUE, ACK = "enqueue", "ack"


def frame(obj: Any) -> bytes:
    """``<u32 length><kind byte><body>``: ``M`` + marshal when everything in ``obj`` is a
    plain value (the hot path: enqueues, ACKs and their answers are tuples, lists, ints and
    bytes; marshal is ~3x faster than pickle both ways), else ``P`` + pickle (directory
    operations carry dataclasses). Both ends are the same interpreter, so marshal's format
    matches; the pipe is private to the relay and its writer."""
    try:
        data = b"M" + marshal.dumps(obj)
    except ValueError:  # "unmarshallable object"
        data = b"P" + pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def split_frames(buf: bytearray) -> list[Any]:
    """Take every complete frame off the front of ``buf`` (in place)."""
    out = []
    pos, n = 0, len(buf)
    with memoryview(buf) as view:  # released before buf is resized below
        while n - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if n - pos - 4 < size:
                break
            body = view[pos + 5 : pos + 4 + size]
            out.append(marshal.loads(body) if buf[pos + 4] == 77 else pickle.loads(body))  # M
            body.release()
            pos += 4 + size
    if pos:
        del buf[:pos]
    return out


# --- the operations (each runs inside the current transaction) ---


class Writer:
    """The writer's state: its connection, the next queue seq and this transaction's
    mailbox usage deltas (the relay applies them after the commit)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        row = conn.execute("SELECT MAX(seq) FROM mailbox").fetchone()
        self.next_seq: int = (row[0] or 0) + 1
        self.delta: dict[int, tuple[int, int]] = {}
        self.stored = 0
        self.deleted = 0
        self.commit_seconds = 0.0  # the last COMMIT statement alone (WAL write + fsync)

    def count(self, ref: int, envelopes: int, size: int) -> None:
        n, b = self.delta.get(ref, (0, 0))
        self.delta[ref] = (n + envelopes, b + size)

    def execute(self, ops: list[tuple[str, Any]]) -> tuple[list[Any], dict[int, BaseException]]:
        """One transaction over ``ops``: ``(results, errors by index)``; a failed commit
        fails every operation (nothing of the batch is durable)."""
        conn = self.conn
        results: list[Any] = [None] * len(ops)
        errors: dict[int, BaseException] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(ops):
                kind = ops[i][0]
                j = i + 1
                if kind in (ENQUEUE, ACK):
                    while j < len(ops) and ops[j][0] == kind:
                        j += 1
                    run = [args for _, args in ops[i:j]]
                    if kind == ENQUEUE:
                        results[i:j] = self.enqueue([envs for (envs,) in run])
                    else:
                        results[i:j] = self.ack(run)
                else:
                    self.call(i, ops[i], results, errors)
                i = j
            tc = time.perf_counter()
            conn.execute("COMMIT")
            self.commit_seconds = time.perf_counter() - tc
        except BaseException as exc:
            self.delta.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [None] * len(ops), dict.fromkeys(range(len(ops)), exc)
        return results, errors

    def call(
        self, i: int, op: tuple[str, Any], results: list[Any], errors: dict[int, BaseException]
    ) -> None:
        conn = self.conn
        conn.execute("SAVEPOINT op")
        mark = dict(self.delta)
        try:
            results[i] = OPS[op[0]](self, *op[1])
            conn.execute("RELEASE op")
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            self.delta = mark
            errors[i] = exc

    def enqueue(self, run: list[list[tuple[Any, ...]]]) -> list[list[int | None]]:
        """Each envelope is a NewEnvelope's fields as a plain tuple, in column order."""

        rows = []
        out: list[list[int | None]] = []
        seq = self.next_seq
        for envs in run:
            seqs: list[int | None] = []
            for env in envs:
                rows.append((seq, *env))
                seqs.append(seq)
                seq += 1
            out.append(seqs)
        self.next_seq = seq
        conn = self.conn
        before = conn.total_changes
        sql.insert_rows(conn, rows)
        inserted = conn.total_changes - before
        self.stored += inserted
        if inserted == len(rows):
            for row in rows:
                self.count(row[1], 1, len(row[5]))
            return out
        # Some (device, envelope_id) were already queued: find which (rare path).
        for envs, seqs in zip(run, out, strict=True):
            for k, (env, s) in enumerate(zip(envs, seqs, strict=True)):
                ref, eid, _ts, _expires, content = env
                got = conn.execute(
                    "SELECT seq FROM mailbox WHERE device_ref = ? AND envelope_id = ?",
                    (ref, eid),
                ).fetchone()
                stored = got is not None and got[0] == s
                seqs[k] = s if stored else None
                if stored:
                    self.count(ref, 1, len(content))
        return out

    def ack(self, run: list[tuple[int, list[bytes], bool]]) -> list[int | None]:
        """Deletes: fire-and-forget ACKs share statements; awaited ones (HTTP, which report
        a count) get their own."""
        shared: list[tuple[int, bytes]] = []
        out: list[int | None] = []
        for ref, ids, counted in run:
            if counted:
                out.append(self.delete([(ref, eid) for eid in ids]))
            else:
                shared.extend([(ref, eid) for eid in ids])
                out.append(None)
        if shared:
            self.delete(shared)
        return out

    def delete(self, keys: list[tuple[int, bytes]]) -> int:
        total = 0
        for dref, n, size in sql.delete_rows(self.conn, keys):
            self.count(dref, -n, -size)
            total += n
        self.deleted += total
        return total


def _created_ms(w: Writer, address: str) -> int | None:
    row = w.conn.execute("SELECT created_ms FROM accounts WHERE address = ?", (address,)).fetchone()
    return None if row is None else int(row[0])


def _register(
    w: Writer, address: str, identity_key: bytes, keys: PreKeySet, now: int
) -> tuple[AccountRecord, DeviceRecord]:
    conn = w.conn
    conn.execute(
        "INSERT OR IGNORE INTO accounts (address, identity_key, created_ms) VALUES (?, ?, ?)",
        (address, identity_key, now),
    )
    row = conn.execute(
        "SELECT ref, epoch FROM devices WHERE address = ? AND device_id = 1", (address,)
    ).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO devices (address, device_id, epoch, created_ms) VALUES (?, 1, 1, ?)",
            (address, now),
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


def _set_handle(w: Writer, address: str, handle: str | None, skeleton: str | None) -> None:
    try:
        w.conn.execute(
            "UPDATE accounts SET handle = ?, skeleton = ? WHERE address = ?",
            (handle, skeleton, address),
        )
    except sqlite3.IntegrityError:
        raise HandleTaken(handle) from None


def _set_token_hash(w: Writer, address: str, token_hash: bytes) -> None:
    w.conn.execute("UPDATE accounts SET token_hash = ? WHERE address = ?", (token_hash, address))


def _put_prekeys(w: Writer, ref: int, keys: PreKeySet) -> tuple[int, int]:
    sql.put_keys(w.conn, ref, keys)
    return sql.count_prekeys(w.conn, ref)


def _count_prekeys(w: Writer, ref: int) -> tuple[int, int]:
    return sql.count_prekeys(w.conn, ref)


def _add_device(
    w: Writer,
    address: str,
    device_id: int,
    keys: PreKeySet,
    device_list: bytes,
    list_version: int,
    now: int,
) -> DeviceRecord:
    cur = w.conn.execute(
        "INSERT INTO devices (address, device_id, epoch, created_ms) VALUES (?, ?, 1, ?)",
        (address, device_id, now),
    )
    assert cur.lastrowid is not None
    sql.put_keys(w.conn, cur.lastrowid, keys)
    sql.put_list(w.conn, address, list_version, device_list, device_id)
    return DeviceRecord(cur.lastrowid, address, device_id, 1)


def _set_device_list(
    w: Writer, address: str, device_list: bytes, version: int, gone: list[int], top: int
) -> None:
    for ref in gone:
        for table in ("otk_ec", "otk_kem", "mailbox"):
            w.conn.execute(f"DELETE FROM {table} WHERE device_ref = ?", (ref,))
        w.conn.execute("DELETE FROM devices WHERE ref = ?", (ref,))
    sql.put_list(w.conn, address, version, device_list, top)


def _get_device_list(w: Writer, address: str) -> tuple[int, bytes, int] | None:
    row = w.conn.execute(
        "SELECT version, list, max_device_id FROM device_lists WHERE address = ?", (address,)
    ).fetchone()
    return (int(row[0]), bytes(row[1]), int(row[2])) if row else None


def _take_bundle(
    w: Writer, devices: tuple[DeviceRecord, ...], one_time: bool
) -> list[BundleDevice]:
    return [sql.take_one(w.conn, dev, one_time) for dev in devices]


def _fetch(
    w: Writer, ref: int, after_seq: int, limit: int, now: int
) -> list[tuple[int, bytes, int, bytes]]:
    return w.conn.execute(
        "SELECT seq, envelope_id, ts_ms, content FROM mailbox WHERE device_ref = ?"
        " AND seq > ? AND expires_ms > ? ORDER BY seq LIMIT ?",
        (ref, after_seq, now, limit),
    ).fetchall()


def _sweep_expired(w: Writer, now: int) -> int:
    w.conn.execute("DELETE FROM used_challenges WHERE expires_ms <= ?", (now,))
    gone = w.conn.execute(
        "DELETE FROM mailbox WHERE expires_ms <= ? RETURNING device_ref, LENGTH(content)",
        (now,),
    ).fetchall()
    for ref, size in gone:
        w.count(ref, -1, -size)
    return len(gone)


def _challenge_used(w: Writer, challenge: bytes, expires_ms: int) -> None:
    w.conn.execute(
        "INSERT OR IGNORE INTO used_challenges (challenge, expires_ms) VALUES (?, ?)",
        (challenge, expires_ms),
    )


#: Every operation the relay may send besides ENQUEUE and ACK, by name.
OPS: dict[str, Callable[..., Any]] = {
    "created_ms": _created_ms,
    "register": _register,
    "set_handle": _set_handle,
    "set_token_hash": _set_token_hash,
    "put_prekeys": _put_prekeys,
    "count_prekeys": _count_prekeys,
    "add_device": _add_device,
    "set_device_list": _set_device_list,
    "get_device_list": _get_device_list,
    "take_bundle": _take_bundle,
    "fetch": _fetch,
    "sweep_expired": _sweep_expired,
    "challenge_used": _challenge_used,
}


# --- the process ---


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def snapshot(conn: sqlite3.Connection) -> dict[str, Any]:
    """What the relay caches (PROTOCOL Part III §8): the directory, the mailbox usage, the
    unexpired used challenges and the operator settings."""
    accounts = list(conn.execute("SELECT address, identity_key, handle, token_hash FROM accounts"))
    devices = list(
        conn.execute(
            "SELECT ref, address, device_id, epoch FROM devices ORDER BY address, device_id"
        )
    )
    usage = {
        ref: (n, size)
        for ref, n, size in conn.execute(
            "SELECT device_ref, COUNT(*), SUM(LENGTH(content)) FROM mailbox GROUP BY device_ref"
        )
    }
    conn.execute("DELETE FROM used_challenges WHERE expires_ms <= ?", (now_ms(),))
    used = dict(conn.execute("SELECT challenge, expires_ms FROM used_challenges"))
    settings = dict(conn.execute("SELECT key, value FROM settings"))
    return {
        "accounts": accounts,
        "devices": devices,
        "usage": usage,
        "used": used,
        "settings": settings,
    }


def _checkpoint_loop(path: Path, stop: threading.Event) -> None:
    """WAL checkpoints off the commit path (PROTOCOL Part III §7): the writer connection has
    ``wal_autocheckpoint=0``, so no commit ever pays for copying the WAL into the database
    file and fsyncing it; this thread does a PASSIVE checkpoint (never blocks the writer)
    every CHECKPOINT_SECONDS with its own connection."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        while not stop.wait(CHECKPOINT_SECONDS):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                continue
    finally:
        conn.close()


def _portable(exc: BaseException) -> BaseException:
    """The error as the relay will see it: itself if it pickles, else its text."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class _Input:
    """The relay's frames, read with blocking ``os.read`` (this process has nothing else
    to do while its input is empty)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.frames: list[Any] = []
        self.eof = False
        self.batches = 0  # relay frames in the last take()

    def _read(self) -> None:
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.eof = True
        self.buf += data
        self.frames.extend(split_frames(self.buf))

    def take(self, limit: int) -> list[tuple[str, Any]] | None:
        """Block for the first frame, then add every frame already readable, up to about
        ``limit`` operations; None at the end of the input."""
        while not self.frames and not self.eof:
            self._read()
        if not self.frames:
            return None
        ops: list[tuple[str, Any]] = []
        self.batches = 0
        while True:
            while self.frames and len(ops) < limit:
                ops.extend(self.frames.pop(0))
                self.batches += 1
            if self.frames or len(ops) >= limit or self.eof:
                break
            if not select.select([self.fd], [], [], 0)[0]:
                break
            self._read()
        return ops


def _lock(fd: int, path: Path) -> None:
    """Take the database's writer lock, waiting up to LOCK_SECONDS for a previous writer
    (of a relay that crashed a moment ago) to finish its last batch and exit."""
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StorageUnavailable(
                    f"{path} is in use by another relay's SQLite writer"
                ) from None
            time.sleep(0.01)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    path, in_fd, out_fd = Path(argv[0]), int(argv[1]), int(argv[2])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the relay ends us by closing our input
    _name_process(b"xchat-writer")
    lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _lock(lock, path)  # see the module docstring: one writer per database
        conn = _connect(path)
        os.chmod(path, 0o600)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        migrate(conn)
        writer = Writer(conn)
        first = snapshot(conn)
    except Exception as exc:
        _write_all(out_fd, frame(("error", _portable(exc))))
        return 1
    _write_all(out_fd, frame(("ready", first)))
    stop = threading.Event()
    ckpt = threading.Thread(target=_checkpoint_loop, args=(path, stop), daemon=True)
    ckpt.start()
    source = _Input(in_fd)
    started = 0.0
    while True:
        wait = started + GROUP_COMMIT_SPACING - time.perf_counter()
        if wait > 0:  # the previous commit was quick: let this one gather more
            time.sleep(wait)
        ops = source.take(MAX_BATCH)
        if ops is None:
            break
        started = time.perf_counter()
        s0, d0 = writer.stored, writer.deleted
        results, errors = writer.execute(ops)
        spent = time.perf_counter() - started
        delta, writer.delta = writer.delta, {}
        reply = (
            source.batches,
            results,
            {i: _portable(e) for i, e in errors.items()},
            delta,
            (len(ops), spent, writer.commit_seconds, writer.stored - s0, writer.deleted - d0),
        )
        try:
            _write_all(out_fd, frame(reply))
        except BrokenPipeError:  # the relay is gone: nobody waits for the answer
            break
    stop.set()
    ckpt.join()
    conn.close()
    return 0


def _name_process(name: bytes) -> None:
    """Best effort: name the process (Linux ``comm``) so ps and the benchmarks can tell the
    writer from the relay."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
