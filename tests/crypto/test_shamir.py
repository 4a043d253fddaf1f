"""Shamir t-of-n (PROTOCOL.md Part X §3): reconstruction, and that t-1 shares say nothing."""

from __future__ import annotations

import itertools
import secrets
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto import shamir
from xchat.crypto.shamir import RISTRETTO255_ORDER as L
from xchat.crypto.shamir import Share
from xchat.errors import DecodeError


@settings(max_examples=60, deadline=None)
@given(
    secret=st.integers(0, L - 1),
    n=st.integers(1, 7),
    data=st.data(),
)
def test_any_threshold_subset_recovers(secret: int, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, n)
    assert [s.x for s in shares] == list(range(1, n + 1))
    for subset in itertools.combinations(shares, t):
        assert shamir.combine(list(subset)) == secret
    # order does not matter, and more than t shares still interpolate the same polynomial
    assert shamir.combine(list(reversed(shares))) == secret


def test_fewer_than_threshold_gives_an_unrelated_value() -> None:
    secret = shamir.random_scalar()
    shares = shamir.split(secret, 3, 5)
    assert shamir.combine(shares[:2]) != secret


def test_t_minus_one_shares_are_uniform_for_every_secret_exhaustive() -> None:
    """Over GF(7) with t = 3, n = 4: for each secret, enumerate every polynomial (every
    choice of the two random coefficients) and count the joint distribution of any two
    shares. Perfect secrecy means the distribution is the same for every secret: each pair
    of values appears exactly once, whatever the secret is."""
    p, t, n = 7, 3, 4
    for pair in itertools.combinations(range(n), t - 1):
        per_secret = []
        for secret in range(p):
            counts: Counter[tuple[int, ...]] = Counter()
            for a1, a2 in itertools.product(range(p), repeat=2):
                draws = iter([a1, a2])
                shares = shamir.split(secret, t, n, p=p, rng=lambda _b, d=draws: next(d))
                counts[tuple(shares[i].y for i in pair)] += 1
            assert len(counts) == p ** (t - 1) and set(counts.values()) == {1}
            per_secret.append(counts)
        assert all(c == per_secret[0] for c in per_secret)


def test_t_minus_one_real_shares_fit_every_secret_structurally() -> None:
    """Over the real field: given t-1 shares of some secret, *every* candidate secret is
    explained by exactly one polynomial through those shares (interpolate through (0, s')
    and the t-1 points), so an attacker holding them cannot rule any secret out."""
    t, n = 3, 3
    secret = shamir.random_scalar()
    held = shamir.split(secret, t, n)[: t - 1]
    for candidate in (0, 1, secret, shamir.random_scalar(), L - 1):
        points = [Share(0, candidate), *held]  # x = 0 is the secret's slot
        xs = [pt.x for pt in points]
        # The unique degree-(t-1) polynomial through these t points, evaluated at each held x,
        # reproduces the held shares, and at 0 gives the candidate.
        for probe in (*held, Share(0, candidate)):
            value = _interpolate_at(points, probe.x)
            assert value == probe.y
        assert len(set(xs)) == t


def _interpolate_at(points: list[Share], x: int) -> int:
    total = 0
    for i, pi in enumerate(points):
        num, den = 1, 1
        for j, pj in enumerate(points):
            if i != j:
                num = num * (x - pj.x) % L
                den = den * (pi.x - pj.x) % L
        total += pi.y * num * pow(den, -1, L)
    return total % L


def test_lagrange_coefficients_combine_linear_images() -> None:
    """The same coefficients combine values 'in the exponent': Σ λ_i (c·f(x_i)) = c·f(0)."""
    secret = shamir.random_scalar()
    shares = shamir.split(secret, 2, 3)
    chosen = [shares[0], shares[2]]
    lam = shamir.lagrange_coefficients([s.x for s in chosen])
    c = secrets.randbelow(L)
    assert sum(lc * (c * s.y) for lc, s in zip(lam, chosen, strict=True)) % L == c * secret % L


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        shamir.split(1, 0, 3)
    with pytest.raises(ValueError):
        shamir.split(1, 4, 3)
    with pytest.raises(ValueError):
        shamir.split(L, 2, 3)
    with pytest.raises(DecodeError):
        shamir.combine([Share(1, 5), Share(1, 6)])
    with pytest.raises(DecodeError):
        shamir.combine([Share(0, 5)])
    with pytest.raises(DecodeError):
        shamir.combine([])


def test_scalar_encoding() -> None:
    v = shamir.random_scalar()
    assert shamir.scalar_from_bytes(shamir.scalar_to_bytes(v)) == v
    assert shamir.scalar_to_bytes(1) == b"\x01" + b"\x00" * 31
    with pytest.raises(DecodeError):
        shamir.scalar_from_bytes(L.to_bytes(32, "little"))
    with pytest.raises(DecodeError):
        shamir.scalar_from_bytes(b"\x00" * 31)
    with pytest.raises(ValueError):
        shamir.scalar_to_bytes(L)
