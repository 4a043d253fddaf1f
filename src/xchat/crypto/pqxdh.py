"""PQXDH key agreement, X25519 + ML-KEM-1024 (Signal PQXDH rev. 3; PROTOCOL Part II §3).

Algorithm (PQXDH §3.3 "Sending the initial message", §3.4 "Receiving"):

1. Alice verifies both prekey signatures in Bob's bundle, else aborts (InvalidSignature).
2. Alice makes an ephemeral X25519 key ``EK_A`` and computes
   ``DH1 = DH(IK_A, SPK_B)``, ``DH2 = DH(EK_A, IK_B)``, ``DH3 = DH(EK_A, SPK_B)`` and, when
   the bundle has a one-time prekey, ``DH4 = DH(EK_A, OPK_B)``; every DH refuses an all-zero
   output (low-order point).
3. ``(CT, SS) = ML-KEM-1024.Encaps(PQPK_B)``.
4. ``SK = HKDF-SHA256(ikm = F || DH1 || DH2 || DH3 [|| DH4] || SS, salt = 0^32,
   info = "XChat_PQXDH_X25519_MLKEM1024_SHA-256_v1", L = 32)`` with ``F = 0xFF^32``.
5. ``AD = IdentityKey_A(65) || IdentityKey_B(65)`` (our 0x01-prefixed identity encoding).

Deviation: PQXDH uses one Curve25519 identity key for both XEdDSA signatures and DH. We use
two keys derived from one seed (PROTOCOL Part I §1): Ed25519 for signatures and X25519 for DH, so
``IK`` in the DH terms means the identity's X25519 key. pyca/cryptography has no XEdDSA and
we do not write primitives. Both public keys are inside the 65-byte identity encoding that
enters AD, so both are authenticated by the session.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xchat.crypto import constants as C
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey, hkdf, x25519_dh
from xchat.crypto.prekeys import (
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
    mlkem_public_from_bytes,
)
from xchat.errors import DecodeError

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class InitiatorKeys:
    """Alice's PQXDH result: the secret, AD, and what goes into her initial message."""

    shared_secret: bytes = field(repr=False)  # SK, the initial root key
    associated_data: bytes  # IK_A || IK_B
    base_key: bytes  # EK_A public, 32 bytes
    kem_ciphertext: bytes  # 1568 bytes
    signed_prekey_id: int
    signed_prekey: bytes  # SPK_B, Bob's initial ratchet public key
    kem_prekey_id: int
    kem_last_resort: bool
    one_time_prekey_id: int | None


def derive_secret(dh_outputs: list[bytes], kem_secret: bytes) -> bytes:
    """PQXDH §2.2 KDF: HKDF(F || DH1..DHn || SS, salt = 0^32, info, 32)."""
    ikm = C.PQXDH_F + b"".join(dh_outputs) + kem_secret
    return hkdf(ikm, C.PQXDH_SALT, C.PQXDH_INFO, C.SHARED_SECRET_LEN)


def associated_data(initiator: IdentityPublicKey, responder: IdentityPublicKey) -> bytes:
    """PQXDH §3.3: ``AD = Encode(IK_A) || Encode(IK_B)``."""
    return initiator.encode() + responder.encode()


def initiate(own: IdentityKeyPair, bundle: PreKeyBundle, rng: Rng = os.urandom) -> InitiatorKeys:
    """Alice's side (PQXDH §3.3). Raises InvalidSignature on a forged bundle,
    DecodeError on a malformed KEM key, DecryptionError on a low-order curve key."""
    bundle.verify()
    kem_public = mlkem_public_from_bytes(bundle.kem_prekey)
    ephemeral = X25519PrivateKey.from_private_bytes(rng(C.X25519_LEN))
    dhs = [
        own.dh(bundle.signed_prekey),
        x25519_dh(ephemeral, bundle.identity_key.x25519),
        x25519_dh(ephemeral, bundle.signed_prekey),
    ]
    if bundle.one_time_prekey is not None:
        dhs.append(x25519_dh(ephemeral, bundle.one_time_prekey))
    kem_secret, kem_ciphertext = kem_public.encapsulate()
    return InitiatorKeys(
        shared_secret=derive_secret(dhs, kem_secret),
        associated_data=associated_data(own.public, bundle.identity_key),
        base_key=ephemeral.public_key().public_bytes_raw(),
        kem_ciphertext=kem_ciphertext,
        signed_prekey_id=bundle.signed_prekey_id,
        signed_prekey=bundle.signed_prekey,
        kem_prekey_id=bundle.kem_prekey_id,
        kem_last_resort=bundle.kem_last_resort,
        one_time_prekey_id=bundle.one_time_prekey_id,
    )


def respond(
    own: IdentityKeyPair,
    initiator: IdentityPublicKey,
    base_key: bytes,
    kem_ciphertext: bytes,
    signed: SignedPreKeyRecord,
    kem: KemPreKeyRecord,
    one_time: OneTimePreKeyRecord | None,
) -> tuple[bytes, bytes]:
    """Bob's side (PQXDH §3.4): returns ``(SK, AD)``.

    The caller has looked the prekeys up by the ids in Alice's message. Nothing here can
    tell a wrong SK from a right one: the first AEAD decryption with it is the check.
    """
    if len(kem_ciphertext) != C.MLKEM1024_CIPHERTEXT_LEN:
        raise DecodeError("ML-KEM-1024 ciphertext must be 1568 bytes")
    dhs = [
        x25519_dh(signed.private_key, initiator.x25519),
        own.dh(base_key),
        x25519_dh(signed.private_key, base_key),
    ]
    if one_time is not None:
        dhs.append(x25519_dh(one_time.private_key, base_key))
    try:
        kem_secret = kem.private_key.decapsulate(kem_ciphertext)
    except ValueError as exc:  # pragma: no cover - length already checked; ML-KEM never fails
        raise DecodeError("invalid ML-KEM ciphertext") from exc
    return derive_secret(dhs, kem_secret), associated_data(initiator, own.public)
