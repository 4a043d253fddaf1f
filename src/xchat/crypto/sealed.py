"""Sealed sender: hide who sent a message from the relay (PROTOCOL.md Part I §7–§8).

Modelled on Signal's sealed sender v1 (libsignal ``rust/protocol/src/sealed_sender.rs``,
"Sealed Sender" blog post 2018), with AES-256-GCM instead of AES-CTR + HMAC. Algorithm,
for sender S, recipient R (identity keys), recipient device ``d``, inner payload ``P``:

1. Fresh ephemeral X25519 pair ``e``. ``dh_e = X25519(e, R.x25519)``.
2. ``chain_key || k_e = HKDF(ikm=dh_e, salt=e.pub || R.x25519, info=LABEL_EPHEMERAL, L=64)``.
3. ``aad = version || e.pub || R.IdentityKey(65) || u32 d`` (binds the recipient identity
   and device), ``enc_static = AES-256-GCM(k_e, nonce=0^12, S.IdentityKey(65), aad)``.
4. ``dh_s = X25519(S.x25519, R.x25519)`` (static-static: only S's identity key can compute
   it, so decrypting step 5 authenticates S to R, deniably, as in Signal).
5. ``k_s = HKDF(ikm=dh_s, salt=chain_key || enc_static, info=LABEL_STATIC, L=32)``,
   ``enc_msg = AES-256-GCM(k_s, nonce=0^12, P, aad || enc_static)``.
6. Envelope = ``version || e.pub || enc_static || enc_msg``.

``P = SenderCertificate(142) || content_type u8 || content``. The recipient checks the
certificate (server signature, expiry) and that its identity equals the static key that
authenticated step 5 (else :class:`~xchat.errors.UntrustedIdentity`: someone replaying a
certificate they were sent).

Every key is used for exactly one AEAD encryption (each is derived from a fresh ephemeral
DH, or salted with the ``chain_key`` derived from it), so a fixed all-zero nonce is safe.

The multi-recipient variant (:func:`seal_multi`, PROTOCOL Part I §8) follows Signal's sealed
sender v2: ``P`` is encrypted once under a random key ``M``, one ephemeral key derived from
``M`` serves every recipient, and each recipient device gets only ``M`` masked with a key
from the ephemeral DH plus a 16-byte tag keyed by the static-static DH that binds the
sender, the recipient device and ``SHA-256(shared ciphertext)`` (49 bytes per device).

Replays are not detected here: a sealed envelope carries no state. The ratchet layer
refuses a reused message key (``DuplicateMessage``) and the relay de-duplicates envelope
ids; a client must not act on a payload before the ratchet accepted it.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _crypto_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.crypto.certificate import CERTIFICATE_LEN, SenderCertificate
from xchat.crypto.keys import (
    IDENTITY_KEY_LEN,
    IdentityKeyPair,
    IdentityPublicKey,
    Rng,
    hkdf,
    x25519_dh,
)
from xchat.errors import (
    DecodeError,
    DecryptionError,
    InvalidCertificate,
    TooLarge,
    UnsupportedVersion,
    UntrustedIdentity,
)

# --- constants (PROTOCOL Part I §7.1) ---------------------------------------------------------

#: Version byte of a single-recipient sealed envelope.
SEALED_VERSION: Final = 0x01
#: Version byte of a multi-recipient header (and of a delivered ``header || shared``).
SEALED_MULTI_VERSION: Final = 0x02

LABEL_EPHEMERAL: Final = b"XChat-v1-sealed-ephemeral"
LABEL_STATIC: Final = b"XChat-v1-sealed-static"
LABEL_MULTI_PAYLOAD: Final = b"XChat-v1-sealed-multi-payload"
LABEL_MULTI_EPHEMERAL: Final = b"XChat-v1-sealed-multi-ephemeral"
LABEL_MULTI_WRAP: Final = b"XChat-v1-sealed-multi-wrap"
LABEL_MULTI_AUTH: Final = b"XChat-v1-sealed-multi-auth"

#: Default recipient device: the account's first device (PROTOCOL Part III registers device 1).
DEFAULT_DEVICE_ID: Final = 1

#: Largest ``content`` (a session message) we seal or accept. Equal to the session layer's
#: parse limit (``constants.MAX_MESSAGE_LEN``): a padded plaintext is at most 128 KiB,
#: so this leaves ample room for ratchet and PQXDH headers.
MAX_CONTENT_LEN: Final = 256 * 1024

_ZERO_NONCE: Final = bytes(12)
_TAG: Final = 16
_KEY: Final = 32
_ENC_STATIC_LEN: Final = IDENTITY_KEY_LEN + _TAG  # 81
_DEVICE: Final = struct.Struct(">I")
_INNER_MIN: Final = CERTIFICATE_LEN + 1  # certificate || content_type

#: ``version || e.pub || enc_static``
HEADER_PREFIX_LEN: Final = 1 + 32 + _ENC_STATIC_LEN  # 114
#: Fixed bytes an envelope adds around ``content``.
SEALED_OVERHEAD: Final = HEADER_PREFIX_LEN + _TAG + _INNER_MIN  # 273
MAX_SEALED_LEN: Final = SEALED_OVERHEAD + MAX_CONTENT_LEN

#: Truncated HMAC tag authenticating the sender to one recipient device (PROTOCOL Part I §8).
MULTI_TAG_LEN: Final = 16
#: ``version || M XOR pad_i (32) || tag_i (16)``
MULTI_HEADER_LEN: Final = 1 + _KEY + MULTI_TAG_LEN  # 49
#: ``version || e.pub || AES-GCM(P)``: fixed bytes the shared part adds around ``content``.
MULTI_SHARED_OVERHEAD: Final = 1 + 32 + _TAG + _INNER_MIN  # 192
MAX_MULTI_SHARED_LEN: Final = MULTI_SHARED_OVERHEAD + MAX_CONTENT_LEN
#: A recipient is an identity plus one of its devices: each device gets its own header.
Recipient = tuple[IdentityPublicKey, int]


@dataclass(frozen=True)
class UnsealedMessage:
    """What :func:`unseal` proves: ``sender`` (device ``device_id``) sent ``content``."""

    certificate: SenderCertificate
    sender: IdentityPublicKey
    device_id: int
    content_type: int
    content: bytes

    @property
    def sender_address(self) -> str:
        """The sender's account address (from the verified identity key)."""
        return self.sender.address()


