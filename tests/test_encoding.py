"""xchat.encoding: the one base64 every part of XChat reads and writes."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xchat.encoding import b64decode, b64encode, b64url_decode, b64url_encode
from xchat.errors import DecodeError


@given(st.binary(max_size=100))
def test_round_trips(data: bytes) -> None:
    assert b64decode(b64encode(data), "x") == data
    assert b64url_decode(b64url_encode(data), "x") == data
    padded = base64.urlsafe_b64encode(data).decode()
    assert b64url_decode(padded, "x") == data  # padding is optional in base64url


@pytest.mark.parametrize(
    "bad",
    [
        "QQ",  # standard base64 must be padded
        "QR==",  # non-canonical trailing bits (decodes to b"A" like "QQ==")
        "QQ==\n",  # no whitespace
        " QQ==",
        "QQ=\u00e9",  # non-ASCII
        "Q-_=",  # url alphabet in a standard field
        "QQ===",
        "====",
        b"QQ==",  # bytes, not str
        None,
        17,
    ],
)
def test_standard_refuses(bad: object) -> None:
    with pytest.raises(DecodeError, match="field"):
        b64decode(bad, "field")


@pytest.mark.parametrize(
    "bad",
    [
        "QR",  # non-canonical trailing bits
        "Q!Q",  # junk that base64.urlsafe_b64decode silently drops
        "Q Q",
        "QQ=",  # padding, when present, must be complete
        "Q+/A",  # standard alphabet in a url field
        "A",  # one character cannot encode a byte
        None,
    ],
)
def test_url_refuses(bad: object) -> None:
    with pytest.raises(DecodeError, match="field"):
        b64url_decode(bad, "field")


def test_length_is_checked() -> None:
    raw = os.urandom(16)
    assert b64decode(b64encode(raw), "id", 16) == raw
    with pytest.raises(DecodeError, match="expected 32 bytes, got 16"):
        b64decode(b64encode(raw), "id", 32)
    with pytest.raises(DecodeError, match="expected 15 bytes"):
        b64url_decode(b64url_encode(raw), "id", 15)
