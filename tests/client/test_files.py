"""Encrypted files end to end through a real relay (PROTOCOL.md Part VI).

A small TCP proxy between client and relay (:class:`_proxies.FlakyProxy`) can cut a
connection after N bytes in either direction, which is how "the connection broke
mid-upload / mid-download" is tested.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import os
import resource
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _proxies import FlakyProxy
from PIL import Image

from xchat.client import content as ct
from xchat.client import files as xf
from xchat.client.client import Client
from xchat.crypto.attachment import (
    DIGEST_BLAKE3,
    DIGEST_SHA256,
    TAG_LEN,
    AttachmentEncryptor,
    blob_digest,
    ciphertext_length,
)
from xchat.crypto.padding import padme_size
from xchat.errors import ApiError, DecodeError, DecryptionError
from xchat.testing import ServerProcess

CS = xf.FILE_CHUNK_SIZE


async def _roundtrip(
    profile: Path, src: Path, out: Path, *, url: str | None = None, **kw: object
) -> tuple[xf.FileManifest, Path]:
    async with Client(profile) as c:
        base = url or c.api.base_url
        async with xf.BlobClient(base, reauth=c.api.reauth, backoff=0.01) as blobs:
            m = await xf.send_file(blobs, src, **kw)  # type: ignore[arg-type]
            got = await xf.receive_file(blobs, m, out)
    return m, got


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS + 17])
async def test_roundtrip_sizes(blob_profile: Path, tmp_path: Path, size: int) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(size))
    m, got = await _roundtrip(blob_profile, src, tmp_path / "dl")
    assert got.read_bytes() == src.read_bytes()
    assert got.name == "data.bin" and m.size == size
    assert m.content_type == "application/octet-stream"
    assert os.listdir(tmp_path / "dl") == ["data.bin"]  # no .part left behind


async def test_50mb_roundtrip_with_progress(blob_profile: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as fh:
        for i in range(50):
            fh.write(block[i:] + block[:i])
    seen: list[tuple[int, int]] = []
    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        m = await xf.send_file(blobs, src, progress=lambda d, t: seen.append((d, t)))
        got = await xf.receive_file(blobs, m, tmp_path / "dl")
    assert seen[-1] == (m.blob_size, m.blob_size)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    assert _sha(got) == _sha(src)


def _sha(p: Path) -> bytes:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while piece := fh.read(1 << 20):
            h.update(piece)
    return h.digest()


async def test_resume_after_upload_connection_killed(
    blob_profile: Path, blob_relay: ServerProcess, tmp_path: Path
) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    async with FlakyProxy(blob_relay.port) as proxy:
        proxy.cut_up = 2 * 1024 * 1024
        _, got = await _roundtrip(blob_profile, src, tmp_path / "dl", url=proxy.url)
        assert proxy.cuts == 1
    assert got.read_bytes() == src.read_bytes()


async def test_resume_after_download_connection_killed(
    blob_profile: Path, blob_relay: ServerProcess, tmp_path: Path
) -> None:
    src = tmp_path / "down.bin"
    src.write_bytes(os.urandom(4 * 1024 * 1024 + 5))
    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        m = await xf.send_file(blobs, src)
    async with (
        FlakyProxy(blob_relay.port) as proxy,
        xf.BlobClient(proxy.url, backoff=0.01) as blobs,
    ):
        proxy.cut_down = 1024 * 1024 + 12345
        got = await xf.receive_file(blobs, m, tmp_path / "dl")
        assert proxy.cuts == 1
    assert got.read_bytes() == src.read_bytes()


async def test_failed_write_ends_download_and_discards_partial(
    blob_profile: Path, tmp_path: Path
) -> None:
    """The file is written in a second thread (files._PlainSink): a write that fails
    mid-download (here: past RLIMIT_FSIZE, as a full disk would) ends the download with
    that OSError, the writer thread is gone and no .part file is left."""
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        m = await xf.send_file(blobs, src)
        old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024 + 1, old_limit[1]))
        try:
            with pytest.raises(OSError) as err:
                await xf.receive_file(blobs, m, tmp_path / "dl")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            signal.signal(signal.SIGXFSZ, old_handler)
    assert err.value.errno == errno.EFBIG
    assert os.listdir(tmp_path / "dl") == []
    assert not [t for t in threading.enumerate() if t.name.startswith("xchat-file-write")]


async def _upload_raw(profile: Path, data: bytes) -> str:
    async def pieces(skip: int) -> AsyncIterator[bytes]:
        yield data[skip:]

    async with Client(profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        blob = await blobs.create(len(data))
        await blobs.upload(blob, len(data), pieces)
    return blob


def _encrypt(
    src: Path, chunk: int = 1024, key: bytes | None = None, version: int = xf.MANIFEST_VERSION
) -> tuple[bytes, bytes, bytes, int]:
    key = key or os.urandom(32)
    size = src.stat().st_size
    source = xf._CipherSource(src, key, chunk, size, version)
    blob = b"".join(source.ciphertext(0))
    return key, blob, source.final_digest(), size


def _tampered(blob: bytes, kind: str, chunk: int) -> bytes:
    n = chunk + TAG_LEN
    chunks = [blob[i : i + n] for i in range(0, len(blob), n)]
    if kind == "flip":
        b = bytearray(blob)
        b[n + 5] ^= 1
        return bytes(b)
    if kind == "reorder":
        chunks[0], chunks[1] = chunks[1], chunks[0]
    elif kind == "duplicate":
        chunks[1] = chunks[0]  # same length: only the index binding can catch it
    elif kind == "truncate":  # drop the final chunk: the new last one was sealed non-final
        chunks = chunks[:-1]
    elif kind == "splice":  # chunk 1 of another file (another key), same index and length
        other = AttachmentEncryptor(os.urandom(32), chunk)
        other.encrypt_chunk(os.urandom(chunk))
        chunks[1] = other.encrypt_chunk(os.urandom(chunk))
    return b"".join(chunks)


@pytest.mark.parametrize("kind", ["flip", "reorder", "duplicate", "truncate", "splice"])
@pytest.mark.parametrize("honest_digest", [True, False])
async def test_tampered_blob_rejected_and_partial_discarded(
    blob_profile: Path, tmp_path: Path, kind: str, honest_digest: bool
) -> None:
    """With the honest digest the digest check fires; with a digest recomputed over the
    tampered bytes (a forged manifest) chunk authentication still refuses it: reordered,
    duplicated, truncated and spliced-in chunks each fail on their own."""
    src = tmp_path / "t.bin"
    src.write_bytes(os.urandom(5000))
    key, blob, digest, size = _encrypt(src)
    bad = _tampered(blob, kind, 1024)
    blob_id = await _upload_raw(blob_profile, bad)
    m = xf.FileManifest(
        blob_id,
        key,
        digest if honest_digest else blob_digest(xf.MANIFEST_VERSION, bad),
        "t.bin",
        size if kind != "truncate" else size - (5000 % 1024 or 1024) + 0,
        "application/octet-stream",
        1024,
    )
    if kind == "truncate":  # make the manifest describe the truncated length
        m = xf.FileManifest(
            blob_id, key, m.digest, "t.bin", _plain_len_for(len(bad), 1024), m.content_type, 1024
        )
    out = tmp_path / "dl"
    async with Client(blob_profile) as c, xf.BlobClient(c.api.base_url) as blobs:
        with pytest.raises((DecryptionError, DecodeError)):
            await xf.receive_file(blobs, m, out)
    assert os.listdir(out) == []


def _plain_len_for(blob_len: int, chunk: int) -> int:
    """A file size whose padded ciphertext length is ``blob_len`` (for the truncate case),
    or the closest one; a mismatch is also refused, which is fine for the test."""
    for size in range(blob_len, 0, -1):
        if ciphertext_length(padme_size(size), chunk) == blob_len:
            return size
    return 0


async def test_wrong_manifest_size_rejected(blob_profile: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(3000))
    key, blob, digest, size = _encrypt(src)
    blob_id = await _upload_raw(blob_profile, blob)
    async with xf.BlobClient(await _base(blob_profile)) as blobs:
        # The manifest is authenticated end to end, so a wrong size can only come from the
        # sender (who controls the file anyway); one that changes the blob length is refused.
        for wrong in (size * 2, size // 2, 0):
            m = xf.FileManifest(blob_id, key, digest, "s.bin", wrong, "x/y", 1024)
            with pytest.raises((DecryptionError, DecodeError, ApiError)):
                await xf.receive_file(blobs, m, tmp_path / "dl")
        ok = xf.FileManifest(blob_id, key, digest, "s.bin", size, "x/y", 1024)
        assert (await xf.receive_file(blobs, ok, tmp_path / "dl")).read_bytes() == src.read_bytes()
    assert os.listdir(tmp_path / "dl") == ["s.bin"]


@pytest.mark.parametrize("version", [DIGEST_SHA256, DIGEST_BLAKE3])
async def test_both_manifest_versions_received(
    blob_profile: Path, tmp_path: Path, version: int
) -> None:
    """Version 1 manifests (SHA-256 digest, no ``v``) from older senders still open; the
    version names the hash, so a digest of the other kind is refused (no downgrade)."""
    src = tmp_path / "v.bin"
    src.write_bytes(os.urandom(3 * CS + 5))
    key, blob, digest, size = _encrypt(src, CS, version=version)
    assert digest == blob_digest(version, blob)
    assert digest == (hashlib.sha256(blob).digest() if version == 1 else digest)
    blob_id = await _upload_raw(blob_profile, blob)
    m = xf.FileManifest(blob_id, key, digest, "v.bin", size, "x/y", CS, version)
    wire = json.loads(json.dumps(m.to_json()))
    assert ("v" in wire) is (version == DIGEST_BLAKE3)
    async with xf.BlobClient(await _base(blob_profile)) as blobs:
        got = await xf.receive_file(blobs, xf.FileManifest.from_json(wire), tmp_path / "dl")
        assert got.read_bytes() == src.read_bytes()
        other = DIGEST_SHA256 if version == DIGEST_BLAKE3 else DIGEST_BLAKE3
        crossed = xf.FileManifest(blob_id, key, digest, "v.bin", size, "x/y", CS, other)
        with pytest.raises(DecryptionError, match="digest"):
            await xf.receive_file(blobs, crossed, tmp_path / "dl")
    assert os.listdir(tmp_path / "dl") == ["v.bin"]


@pytest.mark.parametrize("version", [DIGEST_SHA256, DIGEST_BLAKE3])
async def test_key_holder_cannot_swap_the_file(
    blob_profile: Path, tmp_path: Path, version: int
) -> None:
    """The attack the digest exists for: someone who holds the file key (any recipient, a
    group member) seals OTHER content under the same key, a blob of the same length that
    passes every chunk tag, and has the relay serve it for the manifest's blob id. Only
    the digest in the sender's manifest refuses it."""
    src = tmp_path / "real.bin"
    src.write_bytes(os.urandom(2 * CS + 99))
    key, blob, digest, size = _encrypt(src, CS, version=version)
    fake = tmp_path / "fake.bin"
    fake.write_bytes(b"pay the attacker " * ((2 * CS + 99) // 17) + b"!" * ((2 * CS + 99) % 17))
    _, swapped, _, _ = _encrypt(fake, CS, key=key, version=version)
    assert len(swapped) == len(blob) and swapped != blob
    blob_id = await _upload_raw(blob_profile, swapped)
    m = xf.FileManifest(blob_id, key, digest, "real.bin", size, "x/y", CS, version)
    async with xf.BlobClient(await _base(blob_profile)) as blobs:
        with pytest.raises(DecryptionError, match="digest"):
            await xf.receive_file(blobs, m, tmp_path / "dl")
    assert os.listdir(tmp_path / "dl") == []


async def _base(profile: Path) -> str:
    async with Client(profile) as c:
        return c.api.base_url


HOSTILE = {
    "../../etc/passwd": "passwd",
    "/abs/path/evil.sh": "evil.sh",
    "..\\..\\windows\\system32\\x.dll": "x.dll",
    "a\x00b.txt": "a_b.txt",
    "line\nbreak\r.txt": "line_break_.txt",
    "\x1b[31mred.txt": "_[31mred.txt",
    "evil\u202etxt.exe": "evil_txt.exe",
    "CON": "_CON",
    "nul.txt": "_nul.txt",
    "": "file",
    ".": "file",
    "..": "file",
    "...hidden": "hidden",
    "trailing. . ": "trailing",
    'a<b>c:d"e|f?g*h': "a_b_c_d_e_f_g_h",
}


@pytest.mark.parametrize(("name", "expected"), sorted(HOSTILE.items()))
def test_safe_filename(name: str, expected: str) -> None:
    assert xf.safe_filename(name) == expected


def test_long_names_cut_to_bytes_keeping_extension() -> None:
    long = "é" * 300 + ".jpeg"
    out = xf.safe_filename(long)
    assert len(out.encode()) <= xf.MAX_NAME_BYTES and out.endswith(".jpeg")
    out = xf.safe_filename("x" * 1000)
    assert len(out.encode()) == xf.MAX_NAME_BYTES
    out = xf.safe_filename("名" * 200 + "." + "e" * 40)  # over-long "extension" is not kept
    assert len(out.encode()) <= xf.MAX_NAME_BYTES
    out.encode().decode()  # never a split UTF-8 sequence


async def test_hostile_names_saved_inside_downloads(blob_profile: Path, tmp_path: Path) -> None:
    src = tmp_path / "h.bin"
    src.write_bytes(b"payload")
    out = tmp_path / "dl"
    (tmp_path / "passwd").write_bytes(b"must survive")
    saved = []
    async with Client(blob_profile) as c, xf.BlobClient.from_api(c.api) as blobs:
        for name in ["../passwd", "../passwd", "/tmp/../passwd", "x" * 400 + ".txt", ""]:
            m = await xf.send_file(blobs, src, name=name)
            saved.append(await xf.receive_file(blobs, m, out))
    assert [p.parent for p in saved] == [out] * 5
    assert [p.name for p in saved[:3]] == ["passwd", "passwd (1)", "passwd (2)"]
    assert saved[4].name == "file"
    assert (tmp_path / "passwd").read_bytes() == b"must survive"
    assert all(len(p.name.encode()) <= 255 for p in saved)


async def test_collision_never_overwrites(blob_profile: Path, tmp_path: Path) -> None:
    out = tmp_path / "dl"
    out.mkdir()
    (out / "photo.txt").write_bytes(b"old")
    (out / "photo (1).txt").write_bytes(b"old1")
    src = tmp_path / "photo.txt"
    src.write_bytes(b"new")
    _, got = await _roundtrip(blob_profile, src, out)
    assert got.name == "photo (2).txt" and got.read_bytes() == b"new"
    assert (out / "photo.txt").read_bytes() == b"old"


def _gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0)})
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (5, 6, 7)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


