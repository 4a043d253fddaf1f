"""Streamed attachment encryption (PROTOCOL.md Part I §9).

Files travel as opaque blobs beside the message stream; the message carries a manifest
(key, ciphertext digest, plaintext size, chunk size). Encryption is chunked so neither
side holds a whole file in memory and a download can be checked as it arrives. It is the
STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption
and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as used by age and Tink:

    enc_key || prefix = HKDF-SHA256(ikm=file_key, salt="", info=LABEL || u32 chunk_size, 36)
    chunk_i = AES-256-GCM(enc_key, nonce = prefix(4) || u64 i, data_i, aad = u64 i || u8 final)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last holds
``0 .. chunk_size-1`` bytes (an exact multiple ends with an empty final chunk), so a reader
knows which chunk claims to be final from its length alone and never trial-decrypts. The
index in nonce and AAD stops reordering, dropping and duplication; the final flag stops
truncation at a chunk boundary (the new last chunk was sealed as non-final), and a stream
that ends without a final chunk is refused by ``finish()``. The chunk size is bound into
the key derivation, so a manifest with a wrong chunk size simply fails to decrypt.

The file key is 32 fresh random bytes per file (never reused), so the deterministic nonces
never repeat under one key. Before encryption :func:`encrypt_attachment` pads the file with
zeros to :func:`~xchat.crypto.padding.padme_size` of its length (Padmé: ≤12% overhead,
leaks O(log log n) bits of size); the true size is in the end-to-end encrypted manifest.

The blob digest binds the manifest to one ciphertext even against whoever holds the file
key (a recipient, a group member, colluding with the relay): chunk tags cannot do that,
because GHASH is linear in the ciphertext once the key is known, so a key holder can make
other chunks with the same tags. It must be a collision-resistant hash of every byte.
Version 1 (PROTOCOL Part VI §2) is SHA-256; version 2, what senders now write, is BLAKE3
(the BLAKE3 team's Rust implementation through its Python binding): ~8 GB/s on one core
here against SHA-256's ~2 GB/s with SHA-NI, the largest CPU cost a file transfer had over
plain HTTP (issue #20).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.crypto.keys import Rng, hkdf
from xchat.crypto.padding import padme_size
from xchat.errors import DecodeError, DecryptionError, ProtocolError, TooLarge

LABEL_ATTACHMENT: Final = b"XChat-v1-attachment"
KEY_LEN: Final = 32
TAG_LEN: Final = 16
DIGEST_LEN: Final = 32
#: 64 KiB: the tag costs 0.02%, and a reader buffers at most one chunk.
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
MIN_CHUNK_SIZE: Final = 16
#: Bounds the memory a hostile manifest can make a reader allocate per chunk.
MAX_CHUNK_SIZE: Final = 4 * 1024 * 1024
#: Largest attachment (plaintext, after padding): 4 GiB. Far below the AES-GCM per-key
#: limits (2^32 invocations, 2^36 bytes per invocation) and what a relay would store.
MAX_ATTACHMENT_LEN: Final = 4 * 1024**3

_INDEX: Final = struct.Struct(">Q")

#: What the zero-copy calls take (``collections.abc.Buffer`` needs Python 3.12).
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Digest versions = file manifest versions (PROTOCOL Part VI §2): which hash ``digest`` is.
DIGEST_SHA256: Final = 1
DIGEST_BLAKE3: Final = 2
DIGEST_VERSIONS: Final = (DIGEST_SHA256, DIGEST_BLAKE3)


class BlobHash(Protocol):
    """The streaming interface hashlib's and blake3's hashers share."""

    def update(self, data: Buffer, /) -> object: ...

    def digest(self) -> bytes: ...


def blob_hash(version: int) -> BlobHash:
    """A fresh hasher for the blob digest of manifest ``version`` (both give 32 bytes)."""
    if version == DIGEST_SHA256:
        return hashlib.sha256()
    if version == DIGEST_BLAKE3:
        # max_threads=1: the transfer already keeps the other core busy (relay, socket).
        return blake3.blake3(max_threads=1)
    raise DecodeError(f"unknown file digest version {version}")


def blob_digest(version: int, data: Buffer) -> bytes:
    """The digest of a whole blob held in memory (the PROTOCOL Part VI §3 vectors and the
    tests that forge or swap blobs; transfers stream into :func:`blob_hash` instead)."""
    h = blob_hash(version)
    h.update(data)
    return h.digest()


def generate_key(rng: Rng = os.urandom) -> bytes:
    """A fresh 32-byte file key (one per file, never reused)."""
    return rng(KEY_LEN)


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecodeError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")


def _derive(key: bytes, chunk_size: int) -> tuple[AESGCM, bytes]:
    if len(key) != KEY_LEN:
        raise DecodeError("attachment key must be 32 bytes")
    _check_chunk_size(chunk_size)
    okm = hkdf(key, b"", LABEL_ATTACHMENT + struct.pack(">I", chunk_size), KEY_LEN + 4)
    return AESGCM(okm[:KEY_LEN]), okm[KEY_LEN:]


def _nonce_aad(prefix: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    idx = _INDEX.pack(index)
    return prefix + idx, idx + (b"\x01" if final else b"\x00")


def ciphertext_length(plaintext_len: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Length of the encrypted stream for ``plaintext_len`` bytes (before padding)."""
    return plaintext_len + TAG_LEN * (plaintext_len // chunk_size + 1)


class AttachmentEncryptor:
    """Encrypts one file chunk by chunk; ``digest`` is the SHA-256 of all output bytes.

    ``hashing=False`` leaves the digest to the caller (who hashes the output itself, e.g. in
    another thread so hashing overlaps encryption); ``digest`` then raises."""

    def __init__(
        self, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE, *, hashing: bool = True
    ) -> None:
        self._aead, self._prefix = _derive(key, chunk_size)
        self.chunk_size = chunk_size
        self._index = 0
        self._done = False
        self._hash = hashlib.sha256() if hashing else None

    def _seal(self, data: bytes, final: bool) -> bytes:
        nonce, aad = _nonce_aad(self._prefix, self._index, final)
        ct = self._aead.encrypt(nonce, data, aad)
        self._index += 1
        if self._hash is not None:
            self._hash.update(ct)
        return ct

    def encrypt_chunk(self, data: bytes, final: bool = False) -> bytes:
        """Encrypt the next chunk and return the bytes to append to the stream.

        A non-final chunk must be exactly ``chunk_size`` bytes; the final one at most that.
        A final chunk of exactly ``chunk_size`` bytes is emitted as a full chunk followed by
        an empty final chunk (two ciphertext chunks, concatenated).
        """
        if self._done:
            raise ProtocolError("attachment already finished")
        if len(data) > self.chunk_size:
            raise TooLarge("chunk larger than the chunk size")
        if not final and len(data) != self.chunk_size:
            raise ProtocolError("only the final chunk may be shorter than the chunk size")
        if self._index * self.chunk_size > MAX_ATTACHMENT_LEN:
            raise TooLarge("attachment too large")
        if not final:
            return self._seal(data, False)
        self._done = True
        if len(data) == self.chunk_size:
            return self._seal(data, False) + self._seal(b"", True)
        return self._seal(data, True)

    def seal_into(self, data: Buffer, final: bool, out: memoryview) -> int:
        """:meth:`encrypt_chunk` into ``out`` (exactly ``len(data) + 16`` bytes) without
        allocating: the file pipeline reuses its buffers (a fresh 256 KiB chunk costs page
        faults). A final chunk must be shorter than ``chunk_size`` (the caller emits the
        empty final chunk itself). Does not hash; returns the bytes written."""
        n = memoryview(data).nbytes
        if self._done:
            raise ProtocolError("attachment already finished")
        if n > self.chunk_size or (final and n == self.chunk_size):
            raise TooLarge("chunk too large for its position")
        if not final and n != self.chunk_size:
            raise ProtocolError("only the final chunk may be shorter than the chunk size")
        if self._index * self.chunk_size > MAX_ATTACHMENT_LEN:
            raise TooLarge("attachment too large")
        nonce, aad = _nonce_aad(self._prefix, self._index, final)
        written = self._aead.encrypt_into(nonce, data, aad, out)
        self._index += 1
        self._done = final
        return int(written)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the complete ciphertext stream (for the manifest)."""
        if not self._done:
            raise ProtocolError("attachment not finished")
        if self._hash is None:
            raise ProtocolError("this encryptor does not hash (hashing=False)")
        return self._hash.digest()


class AttachmentDecryptor:
    """Decrypts and authenticates one file; use either ``decrypt_chunk`` + ``finish`` or
    ``update`` + ``finish``, not both. ``hashing=False``: the caller checks the blob's
    SHA-256 itself (``finish`` then takes no digest)."""

    def __init__(
        self, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE, *, hashing: bool = True
    ) -> None:
        self._aead, self._prefix = _derive(key, chunk_size)
        self.chunk_size = chunk_size
        self._next = 0
        self._final_seen = False
        self._hash = hashlib.sha256() if hashing else None
        self._buffer = bytearray()

    @property
    def ciphertext_chunk_size(self) -> int:
        """Size of every ciphertext chunk except the (shorter) final one."""
        return self.chunk_size + TAG_LEN

    def decrypt_chunk(self, ct: bytes, index: int) -> bytes:
        """Decrypt chunk ``index`` (0, 1, 2, ... in order); DecodeError for a chunk out of
        sequence or after the final one, DecryptionError for a forged or misplaced one."""
        if self._final_seen:
            raise DecodeError("data after the final chunk")
        if index != self._next:
            raise DecodeError(f"expected chunk {self._next}, got {index}")
        if index * self.chunk_size > MAX_ATTACHMENT_LEN:
            raise TooLarge("attachment too large")
        if not TAG_LEN <= len(ct) <= self.ciphertext_chunk_size:
            raise DecodeError("ciphertext chunk has an impossible length")
        final = len(ct) < self.ciphertext_chunk_size
        nonce, aad = _nonce_aad(self._prefix, index, final)
        try:
            data = self._aead.decrypt(nonce, ct, aad)
        except InvalidTag as exc:
            raise DecryptionError("attachment chunk does not decrypt") from exc
        self._next += 1
        self._final_seen = final
        if self._hash is not None:
            self._hash.update(ct)
        return data

    def open_into(self, ct: Buffer, out: memoryview) -> bool:
        """Decrypt the next chunk into ``out`` (exactly ``len(ct) - 16`` bytes), without
        allocating; returns whether it was the final chunk. The same checks as
        :meth:`decrypt_chunk`; does not hash."""
        n = memoryview(ct).nbytes
        if self._final_seen:
            raise DecodeError("data after the final chunk")
        if self._next * self.chunk_size > MAX_ATTACHMENT_LEN:
            raise TooLarge("attachment too large")
        if not TAG_LEN <= n <= self.ciphertext_chunk_size:
            raise DecodeError("ciphertext chunk has an impossible length")
        final = n < self.ciphertext_chunk_size
        nonce, aad = _nonce_aad(self._prefix, self._next, final)
        try:
            self._aead.decrypt_into(nonce, ct, aad, out)
        except InvalidTag as exc:
            raise DecryptionError("attachment chunk does not decrypt") from exc
        self._next += 1
        self._final_seen = final
        return final

    def update(self, data: bytes) -> bytes:
        """Feed raw stream bytes; returns the plaintext of every complete full chunk."""
        self._buffer += data
        out = bytearray()
        size = self.ciphertext_chunk_size
        view = memoryview(self._buffer)
        pos = 0
        try:
            while len(self._buffer) - pos > size:  # a full-size chunk is never the final one
                out += self.decrypt_chunk(bytes(view[pos : pos + size]), self._next)
                pos += size
        finally:
            view.release()
            del self._buffer[:pos]  # one compaction per call, not one per chunk
        return bytes(out)

    def finish(self, expected_digest: bytes | None = None) -> bytes:
        """End the stream: decrypts any buffered final chunk and returns its plaintext.

        DecryptionError if the final chunk never came (truncation) or the ciphertext's
        SHA-256 differs from ``expected_digest``.
        """
        out = b""
        if self._buffer:
            # update() leaves at most one chunk; a full-size one cannot be final.
            if len(self._buffer) == self.ciphertext_chunk_size and not self._final_seen:
                raise DecryptionError("attachment truncated (no final chunk)")
            out = self.decrypt_chunk(bytes(self._buffer), self._next)
            self._buffer.clear()
        if not self._final_seen:
            raise DecryptionError("attachment truncated (no final chunk)")
        if expected_digest is not None and not hmac.compare_digest(self.digest, expected_digest):
            raise DecryptionError("attachment digest mismatch")
        return out

    @property
    def digest(self) -> bytes:
        """SHA-256 of the ciphertext consumed so far."""
        if self._hash is None:
            raise ProtocolError("this decryptor does not hash (hashing=False)")
        return self._hash.digest()


@dataclass(frozen=True)
class EncryptedAttachment:
    """An encrypted file and the manifest fields that go into the (E2EE) message."""

    key: bytes
    ciphertext: bytes
    digest: bytes
    size: int
    chunk_size: int


def encrypt_attachment(
    data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE, rng: Rng = os.urandom
) -> EncryptedAttachment:
    """Pad ``data`` to its Padmé size, encrypt it under a fresh key, return the manifest."""
    if len(data) > MAX_ATTACHMENT_LEN:
        raise TooLarge("attachment too large")
    padded = data + bytes(padme_size(len(data)) - len(data))
    key = generate_key(rng)
    enc = AttachmentEncryptor(key, chunk_size)
    full_chunks = len(padded) // chunk_size
    parts = [
        enc.encrypt_chunk(padded[i * chunk_size : (i + 1) * chunk_size]) for i in range(full_chunks)
    ]
    parts.append(enc.encrypt_chunk(padded[full_chunks * chunk_size :], final=True))
    return EncryptedAttachment(key, b"".join(parts), enc.digest, len(data), chunk_size)


def decrypt_attachment(
    key: bytes,
    ciphertext: bytes,
    *,
    size: int,
    digest: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Check ``digest``, decrypt, and strip the Padmé padding (which must be all zeros)."""
    if not 0 <= size <= MAX_ATTACHMENT_LEN:
        raise DecodeError("attachment size out of range")
    if len(ciphertext) != ciphertext_length(padme_size(size), chunk_size):
        raise DecodeError("attachment ciphertext length does not match the manifest")
    if len(digest) != DIGEST_LEN or not hmac.compare_digest(
        hashlib.sha256(ciphertext).digest(), digest
    ):
        raise DecryptionError("attachment digest mismatch")
    dec = AttachmentDecryptor(key, chunk_size)
    padded = dec.update(ciphertext) + dec.finish()
    if any(padded[size:]):
        raise DecodeError("attachment padding is not zero")
    return padded[:size]
