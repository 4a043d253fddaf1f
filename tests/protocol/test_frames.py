"""Round trips, byte-exact layouts and fuzzing of the data-plane codec (PROTOCOL Part III §5)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.errors import DecodeError
from xchat.protocol import frames as F

EID = bytes(range(16))

ids = st.binary(min_size=16, max_size=16)
u32 = st.integers(0, 2**32 - 1)
access = st.one_of(
    st.none(),
    st.builds(F.TokenAccess, st.binary(min_size=16, max_size=16)),
    st.builds(F.PowAccess, st.binary(max_size=64), st.integers(0, 2**64 - 1)),
)
envelope = st.builds(F.OutEnvelope, u32, ids, st.binary(max_size=64))
address = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=90)
destination = st.builds(F.Destination, address, access, st.lists(envelope, max_size=3).map(tuple))
frame = st.one_of(
    st.builds(F.Send, u32, st.lists(destination, max_size=3).map(tuple)),
    st.builds(F.Ack, st.lists(ids, max_size=5).map(tuple)),
    st.builds(F.SendResult, u32, st.integers(0, 65535), u32, st.text(max_size=40)),
    st.builds(
        F.Deliver,
        st.lists(
            st.builds(F.Delivered, ids, st.integers(0, 2**64 - 1), st.binary(max_size=64)),
            max_size=4,
        ).map(tuple),
    ),
    st.just(F.Drained()),
    st.builds(F.KeysLow, u32, u32),
)


@given(frame)
def test_round_trip(f: F.Frame) -> None:
    assert F.decode_frame(F.encode_frame(f)) == f


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        F.decode_frame(data)


@given(frame, st.data())
def test_truncation_and_trailing_bytes_are_rejected(f: F.Frame, data: st.DataObject) -> None:
    raw = F.encode_frame(f)
    with pytest.raises(DecodeError):
        F.decode_frame(raw + b"\x00")
    if len(raw) > 1:
        cut = data.draw(st.integers(0, len(raw) - 1))
        try:
            got = F.decode_frame(raw[:cut])
        except DecodeError:
            return
        assert got != f


def test_send_layout_is_byte_exact() -> None:
    f = F.Send(
        7, (F.Destination("xc1abc", F.TokenAccess(b"T" * 16), (F.OutEnvelope(2, EID, b"hi"),)),)
    )
    expected = (
        b"\x01"
        + struct.pack(">IH", 7, 1)
        + b"\x06xc1abc"
        + b"\x01"
        + struct.pack(">H", 16)
        + b"T" * 16
        + struct.pack(">H", 1)
        + struct.pack(">I", 2)
        + EID
        + struct.pack(">I", 2)
        + b"hi"
    )
    assert F.encode_frame(f) == expected
    assert F.decode_frame(expected) == f


def test_pow_access_layout() -> None:
    f = F.Send(1, (F.Destination("a", F.PowAccess(b"ch", 5), ()),))
    body = struct.pack(">H", 2) + b"ch" + struct.pack(">Q", 5)
    assert F.encode_frame(f) == (
        b"\x01"
        + struct.pack(">IH", 1, 1)
        + b"\x01a"
        + b"\x02"
        + struct.pack(">H", len(body))
        + body
        + struct.pack(">H", 0)
    )


def test_server_frame_layouts() -> None:
    assert F.encode_frame(F.SendResult(9, 429, 1500, "slow")) == (
        b"\x10" + struct.pack(">IHIH", 9, 429, 1500, 4) + b"slow"
    )
    assert F.encode_frame(F.Deliver((F.Delivered(EID, 5, b"xy"),))) == (
        b"\x11" + struct.pack(">H", 1) + EID + struct.pack(">QI", 5, 2) + b"xy"
    )
    assert F.encode_frame(F.Drained()) == b"\x12"
    assert F.encode_frame(F.KeysLow(3, 4)) == b"\x13" + struct.pack(">II", 3, 4)
    assert F.encode_frame(F.Ack((EID,))) == b"\x02\x00\x01" + EID


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\xff",
        b"\x01",
        b"\x01" + struct.pack(">IH", 1, 1),  # missing destination
        b"\x01" + struct.pack(">IH", 1, 1) + b"\x00",  # empty address
        b"\x01" + struct.pack(">IH", 1, 1) + b"\x01!" + b"\x00\x00\x00\x00\x00",  # bad address
        b"\x01" + struct.pack(">IH", 1, 1) + b"\x01a" + b"\x07\x00\x00" + b"\x00\x00",  # kind 7
        b"\x01" + struct.pack(">IH", 1, 1) + b"\x01a" + b"\x01\x00\x05abcde" + b"\x00\x00",
        b"\x01" + struct.pack(">IH", 1, 1) + b"\x01a" + b"\x00\x00\x01x" + b"\x00\x00",
        b"\x02\x00\x02" + EID,  # count says 2 ids, one present
        b"\x02\x00\x00\x00",  # trailing byte
        b"\x10" + struct.pack(">IHIH", 1, 200, 0, 2) + b"\xff\xfe",  # bad utf-8
        b"\x11\x00\x01" + EID + struct.pack(">QI", 1, 10) + b"short",
        b"\x12\x00",
        b"\x13\x00\x00\x00\x01",
    ],
)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        F.decode_frame(raw)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(DecodeError):
        F.encode_frame(F.Ack((b"short",)))
    with pytest.raises(DecodeError):
        F.encode_frame(F.SendResult(2**32, 200))
    with pytest.raises(DecodeError):
        F.encode_frame(F.Send(1, (F.Destination("a", F.TokenAccess(b"x"), ()),)))


# --- decode_send: the relay's object-free SEND decoder must agree with decode_frame ---------


def _as_items(f: F.Send) -> tuple[int, list[F.SendItem]]:
    return f.req_id, [
        (d.address, d.access, [(e.device_id, e.envelope_id, e.content) for e in d.envelopes])
        for d in f.destinations
    ]


@given(st.builds(F.Send, u32, st.lists(destination, max_size=3).map(tuple)))
def test_decode_send_matches_decode_frame(f: F.Send) -> None:
    data = F.encode_frame(f)
    assert F.decode_send(data) == _as_items(f)


def _outcome(fn: object, data: bytes) -> object:
    try:
        out = fn(data)  # type: ignore[operator]
    except DecodeError:
        return "error"
    return _as_items(out) if isinstance(out, F.Send) else out


@settings(max_examples=300)
@given(
    st.builds(F.Send, u32, st.lists(destination, min_size=1, max_size=2).map(tuple)),
    st.data(),
)
def test_decode_send_rejects_exactly_what_decode_frame_rejects(
    f: F.Send, data: st.DataObject
) -> None:
    raw = bytearray(F.encode_frame(f))
    # mutate: truncate, extend, or flip a byte (after the type byte)
    how = data.draw(st.sampled_from(["cut", "grow", "flip"]))
    if how == "cut":
        raw = raw[: data.draw(st.integers(1, len(raw)))]
    elif how == "grow":
        raw += data.draw(st.binary(min_size=1, max_size=4))
    elif len(raw) > 1:
        i = data.draw(st.integers(1, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    blob = bytes(raw)
    assert _outcome(F.decode_send, blob) == _outcome(F.decode_frame, blob)


@pytest.mark.parametrize("blob", [b"", b"\x02\x00\x00", b"\x01", b"\x01\x00\x00\x00\x01\x00"])
def test_decode_send_short_or_wrong_type(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        F.decode_send(blob)
