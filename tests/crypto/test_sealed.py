"""Tests for xchat.crypto.sealed (PROTOCOL.md Part I §7–§8)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto import sealed
from xchat.crypto.certificate import CERTIFICATE_LEN, issue_sender_certificate
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey, hkdf
from xchat.errors import (
    CryptoError,
    DecodeError,
    DecryptionError,
    ExpiredCertificate,
    InvalidCertificate,
    TooLarge,
    UnsupportedVersion,
    UntrustedIdentity,
)

NOW = 1_700_000_000_000
EXPIRES = NOW + 24 * 3600 * 1000

SERVER = Ed25519PrivateKey.from_private_bytes(bytes([0x53]) * 32)
SERVER_PUB = SERVER.public_key().public_bytes_raw()
OTHER_SERVER = Ed25519PrivateKey.from_private_bytes(bytes([0x54]) * 32)
ALICE = IdentityKeyPair.from_seed(bytes([0xA1]) * 32)
BOB = IdentityKeyPair.from_seed(bytes([0xB0]) * 32)
CAROL = IdentityKeyPair.from_seed(bytes([0xC0]) * 32)
ALICE_CERT = issue_sender_certificate(SERVER, ALICE.public, 7, EXPIRES)
CAROL_CERT = issue_sender_certificate(SERVER, CAROL.public, 1, EXPIRES)


def det_rng(label: bytes) -> Callable[[int], bytes]:
    """A deterministic byte stream so envelopes are reproducible."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(label + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def _envelope(content: bytes = b"hello bob", content_type: int = 2) -> bytes:
    return sealed.seal(ALICE, ALICE_CERT, BOB.public, content_type, content, det_rng(b"t"))


# --- single recipient -------------------------------------------------------------------


def test_roundtrip() -> None:
    env = sealed.seal(ALICE, ALICE_CERT, BOB.public, 2, b"hello bob")
    msg = sealed.unseal(BOB, env, SERVER_PUB, NOW)
    assert msg.content == b"hello bob"
    assert msg.content_type == 2
    assert msg.sender == ALICE.public
    assert msg.device_id == 7
    assert msg.certificate.raw == ALICE_CERT
    assert msg.sender_address == ALICE.public.address()


def test_layout_and_overhead() -> None:
    assert CERTIFICATE_LEN == 142
    assert sealed.SEALED_OVERHEAD == 1 + 32 + 81 + 16 + 142 + 1
    for n in (0, 1, 160, 5000):
        env = _envelope(bytes(n))
        assert len(env) == sealed.SEALED_OVERHEAD + n
        assert env[0] == sealed.SEALED_VERSION
    # The sender's identity never appears in clear.
    env = _envelope()
    assert ALICE.public.encode() not in env
    assert ALICE.public.ed25519 not in env and ALICE.public.x25519 not in env
    assert ALICE_CERT not in env


def test_golden_envelope_is_stable() -> None:
    """Wire-format regression: a pinned rng and keys give these exact bytes."""
    env = _envelope()
    assert hashlib.sha256(env).hexdigest() == GOLDEN_SHA256
    assert sealed.unseal(BOB, env, SERVER_PUB, NOW).content == b"hello bob"


def test_independent_reimplementation() -> None:
    """Re-derive stage 1 and 2 from the spec text in PROTOCOL Part I §7 with raw primitives."""
    env = _envelope(b"spec check")
    eph_pub, enc_static, body = env[1:33], env[33:114], env[114:]
    dh_e = BOB.dh(eph_pub)
    okm = hkdf(dh_e, eph_pub + BOB.public.x25519, b"XChat-v1-sealed-ephemeral", 64)
    aad = b"\x01" + eph_pub + BOB.public.encode() + (1).to_bytes(4, "big")
    assert AESGCM(okm[32:]).decrypt(bytes(12), enc_static, aad) == ALICE.public.encode()
    dh_s = ALICE.dh(BOB.public.x25519)
    assert dh_s == BOB.dh(ALICE.public.x25519)
    k_s = hkdf(dh_s, okm[:32] + enc_static, b"XChat-v1-sealed-static", 32)
    inner = AESGCM(k_s).decrypt(bytes(12), body, aad + enc_static)
    assert inner == ALICE_CERT + b"\x02" + b"spec check"


@pytest.mark.parametrize("content_type", [0, 1, 255])
def test_content_types(content_type: int) -> None:
    env = _envelope(b"x", content_type)
    assert sealed.unseal(BOB, env, SERVER_PUB, NOW).content_type == content_type


def test_bad_content_type() -> None:
    for ct in (-1, 256):
        with pytest.raises(DecodeError):
            sealed.seal(ALICE, ALICE_CERT, BOB.public, ct, b"x")


