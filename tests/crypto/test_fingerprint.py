"""Tests for xchat.crypto.fingerprint (PROTOCOL.md Part I §10)."""

from __future__ import annotations

import hashlib

import pytest

from xchat.crypto.fingerprint import (
    ITERATIONS,
    QR_PAYLOAD_LEN,
    QR_VERSION,
    displayable,
    party_fingerprint,
    safety_number,
)
from xchat.crypto.keys import IdentityKeyPair
from xchat.errors import DecodeError

ALICE = IdentityKeyPair.from_seed(bytes([0xA1]) * 32).public
BOB = IdentityKeyPair.from_seed(bytes([0xB0]) * 32).public
CAROL = IdentityKeyPair.from_seed(bytes([0xC0]) * 32).public


def _reference_fingerprint(key: bytes, stable_id: str) -> bytes:
    """Straight from the spec text (Signal's NumericFingerprintGenerator)."""
    digest = hashlib.sha512()
    digest.update(b"\x00\x00" + key + stable_id.encode())
    digest.update(key)
    h = digest.digest()
    for _ in range(ITERATIONS - 1):
        h = hashlib.sha512(h + key).digest()
    return h


def test_matches_reference_construction() -> None:
    assert ITERATIONS == 5200
    assert party_fingerprint(ALICE) == _reference_fingerprint(ALICE.encode(), ALICE.address())


def test_symmetric_and_shaped() -> None:
    ab, ba = safety_number(ALICE, BOB), safety_number(BOB, ALICE)
    assert ab == ba
    assert len(ab.digits) == 60 and ab.digits.isdigit()
    groups = ab.format().split(" ")
    assert len(groups) == 12 and all(len(g) == 5 for g in groups)
    halves = sorted([displayable(party_fingerprint(ALICE)), displayable(party_fingerprint(BOB))])
    assert ab.digits == halves[0] + halves[1]
    assert len(ab.qr_payload) == QR_PAYLOAD_LEN == 65


def test_golden_value() -> None:
    """Regression vector (keys from seeds 0xA1*32 and 0xB0*32)."""
    assert safety_number(ALICE, BOB).format() == GOLDEN


def test_displayable_chunks() -> None:
    fp = bytes(range(30)) + bytes(34)
    expected = "".join(
        f"{int.from_bytes(fp[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )
    assert displayable(fp) == expected
    assert displayable(bytes(64)) == "0" * 30
    with pytest.raises(DecodeError):
        displayable(bytes(29))


def test_different_key_changes_number() -> None:
    assert safety_number(ALICE, BOB).digits != safety_number(ALICE, CAROL).digits
    assert safety_number(ALICE, BOB).qr_payload != safety_number(ALICE, CAROL).qr_payload


def test_qr_payload_layout_is_symmetric_and_key_bound() -> None:
    """What a scanner compares byte for byte (PROTOCOL Part I §10): version, then both
    parties' first 32 fingerprint bytes, sorted, so either phone's code matches."""
    payload = safety_number(ALICE, BOB).qr_payload
    assert len(payload) == QR_PAYLOAD_LEN and payload[0] == QR_VERSION
    lo, hi = sorted((party_fingerprint(ALICE)[:32], party_fingerprint(BOB)[:32]))
    assert payload == bytes([QR_VERSION]) + lo + hi
    assert safety_number(BOB, ALICE).qr_payload == payload
    assert safety_number(ALICE, CAROL).qr_payload != payload  # the relay swapped Bob's key


def test_self_safety_number() -> None:
    sn = safety_number(ALICE, ALICE)
    assert sn.digits[:30] == sn.digits[30:]


GOLDEN = "02167 73250 02184 87601 63613 15981 20949 63487 09249 96707 20869 99603"
