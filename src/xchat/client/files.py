"""Encrypted files of any size: encrypt-and-upload, download-and-decrypt (PROTOCOL Part VI).

Sending (§2–§5): strip image metadata (§8, unless asked not to), pick a fresh 32-byte key,
encrypt the file with :mod:`xchat.crypto.attachment` (STREAM chunks, Padmé-padded) while
streaming it to the relay's blob store, then return a :class:`FileManifest` — blob id,
key, ciphertext digest, name, size, content type, chunk size — which travels inside the
end-to-end encrypted message. The relay sees an opaque blob id and a padded size only.

Receiving: stream the blob back, authenticate every chunk as it arrives, write plaintext
to a hidden ``.part`` file in the downloads directory, check the digest at the end, and
only then move it to a sanitised, never-overwriting name (§9). Any failure deletes the
partial file.

Both directions run in constant memory (one chunk plus one I/O buffer) and survive a
broken connection: uploads resume from the server's confirmed offset (``HEAD``),
downloads with ``Range`` from the last byte received, with exponential backoff.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import mimetypes
import os
import re
import secrets
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeGuard

from xchat import encoding

# BlobClient and BLOBS are part of this module's public surface (files = blobs + encryption).
from xchat.client.blob_client import BLOB_ID_RE, Progress
from xchat.client.blob_client import BLOBS as BLOBS
from xchat.client.blob_client import BlobClient as BlobClient
from xchat.client.metadata import detect_image, strip_file
from xchat.crypto.attachment import (
    DIGEST_LEN,
    KEY_LEN,
    MAX_ATTACHMENT_LEN,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    ciphertext_length,
    generate_key,
)
from xchat.crypto.keys import Rng
from xchat.crypto.padding import padme_size
from xchat.errors import (
    ClientError,
    DecodeError,
    DecryptionError,
    TooLarge,
)

#: Plaintext bytes per STREAM chunk for files (PROTOCOL Part VI §3): 256 KiB keeps the per-chunk
#: Python overhead negligible while a reader still buffers < 1 MiB.
FILE_CHUNK_SIZE: Final = 256 * 1024
#: Ciphertext bytes handed to the HTTP layer per write.
SEND_PIECE: Final = 1024 * 1024
#: Manifest limits (§2): the name is sanitised on receipt, these only bound the JSON.
MAX_NAME_CHARS: Final = 1024
MAX_CONTENT_TYPE_CHARS: Final = 127
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
#: File names are cut to this many UTF-8 bytes, leaving room for " (999)" under 255 (§9).
MAX_NAME_BYTES: Final = 240

_CTYPE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
_WIN_RESERVED: Final = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
    | {"com¹", "com²", "com³", "lpt¹", "lpt²", "lpt³", "conin$", "conout$"}
)
_BAD_CHARS: Final = frozenset('/\\:*?"<>|')

#: Bytes handed to the worker thread per step (decrypt + write off the event loop).
PIPELINE_BATCH: Final = 1024 * 1024


# --- the manifest (PROTOCOL Part VI §2) ----------------------------------------------------------


@dataclass(frozen=True)
class FileManifest:
    """What the recipient needs to fetch and decrypt a file; sent only inside E2EE content
    as ``{"type": "file", "file": manifest.to_json()}``."""

    blob_id: str
    key: bytes
    digest: bytes
    name: str
    size: int
    content_type: str
    chunk_size: int

    @property
    def blob_size(self) -> int:
        """Bytes the blob holds: ciphertext of the Padmé-padded plaintext (§3)."""
        return ciphertext_length(padme_size(self.size), self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "blob": self.blob_id,
            "key": base64.b64encode(self.key).decode("ascii"),
            "digest": base64.b64encode(self.digest).decode("ascii"),
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_json(cls, obj: object) -> FileManifest:
        """Validate a received manifest; DecodeError for anything malformed."""
        if not isinstance(obj, dict):
            raise DecodeError("file manifest is not an object")
        blob = obj.get("blob")
        name = obj.get("name")
        size = obj.get("size")
        ctype = obj.get("content_type", DEFAULT_CONTENT_TYPE)
        chunk = obj.get("chunk_size")
        if not isinstance(blob, str) or not BLOB_ID_RE.match(blob):
            raise DecodeError("file manifest blob id invalid")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise DecodeError("file manifest name invalid")
        if not _is_int(size) or not 0 <= size <= MAX_ATTACHMENT_LEN:
            raise DecodeError("file manifest size invalid")
        if not _is_int(chunk) or not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
            raise DecodeError("file manifest chunk size invalid")
        if not isinstance(ctype, str) or len(ctype) > MAX_CONTENT_TYPE_CHARS:
            raise DecodeError("file manifest content type invalid")
        key = _b64field(obj.get("key"), KEY_LEN, "key")
        digest = _b64field(obj.get("digest"), DIGEST_LEN, "digest")
        return cls(blob, key, digest, name, size, clean_content_type(ctype), chunk)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _b64field(v: object, length: int, what: str) -> bytes:
    return encoding.b64decode(v, f"file manifest {what}", length)


def clean_content_type(ctype: str) -> str:
    """A MIME type if it is plainly one (lower-case type/subtype, no parameters), else
    ``application/octet-stream``: peers' content types are untrusted text."""
    c = ctype.strip().lower()
    return c if _CTYPE_RE.match(c) else DEFAULT_CONTENT_TYPE