def test_size_limits() -> None:
    big = bytes(sealed.MAX_CONTENT_LEN)
    env = sealed.seal(ALICE, ALICE_CERT, BOB.public, 1, big)
    assert len(env) == sealed.MAX_SEALED_LEN
    assert sealed.unseal(BOB, env, SERVER_PUB, NOW).content == big
    with pytest.raises(TooLarge):
        sealed.seal(ALICE, ALICE_CERT, BOB.public, 1, big + b"x")
    with pytest.raises(TooLarge):
        sealed.unseal(BOB, env + b"x", SERVER_PUB, NOW)


def test_wrong_recipient_cannot_open() -> None:
    env = _envelope()
    with pytest.raises(DecryptionError):
        sealed.unseal(CAROL, env, SERVER_PUB, NOW)


def test_readdressed_to_other_device_is_refused() -> None:
    env = sealed.seal(ALICE, ALICE_CERT, BOB.public, 1, b"for device 3", recipient_device_id=3)
    assert sealed.unseal(BOB, env, SERVER_PUB, NOW, own_device_id=3).content == b"for device 3"
    for device in (1, 2, 4):
        with pytest.raises(DecryptionError):
            sealed.unseal(BOB, env, SERVER_PUB, NOW, own_device_id=device)


def test_every_single_byte_flip_is_rejected() -> None:
    env = _envelope(b"flip me")
    for i in range(len(env)):
        bad = bytearray(env)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            sealed.unseal(BOB, bytes(bad), SERVER_PUB, NOW)
    # Bit 255 of the ephemeral key is ignored by X25519 (RFC 7748 §5) but still refused.
    bad = bytearray(env)
    bad[32] ^= 0x80
    with pytest.raises(DecryptionError):
        sealed.unseal(BOB, bytes(bad), SERVER_PUB, NOW)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_corruption_is_rejected(data: st.DataObject) -> None:
    env = _envelope(b"fuzz")
    i = data.draw(st.integers(0, len(env) - 1))
    x = data.draw(st.integers(1, 255))
    bad = bytearray(env)
    bad[i] ^= x
    with pytest.raises(CryptoError):
        sealed.unseal(BOB, bytes(bad), SERVER_PUB, NOW)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_raises_typed_errors(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        sealed.unseal(BOB, blob, SERVER_PUB, NOW)


def test_truncation_and_extension() -> None:
    env = _envelope(b"truncate me")
    for n in range(len(env)):
        with pytest.raises(CryptoError):
            sealed.unseal(BOB, env[:n], SERVER_PUB, NOW)
    with pytest.raises(DecryptionError):
        sealed.unseal(BOB, env + b"\x00", SERVER_PUB, NOW)


def test_version_and_empty() -> None:
    env = _envelope()
    with pytest.raises(DecodeError):
        sealed.unseal(BOB, b"", SERVER_PUB, NOW)
    for v in (0x00, 0x03, 0xFF):
        with pytest.raises(UnsupportedVersion):
            sealed.unseal(BOB, bytes([v]) + env[1:], SERVER_PUB, NOW)


def test_expired_certificate() -> None:
    env = _envelope()
    assert sealed.unseal(BOB, env, SERVER_PUB, EXPIRES - 1).content == b"hello bob"
    with pytest.raises(ExpiredCertificate):
        sealed.unseal(BOB, env, SERVER_PUB, EXPIRES)


def test_wrong_server_key() -> None:
    env = _envelope()
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, env, OTHER_SERVER.public_key().public_bytes_raw(), NOW)
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, env, b"short", NOW)


def test_forged_certificate() -> None:
    forged = issue_sender_certificate(OTHER_SERVER, ALICE.public, 7, EXPIRES)
    env = sealed.seal(ALICE, forged, BOB.public, 1, b"x")
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, env, SERVER_PUB, NOW)
    tampered = bytearray(ALICE_CERT)
    tampered[67] ^= 1  # device id
    env = sealed.seal(ALICE, bytes(tampered), BOB.public, 1, b"x")
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, env, SERVER_PUB, NOW)


def test_seal_refuses_someone_elses_certificate() -> None:
    with pytest.raises(UntrustedIdentity):
        sealed.seal(CAROL, ALICE_CERT, BOB.public, 1, b"x")
    with pytest.raises(InvalidCertificate):
        sealed.seal(ALICE, ALICE_CERT[:-1], BOB.public, 1, b"x")


def _raw_seal(sender: IdentityKeyPair, inner: bytes) -> bytes:
    """Bypass seal()'s own checks, as a malicious client would."""
    return sealed._wrap(sealed.SEALED_VERSION, sender, BOB.public, 1, inner, b"", det_rng(b"r"))


