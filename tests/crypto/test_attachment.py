"""Tests for xchat.crypto.attachment (PROTOCOL.md Part I §9)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto.attachment import (
    DEFAULT_CHUNK_SIZE,
    DIGEST_BLAKE3,
    DIGEST_SHA256,
    LABEL_ATTACHMENT,
    AttachmentDecryptor,
    AttachmentEncryptor,
    blob_digest,
    blob_hash,
    ciphertext_length,
    decrypt_attachment,
    encrypt_attachment,
)
from xchat.crypto.keys import hkdf
from xchat.crypto.padding import padme_size
from xchat.errors import DecodeError, DecryptionError, ProtocolError, TooLarge

KEY = bytes(range(32))
C = 64  # small chunks keep the tests fast; the default is exercised separately


def _encrypt_chunks(data: bytes, chunk_size: int = C, key: bytes = KEY) -> list[bytes]:
    """Encrypt and return the ciphertext split into its chunks."""
    enc = AttachmentEncryptor(key, chunk_size)
    n_full = len(data) // chunk_size
    stream = b"".join(
        enc.encrypt_chunk(data[i * chunk_size : (i + 1) * chunk_size]) for i in range(n_full)
    )
    stream += enc.encrypt_chunk(data[n_full * chunk_size :], final=True)
    size = chunk_size + 16
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def _decrypt_chunks(chunks: list[bytes], chunk_size: int = C) -> bytes:
    dec = AttachmentDecryptor(KEY, chunk_size)
    out = b"".join(dec.decrypt_chunk(ct, i) for i, ct in enumerate(chunks))
    return out + dec.finish()


@pytest.mark.parametrize("n", [0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5])
def test_roundtrip_sizes(n: int) -> None:
    data = bytes((i * 7) & 0xFF for i in range(n))
    chunks = _encrypt_chunks(data)
    assert len(chunks) == n // C + 1  # an exact multiple ends with an empty final chunk
    assert len(chunks[-1]) < C + 16
    assert sum(map(len, chunks)) == ciphertext_length(n, C)
    assert _decrypt_chunks(chunks) == data
    # Streaming reader, fed in odd-sized pieces.
    dec = AttachmentDecryptor(KEY, C)
    stream = b"".join(chunks)
    out = b"".join(dec.update(stream[i : i + 37]) for i in range(0, len(stream), 37))
    assert out + dec.finish(hashlib.sha256(stream).digest()) == data


def test_final_chunk_exactly_chunk_size_emits_two_chunks() -> None:
    enc = AttachmentEncryptor(KEY, C)
    out = enc.encrypt_chunk(bytes(C), final=True)
    assert len(out) == C + 16 + 16
    assert enc.digest == hashlib.sha256(out).digest()


def test_spec_reimplementation() -> None:
    """Chunk i = AES-GCM(enc_key, prefix || u64 i, data, u64 i || u8 final) (PROTOCOL Part I §9)."""
    data = b"A" * C + b"tail"
    chunks = _encrypt_chunks(data)
    okm = hkdf(KEY, b"", LABEL_ATTACHMENT + struct.pack(">I", C), 36)
    aead, prefix = AESGCM(okm[:32]), okm[32:]
    assert aead.decrypt(prefix + struct.pack(">Q", 0), chunks[0], struct.pack(">QB", 0, 0)) == (
        b"A" * C
    )
    assert aead.decrypt(prefix + struct.pack(">Q", 1), chunks[1], struct.pack(">QB", 1, 1)) == (
        b"tail"
    )


def test_tamper_rejected() -> None:
    chunks = _encrypt_chunks(bytes(2 * C + 3))
    for c in range(len(chunks)):
        for pos in (0, len(chunks[c]) // 2, len(chunks[c]) - 1):
            bad = list(chunks)
            b = bytearray(bad[c])
            b[pos] ^= 0x40
            bad[c] = bytes(b)
            with pytest.raises(DecryptionError):
                _decrypt_chunks(bad)


def test_truncation_rejected() -> None:
    chunks = _encrypt_chunks(bytes(3 * C + 3))
    # Dropping the final chunk leaves a stream whose last chunk was sealed as non-final.
    with pytest.raises(DecryptionError):
        _decrypt_chunks(chunks[:-1])
    dec = AttachmentDecryptor(KEY, C)
    assert dec.update(b"".join(chunks[:-1])) == bytes(2 * C)
    with pytest.raises(DecryptionError):
        dec.finish()
    # Cutting inside the final chunk.
    with pytest.raises((DecryptionError, DecodeError)):
        _decrypt_chunks([*chunks[:-1], chunks[-1][:-1]])
    # An exact-multiple file whose empty final chunk is dropped.
    exact = _encrypt_chunks(bytes(2 * C))
    with pytest.raises(DecryptionError):
        _decrypt_chunks(exact[:-1])
    # Empty stream.
    with pytest.raises(DecryptionError):
        AttachmentDecryptor(KEY, C).finish()


def test_reorder_and_duplicate_rejected() -> None:
    chunks = _encrypt_chunks(bytes(range(256)) * 1)  # 4 full chunks + empty final
    swapped = [chunks[1], chunks[0], *chunks[2:]]
    with pytest.raises(DecryptionError):
        _decrypt_chunks(swapped)
    duplicated = [chunks[0], chunks[0], *chunks[1:]]
    with pytest.raises(DecryptionError):
        _decrypt_chunks(duplicated)
    dropped = [chunks[0], *chunks[2:]]
    with pytest.raises(DecryptionError):
        _decrypt_chunks(dropped)
    dec = AttachmentDecryptor(KEY, C)
    dec.decrypt_chunk(chunks[0], 0)
    with pytest.raises(DecodeError):  # caller asks for an index out of sequence
        dec.decrypt_chunk(chunks[0], 0)
    with pytest.raises(DecodeError):
        dec.decrypt_chunk(chunks[2], 2)


def test_data_after_final_rejected() -> None:
    chunks = _encrypt_chunks(b"short")
    dec = AttachmentDecryptor(KEY, C)
    dec.decrypt_chunk(chunks[0], 0)
    with pytest.raises(DecodeError):
        dec.decrypt_chunk(chunks[0], 1)
    stream = b"".join(_encrypt_chunks(b"short"))
    dec = AttachmentDecryptor(KEY, C)
    dec.update(stream + stream)
    with pytest.raises((DecodeError, DecryptionError)):  # one short chunk that fails its tag
        dec.finish()


def test_wrong_key_or_chunk_size() -> None:
    chunks = _encrypt_chunks(b"x" * 100)
    dec = AttachmentDecryptor(bytes(32), C)
    with pytest.raises(DecryptionError):
        dec.decrypt_chunk(chunks[0], 0)
    # The chunk size is bound into the key schedule.
    with pytest.raises(DecryptionError):
        AttachmentDecryptor(KEY, 2 * C + 16).decrypt_chunk(chunks[0] + chunks[1], 0)


def test_bad_parameters() -> None:
    with pytest.raises(DecodeError):
        AttachmentEncryptor(b"short", C)
    with pytest.raises(DecodeError):
        AttachmentEncryptor(KEY, 0)
    with pytest.raises(DecodeError):
        AttachmentDecryptor(KEY, 2**30)
    enc = AttachmentEncryptor(KEY, C)
    with pytest.raises(ProtocolError):
        _ = enc.digest
    with pytest.raises(ProtocolError):
        enc.encrypt_chunk(b"short", final=False)
    with pytest.raises(TooLarge):
        enc.encrypt_chunk(bytes(C + 1), final=True)
    enc.encrypt_chunk(b"", final=True)
    with pytest.raises(ProtocolError):
        enc.encrypt_chunk(b"", final=True)
    dec = AttachmentDecryptor(KEY, C)
    with pytest.raises(DecodeError):
        dec.decrypt_chunk(bytes(15), 0)
    with pytest.raises(DecodeError):
        dec.decrypt_chunk(bytes(C + 17), 0)


def test_digest_mismatch() -> None:
    chunks = _encrypt_chunks(b"digest")
    dec = AttachmentDecryptor(KEY, C)
    dec.decrypt_chunk(chunks[0], 0)
    with pytest.raises(DecryptionError):
        dec.finish(bytes(32))


def test_one_shot_api_with_padme_padding() -> None:
    for n in (0, 1, 1000, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 1):
        data = bytes([n & 0xFF]) * n
        e = encrypt_attachment(data)
        assert len(e.key) == 32 and e.size == n and e.chunk_size == DEFAULT_CHUNK_SIZE
        assert len(e.ciphertext) == ciphertext_length(padme_size(n))
        assert e.digest == hashlib.sha256(e.ciphertext).digest()
        assert decrypt_attachment(e.key, e.ciphertext, size=n, digest=e.digest) == data
    a, b = encrypt_attachment(b"same"), encrypt_attachment(b"same")
    assert a.key != b.key and a.ciphertext != b.ciphertext  # fresh key per file


def test_one_shot_rejections() -> None:
    e = encrypt_attachment(b"x" * 1000, chunk_size=C)
    with pytest.raises(DecryptionError):
        decrypt_attachment(e.key, e.ciphertext, size=1000, digest=bytes(32), chunk_size=C)
    with pytest.raises(DecodeError):
        decrypt_attachment(e.key, e.ciphertext[:-1], size=1000, digest=e.digest, chunk_size=C)
    with pytest.raises(DecodeError):  # manifest lies about the size
        decrypt_attachment(e.key, e.ciphertext, size=900, digest=e.digest, chunk_size=C)
    with pytest.raises(DecodeError):
        decrypt_attachment(e.key, e.ciphertext, size=-1, digest=e.digest, chunk_size=C)
    # Non-zero padding (a misbehaving sender): 999 pads to 1024, the tail must be zeros.
    assert padme_size(999) == 1024
    stream = b"".join(_encrypt_chunks(b"x" * 1024, C, e.key))
    with pytest.raises(DecodeError):
        decrypt_attachment(
            e.key, stream, size=999, digest=hashlib.sha256(stream).digest(), chunk_size=C
        )


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5 * C), st.integers(1, 200))
def test_roundtrip_property(data: bytes, piece: int) -> None:
    stream = b"".join(_encrypt_chunks(data))
    dec = AttachmentDecryptor(KEY, C)
    out = b"".join(dec.update(stream[i : i + piece]) for i in range(0, len(stream), piece))
    assert out + dec.finish() == data


# --- zero-copy calls and the blob digest (PROTOCOL Part VI §2, §3) ---------------------------


def test_seal_into_and_open_into_match_the_allocating_calls() -> None:
    data = bytes(range(256)) + b"tail"  # 4 full chunks of C, then a 4-byte final chunk
    stream = b"".join(_encrypt_chunks(data))
    enc = AttachmentEncryptor(KEY, C, hashing=False)
    buf = bytearray(len(stream))
    view = memoryview(buf)
    pos = 0
    for i in range(4):
        pos += enc.seal_into(memoryview(data)[i * C : (i + 1) * C], False, view[pos : pos + C + 16])
    pos += enc.seal_into(b"tail", True, view[pos : pos + 20])
    assert pos == len(stream) and bytes(buf) == stream
    with pytest.raises(ProtocolError):
        enc.seal_into(b"", True, view[:16])  # finished
    dec = AttachmentDecryptor(KEY, C, hashing=False)
    out = memoryview(bytearray(C))
    finals = [dec.open_into(view[i * (C + 16) : (i + 1) * (C + 16)], out) for i in range(4)]
    assert finals == [False] * 4
    assert dec.open_into(view[4 * (C + 16) :], out[:4]) is True and bytes(out[:4]) == b"tail"
    assert dec.finish() == b""
    with pytest.raises(DecodeError):  # data after the final chunk
        dec.open_into(view[: C + 16], out)


def test_seal_into_refuses_misplaced_chunks() -> None:
    enc = AttachmentEncryptor(KEY, C, hashing=False)
    out = memoryview(bytearray(C + 16))
    with pytest.raises(ProtocolError):
        enc.seal_into(b"short", False, out[:21])
    with pytest.raises(TooLarge):  # a full-size final chunk is two chunks: the caller's job
        enc.seal_into(bytes(C), True, out)


def test_open_into_rejects_tampering_reordering_and_truncation() -> None:
    chunks = _encrypt_chunks(bytes(2 * C + 3))
    out = memoryview(bytearray(C))
    bad = bytearray(chunks[0])
    bad[3] ^= 1
    with pytest.raises(DecryptionError):
        AttachmentDecryptor(KEY, C).open_into(bad, out)
    dec = AttachmentDecryptor(KEY, C)
    with pytest.raises(DecryptionError):  # chunk 1 where chunk 0 belongs
        dec.open_into(chunks[1], out)
    dec = AttachmentDecryptor(KEY, C)
    dec.open_into(chunks[0], out)
    dec.open_into(chunks[1], out)
    with pytest.raises(DecryptionError):  # the final chunk never came
        dec.finish()
    with pytest.raises(DecodeError):
        AttachmentDecryptor(KEY, C).open_into(bytes(15), out)


def test_blob_digest_versions() -> None:
    """v1 = SHA-256, v2 = BLAKE3 (unkeyed, 32 bytes); BLAKE3's own test vectors (input
    ``i % 251`` for i < n, n = 0 and 1) pin the function."""
    assert blob_digest(DIGEST_BLAKE3, b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
    assert blob_digest(DIGEST_BLAKE3, bytes([0])).hex() == (
        "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
    )
    assert blob_digest(DIGEST_SHA256, b"abc") == hashlib.sha256(b"abc").digest()
    h = blob_hash(DIGEST_BLAKE3)
    h.update(memoryview(b"ab"))
    h.update(b"c")
    assert h.digest() == blob_digest(DIGEST_BLAKE3, b"abc")
    for unknown in (0, 3):
        with pytest.raises(DecodeError):
            blob_hash(unknown)


def test_file_vector() -> None:
    """The interoperability vector of PROTOCOL Part VI §3: key 00..1f, chunk size 64,
    plaintext "XChat file vector " x 10 (180 bytes), Padmé-padded to 192."""
    data = b"XChat file vector " * 10
    padded = data + bytes(padme_size(len(data)) - len(data))
    assert len(padded) == 192
    stream = b"".join(_encrypt_chunks(padded, 64, bytes(range(32))))
    assert len(stream) == 256  # 3 full chunks + an empty final chunk
    assert stream[:16].hex() == "5abd3b0cb696c086659b422c9d18f317"
    assert blob_digest(DIGEST_SHA256, stream).hex() == (
        "36bcf1c2ee02305e91513acceb6a220745d508b92e68c0a3f7193f03bf3e21bc"
    )
    assert blob_digest(DIGEST_BLAKE3, stream).hex() == (
        "5196659a91907eddbcc09a3946d5fdd1a2cd8a293e7a7277d92deaf0b6906b35"
    )


def _gf_mul(x: int, y: int) -> int:
    """GF(2^128) product in GCM's bit order (NIST SP 800-38D §6.3, Algorithm 1): the attack
    below needs it; nothing in xchat computes GHASH itself."""
    z, v = 0, x
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= v
        v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
    return z


def test_chunk_tags_do_not_bind_a_key_holder() -> None:
    """Why the blob digest is a hash of every byte and not of the chunk tags (PROTOCOL
    Part VI §2): whoever holds the file key knows GHASH's key H, and GHASH is linear in
    the ciphertext, so they can change a chunk and keep its tag. Here two ciphertext blocks
    of chunk 0 change (block 0 by d, block 1 by d·H, which cancel in GHASH); AES-GCM opens
    the result to other plaintext under the same tag. A digest over tags would accept it;
    a collision-resistant hash of the blob does not."""
    okm = hkdf(KEY, b"", LABEL_ATTACHMENT + struct.pack(">I", C), 36)
    enc_key, prefix = okm[:32], okm[32:]
    encryptor = Cipher(algorithms.AES(enc_key), modes.ECB()).encryptor()
    h = int.from_bytes(encryptor.update(bytes(16)) + encryptor.finalize(), "big")
    chunk = _encrypt_chunks(b"A" * C + b"end")[0]
    body, tag = bytearray(chunk[:C]), chunk[C:]
    d = int.from_bytes(b"pay the attacker", "big")
    for block, delta in ((0, d), (1, _gf_mul(d, h))):
        old = int.from_bytes(body[16 * block : 16 * block + 16], "big")
        body[16 * block : 16 * block + 16] = (old ^ delta).to_bytes(16, "big")
    forged = bytes(body) + tag
    assert forged != chunk and forged[C:] == chunk[C:]  # same tag
    nonce, aad = prefix + struct.pack(">Q", 0), struct.pack(">QB", 0, 0)
    plain = AESGCM(enc_key).decrypt(nonce, forged, aad)  # authentic under the key
    assert plain != b"A" * C and plain[:16] == bytes(
        a ^ b for a, b in zip(b"A" * 16, b"pay the attacker", strict=True)
    )
    for version in (DIGEST_SHA256, DIGEST_BLAKE3):
        assert blob_digest(version, forged) != blob_digest(version, chunk)
