"""Ed25519 signature verification through libsodium (PROTOCOL.md Part I §1.1).

Why not pyca/cryptography here: signing stays in pyca (OpenSSL), but one verification there
costs ~93 µs on this machine against ~55 µs in libsodium (PyNaCl's bundled copy), and
verification dominates the group receive path (one signature per group message) and a fifth
of session setup. libsodium is a maintained binding with its own RFC 8032 test vectors; ours
are in ``tests/crypto/test_ed25519.py``.

The acceptance rule is libsodium's, and it is *stricter* than OpenSSL's, which matters
because every client must accept exactly the same signatures (a group update one member
accepts and another rejects would split the group's state):

- ``S`` must be canonical (``S < L``), as in OpenSSL;
- the public key ``A`` must be a canonical encoding of a point that is not of small order
  (OpenSSL accepts the identity point, under which ``R = identity, S = 0`` verifies for every
  message);
- ``R`` must not be of small order;
- the equation is the cofactorless one, ``[S]B = R + [k]A``.

Public keys are checked once, when they are decoded (:func:`check_public_key`), so a key
that could never verify anything is refused at the boundary with a DecodeError.
"""

from __future__ import annotations

from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError as _BadSignature

from xchat.errors import DecodeError, InvalidSignature

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


def check_public_key(public_key: bytes) -> None:
    """Refuse a public key that libsodium would never verify under (DecodeError).

    Rejects wrong lengths, non-canonical encodings and points of small order.
    """
    if len(public_key) != PUBLIC_KEY_LEN:
        raise DecodeError("Ed25519 public key must be 32 bytes")
    if not _sodium.crypto_core_ed25519_is_valid_point(public_key):
        raise DecodeError("invalid Ed25519 public key")


def verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Check a detached Ed25519 signature; InvalidSignature if it does not verify."""
    if len(signature) != SIGNATURE_LEN or len(public_key) != PUBLIC_KEY_LEN:
        raise InvalidSignature("signature must be 64 bytes under a 32-byte key")
    try:
        # PyNaCl exposes only the combined form; it verifies ``signature || message``.
        _sodium.crypto_sign_open(signature + message, public_key)
    except (_BadSignature, ValueError, TypeError) as exc:
        raise InvalidSignature("signature does not verify") from exc
