"""RFC 9497 oblivious pseudorandom functions over ristretto255-SHA512.

Two modes are offered, with the RFC's names and byte layouts so any conforming
implementation interoperates:

- **OPRF** (mode 0x00): a client learns ``F(sk, input)`` without the server learning
  ``input`` or the output (used by the backup realm to harden a PIN: the realm rate-limits
  guesses without ever seeing them).
- **VOPRF** (mode 0x01): the same, plus a batched DLEQ proof (RFC 9497 §2.2) that the server
  used the key ``pk`` it published. Anonymous access tokens (PROTOCOL.md Part XI) rely on it:
  a client checks that its tokens were signed with the one key everyone gets, so the issuer
  cannot tag a batch with a per-account key and later recognise it on redemption.

The group is libsodium's ristretto255 through rbcl; nothing here implements field or curve
arithmetic. What is written out is the RFC's glue: ``expand_message_xmd`` (RFC 9380 §5.3.1)
over hashlib's SHA-512, the length-prefixed transcripts, and the domain-separation tags.

Encodings follow the RFC: a scalar is 32 bytes little-endian (canonical, below the group
order), an element is its 32-byte ristretto255 encoding, a proof is ``c || s`` (64 bytes),
an output is 64 bytes (SHA-512). Every received element is checked to be a valid, non-identity
encoding; every received scalar to be canonical. The randomness of ``blind`` and of the
proof nonce can be pinned by keyword for the known-answer tests, as Fernet's
``_encrypt_from_parts`` does.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence

import rbcl

from xchat.errors import DecodeError, InvalidProof, OprfError

MODE_OPRF = 0x00
MODE_VOPRF = 0x01
SUITE = b"ristretto255-SHA512"

NS = 32  # serialized scalar
NE = 32  # serialized element
NH = 64  # hash output (SHA-512)
PROOF_LEN = 2 * NS
MAX_BATCH = 1024  # a batch this large is a request for abuse, not for tokens

# 2^252 + 27742317777372353535851937790883648493 (RFC 9496 §4)
ORDER = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes(NE)
# RFC 9496's generator encoding; ScalarMultGen uses libsodium's base multiplication.
GENERATOR = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")

_SHA512_BLOCK = 128


def context_string(mode: int) -> bytes:
    """``"OPRFV1-" || I2OSP(mode, 1) || "-" || identifier`` (RFC 9497 §3.1)."""
    if mode not in (MODE_OPRF, MODE_VOPRF):
        raise OprfError(f"unsupported OPRF mode {mode!r}")
    return b"OPRFV1-" + bytes([mode]) + b"-" + SUITE


def _lp(data: bytes) -> bytes:
    """``I2OSP(len(data), 2) || data``: the RFC's transcript framing."""
    return struct.pack(">H", len(data)) + data


# --- hashing to the group and to scalars -----------------------------------------------


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 §5.3.1 with SHA-512 (b_in_bytes = 64, s_in_bytes = 128)."""
    ell = -(-length // 64)
    if ell > 255 or length > 0xFFFF or len(dst) > 255:
        raise OprfError("expand_message_xmd: length or DST too long")
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(_SHA512_BLOCK) + msg + struct.pack(">H", length) + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    bi = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [bi]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, bi, strict=True))
        bi = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        out.append(bi)
    return b"".join(out)[:length]


def hash_to_group(msg: bytes, mode: int = MODE_OPRF) -> bytes:
    """hash_to_ristretto255 (RFC 9380 App. B) with DST ``"HashToGroup-" || contextString``:
    64 uniform bytes through libsodium's one-way map."""
    uniform = expand_message_xmd(msg, b"HashToGroup-" + context_string(mode), 64)
    return bytes(rbcl.crypto_core_ristretto255_from_hash(uniform))


def hash_to_scalar(msg: bytes, mode: int = MODE_OPRF, *, dst: bytes | None = None) -> bytes:
    """64 uniform bytes read as a little-endian integer, reduced modulo the group order.
    Default DST ``"HashToScalar-" || contextString`` (RFC 9497 §4.1)."""
    if dst is None:
        dst = b"HashToScalar-" + context_string(mode)
    uniform = expand_message_xmd(msg, dst, 64)
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(uniform))


# --- (de)serialization and group helpers --------------------------------------------------


def deserialize_scalar(buf: bytes) -> bytes:
    """A canonical 32-byte little-endian scalar in [0, order) (RFC 9497 §4.1)."""
    if not isinstance(buf, bytes | bytearray) or len(buf) != NS:
        raise DecodeError("an OPRF scalar is 32 bytes")
    if int.from_bytes(buf, "little") >= ORDER:
        raise DecodeError("OPRF scalar is not canonical")
    return bytes(buf)


def deserialize_element(buf: bytes) -> bytes:
    """A valid ristretto255 encoding that is not the identity (RFC 9497 §4.1)."""
    if not isinstance(buf, bytes | bytearray) or len(buf) != NE:
        raise DecodeError("an OPRF element is 32 bytes")
    if bytes(buf) == IDENTITY or not rbcl.crypto_core_ristretto255_is_valid_point(bytes(buf)):
        raise DecodeError("not a valid non-identity ristretto255 element")
    return bytes(buf)