# --- the two stages ---------------------------------------------------------------------


def _aad(version: int, eph_pub: bytes, recipient: IdentityPublicKey, device_id: int) -> bytes:
    return bytes([version]) + eph_pub + recipient.encode() + _DEVICE.pack(device_id)


def _check_device(device_id: int) -> None:
    if not 0 <= device_id <= 0xFFFFFFFF:
        raise DecodeError("device id must be a u32")


def _aead_open(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, ciphertext, aad)
    except InvalidTag as exc:
        raise DecryptionError("sealed envelope does not decrypt") from exc


def _wrap(
    version: int,
    sender: IdentityKeyPair,
    recipient: IdentityPublicKey,
    device_id: int,
    payload: bytes,
    extra_aad: bytes,
    rng: Rng,
) -> bytes:
    """Stages 1–2 (module docstring steps 1–6) around ``payload``."""
    _check_device(device_id)
    eph = X25519PrivateKey.from_private_bytes(rng(32))
    eph_pub = eph.public_key().public_bytes_raw()
    try:
        dh_e = x25519_dh(eph, recipient.x25519)
        dh_s = sender.dh(recipient.x25519)
    except DecryptionError as exc:
        raise DecodeError("recipient identity has an unusable X25519 key") from exc
    okm = hkdf(dh_e, eph_pub + recipient.x25519, LABEL_EPHEMERAL, 2 * _KEY)
    chain_key, k_e = okm[:_KEY], okm[_KEY:]
    aad = _aad(version, eph_pub, recipient, device_id)
    enc_static = AESGCM(k_e).encrypt(_ZERO_NONCE, sender.public.encode(), aad)
    k_s = hkdf(dh_s, chain_key + enc_static, LABEL_STATIC, _KEY)
    body = AESGCM(k_s).encrypt(_ZERO_NONCE, payload, aad + enc_static + extra_aad)
    return bytes([version]) + eph_pub + enc_static + body


