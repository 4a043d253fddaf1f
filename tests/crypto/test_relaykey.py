"""Relay key fingerprints in addresses and signed key rotation (PROTOCOL.md Part III §3.1)."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from xchat.crypto import relaykey
from xchat.errors import DecodeError, InvalidAddress, InvalidSignature


def _pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes_raw()


def test_fingerprint_address_round_trip() -> None:
    key = _pub(Ed25519PrivateKey.generate())
    fp = relaykey.fingerprint(key)
    assert len(fp) == 43 and "=" not in fp
    addr = relaykey.relay_address("http://127.0.0.1:8420/", key)
    assert addr == f"http://127.0.0.1:8420#{fp}"
    assert relaykey.split_address(addr) == ("http://127.0.0.1:8420", fp)
    assert relaykey.split_address("https://relay.example") == ("https://relay.example", None)
    assert relaykey.matches(key, fp)
    assert not relaykey.matches(_pub(Ed25519PrivateKey.generate()), fp)


@pytest.mark.parametrize(
    "bad",
    ["ftp://x#abc", "relay.example", "http://x#short", "http://x#" + "!" * 43, "http://[::1"],
)
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        relaykey.split_address(bad)


_URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_fingerprint_in_another_spelling_is_refused() -> None:
    """Only the spelling :func:`relaykey.fingerprint` writes: the old decoder took junk
    characters and non-canonical trailing bits (the 2 unused low bits of the last one)."""
    fp = relaykey.fingerprint(_pub(Ed25519PrivateKey.generate()))
    sibling = _URL_ALPHABET[_URL_ALPHABET.index(fp[-1]) ^ 1]
    for spelling in (
        fp[:-1] + sibling,
        fp + "=",
        fp[:-1] + "=",
        fp[:20] + "!" + fp[21:],
        fp[:20] + "+" + fp[21:],
        fp[:20] + "/" + fp[21:],
        fp[:20] + "é" + fp[21:],
    ):
        with pytest.raises(InvalidAddress):
            relaykey.split_address(f"http://127.0.0.1:8420#{spelling}")
    assert relaykey.split_address(f"http://127.0.0.1:8420#{fp}")[1] == fp


def test_rotation_is_signed_by_the_old_key() -> None:
    old, new, other = (Ed25519PrivateKey.generate() for _ in range(3))
    st = relaykey.sign_rotation(old, _pub(new), 1000, 5000)
    assert len(st) == relaykey.ROTATION_LEN
    r = relaykey.verify_rotation(_pub(old), st)
    assert (r.new_key, r.not_before_ms, r.old_valid_until_ms) == (_pub(new), 1000, 5000)
    with pytest.raises(InvalidSignature):
        relaykey.verify_rotation(_pub(other), st)  # a relay that lost its key cannot rotate
    forged = relaykey.sign_rotation(other, _pub(new), 1000, 5000)
    with pytest.raises(InvalidSignature):
        relaykey.verify_rotation(_pub(old), forged)
    tampered = st[:1] + _pub(other) + st[33:]
    with pytest.raises(InvalidSignature):
        relaykey.verify_rotation(_pub(old), tampered)
    with pytest.raises(DecodeError):
        relaykey.verify_rotation(_pub(old), st[:-1])
    with pytest.raises(DecodeError):
        relaykey.sign_rotation(old, _pub(new), 5000, 1000)


@given(st.text(max_size=120))
def test_split_address_raises_only_invalid_address(text: str) -> None:
    with contextlib.suppress(InvalidAddress):
        relaykey.split_address(text)


@given(st.binary(max_size=200))
def test_verify_rotation_raises_only_typed_errors(data: bytes) -> None:
    key = _pub(Ed25519PrivateKey.generate())
    with contextlib.suppress(DecodeError, InvalidSignature):
        relaykey.verify_rotation(key, data)
