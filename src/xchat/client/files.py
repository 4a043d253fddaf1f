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
import contextlib
import hmac
import mimetypes
import os
import re
import secrets
import tempfile
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    DIGEST_BLAKE3,
    DIGEST_LEN,
    DIGEST_SHA256,
    DIGEST_VERSIONS,
    KEY_LEN,
    MAX_ATTACHMENT_LEN,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_LEN,
    AttachmentDecryptor,
    AttachmentEncryptor,
    blob_hash,
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
#: Blob bytes encrypted, hashed and written to the socket per step (~1 MiB: whole chunks).
BLOCK_BYTES: Final = 1024 * 1024
#: The manifest version senders write (§2): 2 = the digest is BLAKE3; 1 (SHA-256, no
#: ``v`` field) is still received.
MANIFEST_VERSION: Final = DIGEST_BLAKE3
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
    #: Manifest version (§2): which hash ``digest`` is (1 SHA-256, 2 BLAKE3).
    version: int = MANIFEST_VERSION

    @property
    def blob_size(self) -> int:
        """Bytes the blob holds: ciphertext of the Padmé-padded plaintext (§3)."""
        return ciphertext_length(padme_size(self.size), self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        version = {} if self.version == DIGEST_SHA256 else {"v": self.version}
        return {
            **version,
            "blob": self.blob_id,
            "key": encoding.b64encode(self.key),
            "digest": encoding.b64encode(self.digest),
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
        version = obj.get("v", DIGEST_SHA256)
        if not _is_int(version) or version not in DIGEST_VERSIONS:
            raise DecodeError("file manifest version unknown")
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
        return cls(blob, key, digest, name, size, clean_content_type(ctype), chunk, version)


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

    def __init__(
        self, path: Path, key: bytes, chunk_size: int, size: int, version: int = MANIFEST_VERSION
    ) -> None:
        self.path = path
        self.key = key
        self.chunk_size = chunk_size
        self.size = size
        self.version = version
        st = path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)
        self.digest: bytes | None = None

    def blocks(self, skip: int) -> Iterator[memoryview]:
        """The blob's bytes from ``skip`` as ~1 MiB views of ONE reused buffer (each valid
        until the next is asked for): the file is read with ``readinto``, sealed with
        ``encrypt_into`` and hashed in the same thread while the block is in cache, so a
        block costs no allocation (fresh 256 KiB buffers cost page faults, ~0.1 s/GB) and
        no hand-off. Sets :attr:`digest` once the last block was produced."""
        cs = self.chunk_size
        padded = padme_size(self.size)
        n_chunks = padded // cs + 1  # the last one is shorter than cs (maybe empty), §3
        per_block = max(1, BLOCK_BYTES // (cs + TAG_LEN))
        out = memoryview(bytearray(min(per_block, n_chunks) * (cs + TAG_LEN)))
        plain = memoryview(bytearray(cs))
        enc = AttachmentEncryptor(self.key, cs, hashing=False)
        digest = blob_hash(self.version)
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise ClientError(f"{self.path} changed while it was being sent")
        pos = 0  # blob offset of out[0]
        used = 0
        with open(self.path, "rb", buffering=0) as fh:
            left = self.size  # file bytes still to read; the rest of `padded` is zeros
            for i in range(n_chunks):
                final = i == n_chunks - 1
                n = padded - i * cs if final else cs
                take = min(n, left)
                got = 0
                while got < take:
                    r = fh.readinto(plain[got:take])
                    if not r:
                        raise ClientError(f"{self.path} shrank while it was being sent")
                    got += r
                left -= take
                if take < n:
                    plain[take:n] = bytes(n - take)  # Padmé padding (only the last chunks)
                used += enc.seal_into(plain[:n], final, out[used : used + n + TAG_LEN])
                if final or used + cs + TAG_LEN > len(out):
                    block = out[:used]
                    digest.update(block)
                    end = pos + used
                    if end > skip:
                        yield block[skip - pos :] if pos < skip else block
                    pos, used = end, 0
        self.digest = digest.digest()

    def ciphertext(self, skip: int) -> Iterator[bytes]:
        """:meth:`blocks` as independent ``bytes`` (tests, small blobs)."""
        for block in self.blocks(skip):
            yield bytes(block)

    def final_digest(self) -> bytes:
        """The blob digest; recomputed if the last upload pass ended early."""
        if self.digest is None:
            for _ in self.blocks(1 << 62):
                pass
        assert self.digest is not None
        return self.digest


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
        await blobs.upload_blocks(blob_id, total, source.blocks, progress, offset=0)
        digest = source.final_digest()
    return FileManifest(
        blob_id=blob_id,
        key=key,
        digest=digest,
        name=name if name is not None else src.name,
        size=size,
        content_type=ctype,
        chunk_size=chunk_size,
        version=source.version,
    )


class _PlainSink:
    """Authenticates and decrypts blob bytes as they arrive and writes the file's bytes
    (not the padding, which must be zeros) to the file descriptor ``fd``. Runs in the
    socket thread (:meth:`BlobClient.download_blocks`): each block is hashed while in
    cache, its whole chunks opened straight from the block with ``decrypt_into`` into a
    plaintext buffer; only a chunk split across two blocks is stitched together.

    The ``write`` of a full plaintext buffer runs in a second thread while the socket
    thread receives, hashes and decrypts into the other buffer (two, used in turn). Why:
    writing a file is the kernel copying it into fresh page-cache pages, and on this VM
    (Firecracker, free-page reporting) first touching a page the host had taken back
    costs 0.4–3.5 CPU s/GB in that copy (``perf``: ``copy_folio_from_iter_atomic``), far
    more than the whole cipher (~0.2); serially that was most of the download's time
    (issue #20). Any write error ends the download at the next buffer switch; ``close``
    waits for the writer, so nothing touches ``fd`` once it returns."""

    def __init__(self, manifest: FileManifest, fd: int) -> None:
        self.dec = AttachmentDecryptor(manifest.key, manifest.chunk_size, hashing=False)
        self.hash = blob_hash(manifest.version)
        self.fd = fd
        self.left = manifest.size
        self.cs = manifest.chunk_size
        self.piece = self.dec.ciphertext_chunk_size
        per_block = max(1, BLOCK_BYTES // self.piece)
        self.buffers = [memoryview(bytearray(per_block * self.cs)) for _ in range(2)]
        self.writing: list[Future[None] | None] = [None, None]
        self.current = 0
        self.plain = self.buffers[0]
        self.used = 0
        self.tail = bytearray()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="xchat-file-write")

    def _open(self, ct: memoryview | bytearray) -> None:
        n = len(ct) - TAG_LEN
        if self.used + n > len(self.plain):
            self._flush()
        self.dec.open_into(ct, self.plain[self.used : self.used + n])
        self.used += n

    def _flush(self) -> None:
        data = self.plain[: self.used]
        keep = min(self.left, self.used)
        pad = data[keep:]
        if pad and not _ZEROS.startswith(pad):  # memcmp (a memoryview == is per byte)
            raise DecodeError("attachment padding is not zero")
        self.left -= keep
        self.used = 0
        if keep:
            self.writing[self.current] = self.writer.submit(write_all, self.fd, data[:keep])
            self.current ^= 1
            self.plain = self.buffers[self.current]
            self._wait(self.current)  # the buffer about to be refilled is written out

    def _wait(self, i: int) -> None:
        pending, self.writing[i] = self.writing[i], None
        if pending is not None:
            pending.result()

    def feed(self, block: memoryview) -> None:
        self.hash.update(block)
        size = self.piece
        pos = 0
        if self.tail:
            pos = min(size - len(self.tail), len(block))
            self.tail += block[:pos]
            if len(self.tail) < size:
                return
            self._open(self.tail)
            self.tail.clear()
        # A full-size chunk is never the final one (§3), so it can be opened at once.
        while len(block) - pos >= size:
            self._open(block[pos : pos + size])
            pos += size
        if pos < len(block):
            self.tail += block[pos:]
        self._flush()

    def finish(self, digest: bytes) -> None:
        if self.tail:
            self._open(self.tail)
            self.tail.clear()
            self._flush()
        self._wait(0)
        self._wait(1)
        self.dec.finish()  # truncation (no final chunk)
        if not hmac.compare_digest(self.hash.digest(), digest):
            raise DecryptionError("attachment digest mismatch")
        if self.left:
            raise DecryptionError("attachment is shorter than its manifest says")

    def close(self) -> None:
        """Wait for the writer thread (its errors were or will be reported by ``feed``
        or ``finish``; after a failure they no longer matter)."""
        self.writer.shutdown(wait=True)


#: Largest single ``write`` of a received file. Why: for a write of N bytes the kernel
#: (6.x, ext4 and others with large folios) allocates page-cache folios of up to N bytes;
#: on this VM the free blocks of >= 128 KiB are the ones its free-page reporting has
#: handed back to the host, so >= 128 KiB writes cost ~3 CPU s/GB in host faults against
#: ~0.4 for 64 KiB writes (measured with 16 KiB-1 MiB writes into a new file on ext4,
#: 2 rounds each, settled: issue #20). 16 syscalls per MiB cost ~0.03 CPU s/GB.
WRITE_PIECE: Final = 64 * 1024


def write_all(fd: int, view: memoryview) -> None:
    """Write all of ``view`` to ``fd`` in :data:`WRITE_PIECE` pieces."""
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]) :]


#: Compared against padding (at most one plaintext buffer of it at a time).
_ZEROS: Final = bytes(MAX_CHUNK_SIZE + BLOCK_BYTES)


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
            try:
                await blobs.download_blocks(
                    manifest.blob_id, manifest.blob_size, sink.feed, progress
                )
                sink.finish(manifest.digest)
            finally:
                sink.close()
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