def _is_zero(scalar: bytes) -> bool:
    return hmac.compare_digest(scalar, bytes(NS))


def _mul(scalar: bytes, element: bytes) -> bytes:
    """``scalar * element``; a zero scalar gives the identity (only possible in a proof
    with attacker-chosen values, which then simply fails to verify)."""
    return bytes(rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(scalar, element))


def _mul_gen(scalar: bytes) -> bytes:
    return bytes(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(scalar))


def _add(a: bytes, b: bytes) -> bytes:
    return bytes(rbcl.crypto_core_ristretto255_add(a, b))


def _random_scalar() -> bytes:
    """Uniform in [1, order): libsodium's rejection sampling, never zero."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_random())


# --- keys ---------------------------------------------------------------------------------


def derive_key_pair(seed: bytes, info: bytes, mode: int = MODE_OPRF) -> tuple[bytes, bytes]:
    """RFC 9497 §3.2.1 DeriveKeyPair: a deterministic ``(sk, pk)`` from a 32-byte secret seed
    and public ``info``. ``mode`` enters the DST, so the same seed gives different keys per
    mode (as in the RFC's test vectors)."""
    if len(seed) != NS:
        raise OprfError("DeriveKeyPair seed must be 32 bytes")
    if len(info) > 0xFFFF:
        raise OprfError("DeriveKeyPair info too long")
    derive_input = seed + _lp(info)
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = hash_to_scalar(derive_input + bytes([counter]), dst=dst)
        if not _is_zero(sk):
            return sk, _mul_gen(sk)
    raise OprfError("DeriveKeyPairError: no non-zero scalar in 256 tries")  # pragma: no cover


def public_key(sk: bytes) -> bytes:
    """``pk = sk * G`` for a serialized private key."""
    sk = deserialize_scalar(sk)
    if _is_zero(sk):
        raise OprfError("the OPRF private key must not be zero")
    return _mul_gen(sk)


# --- the online protocol ------------------------------------------------------------------


def blind(
    input: bytes, *, blind: bytes | None = None, mode: int = MODE_OPRF
) -> tuple[bytes, bytes]:
    """Client, step 1 (RFC 9497 §3.3.1 Blind): ``(blind, blinded_element)``. Keep ``blind``
    secret; send ``blinded_element``. Raises :class:`OprfError` (InvalidInputError) for an
    input that maps to the identity."""
    r = _random_scalar() if blind is None else deserialize_scalar(blind)
    if _is_zero(r):
        raise OprfError("blind must not be zero")
    input_element = hash_to_group(input, mode)
    if input_element == IDENTITY:
        raise OprfError("InvalidInputError: input maps to the identity")  # pragma: no cover
    return r, _mul(r, input_element)


def blind_evaluate(sk: bytes, blinded_element: bytes) -> bytes:
    """Server (RFC 9497 §3.3.1 BlindEvaluate, OPRF mode): ``sk * blinded_element``.

    No XChat server calls it: realms and the token issuer answer with
    :func:`blind_evaluate_verifiable` (the same element plus a proof of the key). It stays
    as the RFC's base-mode server function because without it the client half
    (:func:`blind`, :func:`finalize`) cannot be checked against the RFC's OPRF test
    vectors, nor can a test play a dishonest realm or issuer (an element under another key,
    no proof) without reaching into this module's private group helpers."""
    sk = deserialize_scalar(sk)
    return _mul(sk, deserialize_element(blinded_element))


def _finalize_one(input: bytes, blind: bytes, evaluated_element: bytes) -> bytes:
    if len(input) > 0xFFFF:
        raise OprfError("OPRF input too long")
    r = deserialize_scalar(blind)
    if _is_zero(r):
        raise OprfError("blind must not be zero")
    inverse = bytes(rbcl.crypto_core_ristretto255_scalar_invert(r))
    unblinded = _mul(inverse, deserialize_element(evaluated_element))
    return hashlib.sha512(_lp(input) + _lp(unblinded) + b"Finalize").digest()


def finalize(input: bytes, blind: bytes, evaluated_element: bytes) -> bytes:
    """Client, step 2 (RFC 9497 §3.3.1 Finalize, OPRF mode): the 64-byte PRF output."""
    return _finalize_one(input, blind, evaluated_element)


def evaluate(sk: bytes, input: bytes, mode: int = MODE_OPRF) -> bytes:
    """The PRF computed directly by whoever holds ``sk`` (RFC 9497 §3.3.1 Evaluate): the
    issuer uses it to check a redeemed token without any client interaction."""
    sk = deserialize_scalar(sk)
    if len(input) > 0xFFFF:
        raise OprfError("OPRF input too long")
    issued = _mul(sk, hash_to_group(input, mode))
    return hashlib.sha512(_lp(input) + _lp(issued) + b"Finalize").digest()


# --- VOPRF: batched DLEQ proofs (RFC 9497 §2.2) -------------------------------------------


def _composites(
    b: bytes, c: Sequence[bytes], d: Sequence[bytes], mode: int, k: bytes | None
) -> tuple[bytes, bytes]:
    """ComputeComposites (verifier) or, with ``k``, ComputeCompositesFast (prover)."""
    seed_dst = b"Seed-" + context_string(mode)
    seed = hashlib.sha512(_lp(b) + _lp(seed_dst)).digest()
    m = IDENTITY
    z = IDENTITY
    for i, (ci, di) in enumerate(zip(c, d, strict=True)):
        transcript = _lp(seed) + struct.pack(">H", i) + _lp(ci) + _lp(di) + b"Composite"
        weight = hash_to_scalar(transcript, mode)
        m = _add(_mul(weight, ci), m)
        if k is None:
            z = _add(_mul(weight, di), z)
    if k is not None:
        z = _mul(k, m)
    return m, z


def _challenge(b: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes, mode: int) -> bytes:
    transcript = _lp(b) + _lp(m) + _lp(z) + _lp(t2) + _lp(t3) + b"Challenge"
    return hash_to_scalar(transcript, mode)


def generate_proof(
    k: bytes,
    a: bytes,
    b: bytes,
    c: Sequence[bytes],
    d: Sequence[bytes],
    *,
    mode: int = MODE_VOPRF,
    r: bytes | None = None,
) -> bytes:
    """RFC 9497 §2.2.1 GenerateProof: proves ``k*A == B`` and ``k*C[i] == D[i]`` for all i
    with one 64-byte proof ``c || s``."""
    m, z = _composites(b, c, d, mode, k)
    nonce = _random_scalar() if r is None else deserialize_scalar(r)
    t2 = _mul(nonce, a)
    t3 = _mul(nonce, m)
    ch = _challenge(b, m, z, t2, t3, mode)
    s = bytes(
        rbcl.crypto_core_ristretto255_scalar_sub(
            nonce, rbcl.crypto_core_ristretto255_scalar_mul(ch, k)
        )
    )
    return ch + s


def verify_proof(
    a: bytes,
    b: bytes,
    c: Sequence[bytes],
    d: Sequence[bytes],
    proof: bytes,
    *,
    mode: int = MODE_VOPRF,
) -> bool:
    """RFC 9497 §2.2.2 VerifyProof. A malformed proof is a failed proof, not a crash."""
    if not isinstance(proof, bytes | bytearray) or len(proof) != PROOF_LEN:
        return False
    try:
        ch = deserialize_scalar(bytes(proof[:NS]))
        s = deserialize_scalar(bytes(proof[NS:]))
    except DecodeError:
        return False
    m, z = _composites(b, c, d, mode, None)
    t2 = _add(_mul(s, a), _mul(ch, b))
    t3 = _add(_mul(s, m), _mul(ch, z))
    return hmac.compare_digest(_challenge(b, m, z, t2, t3, mode), ch)


def _check_batch(elements: Sequence[bytes], what: str) -> list[bytes]:
    if not 1 <= len(elements) <= MAX_BATCH:
        raise OprfError(f"a VOPRF batch carries 1..{MAX_BATCH} {what}")
    return [deserialize_element(e) for e in elements]


def blind_evaluate_verifiable(
    sk: bytes, pk: bytes, blinded_elements: Sequence[bytes], *, r: bytes | None = None
) -> tuple[list[bytes], bytes]:
    """Server, VOPRF (RFC 9497 §3.3.2 BlindEvaluate, batched): the evaluated elements and
    one DLEQ proof covering all of them."""
    sk = deserialize_scalar(sk)
    pk = deserialize_element(pk)
    blinded = _check_batch(blinded_elements, "blinded elements")
    evaluated = [_mul(sk, e) for e in blinded]
    proof = generate_proof(sk, GENERATOR, pk, blinded, evaluated, mode=MODE_VOPRF, r=r)
    return evaluated, proof


def finalize_verifiable(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    blinded_elements: Sequence[bytes],
    pk: bytes,
    proof: bytes,
) -> list[bytes]:
    """Client, VOPRF (RFC 9497 §3.3.2 Finalize, batched): verify the proof against ``pk``,
    then unblind each element. Raises :class:`InvalidProof` if the server did not use
    ``pk`` for every element."""
    n = len(inputs)
    if not (len(blinds) == len(evaluated_elements) == len(blinded_elements) == n):
        raise OprfError("VOPRF finalize: inputs, blinds and elements differ in number")
    pk = deserialize_element(pk)
    blinded = _check_batch(blinded_elements, "blinded elements")
    evaluated = _check_batch(evaluated_elements, "evaluated elements")
    if not verify_proof(GENERATOR, pk, blinded, evaluated, proof, mode=MODE_VOPRF):
        raise InvalidProof("VOPRF proof does not verify under the issuer's key")
    return [_finalize_one(x, bl, ev) for x, bl, ev in zip(inputs, blinds, evaluated, strict=True)]
