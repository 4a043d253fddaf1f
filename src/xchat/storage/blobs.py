"""The relay's blob store for encrypted attachments (PROTOCOL.md Part VI §4–§7).

The server keeps attachment *ciphertext* only: each blob is an opaque byte string named by a
random 128-bit id (the download capability), with a size declared up front by the uploader
(already padded by the client, §3), an owner used only for quota accounting, and an
expiry. Uploads are resumable: bytes are appended strictly at the current end
(``append(offset=...)`` with ``offset == confirmed size``), so a client whose connection
broke asks for the confirmed offset and continues from there (§5).

:class:`BlobStore` is the interface handlers use; :class:`FilesystemBlobStore` is the
one-machine backend (files under ``<data_dir>/blobs`` plus a small SQLite index of its own,
independent of the mailbox database). An S3-compatible backend maps ``create`` /
``append`` / ``finish`` onto multipart uploads and implements the same methods.

Errors are :class:`~xchat.errors.ApiError` with the HTTP status the handler should return
(404 unknown/expired, 409 offset mismatch or concurrent upload, 413 over quota or declared
size), so the HTTP layer needs no translation table.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from xchat.errors import ApiError

#: A blob id is 16 random bytes as 32 lower-case hex digits: an unguessable capability
#: (PROTOCOL Part VI §4.1). Anything else is rejected before it reaches the filesystem.
BLOB_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
BLOB_ID_BYTES: Final = 16

#: Default time to live of a blob, from creation (PROTOCOL Part VI §7).
DEFAULT_TTL_SECONDS: Final = 30 * 24 * 3600
#: Default per-account quota: sum of declared sizes of the account's live blobs (§6).
DEFAULT_QUOTA_BYTES: Final = 8 * 1024**3
#: Largest single blob (a hard cap independent of the quota, §6).
DEFAULT_MAX_BLOB_BYTES: Final = 8 * 1024**3
#: Bytes buffered before one ``os.write``: fewer syscalls, bounded memory per upload.
WRITE_BUFFER: Final = 1024 * 1024
#: Largest single ``writev`` into a blob file. Why: the kernel (6.x, ext4 and others with
#: large folios) allocates page-cache folios as large as the write; on this VM free
#: blocks of >= 128 KiB are the ones its free-page reporting hands back to the host, so
#: 1 MiB writes cost ~3 CPU s/GB in host faults against ~0.4 for 64 KiB ones (issue #20,
#: bench/file_bench.py notes).
WRITE_PIECE: Final = 64 * 1024
#: Read size of a download stream.
READ_CHUNK: Final = 1024 * 1024


def valid_blob_id(blob_id: str) -> bool:
    return bool(BLOB_ID_RE.match(blob_id))


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """The public state of one blob. ``offset`` is the confirmed (durably appended) size."""

    id: str
    owner: str
    size: int
    offset: int
    created_ms: int
    expires_ms: int

    @property
    def complete(self) -> bool:
        return self.offset == self.size


class BlobStore(abc.ABC):
    """Durable storage of attachment ciphertext (PROTOCOL Part VI §4). Async so that a remote
    (S3-compatible) backend can implement it without blocking the event loop."""

    @abc.abstractmethod
    async def create(self, owner: str, size: int, now_ms: int) -> BlobInfo:
        """Reserve ``size`` bytes of ``owner``'s quota and return a fresh, empty blob.
        413 if the size exceeds the per-blob cap or the remaining quota."""

    @abc.abstractmethod
    async def info(self, blob_id: str, now_ms: int) -> BlobInfo:
        """The blob's state; 404 if unknown, malformed or expired."""

    @abc.abstractmethod
    async def append(
        self, blob_id: str, offset: int, data: AsyncIterable[bytes], now_ms: int
    ) -> BlobInfo:
        """Append ``data`` at ``offset``, which must equal the confirmed size (409
        otherwise, or if another upload to the blob is in progress). Bytes received before
        a broken stream stay appended (that is what makes resume work). 413 if the data
        would run past the declared size (the bytes up to the size are kept)."""

    @abc.abstractmethod
    def read(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` of a blob (the caller has checked the bounds)."""

    @abc.abstractmethod
    def path_of(self, blob_id: str) -> Path | None:
        """A local file holding the blob, if the backend has one (lets the HTTP layer use
        sendfile); ``None`` for remote backends."""

    @abc.abstractmethod
    async def delete(self, blob_id: str) -> bool: ...

    @abc.abstractmethod
    async def usage(self, owner: str, now_ms: int) -> int:
        """Bytes of quota ``owner``'s live blobs hold (declared sizes)."""

    @abc.abstractmethod
    async def expire(self, now_ms: int) -> int:
        """Delete every blob whose expiry has passed; return how many."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def set_expiry(
        self, blob_id: str, owner: str, expires_ms: int, now_ms: int
    ) -> int | None:
        """Move the expiry of ``owner``'s live blob (history backups keep their blobs for
        as long as the backup names them, PROTOCOL Part X §9); the new expiry, or None if the
        blob is not theirs, not live, or the backend cannot (then it expires as usual)."""
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_owner ON blobs(owner);
CREATE INDEX IF NOT EXISTS blobs_expires ON blobs(expires_ms);
"""


class FilesystemBlobStore(BlobStore):
    """Blobs as files ``<root>/<id[:2]>/<id>``; index in ``<root>/index.sqlite3``.

    The confirmed offset of a blob is the length of its file: bytes are written in order and
    only ever appended, so whatever reached the disk before a connection broke is a valid
    prefix. A completed blob is fsync'ed before the final PATCH is answered.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        self.root = Path(root)
        self.ttl_ms = ttl_seconds * 1000
        self.quota_bytes = quota_bytes
        self.max_blob_bytes = max_blob_bytes
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._busy: set[str] = set()
        self._create_lock = asyncio.Lock()

    # --- helpers ------------------------------------------------------------------------

    def _file(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def _row(self, blob_id: str, now_ms: int) -> tuple[str, int, int, int]:
        if not valid_blob_id(blob_id):
            raise ApiError(404, "no such blob")
        row = self._db.execute(
            "SELECT owner, size, created_ms, expires_ms FROM blobs WHERE id = ?", (blob_id,)
        ).fetchone()
        if row is None or row[3] <= now_ms:
            raise ApiError(404, "no such blob")
        return (str(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def _info(self, blob_id: str, now_ms: int) -> BlobInfo:
        owner, size, created, expires = self._row(blob_id, now_ms)
        try:
            offset = self._file(blob_id).stat().st_size
        except FileNotFoundError:
            raise ApiError(404, "no such blob") from None
        return BlobInfo(blob_id, owner, size, min(offset, size), created, expires)

    # --- interface ----------------------------------------------------------------------

    async def create(self, owner: str, size: int, now_ms: int) -> BlobInfo:
        if size < 0:
            raise ApiError(400, "blob size must not be negative")
        if size > self.max_blob_bytes:
            raise ApiError(413, f"blob larger than the {self.max_blob_bytes}-byte limit")
        async with self._create_lock:  # quota check and insert are one step
            used = await self.usage(owner, now_ms)
            if used + size > self.quota_bytes:
                raise ApiError(
                    413, f"blob quota exceeded ({used} of {self.quota_bytes} bytes in use)"
                )
            blob_id = secrets.token_hex(BLOB_ID_BYTES)
            path = self._file(blob_id)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            expires = now_ms + self.ttl_ms
            self._db.execute(
                "INSERT INTO blobs (id, owner, size, created_ms, expires_ms) VALUES (?,?,?,?,?)",
                (blob_id, owner, size, now_ms, expires),
            )
        return BlobInfo(blob_id, owner, size, 0, now_ms, expires)

    async def info(self, blob_id: str, now_ms: int) -> BlobInfo:
        return self._info(blob_id, now_ms)

    async def append(
        self, blob_id: str, offset: int, data: AsyncIterable[bytes], now_ms: int
    ) -> BlobInfo:
        info = self._info(blob_id, now_ms)
        if blob_id in self._busy:
            raise ApiError(409, "another upload to this blob is in progress")
        if offset != info.offset:
            raise ApiError(409, f"upload offset mismatch: the blob has {info.offset} bytes")
        self._busy.add(blob_id)
        return await self._append(info, data, lambda: self._busy.discard(blob_id))

    async def _append(
        self,
        info: BlobInfo,
        data: AsyncIterable[bytes],
        release: Callable[[], None] = lambda: None,
    ) -> BlobInfo:
        """Writes and the final fsync run in a worker thread, so a slow disk never stalls
        the relay's event loop (message traffic shares it). Double-buffered: while one
        ~1 MiB batch is being written the next is received, so the body keeps flowing
        (issue #20). ``release`` (the blob's busy mark) runs once no write is in flight."""
        room = info.size - info.offset
        fd = os.open(self._file(info.id), os.O_WRONLY | os.O_APPEND)
        written = 0
        # Pieces are gathered in a list and written with writev: the body is copied
        # once, into the kernel, not also into a staging buffer (CPU per GB, issue #20).
        buf: list[bytes] = []
        buffered = 0
        over = False
        pending: asyncio.Future[int] | None = None
        try:
            async for piece in data:
                if len(piece) > room - written - buffered:
                    piece = piece[: room - written - buffered]
                    over = True
                buf.append(piece)
                buffered += len(piece)
                if buffered >= WRITE_BUFFER:
                    if pending is not None:
                        written += await pending
                    chunk, buf, buffered = buf, [], 0
                    pending = asyncio.ensure_future(asyncio.to_thread(_writev_all, fd, chunk))
                if over:
                    break
            if pending is not None:
                written += await pending
                pending = None
            if buf:
                chunk, buf, buffered = buf, [], 0
                pending = asyncio.ensure_future(asyncio.to_thread(_writev_all, fd, chunk))
                written += await pending
                pending = None
            if info.offset + written == info.size:
                await asyncio.to_thread(os.fsync, fd)
        finally:
            # Keep what arrived even if the stream broke: the client resumes after it. A
            # write still in flight finishes first (O_APPEND order), then the rest is
            # written, then the blob is free for the resuming PATCH.
            def close(rest: list[bytes] = buf) -> None:
                try:
                    if rest:
                        _writev_all(fd, rest)
                finally:
                    os.close(fd)
                    release()

            if pending is not None and not pending.done():
                try:
                    await asyncio.shield(pending)
                except BaseException:  # cancelled again: close once the write returns
                    pending.add_done_callback(lambda _: close())
                    raise
            close()
        if over:
            raise ApiError(413, f"upload runs past the declared blob size of {info.size}")
        return BlobInfo(
            info.id,
            info.owner,
            info.size,
            info.offset + written,
            info.created_ms,
            info.expires_ms,
        )

    async def read(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        with open(self._file(blob_id), "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                piece = fh.read(min(READ_CHUNK, left))
                if not piece:
                    break
                left -= len(piece)
                yield piece

    def path_of(self, blob_id: str) -> Path | None:
        return self._file(blob_id) if valid_blob_id(blob_id) else None

    async def delete(self, blob_id: str) -> bool:
        if not valid_blob_id(blob_id):
            return False
        cur = self._db.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
        with contextlib.suppress(FileNotFoundError):
            self._file(blob_id).unlink()
        return cur.rowcount > 0

    async def usage(self, owner: str, now_ms: int) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = ? AND expires_ms > ?",
            (owner, now_ms),
        ).fetchone()
        return int(row[0])

    async def expire(self, now_ms: int) -> int:
        ids = [
            str(r[0])
            for r in self._db.execute("SELECT id FROM blobs WHERE expires_ms <= ?", (now_ms,))
        ]
        n = 0
        for blob_id in ids:
            if blob_id not in self._busy and await self.delete(blob_id):
                n += 1
        return n

    async def close(self) -> None:
        self._db.close()

    async def set_expiry(
        self, blob_id: str, owner: str, expires_ms: int, now_ms: int
    ) -> int | None:
        db = getattr(self, "_db", None)
        if not isinstance(db, sqlite3.Connection) or not valid_blob_id(blob_id):
            return None  # a subclass with another index must override this
        cur = db.execute(
            "UPDATE blobs SET expires_ms = ? WHERE id = ? AND owner = ? AND expires_ms > ?",
            (expires_ms, blob_id, owner, now_ms),
        )
        return expires_ms if cur.rowcount == 1 else None


def _writev_all(fd: int, pieces: list[bytes]) -> int:
    """Write every piece, in order, in ``writev`` calls of at most :data:`WRITE_PIECE`
    bytes (a piece larger than that is sliced, not copied)."""
    total = 0
    batch: list[memoryview] = []
    size = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            take = view[: WRITE_PIECE - size]
            batch.append(take)
            size += len(take)
            view = view[len(take) :]
            if size == WRITE_PIECE or len(batch) == _IOV_MAX:
                total += _writev_exact(fd, batch, size)
                batch, size = [], 0
    if batch:
        total += _writev_exact(fd, batch, size)
    return total


def _writev_exact(fd: int, batch: list[memoryview], want: int) -> int:
    done = os.writev(fd, batch)
    if done < want:  # a short write: the rest one piece at a time
        rest = memoryview(b"".join(batch))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    return want


_IOV_MAX: Final = 1024