def test_certificate_identity_mismatch() -> None:
    # Carol replays a certificate Alice once sent her, sealing with her own key.
    env = _raw_seal(CAROL, ALICE_CERT + b"\x01" + b"I am Alice")
    with pytest.raises(UntrustedIdentity):
        sealed.unseal(BOB, env, SERVER_PUB, NOW)


def test_malformed_inner() -> None:
    with pytest.raises(DecodeError):
        sealed.unseal(BOB, _raw_seal(ALICE, ALICE_CERT), SERVER_PUB, NOW)
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, _raw_seal(ALICE, bytes(CERTIFICATE_LEN + 1)), SERVER_PUB, NOW)
    bad_identity = bytearray(ALICE_CERT)
    bad_identity[1] = 0x07  # identity key version
    with pytest.raises(InvalidCertificate):
        sealed.unseal(BOB, _raw_seal(ALICE, bytes(bad_identity) + b"\x01"), SERVER_PUB, NOW)


def test_low_order_recipient_key_refused() -> None:
    bogus = IdentityPublicKey.from_parts(BOB.public.ed25519, bytes(32))
    with pytest.raises(DecodeError):
        sealed.seal(ALICE, ALICE_CERT, bogus, 1, b"x")


def test_low_order_ephemeral_refused() -> None:
    env = bytearray(_envelope())
    env[1:33] = bytes(32)
    with pytest.raises(DecryptionError):
        sealed.unseal(BOB, bytes(env), SERVER_PUB, NOW)


def test_replay_is_not_detected_here() -> None:
    """Sealed sender is stateless: replays are the ratchet's and the client's job."""
    env = _envelope()
    assert sealed.unseal(BOB, env, SERVER_PUB, NOW) == sealed.unseal(BOB, env, SERVER_PUB, NOW)


def test_fresh_ephemeral_per_envelope() -> None:
    a = sealed.seal(ALICE, ALICE_CERT, BOB.public, 1, b"same")
    b = sealed.seal(ALICE, ALICE_CERT, BOB.public, 1, b"same")
    assert a[1:33] != b[1:33] and a[33:] != b[33:]


# --- multiple recipients ----------------------------------------------------------------


def _multi(
    content: bytes = b"group hello", rng: Callable[[int], bytes] | None = None
) -> tuple[bytes, dict[tuple[IdentityPublicKey, int], bytes]]:
    return sealed.seal_multi(
        ALICE,
        ALICE_CERT,
        [(BOB.public, 1), (BOB.public, 2), (CAROL.public, 1)],
        3,
        content,
        rng or det_rng(b"m"),
    )


def test_multi_roundtrip() -> None:
    shared, headers = _multi()
    assert set(headers) == {(BOB.public, 1), (BOB.public, 2), (CAROL.public, 1)}
    assert len(shared) == sealed.MULTI_SHARED_OVERHEAD + len(b"group hello")
    for (identity, device), header in headers.items():
        assert len(header) == sealed.MULTI_HEADER_LEN
        own = BOB if identity == BOB.public else CAROL
        m = sealed.unseal_multi(own, header, shared, SERVER_PUB, NOW, own_device_id=device)
        assert (m.content, m.content_type, m.sender, m.device_id) == (
            b"group hello",
            3,
            ALICE.public,
            7,
        )
        # The delivered form header || shared goes through plain unseal().
        m2 = sealed.unseal(own, header + shared, SERVER_PUB, NOW, own_device_id=device)
        assert m2 == m
    assert ALICE.public.encode() not in shared + b"".join(headers.values())


def test_multi_headers_are_bound_to_recipient() -> None:
    shared, headers = _multi()
    with pytest.raises(DecryptionError):  # Carol's header used by Bob
        sealed.unseal_multi(BOB, headers[(CAROL.public, 1)], shared, SERVER_PUB, NOW)
    with pytest.raises(DecryptionError):  # Bob device 2's header on device 1
        sealed.unseal_multi(BOB, headers[(BOB.public, 2)], shared, SERVER_PUB, NOW)


def test_multi_header_bound_to_shared_ciphertext() -> None:
    _shared1, headers1 = _multi(b"one", det_rng(b"1"))
    shared2, _ = _multi(b"two", det_rng(b"2"))
    with pytest.raises(DecryptionError):
        sealed.unseal_multi(BOB, headers1[(BOB.public, 1)], shared2, SERVER_PUB, NOW)


