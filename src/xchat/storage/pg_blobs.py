"""Blob store of a scaled-out relay: bytes in a shared directory, metadata in PostgreSQL.

Same files as :class:`~xchat.storage.blobs.FilesystemBlobStore` (``<root>/<id[:2]>/<id>``,
the confirmed offset is the file length), but the index — owner, declared size, expiry —
is the ``blobs`` table every node shares, so a blob uploaded through one node downloads
through any other, and quotas count across nodes. An upload in progress is guarded per
blob by a PostgreSQL advisory lock (409 for a second concurrent upload, whichever node it
reaches).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import asyncpg

from xchat.errors import ApiError, StorageUnavailable
from xchat.storage.blobs import (
    BLOB_ID_BYTES,
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_QUOTA_BYTES,
    DEFAULT_TTL_SECONDS,
    BlobInfo,
    FilesystemBlobStore,
    valid_blob_id,
)
from xchat.storage.postgres import UNAVAILABLE


def _lock_key(blob_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(b"xchat-blob" + blob_id.encode()).digest()[:8], "big", signed=True
    )


class PostgresBlobStore(FilesystemBlobStore):
    """Files under ``root`` (shared by the nodes); index in the ``blobs`` table."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        dsn: str,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        # Deliberately not FilesystemBlobStore.__init__: no SQLite index here.
        self.root = Path(root)
        self.dsn = dsn
        self.ttl_ms = ttl_seconds * 1000
        self.quota_bytes = quota_bytes
        self.max_blob_bytes = max_blob_bytes
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._busy: set[str] = set()
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()

    @classmethod
    def from_env(cls, root: Path, dsn: str) -> PostgresBlobStore:
        def env_int(name: str, default: int) -> int:
            raw = os.environ.get(name)
            return int(raw) if raw else default

        return cls(
            root,
            dsn,
            ttl_seconds=env_int("XCHAT_BLOB_TTL_SECONDS", DEFAULT_TTL_SECONDS),
            quota_bytes=env_int("XCHAT_BLOB_QUOTA_BYTES", DEFAULT_QUOTA_BYTES),
            max_blob_bytes=env_int("XCHAT_BLOB_MAX_BYTES", DEFAULT_MAX_BLOB_BYTES),
        )

    async def _get_pool(self) -> Any:
        async with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=0, max_size=4, timeout=3, command_timeout=15
                    )
                except UNAVAILABLE:
                    raise StorageUnavailable() from None
            return self._pool

    async def _row_async(self, blob_id: str, now_ms: int) -> tuple[str, int, int, int]:
        if not valid_blob_id(blob_id):
            raise ApiError(404, "no such blob")
        pool = await self._get_pool()
        try:
            row = await pool.fetchrow(
                "SELECT owner, size, created_ms, expires_ms FROM blobs WHERE id = $1", blob_id
            )
        except UNAVAILABLE:
            raise StorageUnavailable() from None
        if row is None or row[3] <= now_ms:
            raise ApiError(404, "no such blob")
        return (str(row[0]), int(row[1]), int(row[2]), int(row[3]))

    async def _info_async(self, blob_id: str, now_ms: int) -> BlobInfo:
        owner, size, created, expires = await self._row_async(blob_id, now_ms)
        try:
            offset = self._file(blob_id).stat().st_size
        except FileNotFoundError:
            raise ApiError(404, "no such blob") from None
        return BlobInfo(blob_id, owner, size, min(offset, size), created, expires)

    async def create(self, owner: str, size: int, now_ms: int) -> BlobInfo:
        if size < 0:
            raise ApiError(400, "blob size must not be negative")
        if size > self.max_blob_bytes:
            raise ApiError(413, f"blob larger than the {self.max_blob_bytes}-byte limit")
        pool = await self._get_pool()
        blob_id = secrets.token_hex(BLOB_ID_BYTES)
        expires = now_ms + self.ttl_ms
        try:
            async with pool.acquire() as conn, conn.transaction():
                # One account's quota check and insert are serialised across nodes.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(owner))
                used = await conn.fetchval(
                    "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = $1 AND expires_ms > $2",
                    owner,
                    now_ms,
                )
                if used + size > self.quota_bytes:
                    raise ApiError(
                        413, f"blob quota exceeded ({used} of {self.quota_bytes} bytes in use)"
                    )
                path = self._file(blob_id)
                path.parent.mkdir(mode=0o700, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                await conn.execute(
                    "INSERT INTO blobs (id, owner, size, created_ms, expires_ms)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    blob_id,
                    owner,
                    size,
                    now_ms,
                    expires,
                )
        except UNAVAILABLE:
            raise StorageUnavailable() from None
        return BlobInfo(blob_id, owner, size, 0, now_ms, expires)

    async def info(self, blob_id: str, now_ms: int) -> BlobInfo:
        return await self._info_async(blob_id, now_ms)

    async def append(
        self, blob_id: str, offset: int, data: AsyncIterable[bytes], now_ms: int
    ) -> BlobInfo:
        info = await self._info_async(blob_id, now_ms)
        pool = await self._get_pool()
        try:
            conn = await pool.acquire()
        except UNAVAILABLE:
            raise StorageUnavailable() from None
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(blob_id)):
                raise ApiError(409, "another upload to this blob is in progress")
            try:
                info = await self._info_async(blob_id, now_ms)  # the offset under the lock
                if offset != info.offset:
                    raise ApiError(409, f"upload offset mismatch: the blob has {info.offset} bytes")
                return await self._append(info, data)
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(blob_id))
        finally:
            with contextlib.suppress(Exception):
                await pool.release(conn)

    async def delete(self, blob_id: str) -> bool:
        if not valid_blob_id(blob_id):
            return False
        pool = await self._get_pool()
        status = await pool.execute("DELETE FROM blobs WHERE id = $1", blob_id)
        with contextlib.suppress(FileNotFoundError):
            self._file(blob_id).unlink()
        return bool(status.endswith(" 1"))

    async def usage(self, owner: str, now_ms: int) -> int:
        pool = await self._get_pool()
        used = await pool.fetchval(
            "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = $1 AND expires_ms > $2",
            owner,
            now_ms,
        )
        return int(used)

    async def set_expiry(
        self, blob_id: str, owner: str, expires_ms: int, now_ms: int
    ) -> int | None:
        """History backups pin their blobs (PROTOCOL Part X §9.4), as the filesystem index."""
        if not valid_blob_id(blob_id):
            return None
        pool = await self._get_pool()
        try:
            status = await pool.execute(
                "UPDATE blobs SET expires_ms = $1 WHERE id = $2 AND owner = $3 AND expires_ms > $4",
                expires_ms,
                blob_id,
                owner,
                now_ms,
            )
        except UNAVAILABLE:
            raise StorageUnavailable() from None
        return expires_ms if str(status).endswith(" 1") else None

    async def expire(self, now_ms: int) -> int:
        pool = await self._get_pool()
        try:
            rows = await pool.fetch("SELECT id FROM blobs WHERE expires_ms <= $1", now_ms)
        except UNAVAILABLE:
            return 0
        n = 0
        for r in rows:
            if await self.delete(str(r[0])):
                n += 1
        return n

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 3)
            self._pool = None
