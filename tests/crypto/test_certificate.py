"""Tests for xchat.crypto.certificate (PROTOCOL Part I §4, PROTOCOL.md Part I §4)."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto.certificate import (
    CERTIFICATE_LEN,
    CERTIFICATE_LIFETIME_MS,
    LABEL_SENDER_CERT,
    SenderCertificate,
    issue_sender_certificate,
)
from xchat.crypto.keys import IdentityKeyPair
from xchat.errors import (
    CryptoError,
    ExpiredCertificate,
    InvalidCertificate,
    UnsupportedVersion,
    XChatError,
)

SERVER = Ed25519PrivateKey.from_private_bytes(bytes([0x53]) * 32)
SERVER_PUB = SERVER.public_key().public_bytes_raw()
ALICE = IdentityKeyPair.from_seed(bytes([0xA1]) * 32)
NOW = 1_700_000_000_000
EXPIRES = NOW + CERTIFICATE_LIFETIME_MS


def _cert(device_id: int = 7, expires_ms: int = EXPIRES) -> bytes:
    return issue_sender_certificate(SERVER, ALICE.public, device_id, expires_ms)


def test_layout_is_exactly_contract() -> None:
    cert = _cert()
    assert len(cert) == CERTIFICATE_LEN == 1 + 65 + 4 + 8 + 64
    assert cert[0] == 0x01
    assert cert[1:66] == ALICE.public.encode()
    assert struct.unpack(">IQ", cert[66:78]) == (7, EXPIRES)
    assert LABEL_SENDER_CERT == b"XChat-v1-sender-cert"
    Ed25519PublicKey.from_public_bytes(SERVER_PUB).verify(
        cert[-64:], LABEL_SENDER_CERT + cert[:-64]
    )
    assert CERTIFICATE_LIFETIME_MS == 24 * 3600 * 1000


def test_decode_and_verify() -> None:
    cert = SenderCertificate.decode(_cert())
    assert cert.identity == ALICE.public
    assert (cert.device_id, cert.expires_ms) == (7, EXPIRES)
    assert cert.address == ALICE.public.address()
    assert cert.raw == _cert()
    cert.verify(SERVER_PUB, NOW)
    cert.verify(SERVER_PUB, EXPIRES - 1)


def test_extreme_field_values_roundtrip() -> None:
    for device_id, expires in ((0, 0), (2**32 - 1, 2**64 - 1)):
        cert = SenderCertificate.decode(_cert(device_id, expires))
        assert (cert.device_id, cert.expires_ms) == (device_id, expires)


def test_expiry_boundary() -> None:
    cert = SenderCertificate.decode(_cert())
    with pytest.raises(ExpiredCertificate):
        cert.verify(SERVER_PUB, EXPIRES)
    with pytest.raises(ExpiredCertificate):
        cert.verify(SERVER_PUB, EXPIRES + 10**9)
    assert issubclass(ExpiredCertificate, InvalidCertificate)


def test_wrong_server_key() -> None:
    cert = SenderCertificate.decode(_cert())
    other = Ed25519PrivateKey.from_private_bytes(bytes([0x54]) * 32).public_key()
    with pytest.raises(InvalidCertificate):
        cert.verify(other.public_bytes_raw(), NOW)
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(InvalidCertificate):
            cert.verify(bad, NOW)


def test_expired_forgery_reported_as_forgery() -> None:
    forged = bytearray(_cert(expires_ms=NOW - 1))
    forged[-1] ^= 1
    with pytest.raises(InvalidCertificate) as info:
        SenderCertificate.decode(bytes(forged)).verify(SERVER_PUB, NOW)
    assert not isinstance(info.value, ExpiredCertificate)


def test_every_byte_flip_rejected() -> None:
    cert = _cert()
    for i in range(len(cert)):
        bad = bytearray(cert)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            SenderCertificate.decode(bytes(bad)).verify(SERVER_PUB, NOW)


def test_malformed() -> None:
    cert = _cert()
    for bad in (b"", cert[:-1], cert + b"\x00"):
        with pytest.raises(InvalidCertificate):
            SenderCertificate.decode(bad)
    with pytest.raises(UnsupportedVersion):
        SenderCertificate.decode(b"\x02" + cert[1:])
    with pytest.raises(InvalidCertificate):  # identity key with a bad version byte
        SenderCertificate.decode(cert[:1] + b"\x09" + cert[2:])


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=CERTIFICATE_LEN, max_size=CERTIFICATE_LEN))
def test_garbage_only_typed_errors(blob: bytes) -> None:
    with pytest.raises(XChatError):
        SenderCertificate.decode(blob).verify(SERVER_PUB, NOW)


@pytest.mark.parametrize(("device_id", "expires"), [(2**32, EXPIRES), (-1, EXPIRES), (1, -1)])
def test_issue_out_of_range_is_typed(device_id: int, expires: int) -> None:
    with pytest.raises(XChatError):
        issue_sender_certificate(SERVER, ALICE.public, device_id, expires)
