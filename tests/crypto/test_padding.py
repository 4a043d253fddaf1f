"""Tests for xchat.crypto.padding (PROTOCOL.md Part I §6)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xchat.crypto.padding import (
    BUCKETS,
    MAX_DATA_LEN,
    MAX_PADDED_LEN,
    pad,
    padded_length,
    padme_size,
    unpad,
)
from xchat.errors import DecodeError, TooLarge


def test_bucket_list_is_documented_shape() -> None:
    assert BUCKETS[0] == 160
    assert list(BUCKETS) == sorted(set(BUCKETS))
    assert MAX_PADDED_LEN == 131072
    assert MAX_DATA_LEN == MAX_PADDED_LEN - 1


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (0, 160),
        (1, 160),
        (159, 160),
        (160, 320),
        (319, 320),
        (320, 640),
        (65535, 65536),
        (65536, 131072),
        (131071, 131072),
    ],
)
def test_boundaries(n: int, bucket: int) -> None:
    data = bytes([0xAB]) * n
    padded = pad(data)
    assert len(padded) == bucket == padded_length(n)
    assert padded[n] == 0x80
    assert not any(padded[n + 1 :])
    assert unpad(padded) == data


def test_data_ending_in_marker_and_zeros_roundtrips() -> None:
    for data in (b"\x80", b"\x00", b"\x80\x00\x00", b"x\x80"):
        assert unpad(pad(data)) == data


def test_too_large() -> None:
    with pytest.raises(TooLarge):
        pad(bytes(MAX_DATA_LEN + 1))
    with pytest.raises(TooLarge):
        unpad(bytes(MAX_PADDED_LEN * 2))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        bytes(160),  # no marker
        b"x" * 160,  # no marker, no zeros
        b"x" * 10 + b"\x81" + bytes(149),  # wrong marker
        b"x" * 10 + b"\x80" + bytes(148),  # 159 bytes: not a bucket
        b"x" * 10 + b"\x80" + bytes(309),  # 320-byte bucket for 10 bytes: non-canonical
        b"x" * 10 + b"\x80" + bytes(148) + b"\x01",  # non-zero after marker
    ],
)
def test_unpad_strict(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        unpad(bad)


@given(st.binary(max_size=3000))
def test_roundtrip_property(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) in BUCKETS
    assert unpad(padded) == data


@given(st.binary(min_size=1, max_size=400))
def test_unpad_never_raises_foreign_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        unpad(data)


def test_padme_known_values() -> None:
    # PURBs paper Table/definition: 9 -> 10, 1000 -> 1024 (E=9, S=4, 5 low bits cleared).
    assert [padme_size(n) for n in (0, 1, 2, 3, 4, 5, 9)] == [0, 1, 2, 3, 4, 5, 10]
    assert padme_size(1000) == 1024
    assert padme_size(1024) == 1024
    assert padme_size(1025) == 1088  # E=10, S=4: 6 low bits cleared


@given(st.integers(min_value=0, max_value=2**40))
def test_padme_bounds(n: int) -> None:
    p = padme_size(n)
    assert n <= p <= n + n // 8 + 1  # at most ~12% overhead
    assert padme_size(p) == p  # idempotent


def test_negative_lengths() -> None:
    with pytest.raises(DecodeError):
        padded_length(-1)
    with pytest.raises(DecodeError):
        padme_size(-1)
