"""Relay-signed handle certificates (PROTOCOL.md Part IV §3.2)."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from xchat.crypto import handle_cert
from xchat.errors import DecodeError, ExpiredCertificate, InvalidCertificate, XChatError

RELAY = Ed25519PrivateKey.generate()
PUB = RELAY.public_key().public_bytes_raw()
ADDR = "xc1qqukjys462lv6gpx393ks8vwtl6nv40nl5fy0775"


def test_round_trip_and_checks() -> None:
    cert = handle_cert.issue(RELAY, ADDR, "alice", 5000)
    assert handle_cert.verify([PUB], cert, 4999) == (ADDR, "alice")
    assert handle_cert.parse(cert) == (ADDR, "alice", 5000)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert handle_cert.verify([other, PUB], cert, 0) == (ADDR, "alice")  # e.g. after rotation
    with pytest.raises(InvalidCertificate):
        handle_cert.verify([other], cert, 0)
    with pytest.raises(ExpiredCertificate):
        handle_cert.verify([PUB], cert, 5000)
    forged = cert.replace(b"alice", b"mally")  # another handle under the same signature
    with pytest.raises(InvalidCertificate):
        handle_cert.verify([PUB], forged, 0)
    with pytest.raises(DecodeError):
        handle_cert.verify([PUB], cert[:-1], 0)


@given(st.binary(max_size=400))
def test_decoder_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(XChatError):
        handle_cert.verify([PUB], data, 0)