def _unwrap(
    own: IdentityKeyPair, data: bytes, device_id: int, extra_aad: bytes
) -> tuple[IdentityPublicKey, bytes]:
    """Inverse of :func:`_wrap` (length and version already checked by the caller)."""
    _check_device(device_id)
    version, eph_pub = data[0], data[1:33]
    enc_static, body = data[33:HEADER_PREFIX_LEN], data[HEADER_PREFIX_LEN:]
    okm = hkdf(own.dh(eph_pub), eph_pub + own.public.x25519, LABEL_EPHEMERAL, 2 * _KEY)
    chain_key, k_e = okm[:_KEY], okm[_KEY:]
    aad = _aad(version, eph_pub, own.public, device_id)
    sender = IdentityPublicKey.decode(_aead_open(k_e, enc_static, aad))
    k_s = hkdf(own.dh(sender.x25519), chain_key + enc_static, LABEL_STATIC, _KEY)
    return sender, _aead_open(k_s, body, aad + enc_static + extra_aad)


# --- inner payload ----------------------------------------------------------------------


def _inner(sender: IdentityKeyPair, certificate: bytes, content_type: int, content: bytes) -> bytes:
    if not 0 <= content_type <= 0xFF:
        raise DecodeError("content type must fit in one byte")
    if len(content) > MAX_CONTENT_LEN:
        raise TooLarge(f"sealed content exceeds {MAX_CONTENT_LEN} bytes")
    cert = SenderCertificate.decode(certificate)
    if cert.identity != sender.public:
        raise UntrustedIdentity("sender certificate is for another identity")
    return certificate + bytes([content_type]) + content


def _open_inner(
    sender: IdentityPublicKey, inner: bytes, server_signing_key: bytes, now_ms: int
) -> UnsealedMessage:
    if len(inner) < _INNER_MIN:
        raise DecodeError("sealed payload too short")
    try:
        cert = SenderCertificate.decode(inner[:CERTIFICATE_LEN])
    except DecodeError as exc:
        raise InvalidCertificate("malformed sender certificate") from exc
    cert.verify(server_signing_key, now_ms)
    if cert.identity != sender:
        raise UntrustedIdentity("sender certificate does not match the sealing identity")
    return UnsealedMessage(
        certificate=cert,
        sender=sender,
        device_id=cert.device_id,
        content_type=inner[CERTIFICATE_LEN],
        content=inner[CERTIFICATE_LEN + 1 :],
    )


# --- single recipient (PROTOCOL Part I §7) ----------------------------------------------------


def seal(
    sender: IdentityKeyPair,
    certificate: bytes,
    recipient: IdentityPublicKey,
    content_type: int,
    content: bytes,
    rng: Rng = os.urandom,
    *,
    recipient_device_id: int = DEFAULT_DEVICE_ID,
) -> bytes:
    """Seal ``content`` (a session message) from ``sender`` to one device of ``recipient``.

    ``certificate`` must be the sender's own certificate (UntrustedIdentity otherwise); it is
    not verified here (the sender may not know the server key). Sizes: TooLarge above
    :data:`MAX_CONTENT_LEN`. Output length is ``SEALED_OVERHEAD + len(content)``.
    """
    inner = _inner(sender, certificate, content_type, content)
    return _wrap(SEALED_VERSION, sender, recipient, recipient_device_id, inner, b"", rng)


