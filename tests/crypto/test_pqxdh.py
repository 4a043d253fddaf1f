"""PQXDH (X25519 + ML-KEM-1024) agreement, checked against an independent KDF reference."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
from typing import Any

import pytest

from xchat.crypto import pqxdh
from xchat.crypto.keys import IdentityKeyPair, encode_x25519
from xchat.crypto.prekeys import (
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
)
from xchat.errors import DecryptionError, InvalidSignature


def rng_of(seed: int) -> Any:
    return random.Random(seed).randbytes


def ref_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with stdlib HMAC: an independent reference for the tests only."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for i in range((length + 31) // 32):
        block = hmac.new(prk, block + info + bytes([i + 1]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_reference_hkdf_matches_rfc5869_case_1() -> None:
    okm = ref_hkdf(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


class Bob:
    def __init__(self, seed: int) -> None:
        rng = rng_of(seed)
        self.identity = IdentityKeyPair.generate(rng)
        self.spk = SignedPreKeyRecord.generate(self.identity, 1, rng)
        self.kem = KemPreKeyRecord.generate(self.identity, 2, last_resort=False, rng=rng)
        self.otk = OneTimePreKeyRecord.generate(3, rng)

    def bundle(self, with_otk: bool = True) -> PreKeyBundle:
        return PreKeyBundle.from_records(
            self.identity.public, 1, self.spk, self.kem, self.otk if with_otk else None
        )


@pytest.fixture(scope="module")
def bob() -> Bob:
    return Bob(10)


@pytest.fixture(scope="module")
def alice() -> IdentityKeyPair:
    return IdentityKeyPair.generate(rng_of(20))


@pytest.mark.parametrize("with_otk", [True, False])
def test_both_sides_agree(alice: IdentityKeyPair, bob: Bob, with_otk: bool) -> None:
    keys = pqxdh.initiate(alice, bob.bundle(with_otk), rng_of(1))
    sk, ad = pqxdh.respond(
        bob.identity,
        alice.public,
        keys.base_key,
        keys.kem_ciphertext,
        bob.spk,
        bob.kem,
        bob.otk if with_otk else None,
    )
    assert sk == keys.shared_secret and len(sk) == 32
    assert ad == keys.associated_data == alice.public.encode() + bob.identity.public.encode()
    assert keys.one_time_prekey_id == (3 if with_otk else None)
    assert len(keys.kem_ciphertext) == 1568


def test_secret_is_the_documented_kdf(alice: IdentityKeyPair, bob: Bob) -> None:
    """SK = HKDF(0xFF*32 || DH1 || DH2 || DH3 || DH4 || SS, 0^32, info), per PROTOCOL Part II §3."""
    keys = pqxdh.initiate(alice, bob.bundle(), rng_of(2))
    ek = keys.base_key
    dh1 = alice.dh(bob.spk.public)
    dh2 = bob.identity.dh(ek)
    dh3 = bob.spk.private_key.exchange(_pub(ek))
    dh4 = bob.otk.private_key.exchange(_pub(ek))
    ss = bob.kem.private_key.decapsulate(keys.kem_ciphertext)
    expected = ref_hkdf(
        b"\xff" * 32 + dh1 + dh2 + dh3 + dh4 + ss,
        b"\x00" * 32,
        b"XChat_PQXDH_X25519_MLKEM1024_SHA-256_v1",
        32,
    )
    assert keys.shared_secret == expected


def _pub(raw: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    return X25519PublicKey.from_public_bytes(raw)


def test_each_input_changes_the_secret(alice: IdentityKeyPair, bob: Bob) -> None:
    keys = pqxdh.initiate(alice, bob.bundle(), rng_of(3))
    args = (keys.base_key, keys.kem_ciphertext, bob.spk, bob.kem, bob.otk)
    good, _ = pqxdh.respond(bob.identity, alice.public, *args)
    mallory = IdentityKeyPair.generate(rng_of(4))
    other = Bob(11)
    variants = [
        pqxdh.respond(bob.identity, mallory.public, *args)[0],  # wrong claimed initiator
        pqxdh.respond(
            bob.identity, alice.public, keys.base_key, keys.kem_ciphertext, bob.spk, bob.kem, None
        )[0],  # one-time key dropped
        pqxdh.respond(
            bob.identity,
            alice.public,
            keys.base_key,
            bytes([keys.kem_ciphertext[0] ^ 1]) + keys.kem_ciphertext[1:],
            bob.spk,
            bob.kem,
            bob.otk,
        )[0],  # KEM ciphertext altered
        pqxdh.respond(
            bob.identity,
            alice.public,
            keys.base_key,
            keys.kem_ciphertext,
            bob.spk,
            other.kem,
            bob.otk,
        )[0],  # other KEM key
    ]
    assert all(v != good for v in variants)


def test_forged_bundle_refused_before_any_use(alice: IdentityKeyPair, bob: Bob) -> None:
    bundle = bob.bundle()
    sig = bytearray(bundle.kem_prekey_signature)
    sig[0] ^= 0x80
    forged = dataclasses.replace(bundle, kem_prekey_signature=bytes(sig))
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return b"\x01" * n

    with pytest.raises(InvalidSignature):
        pqxdh.initiate(alice, forged, rng)
    assert calls == []  # aborted before the ephemeral key was even drawn


def test_low_order_signed_prekey_rejected(alice: IdentityKeyPair, bob: Bob) -> None:
    """Even a *signed* all-zero (low-order) curve key must not yield an all-zero DH."""
    zero = b"\x00" * 32
    sig = bob.identity.sign(b"XChat-v1-prekey" + encode_x25519(zero))
    bad = dataclasses.replace(bob.bundle(), signed_prekey=zero, signed_prekey_signature=sig)
    with pytest.raises(DecryptionError):
        pqxdh.initiate(alice, bad, rng_of(5))


def test_low_order_base_key_rejected(alice: IdentityKeyPair, bob: Bob) -> None:
    keys = pqxdh.initiate(alice, bob.bundle(), rng_of(6))
    with pytest.raises(DecryptionError):
        pqxdh.respond(
            bob.identity, alice.public, b"\x00" * 32, keys.kem_ciphertext, bob.spk, bob.kem, bob.otk
        )
