"""Tests for xchat.crypto.pow (PROTOCOL Part I §5, PROTOCOL.md Part I §5)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from xchat.crypto.pow import LABEL_POW, leading_zero_bits, solve, stamp_ok
from xchat.errors import InvalidProofOfWork

CHALLENGE = b"challenge-0123456789"
RESOURCE = b"xc1qzxrggj7p8xpavs8pgph06jff403uml5my3rjmm4"


def _reference_bits(challenge: bytes, resource: bytes, nonce: int) -> int:
    """Straight from PROTOCOL Part I §5."""
    msg = (
        b"XChat-v1-pow"
        + struct.pack(">H", len(resource))
        + resource
        + struct.pack(">H", len(challenge))
        + challenge
        + struct.pack(">Q", nonce)
    )
    digest = int.from_bytes(hashlib.sha256(msg).digest(), "big")
    return 256 - digest.bit_length()


def _first_nonce(bits: int) -> int:
    return next(n for n in range(10**7) if _reference_bits(CHALLENGE, RESOURCE, n) >= bits)


def test_label() -> None:
    assert LABEL_POW == b"XChat-v1-pow"


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(bytes(32)) == 256
    assert leading_zero_bits(b"\x80" + bytes(31)) == 0
    assert leading_zero_bits(b"\x01" + bytes(31)) == 7
    assert leading_zero_bits(b"\x00\x00\x10" + bytes(29)) == 19


@pytest.mark.parametrize("bits", [0, 1, 4, 8, 12])
def test_solve_finds_the_first_valid_nonce(bits: int) -> None:
    nonce = solve(CHALLENGE, RESOURCE, bits)
    assert nonce == _first_nonce(bits)
    assert stamp_ok(CHALLENGE, RESOURCE, nonce, bits)


def test_stamp_agrees_with_reference() -> None:
    for nonce in range(300):
        want = _reference_bits(CHALLENGE, RESOURCE, nonce)
        assert stamp_ok(CHALLENGE, RESOURCE, nonce, want)
        assert not stamp_ok(CHALLENGE, RESOURCE, nonce, want + 1)


def test_stamp_is_bound_to_challenge_and_resource() -> None:
    nonce = solve(CHALLENGE, RESOURCE, 12)
    assert stamp_ok(CHALLENGE, RESOURCE, nonce, 12)
    # (For these fixed inputs the altered digests have 0, 1 and 0 leading zero bits.)
    assert not stamp_ok(CHALLENGE + b"x", RESOURCE, nonce, 12)
    assert not stamp_ok(CHALLENGE, RESOURCE + b"x", nonce, 12)
    # Length prefixes: moving a byte from the challenge to the resource changes the hash.
    assert not stamp_ok(CHALLENGE[1:], RESOURCE + CHALLENGE[:1], nonce, 12)


def test_invalid_stamps() -> None:
    nonce = solve(CHALLENGE, RESOURCE, 8)
    bad = next(n for n in range(1000) if _reference_bits(CHALLENGE, RESOURCE, n) < 8)
    assert not stamp_ok(CHALLENGE, RESOURCE, bad, 8)
    assert not stamp_ok(CHALLENGE, RESOURCE, -1, 0)
    assert not stamp_ok(CHALLENGE, RESOURCE, 2**64, 0)
    assert not stamp_ok(CHALLENGE, RESOURCE, nonce, 257)
    assert not stamp_ok(CHALLENGE, RESOURCE, nonce, -1)
    assert stamp_ok(CHALLENGE, RESOURCE, 2**64 - 1, 0)


def test_solve_rejects_silly_difficulty() -> None:
    with pytest.raises(InvalidProofOfWork):
        solve(CHALLENGE, RESOURCE, -1)
    with pytest.raises(InvalidProofOfWork):
        solve(CHALLENGE, RESOURCE, 41)


def test_oversized_inputs_are_typed() -> None:
    assert not stamp_ok(b"x" * 70000, RESOURCE, 0, 0)
    with pytest.raises(InvalidProofOfWork):
        solve(CHALLENGE, b"r" * 70000, 1)


def test_progress_callback() -> None:
    calls: list[int] = []
    # For these inputs the first 14-bit stamp is nonce 81802, past the first 65,536 tries.
    nonce = solve(CHALLENGE, RESOURCE, 14, progress=calls.append)
    assert nonce == _first_nonce(14) > 0x10000
    assert calls == [0x10000]
    # A start offset resumes the search (e.g. after a restart) and counts from there.
    assert solve(CHALLENGE, RESOURCE, 14, start=nonce) == nonce
    following = next(
        n for n in range(nonce + 1, 10**7) if _reference_bits(CHALLENGE, RESOURCE, n) >= 14
    )
    assert solve(CHALLENGE, RESOURCE, 14, start=nonce + 1) == following