def test_multi_insider_cannot_substitute_payload() -> None:
    """Carol learns M; she re-encrypts a different payload under M and pairs it with Bob's
    header. The header binds SHA-256(shared), so Bob refuses it."""
    shared, headers = _multi(b"original", det_rng(b"k"))
    message_key = det_rng(b"k")(32)  # seal_multi draws M first
    key = hkdf(message_key, b"", sealed.LABEL_MULTI_PAYLOAD, 32)
    head = shared[:33]  # version || e.pub (the ephemeral key derived from M)
    assert AESGCM(key).decrypt(bytes(12), shared[33:], head).endswith(b"original")
    forged_inner = ALICE_CERT + b"\x03" + b"forged by carol"
    forged = head + AESGCM(key).encrypt(bytes(12), forged_inner, head)
    with pytest.raises(DecryptionError):
        sealed.unseal_multi(BOB, headers[(BOB.public, 1)], forged, SERVER_PUB, NOW)


def test_multi_header_is_49_bytes_and_matches_spec() -> None:
    """Re-derive Bob's header from PROTOCOL Part I §8.1 with raw primitives."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as chmac
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    shared, headers = _multi(b"spec", det_rng(b"s"))
    m = det_rng(b"s")(32)
    eph = X25519PrivateKey.from_private_bytes(hkdf(m, b"", b"XChat-v1-sealed-multi-ephemeral", 32))
    eph_pub = eph.public_key().public_bytes_raw()
    assert shared[:33] == b"\x02" + eph_pub
    dh_e = eph.exchange(X25519PublicKey.from_public_bytes(BOB.public.x25519))
    info = b"XChat-v1-sealed-multi-wrap" + BOB.public.encode() + (1).to_bytes(4, "big")
    pad = hkdf(dh_e, eph_pub + BOB.public.x25519, info, 32)
    masked = bytes(a ^ b for a, b in zip(m, pad, strict=True))
    k_auth = hkdf(
        ALICE.dh(BOB.public.x25519), eph_pub + BOB.public.x25519, b"XChat-v1-sealed-multi-auth", 32
    )
    mac = chmac.HMAC(k_auth, hashes.SHA256())
    mac.update(
        b"\x02"
        + masked
        + ALICE.public.encode()
        + BOB.public.encode()
        + (1).to_bytes(4, "big")
        + hashlib.sha256(shared).digest()
    )
    assert headers[(BOB.public, 1)] == b"\x02" + masked + mac.finalize()[:16]
    assert sealed.MULTI_HEADER_LEN == 49


def test_multi_insider_cannot_forge_header_for_sender() -> None:
    """Carol knows M (she is a recipient) and builds a header for Bob naming Alice: without
    Alice's static DH with Bob she cannot compute the tag."""
    shared, headers = _multi(b"original", det_rng(b"f"))
    header = headers[(BOB.public, 1)]
    forged = header[:33] + bytes(16)
    with pytest.raises(DecryptionError):
        sealed.unseal_multi(BOB, forged, shared, SERVER_PUB, NOW)


def test_multi_every_byte_flip_rejected() -> None:
    shared, headers = _multi(b"flip")
    blob = headers[(BOB.public, 1)] + shared
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            sealed.unseal(BOB, bytes(bad), SERVER_PUB, NOW)


def test_multi_truncation_and_version() -> None:
    shared, headers = _multi()
    header = headers[(BOB.public, 1)]
    with pytest.raises(DecodeError):
        sealed.unseal_multi(BOB, header[:-1], shared, SERVER_PUB, NOW)
    with pytest.raises(DecodeError):
        sealed.unseal_multi(BOB, header, shared[:10], SERVER_PUB, NOW)
    with pytest.raises(UnsupportedVersion):
        sealed.unseal_multi(BOB, header, b"\x01" + shared[1:], SERVER_PUB, NOW)
    with pytest.raises(TooLarge):
        sealed.unseal_multi(
            BOB, header, b"\x02" * (sealed.MAX_MULTI_SHARED_LEN + 1), SERVER_PUB, NOW
        )


def test_multi_identity_mismatch() -> None:
    """Carol seals a group message carrying Alice's certificate."""
    shared, headers = sealed.seal_multi(CAROL, CAROL_CERT, [(BOB.public, 1)], 1, b"x")
    assert sealed.unseal(BOB, headers[(BOB.public, 1)] + shared, SERVER_PUB, NOW).sender == (
        CAROL.public
    )
    with pytest.raises(UntrustedIdentity):
        sealed.seal_multi(CAROL, ALICE_CERT, [(BOB.public, 1)], 1, b"x")


GOLDEN_SHA256 = "2d148b5d7b6d99a2cf44730a255863d6cc8ff2fe55978e6941fadf1b03f0d0b3"