async def test_exif_stripped_by_default_kept_on_request(blob_profile: Path, tmp_path: Path) -> None:
    src = tmp_path / "holiday.jpg"
    src.write_bytes(_gps_jpeg())
    m, got = await _roundtrip(blob_profile, src, tmp_path / "dl")
    assert m.content_type == "image/jpeg"
    data = got.read_bytes()
    assert b"Exif" not in data and b"SpyCam" not in data
    assert not Image.open(io.BytesIO(data)).getexif()
    assert m.size == len(data) < src.stat().st_size
    _, kept = await _roundtrip(blob_profile, src, tmp_path / "dl2", keep_metadata=True)
    assert kept.read_bytes() == src.read_bytes()


def test_manifest_json_roundtrip_and_validation() -> None:
    m = xf.FileManifest("ab" * 16, b"k" * 32, b"d" * 32, "a.txt", 5, "text/plain", 1024)
    obj = m.to_json()
    assert m.version == DIGEST_BLAKE3 and obj["v"] == 2  # what senders write now
    assert set(obj) == {"v", "blob", "key", "digest", "name", "size", "content_type", "chunk_size"}
    assert xf.FileManifest.from_json(json.loads(json.dumps(obj))) == m
    old = {k: v for k, v in obj.items() if k != "v"}  # a version-1 manifest has no "v"
    assert xf.FileManifest.from_json(old).version == DIGEST_SHA256
    assert xf.FileManifest.from_json({**old, "v": 1}).to_json() == old
    bad_values = [
        ("blob", "../x"),
        ("key", "AAAA"),
        ("digest", 5),
        ("size", -1),
        ("size", True),
        ("size", 1 << 40),
        ("chunk_size", 1),
        ("name", None),
        ("v", 0),
        ("v", 3),
        ("v", "2"),
        ("v", True),
        ("v", 2.0),
    ]
    for field, value in bad_values:
        with pytest.raises(DecodeError):
            xf.FileManifest.from_json({**obj, field: value})
    odd = xf.FileManifest.from_json({**obj, "content_type": "text/html; charset=\x1b"})
    assert odd.content_type == "application/octet-stream"


def test_file_content_carries_manifest() -> None:
    m = xf.FileManifest("ab" * 16, b"k" * 32, b"d" * 32, "a.txt", 5, "text/plain", 1024)
    cls = xf._file_content_class()
    msg = cls(id=ct.new_message_id(), type="file", ts=1, file=m.to_json())
    data = msg.encode()
    assert ct.Content.decode(data).type == "file"  # old decoders skip it cleanly
    assert xf.manifest_from_content(json.loads(data)) == m
    assert xf.manifest_from_content({"type": "text"}) is None
