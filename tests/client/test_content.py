"""The E2EE content format (PROTOCOL.md Part IV §2)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xchat.client import content as ct
from xchat.errors import DecodeError, TooLarge, UnsupportedVersion


def test_round_trip_text_with_sender() -> None:
    m = ct.text_message(
        "hi ☃", 123, reply_to="ab" * 16, sender=ct.SenderInfo("alice", b"\x01" * 16)
    )
    assert ct.Content.decode(m.encode()) == m


def test_receipt_round_trip() -> None:
    r = ct.receipt(["01" * 16, "02" * 16], 5)
    d = ct.Content.decode(r.encode())
    assert d.type == "receipt" and d.receipt_for == ("01" * 16, "02" * 16)


@pytest.mark.parametrize(
    "obj, err",
    [
        ({"v": 2, "id": "00" * 16, "type": "text", "ts": 1}, UnsupportedVersion),
        ({"v": 1, "id": "zz", "type": "text", "ts": 1}, DecodeError),
        ({"v": 1, "id": "00" * 16, "type": "text", "ts": "1"}, DecodeError),
        ({"v": 1, "id": "00" * 16, "type": "text", "ts": 1, "text": 5}, DecodeError),
        ({"v": 1, "id": "00" * 16, "type": "receipt", "ts": 1, "receipt_for": ["x"]}, DecodeError),
        (
            {
                "v": 1,
                "id": "00" * 16,
                "type": "text",
                "ts": 1,
                "sender": {"delivery_token": "AAAA"},
            },
            DecodeError,
        ),
    ],
)
def test_bad_content_is_typed_error(obj: dict[str, object], err: type[Exception]) -> None:
    with pytest.raises(err):
        ct.Content.decode(json.dumps(obj).encode())


def test_too_long_text() -> None:
    with pytest.raises(TooLarge):
        ct.text_message("x" * (ct.MAX_TEXT_CHARS + 1), 1)


@given(st.binary(max_size=300))
def test_decode_never_raises_foreign_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        ct.Content.decode(data)


def test_file_object_round_trip_and_type_check() -> None:
    m = ct.Content(id="cd" * 16, type="file", ts=1, file={"blob": "x", "size": 3})
    assert ct.Content.decode(m.encode()).file == {"blob": "x", "size": 3}
    bad = {"v": 1, "id": "00" * 16, "type": "file", "ts": 1, "file": [1]}
    with pytest.raises(DecodeError):
        ct.Content.decode(json.dumps(bad).encode())