def unseal(
    own: IdentityKeyPair,
    data: bytes,
    server_signing_key: bytes,
    now_ms: int,
    *,
    own_device_id: int = DEFAULT_DEVICE_ID,
) -> UnsealedMessage:
    """Open an envelope addressed to ``own`` (device ``own_device_id``) (PROTOCOL Part I §7.3).

    Accepts both a single-recipient envelope (version 0x01) and a delivered multi-recipient
    ``header || shared`` (version 0x02). Raises DecodeError / UnsupportedVersion / TooLarge
    on malformed input, DecryptionError (opaque) if it is not for us or was altered,
    InvalidCertificate / ExpiredCertificate for a bad certificate, UntrustedIdentity if the
    certificate names someone other than the key that sealed the envelope.
    """
    if not data:
        raise DecodeError("empty sealed envelope")
    if data[0] == SEALED_MULTI_VERSION:
        return unseal_multi(
            own,
            data[:MULTI_HEADER_LEN],
            data[MULTI_HEADER_LEN:],
            server_signing_key,
            now_ms,
            own_device_id=own_device_id,
        )
    if data[0] != SEALED_VERSION:
        raise UnsupportedVersion(f"unknown sealed envelope version {data[0]}")
    if len(data) > MAX_SEALED_LEN:
        raise TooLarge("sealed envelope too large")
    if len(data) < SEALED_OVERHEAD:
        raise DecodeError("sealed envelope truncated")
    sender, inner = _unwrap(own, bytes(data), own_device_id, b"")
    return _open_inner(sender, inner, server_signing_key, now_ms)


# --- multiple recipients (PROTOCOL Part I §8) -------------------------------------------------


def _multi_ephemeral(message_key: bytes) -> tuple[X25519PrivateKey, bytes]:
    """The one ephemeral key of a multi-recipient message, derived from ``M`` (§8.1) so
    a recipient can check that the sender used the ``e.pub`` that ``M`` implies."""
    eph = X25519PrivateKey.from_private_bytes(hkdf(message_key, b"", LABEL_MULTI_EPHEMERAL, _KEY))
    return eph, eph.public_key().public_bytes_raw()


def _multi_pad(dh_e: bytes, eph_pub: bytes, recipient: IdentityPublicKey, device_id: int) -> bytes:
    info = LABEL_MULTI_WRAP + recipient.encode() + _DEVICE.pack(device_id)
    return hkdf(dh_e, eph_pub + recipient.x25519, info, _KEY)


def _multi_tag(
    dh_s: bytes,
    eph_pub: bytes,
    masked: bytes,
    sender: IdentityPublicKey,
    recipient: IdentityPublicKey,
    device_id: int,
    digest: bytes,
) -> bytes:
    k_auth = hkdf(dh_s, eph_pub + recipient.x25519, LABEL_MULTI_AUTH, _KEY)
    mac = _crypto_hmac.HMAC(k_auth, hashes.SHA256())
    mac.update(
        bytes([SEALED_MULTI_VERSION])
        + masked
        + sender.encode()
        + recipient.encode()
        + _DEVICE.pack(device_id)
        + digest
    )
    return mac.finalize()[:MULTI_TAG_LEN]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def seal_multi(
    sender: IdentityKeyPair,
    certificate: bytes,
    recipients: Iterable[Recipient],
    content_type: int,
    content: bytes,
    rng: Rng = os.urandom,
) -> tuple[bytes, dict[Recipient, bytes]]:
    """Encrypt once for many devices: ``(shared, {(identity, device_id): header})``
    (PROTOCOL Part I §8.1, after Signal's sealed sender v2).

    ``shared = 0x02 || e.pub || AES-256-GCM(k_p, 0^12, P, aad=0x02 || e.pub)`` with ``M``
    random, ``e = HKDF(M, LABEL_MULTI_EPHEMERAL)`` and ``k_p = HKDF(M, LABEL_MULTI_PAYLOAD)``;
    each 49-byte header is ``0x02 || M XOR pad_i || tag_i``, where ``pad_i`` comes from
    ``X25519(e, R_i)`` and ``tag_i`` is an HMAC under a key from the static-static
    ``X25519(S, R_i)`` over the masked key, both identities, the device and
    ``SHA-256(shared)``: a recipient (who learns ``M``) can neither pair another header with
    a different payload nor forge a header in the sender's name. A device receives
    ``header || shared`` (:func:`unseal` accepts that) or the two parts separately.
    """
    inner = _inner(sender, certificate, content_type, content)
    message_key = rng(_KEY)
    eph, eph_pub = _multi_ephemeral(message_key)
    payload_key = hkdf(message_key, b"", LABEL_MULTI_PAYLOAD, _KEY)
    head = bytes([SEALED_MULTI_VERSION]) + eph_pub
    shared = head + AESGCM(payload_key).encrypt(_ZERO_NONCE, inner, head)
    digest = hashlib.sha256(shared).digest()
    version = bytes([SEALED_MULTI_VERSION])
    headers: dict[Recipient, bytes] = {}
    for identity, device_id in recipients:
        _check_device(device_id)
        try:
            dh_e = x25519_dh(eph, identity.x25519)
            dh_s = sender.dh(identity.x25519)
        except DecryptionError as exc:
            raise DecodeError("recipient identity has an unusable X25519 key") from exc
        masked = _xor(message_key, _multi_pad(dh_e, eph_pub, identity, device_id))
        tag = _multi_tag(dh_s, eph_pub, masked, sender.public, identity, device_id, digest)
        headers[(identity, device_id)] = version + masked + tag
    return shared, headers


