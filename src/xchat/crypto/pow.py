"""Hashcash-style proof of work (PROTOCOL.md Part I §5).

Anti-spam without phone numbers: registering an account and writing to a stranger
(first contact, when the sender holds no delivery token) each cost a stamp. A stamp is a
nonce such that

    SHA-256(b"XChat-v1-pow" || u16 len(resource) || resource
            || u16 len(challenge) || challenge || u64 nonce)

starts with at least ``bits`` zero bits. The challenge comes from the server (single use,
expiring), the resource binds the stamp to what it pays for (the identity key being
registered, or the destination address), so a stamp can be neither precomputed nor reused.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from xchat.errors import InvalidProofOfWork

LABEL_POW = b"XChat-v1-pow"
MAX_BITS = 40  # beyond this a stamp would take days: treat as a misconfiguration
_NONCE = struct.Struct(">Q")
_MAX_NONCE = 2**64 - 1


def _prefix(challenge: bytes, resource: bytes) -> bytes:
    if len(challenge) > 0xFFFF or len(resource) > 0xFFFF:
        raise InvalidProofOfWork("challenge or resource too long")
    return (
        LABEL_POW
        + struct.pack(">H", len(resource))
        + resource
        + struct.pack(">H", len(challenge))
        + challenge
    )


def leading_zero_bits(digest: bytes) -> int:
    """Number of leading zero bits of ``digest``."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def stamp_ok(challenge: bytes, resource: bytes, nonce: int, bits: int) -> bool:
    """True when ``nonce`` is a valid stamp of at least ``bits`` bits."""
    if not 0 <= nonce <= _MAX_NONCE or not 0 <= bits <= 256:
        return False
    if len(challenge) > 0xFFFF or len(resource) > 0xFFFF:
        return False
    digest = hashlib.sha256(_prefix(challenge, resource) + _NONCE.pack(nonce)).digest()
    return leading_zero_bits(digest) >= bits


def solve(
    challenge: bytes,
    resource: bytes,
    bits: int,
    progress: Callable[[int], None] | None = None,
    start: int = 0,
) -> int:
    """Find a nonce by brute force; ``progress(tries)`` is called every 65,536 tries.

    Expected work is ``2**bits`` hashes. The hash state of the fixed prefix is computed once
    and copied per try, which roughly doubles the rate of a naive loop.
    """
    if not 0 <= bits <= MAX_BITS:
        raise InvalidProofOfWork(f"difficulty {bits} bits is out of range (0..{MAX_BITS})")
    base = hashlib.sha256(_prefix(challenge, resource))
    threshold = 1 << (256 - bits)
    pack = _NONCE.pack
    nonce = start
    while nonce <= _MAX_NONCE:
        h = base.copy()
        h.update(pack(nonce))
        if int.from_bytes(h.digest(), "big") < threshold:
            return nonce
        nonce += 1
        if progress is not None and nonce & 0xFFFF == 0:
            progress(nonce - start)
    raise InvalidProofOfWork("no stamp found")  # pragma: no cover - 2**64 tries
