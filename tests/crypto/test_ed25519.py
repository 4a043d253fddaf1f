"""Ed25519 verification through libsodium (xchat.crypto.ed25519, PROTOCOL Part I §1.1).

RFC 8032 §7.1 vectors must verify, and every input OpenSSL rejects must be rejected too;
beyond that the rule is stricter (small-order and non-canonical keys), which is pinned here
so that a change of binding cannot silently change which signatures clients accept.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat.crypto import ed25519
from xchat.errors import DecodeError, InvalidSignature

#: (secret seed, public key, message, signature), RFC 8032 §7.1 TEST 1-3 and TEST SHA(abc).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]

L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors_verify(seed: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    assert key.public_key().public_bytes_raw().hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature  # the vector is the RFC's
    ed25519.check_public_key(bytes.fromhex(public))
    ed25519.verify(bytes.fromhex(public), bytes.fromhex(signature), bytes.fromhex(message))


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_any_flipped_bit_fails(seed: str, public: str, message: str, signature: str) -> None:
    sig = bytes.fromhex(signature)
    for i in range(0, 512, 7):
        bad = bytearray(sig)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidSignature):
            ed25519.verify(bytes.fromhex(public), bytes(bad), bytes.fromhex(message))
    with pytest.raises(InvalidSignature):
        ed25519.verify(bytes.fromhex(public), sig, bytes.fromhex(message) + b"\x00")


def test_malleated_s_is_rejected_as_in_openssl() -> None:
    """S + L is the same scalar mod L: both bindings must refuse the non-canonical copy."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little")
    malleated = sig[:32] + (s + L).to_bytes(32, "little")
    with pytest.raises(InvalidSignature):
        ed25519.verify(public, malleated, b"m")


def test_identity_key_forgery_is_rejected() -> None:
    """OpenSSL accepts R = identity, S = 0 under the identity point for any message."""
    identity_point = (1).to_bytes(32, "little")
    forgery = identity_point + bytes(32)
    with pytest.raises(DecodeError):
        ed25519.check_public_key(identity_point)
    with pytest.raises(InvalidSignature):
        ed25519.verify(identity_point, forgery, b"anything")


def test_non_canonical_key_encoding_is_rejected() -> None:
    non_canonical = (P + 1).to_bytes(32, "little")  # y = 1 written as p + 1
    with pytest.raises(DecodeError):
        ed25519.check_public_key(non_canonical)
    with pytest.raises(InvalidSignature):
        ed25519.verify(non_canonical, (1).to_bytes(32, "little") + bytes(32), b"x")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_lengths_are_typed_errors(length: int) -> None:
    with pytest.raises(DecodeError):
        ed25519.check_public_key(bytes(length))
    with pytest.raises(InvalidSignature):
        ed25519.verify(bytes(length), bytes(64), b"")
    with pytest.raises(InvalidSignature):
        ed25519.verify(bytes(32), bytes(length), b"")