# --- file names (PROTOCOL Part VI §9) -------------------------------------------------------------


def safe_filename(name: str) -> str:
    """Neutralise a peer-supplied file name so it can only name a plain file inside the
    downloads directory: last path component only, no control/format characters (NUL,
    newlines, bidi overrides), no Windows-reserved characters or device names, no leading
    dots or trailing dots/spaces, at most :data:`MAX_NAME_BYTES` UTF-8 bytes (extension
    kept), never empty."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    out = []
    for ch in name:
        cat = unicodedata.category(ch)
        if cat[0] == "C" or ch in _BAD_CHARS:  # Cc, Cf, Cs, Co, Cn
            out.append("_")
        else:
            out.append(ch)
    name = "".join(out).strip().lstrip(".").rstrip(". ")
    if name.split(".")[0].strip().lower() in _WIN_RESERVED:
        name = "_" + name
    name = _truncate_utf8(name, MAX_NAME_BYTES)
    return name or "file"


def _truncate_utf8(name: str, limit: int) -> str:
    raw = name.encode("utf-8")
    if len(raw) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    ext_raw = (dot + ext).encode("utf-8") if dot and 0 < len(ext.encode("utf-8")) <= 16 else b""
    if not ext_raw:
        stem = name
    keep = stem.encode("utf-8")[: limit - len(ext_raw)].decode("utf-8", "ignore")
    return keep.rstrip(". ") + ext_raw.decode("utf-8")


def _reserve(directory: Path, name: str) -> Path:
    """Create an empty file named ``name`` (or ``stem (n).ext``) that did not exist, and
    return its path: the final name is claimed atomically, so nothing is overwritten."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(0, 10_000):
        candidate = name if n == 0 else f"{stem} ({n}){dot}{ext}"
        path = directory / candidate
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise ClientError(f"too many files named {name!r} in {directory}")


# --- encryption source --------------------------------------------------------------------


