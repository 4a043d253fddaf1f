"""FilesystemBlobStore: create/append/resume/quota/TTL (PROTOCOL.md Part VI §4–§7)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xchat.errors import ApiError
from xchat.storage.blobs import WRITE_PIECE, FilesystemBlobStore, _writev_all, valid_blob_id


async def _aiter(*pieces: bytes) -> AsyncIterator[bytes]:
    for p in pieces:
        yield p


async def _broken(*pieces: bytes) -> AsyncIterator[bytes]:
    for p in pieces:
        yield p
    raise ConnectionResetError("peer went away")


async def _read(store: FilesystemBlobStore, blob_id: str, start: int, end: int) -> bytes:
    return b"".join([p async for p in store.read(blob_id, start, end)])


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs", ttl_seconds=60, quota_bytes=1000)


async def test_create_append_read(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 10, now_ms=1000)
    assert valid_blob_id(info.id) and info.offset == 0 and not info.complete
    info = await store.append(info.id, 0, _aiter(b"hello"), now_ms=1000)
    assert info.offset == 5
    info = await store.append(info.id, 5, _aiter(b"wor", b"ld"), now_ms=1000)
    assert info.complete
    assert await _read(store, info.id, 0, 10) == b"helloworld"
    assert await _read(store, info.id, 3, 7) == b"lowo"


async def test_zero_size_blob_is_complete(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 0, now_ms=1)
    assert info.complete and (await store.info(info.id, 1)).complete


async def test_offset_mismatch_is_409(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 10, now_ms=1)
    await store.append(info.id, 0, _aiter(b"abc"), now_ms=1)
    for bad in (0, 2, 4):
        with pytest.raises(ApiError) as exc:
            await store.append(info.id, bad, _aiter(b"x"), now_ms=1)
        assert exc.value.status == 409
    assert (await store.info(info.id, 1)).offset == 3


async def test_broken_stream_keeps_prefix_for_resume(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 8, now_ms=1)
    with pytest.raises(ConnectionResetError):
        await store.append(info.id, 0, _broken(b"abcd", b"e"), now_ms=1)
    assert (await store.info(info.id, 1)).offset == 5
    info = await store.append(info.id, 5, _aiter(b"fgh"), now_ms=1)
    assert info.complete and await _read(store, info.id, 0, 8) == b"abcdefgh"


async def test_broken_stream_keeps_every_batch_in_order(tmp_path: Path) -> None:
    """Batches are written while the next is received (double-buffered): a stream that
    breaks with a write still in flight keeps every byte that arrived, in order, and the
    blob is free again for the resume once ``append`` has returned."""
    store = FilesystemBlobStore(tmp_path / "b", quota_bytes=1 << 30)
    pieces = [bytes([i]) * 600_000 for i in range(5)]  # ~3 write batches of 1 MiB
    info = await store.create("alice", 4_000_000, now_ms=1)
    with pytest.raises(ConnectionResetError):
        await store.append(info.id, 0, _broken(*pieces), now_ms=1)
    assert (await store.info(info.id, 1)).offset == 3_000_000
    info = await store.append(info.id, 3_000_000, _aiter(bytes(1_000_000)), now_ms=1)
    assert info.complete
    assert await _read(store, info.id, 0, 3_000_000) == b"".join(pieces)


async def test_past_declared_size_is_413(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 4, now_ms=1)
    with pytest.raises(ApiError) as exc:
        await store.append(info.id, 0, _aiter(b"abc", b"defg"), now_ms=1)
    assert exc.value.status == 413
    assert (await store.info(info.id, 1)).offset == 4


async def test_quota_per_account(store: FilesystemBlobStore) -> None:
    await store.create("alice", 600, now_ms=1)
    with pytest.raises(ApiError) as exc:
        await store.create("alice", 401, now_ms=1)
    assert exc.value.status == 413
    await store.create("alice", 400, now_ms=1)
    await store.create("bob", 1000, now_ms=1)  # quotas are per account
    assert await store.usage("alice", 1) == 1000


async def test_ttl_expiry_frees_quota_and_deletes(store: FilesystemBlobStore) -> None:
    info = await store.create("alice", 1000, now_ms=0)
    path = store.path_of(info.id)
    assert path is not None and path.exists()
    with pytest.raises(ApiError):
        await store.create("alice", 1, now_ms=59_999)
    with pytest.raises(ApiError) as exc:  # expired reads are refused even before a sweep
        await store.info(info.id, now_ms=60_000)
    assert exc.value.status == 404
    await store.create("alice", 1, now_ms=60_000)  # expired blobs do not count
    assert await store.expire(now_ms=60_000) == 1
    assert not path.exists()


async def test_unknown_and_malformed_ids_are_404(store: FilesystemBlobStore) -> None:
    for bad in ("0" * 32, "../../etc/passwd", "A" * 32, ""):
        with pytest.raises(ApiError) as exc:
            await store.info(bad, 1)
        assert exc.value.status == 404
    assert store.path_of("../x") is None
    assert not await store.delete("../x")


async def test_index_survives_reopen(tmp_path: Path) -> None:
    s1 = FilesystemBlobStore(tmp_path / "b")
    info = await s1.create("alice", 3, now_ms=1)
    await s1.append(info.id, 0, _aiter(b"ab"), now_ms=1)
    await s1.close()
    s2 = FilesystemBlobStore(tmp_path / "b")
    assert (await s2.info(info.id, 2)).offset == 2
    await s2.close()


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [1], [WRITE_PIECE], [WRITE_PIECE + 1], [100, WRITE_PIECE - 100, 7],
     [3 * WRITE_PIECE + 5, 0, 17, WRITE_PIECE - 1], [1] * 1500],
)  # fmt: skip
def test_writes_in_bounded_pieces_keep_every_byte_in_order(
    tmp_path: Path, sizes: list[int]
) -> None:
    """A batch is written in writev calls of at most WRITE_PIECE bytes (large writes get
    large page-cache folios, which cost host faults on a ballooned VM): pieces are sliced
    and regrouped, nothing is lost, reordered or duplicated, over IOV_MAX pieces too."""
    pieces = [os.urandom(n) for n in sizes]
    fd = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        assert _writev_all(fd, pieces) == sum(sizes)
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_bytes() == b"".join(pieces)
