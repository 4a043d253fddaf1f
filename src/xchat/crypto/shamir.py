"""Shamir's t-of-n secret sharing over a prime field (PROTOCOL.md Part X §3).

Shamir, "How to share a secret", CACM 22(11), 1979. The dealer picks a random polynomial
``f(x) = s + a_1 x + ... + a_{t-1} x^{t-1}`` over GF(p) with ``f(0) = s`` and hands share
``(x_i, f(x_i))`` to party ``i`` for ``x_i = 1..n``. Any ``t`` shares determine ``f`` and
hence ``s`` by Lagrange interpolation at 0; any ``t - 1`` shares are consistent with every
possible ``s`` through exactly one polynomial each, so they carry no information about
``s`` (perfect secrecy — ``tests/crypto/test_shamir.py`` checks this exhaustively over a
small field and structurally over the real one).

The default field is the prime-order scalar field of ristretto255 (``L = 2^252 +
27742317777372353535851937790883648493``, RFC 9496 §4.4): the backup secrets that are
shared (the OPRF key and the encryption-key scalar of Part X §4) are ristretto255 scalars,
and the same Lagrange coefficients then combine OPRF evaluations "in the exponent"
(:func:`lagrange_coefficients`). Shares of a scalar are encoded as 32-byte little-endian
scalars, the encoding libsodium and RFC 9496 use.

This is a scheme composed of field arithmetic, not a primitive: the arithmetic is Python's
integers (not constant time). It runs once per enrolment and once per restore, on the
user's own device, over values that are uniformly random (never the PIN), so a timing side
channel would leak nothing an observer of that device could not read anyway.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xchat.errors import DecodeError

#: Order of the ristretto255 group (RFC 9496 §4.4), prime.
RISTRETTO255_ORDER = 2**252 + 27742317777372353535851937790883648493
#: Bytes in an encoded scalar of the default field.
SCALAR_LEN = 32
#: At most 255 shares: share indices travel as one byte (Part X §3) and realms are few.
MAX_SHARES = 255


@dataclass(frozen=True)
class Share:
    """One point ``(x, y)`` of the dealer's polynomial; ``x`` is 1..255, never 0."""

    x: int
    y: int


def _random_below(p: int, rng: Callable[[int], int]) -> int:
    return rng(p)


def _default_rng(bound: int) -> int:
    return secrets.randbelow(bound)


def split(
    secret: int,
    threshold: int,
    count: int,
    *,
    p: int = RISTRETTO255_ORDER,
    rng: Callable[[int], int] = _default_rng,
) -> list[Share]:
    """Split ``secret`` (``0 <= secret < p``) into ``count`` shares, any ``threshold`` of
    which recover it. ``rng(bound)`` returns a uniform integer in ``[0, bound)`` (the OS
    CSPRNG by default; tests pass their own to enumerate polynomials)."""
    if not 1 <= threshold <= count <= MAX_SHARES:
        raise ValueError(f"need 1 <= threshold <= count <= {MAX_SHARES}")
    if count >= p:
        raise ValueError("the field must have more elements than there are shares")
    if not 0 <= secret < p:
        raise ValueError("secret is not a field element")
    coeffs = [secret] + [_random_below(p, rng) for _ in range(threshold - 1)]
    return [Share(x, evaluate(coeffs, x, p)) for x in range(1, count + 1)]


def evaluate(coeffs: Sequence[int], x: int, p: int = RISTRETTO255_ORDER) -> int:
    """``f(x)`` for ``f = coeffs[0] + coeffs[1] x + ...`` over GF(p) (Horner's rule)."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % p
    return acc


def lagrange_coefficients(xs: Sequence[int], p: int = RISTRETTO255_ORDER) -> list[int]:
    """The coefficients ``λ_i`` with ``f(0) = Σ λ_i f(x_i)`` for every polynomial of degree
    below ``len(xs)``: ``λ_i = Π_{j≠i} x_j / (x_j - x_i)``. The ``xs`` must be distinct and
    non-zero modulo ``p`` (else :class:`DecodeError`: a share set that cannot be combined)."""
    if len(set(x % p for x in xs)) != len(xs) or any(x % p == 0 for x in xs):
        raise DecodeError("share indices must be distinct and non-zero")
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % p
                den = den * (xj - xi) % p
        out.append(num * pow(den, -1, p) % p)
    return out


def combine(shares: Sequence[Share], p: int = RISTRETTO255_ORDER) -> int:
    """Interpolate ``f(0)`` from the given shares. With fewer than the threshold the result
    is some field element unrelated to the secret: callers authenticate what they recover
    (Part X §4: the recovered key must open an AEAD)."""
    if not shares:
        raise DecodeError("no shares")
    lam = lagrange_coefficients([s.x for s in shares], p)
    return sum(lc * s.y for lc, s in zip(lam, shares, strict=True)) % p


def scalar_to_bytes(value: int) -> bytes:
    """32-byte little-endian encoding of a ristretto255 scalar (``0 <= value < L``)."""
    if not 0 <= value < RISTRETTO255_ORDER:
        raise ValueError("not a canonical scalar")
    return value.to_bytes(SCALAR_LEN, "little")


def scalar_from_bytes(data: bytes) -> int:
    """Decode a canonical 32-byte little-endian scalar (else :class:`DecodeError`)."""
    if len(data) != SCALAR_LEN:
        raise DecodeError("a scalar is 32 bytes")
    value = int.from_bytes(data, "little")
    if value >= RISTRETTO255_ORDER:
        raise DecodeError("scalar is not reduced modulo the group order")
    return value


def random_scalar(rng: Callable[[int], int] = _default_rng) -> int:
    """A uniform non-zero scalar (an OPRF key must not be 0, RFC 9497 §3.2)."""
    return 1 + rng(RISTRETTO255_ORDER - 1)