class _CipherSource:
    """Regenerates the blob (encrypted, padded file) from any offset. Encryption is
    deterministic given the key (nonces derive from the chunk index), so a resumed upload
    re-encrypts from the start and skips what the server already has: CPU, not memory."""

    def __init__(self, path: Path, key: bytes, chunk_size: int, size: int) -> None:
        self.path = path
        self.key = key
        self.chunk_size = chunk_size
        self.size = size
        st = path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)
        self.digest: bytes | None = None

    def _plain_chunks(self) -> Iterator[tuple[bytes, bool]]:
        padded = padme_size(self.size)
        cs = self.chunk_size
        n_full, rem = divmod(padded, cs)
        n_nonfinal = n_full - 1 if rem == 0 and n_full > 0 else n_full
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise ClientError(f"{self.path} changed while it was being sent")
        with open(self.path, "rb") as fh:
            left = self.size

            def take(n: int) -> bytes:
                nonlocal left
                data = fh.read(min(n, left)) if left > 0 else b""
                if len(data) < min(n, left):
                    raise ClientError(f"{self.path} shrank while it was being sent")
                left -= len(data)
                return data + bytes(n - len(data))

            for _ in range(n_nonfinal):
                yield take(cs), False
            yield take(padded - n_nonfinal * cs), True

    def _sealed(self, enc: AttachmentEncryptor) -> Generator[bytes, None, None]:
        for data, final in self._plain_chunks():
            yield enc.encrypt_chunk(data, final)

    def ciphertext(self, skip: int) -> Generator[bytes, None, None]:
        """The blob's bytes from ``skip``, one encrypted chunk at a time."""
        enc = AttachmentEncryptor(self.key, self.chunk_size)
        yield from _skipped(self._sealed(enc), skip)
        self.digest = enc.digest

    async def pieces(self, skip: int) -> AsyncIterator[bytes]:
        """:meth:`ciphertext`, with reading + encrypting in one worker thread a batch
        (~1 MiB) ahead of the sender and the SHA-256 of the previous batch in another, so
        the three overlap (hashlib and the socket release the GIL). Memory: three batches."""
        it = self._sealed(AttachmentEncryptor(self.key, self.chunk_size, hashing=False))
        digest = hashlib.sha256()
        hashed: asyncio.Future[None] | None = None
        fut: asyncio.Future[list[bytes]] = asyncio.ensure_future(asyncio.to_thread(_take, it))
        pos = 0
        try:
            while batch := await fut:
                fut = asyncio.ensure_future(asyncio.to_thread(_take, it))
                if hashed is not None:
                    await hashed
                hashed = asyncio.ensure_future(asyncio.to_thread(_hash_all, digest, batch))
                for ct in batch:
                    end = pos + len(ct)
                    if end > skip:
                        yield ct[skip - pos :] if pos < skip else ct
                    pos = end
            if hashed is not None:
                await hashed
            self.digest = digest.digest()
        finally:
            for pending in (fut, hashed):
                if pending is not None and not pending.done():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pending)
            it.close()

    def final_digest(self) -> bytes:
        """The ciphertext digest; recomputed if the last upload pass ended early."""
        if self.digest is None:
            for _ in self.ciphertext(1 << 62):
                pass
        assert self.digest is not None
        return self.digest