def unseal_multi(
    own: IdentityKeyPair,
    header: bytes,
    shared: bytes,
    server_signing_key: bytes,
    now_ms: int,
    *,
    own_device_id: int = DEFAULT_DEVICE_ID,
) -> UnsealedMessage:
    """Open our ``header`` and the ``shared`` ciphertext (PROTOCOL Part I §8.3; errors as
    :func:`unseal`, a wrong tag or ephemeral key is the opaque DecryptionError)."""
    if len(header) != MULTI_HEADER_LEN or len(shared) < MULTI_SHARED_OVERHEAD:
        raise DecodeError("multi-recipient envelope truncated")
    if header[0] != SEALED_MULTI_VERSION or shared[0] != SEALED_MULTI_VERSION:
        raise UnsupportedVersion("unknown multi-recipient envelope version")
    if len(shared) > MAX_MULTI_SHARED_LEN:
        raise TooLarge("multi-recipient payload too large")
    _check_device(own_device_id)
    header, shared = bytes(header), bytes(shared)
    eph_pub, masked, tag = shared[1:33], header[1 : 1 + _KEY], header[1 + _KEY :]
    pad = _multi_pad(own.dh(eph_pub), eph_pub, own.public, own_device_id)
    message_key = _xor(masked, pad)
    if not _hmac.compare_digest(_multi_ephemeral(message_key)[1], eph_pub):
        raise DecryptionError("sealed envelope does not decrypt")
    payload_key = hkdf(message_key, b"", LABEL_MULTI_PAYLOAD, _KEY)
    inner = _aead_open(payload_key, shared[33:], shared[:33])
    if len(inner) < _INNER_MIN:
        raise DecodeError("sealed payload too short")
    try:
        sender = SenderCertificate.decode(inner[:CERTIFICATE_LEN]).identity
        dh_s = own.dh(sender.x25519)
    except DecodeError as exc:
        raise InvalidCertificate("malformed sender certificate") from exc
    except DecryptionError:
        raise DecryptionError("sealed envelope does not decrypt") from None
    digest = hashlib.sha256(shared).digest()
    expected = _multi_tag(dh_s, eph_pub, masked, sender, own.public, own_device_id, digest)
    if not _hmac.compare_digest(expected, tag):
        raise DecryptionError("sealed envelope does not decrypt")
    return _open_inner(sender, inner, server_signing_key, now_ms)
