"""SEND_MULTI (0x03) codec: one shared payload, a header per device (PROTOCOL Part III §5.2)."""

from __future__ import annotations

import os

import pytest

from xchat.crypto.keys import IdentityKeyPair, decode_address
from xchat.errors import DecodeError
from xchat.protocol import frames as fr


def _frame() -> fr.SendMulti:
    dests = []
    for i in range(3):
        addr = IdentityKeyPair.generate().public.address()
        access: fr.Access = fr.TokenAccess(os.urandom(16)) if i else fr.PowAccess(b"c" * 40, 7)
        envs = tuple(fr.MultiEnvelope(d, os.urandom(16), os.urandom(49)) for d in (1, 2))
        dests.append(fr.MultiDestination(decode_address(addr), access, envs))
    return fr.SendMulti(42, os.urandom(700), tuple(dests))


def test_roundtrip_and_expand() -> None:
    frame = _frame()
    data = fr.encode_send_multi(frame)
    assert data[0] == fr.SEND_MULTI
    assert fr.decode_send_multi(data) == frame
    items = fr.expand_send_multi(frame)
    for (address, access, envs), dest in zip(items, frame.destinations, strict=True):
        assert decode_address(address) == dest.address_hash and access == dest.access
        assert [(d, i, c) for d, i, c in envs] == [
            (e.device_id, e.envelope_id, e.header + frame.shared) for e in dest.envelopes
        ]


def test_per_device_cost_is_small() -> None:
    one = fr.SendMulti(1, b"s", (fr.MultiDestination(bytes(20), fr.TokenAccess(bytes(16)),
                                 (fr.MultiEnvelope(1, bytes(16), bytes(49)),)),))  # fmt: skip
    two = fr.SendMulti(1, b"s", one.destinations * 2)
    assert len(fr.encode_send_multi(two)) - len(fr.encode_send_multi(one)) == 110


def test_every_truncation_and_trailing_byte_is_decode_error() -> None:
    data = fr.encode_send_multi(_frame())
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            fr.decode_send_multi(data[:n])
    with pytest.raises(DecodeError):
        fr.decode_send_multi(data + b"\x00")