def _skipped(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    pos = 0
    for ct in chunks:
        end = pos + len(ct)
        if end > skip:
            yield ct[skip - pos :] if pos < skip else ct
        pos = end


def _hash_all(digest: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


def _take(it: Iterator[bytes], n: int = 4) -> list[bytes]:
    """Up to ``n`` more pieces of ``it`` (one worker-thread hop per ~1 MiB, not per chunk)."""
    return list(itertools.islice(it, n))


# --- the two directions -------------------------------------------------------------------


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(12)


def guess_content_type(path: Path) -> str:
    kind = detect_image(_head(path))
    if kind is not None:
        return kind
    guessed, _ = mimetypes.guess_type(path.name)
    return clean_content_type(guessed or DEFAULT_CONTENT_TYPE)


async def send_file(
    blobs: BlobClient,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    content_type: str | None = None,
    keep_metadata: bool = False,
    chunk_size: int = FILE_CHUNK_SIZE,
    progress: Progress | None = None,
    rng: Rng = os.urandom,
) -> FileManifest:
    """Encrypt ``path`` and upload it; return the manifest to send inside an E2EE message.

    Images (JPEG/PNG/WebP) are stripped of metadata first into a private temporary file
    unless ``keep_metadata``. ``progress(done, total)`` counts blob bytes sent.
    """
    src = Path(path)
    if not src.is_file():
        raise ClientError(f"{src} is not a readable file")
    ctype = clean_content_type(content_type) if content_type else guess_content_type(src)
    with contextlib.ExitStack() as stack:
        if not keep_metadata and detect_image(_head(src)) is not None:
            tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xchat-")))
            stripped = tmpdir / "stripped"
            with open(stripped, "wb") as out:
                strip_file(src, out)
            source_path = stripped
        else:
            source_path = src
        size = source_path.stat().st_size
        if size > MAX_ATTACHMENT_LEN:
            raise TooLarge(f"files larger than {MAX_ATTACHMENT_LEN} bytes are not supported")
        key = generate_key(rng)
        source = _CipherSource(source_path, key, chunk_size, size)
        total = ciphertext_length(padme_size(size), chunk_size)
        blob_id = await blobs.create(total)
        await blobs.upload(blob_id, total, source.pieces, progress, offset=0)
        digest = source.final_digest()
    return FileManifest(
        blob_id=blob_id,
        key=key,
        digest=digest,
        name=name if name is not None else src.name,
        size=size,
        content_type=ctype,
        chunk_size=chunk_size,
    )


class _PlainSink:
    """Decrypts blob bytes as they arrive and writes the file's bytes (not the padding,
    which must be zeros) to the file descriptor ``fd``. Whole ciphertext chunks are opened
    straight from the received block (memoryview slices, no copy); only a chunk split
    across two blocks is stitched together. One ``writev`` per block."""

    def __init__(self, manifest: FileManifest, fd: int) -> None:
        # The blob's SHA-256 is taken by _Pipelined in a thread of its own (see hash()).
        self.dec = AttachmentDecryptor(manifest.key, manifest.chunk_size, hashing=False)
        self.sha = hashlib.sha256()
        self.fd = fd
        self.left = manifest.size
        self.piece = self.dec.ciphertext_chunk_size
        self.index = 0
        self.tail = bytearray()

    def _open(self, ct: bytes | memoryview) -> bytes:
        # decrypt_chunk only takes len() of, hashes and AEAD-opens ct: a view works as bytes.
        plain = self.dec.decrypt_chunk(ct, self.index)  # type: ignore[arg-type]
        self.index += 1
        return plain

    def _write(self, plains: list[bytes]) -> None:
        keep_list = []
        for plain in plains:
            keep = min(self.left, len(plain))
            if keep:
                keep_list.append(plain if keep == len(plain) else plain[:keep])
                self.left -= keep
            tail = plain[keep:]
            if tail and tail.count(0) != len(tail):
                raise DecodeError("attachment padding is not zero")
        if keep_list:
            _writev_all(self.fd, keep_list)

    def hash(self, data: bytes) -> None:
        """Digest the raw blob bytes (in order; runs beside :meth:`feed` on the same data)."""
        self.sha.update(data)

    def feed(self, data: bytes) -> None:
        size = self.piece
        out: list[bytes] = []
        with memoryview(data) as view:
            pos = 0
            if self.tail:
                pos = min(size - len(self.tail), len(view))
                self.tail += view[:pos]
                if len(self.tail) < size:
                    return
                out.append(self._open(bytes(self.tail)))
                self.tail.clear()
            # A full-size chunk is never the final one (§3), so it can be opened at once.
            while len(view) - pos >= size:
                out.append(self._open(view[pos : pos + size]))
                pos += size
            if pos < len(view):
                self.tail += view[pos:]
        self._write(out)

    def finish(self, digest: bytes) -> None:
        if self.tail:
            self._write([self._open(bytes(self.tail))])
            self.tail.clear()
        self.dec.finish()  # truncation (no final chunk)
        if not hmac.compare_digest(self.sha.digest(), digest):
            raise DecryptionError("attachment digest mismatch")
        if self.left:
            raise DecryptionError("attachment is shorter than its manifest says")


def _writev_all(fd: int, pieces: list[bytes]) -> None:
    done = os.writev(fd, pieces)
    want = sum(len(p) for p in pieces)
    if done < want:  # a short write (rare on a regular file): finish it plainly
        rest = memoryview(b"".join(pieces))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


class _Pipelined:
    """Runs a blocking sink (decrypt + write) in a worker thread, one batch behind the
    network reads, so decryption overlaps with receiving. Memory: two batches. Blocks that
    arrive at least a batch long are handed over as they are (no copy)."""

    def __init__(
        self,
        fn: Callable[[bytes], None],
        batch: int = PIPELINE_BATCH,
        beside: Callable[[bytes], None] | None = None,
    ) -> None:
        self.fn = fn
        self.beside = beside  # a second consumer of each batch, in a thread of its own
        self.batch = batch
        self.buf = bytearray()
        self.pending: asyncio.Future[Any] | None = None

    async def feed(self, data: bytes) -> None:
        if not self.buf and len(data) >= self.batch:
            await self._submit(data)
            return
        self.buf += data
        if len(self.buf) >= self.batch:
            chunk = bytes(self.buf)
            self.buf.clear()
            await self._submit(chunk)

    async def _submit(self, chunk: bytes) -> None:
        if self.pending is not None:
            await self.pending
        if self.beside is None:
            self.pending = asyncio.ensure_future(asyncio.to_thread(self.fn, chunk))
        else:
            self.pending = asyncio.gather(
                asyncio.to_thread(self.fn, chunk), asyncio.to_thread(self.beside, chunk)
            )

    async def drain(self) -> None:
        if self.buf:
            chunk = bytes(self.buf)
            self.buf.clear()
            await self._submit(chunk)
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def abort(self) -> None:
        if self.pending is not None:
            with contextlib.suppress(BaseException):
                await self.pending


async def receive_file(
    blobs: BlobClient,
    manifest: FileManifest,
    downloads_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, verify and decrypt a file into ``downloads_dir``; return its path.

    The plaintext goes to a hidden ``.part`` file first; a tampered chunk, a wrong digest
    or a wrong length raises :class:`DecryptionError`/:class:`DecodeError` and the partial
    file is deleted. The final name is :func:`safe_filename` of the manifest's name, with
    `` (n)`` added on a collision; an existing file is never overwritten.
    """
    directory = Path(downloads_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    part = directory / f".xchat-{secrets.token_hex(8)}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            sink = _PlainSink(manifest, fd)
            pipe = _Pipelined(sink.feed, beside=sink.hash)
            try:
                await blobs.download(manifest.blob_id, manifest.blob_size, pipe.feed, progress)
                await pipe.drain()
            except BaseException:
                await pipe.abort()
                raise
            sink.finish(manifest.digest)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        final = _reserve(directory, safe_filename(manifest.name))
        os.replace(part, final)
        return final
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise


# --- message integration (PROTOCOL Part VI §2) ----------------------------------------------------

#: The E2EE content type that carries a manifest: ``{"type": "file", "file": {...}}``.
FILE_CONTENT_TYPE: Final = "file"


def downloads_dir(profile_path: str | os.PathLike[str]) -> Path:
    """Where received files go by default: ``<profile>/downloads``."""
    return Path(profile_path) / "downloads"


def manifest_from_content(obj: object) -> FileManifest | None:
    """The manifest of a decoded content JSON object of type ``file``; ``None`` for other
    types; DecodeError if a ``file`` content carries a bad manifest."""
    if not isinstance(obj, dict) or obj.get("type") != FILE_CONTENT_TYPE:
        return None
    return FileManifest.from_json(obj.get("file"))


async def send_manifest(client: Any, to: str, manifest: FileManifest) -> str:
    """Send ``manifest`` to contact ``to`` inside an E2EE message; return the message id.

    Uses ``client.send_file_manifest(to, manifest_json)`` when the client provides it;
    otherwise builds the ``file`` content itself and hands it to the client's send path.
    """
    hook = getattr(client, "send_file_manifest", None)
    if hook is not None:
        return str(await hook(to, manifest.to_json()))
    import time

    from xchat.client import content as ct
    from xchat.errors import IdentityChanged

    c = await client.contact(to)
    if c.verified and c.identity_changed:
        raise IdentityChanged(
            f"the identity of verified contact {c.handle or c.address} changed; "
            "compare safety numbers and re-verify to continue"
        )
    sender = None if c.token_shared else client._own_sender_info()
    msg = _file_content_class()(
        id=ct.new_message_id(),
        type=FILE_CONTENT_TYPE,
        ts=time.time_ns() // 1_000_000,
        sender=sender,
        file=manifest.to_json(),
    )
    await client._send_content(c, msg, store_as_message=True)
    return str(msg.id)


def _file_content_class() -> Any:
    """A :class:`~xchat.client.content.Content` that also encodes a ``file`` object (bridge
    until ``content.py`` carries the field itself)."""
    import json
    from dataclasses import dataclass as _dc

    from xchat.client import content as ct

    @_dc(frozen=True)
    class FileContent(ct.Content):
        file: dict[str, Any] | None = None

        def encode(self) -> bytes:
            data = super().encode()
            if self.file is None:
                return data
            obj = json.loads(data)
            obj["file"] = self.file
            out = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            if len(out) > ct.MAX_CONTENT_BYTES:
                raise TooLarge("file message content too large")
            return out

    return FileContent
