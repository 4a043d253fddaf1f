"""Published test vectors for the identity layer (PROTOCOL.md Part I §1–§3).

- BIP-39 (trezor/python-mnemonic ``vectors.json``, English, the 32-byte-entropy cases):
  entropy <-> 24-word phrase through ``xchat.crypto.keys``.
- BIP-350 Bech32m test vectors: checksum level, through the ``bech32_decode`` that
  ``keys.decode_address`` uses, and every one must be refused as an XChat address.
- RFC 5869 Appendix A test cases 1–3 (HKDF-SHA256) against ``keys.hkdf``.
- Our own golden vectors for identity key and address derivation, plus typo detection.
"""

from __future__ import annotations

import itertools

import pytest
from bech32m.codecs import CHARSET, Encoding, bech32_decode, bech32_encode, convertbits
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto import keys
from xchat.crypto.keys import (
    IdentityKeyPair,
    address_hash,
    decode_address,
    hkdf,
    is_address,
    mnemonic_from_seed,
    normalize_address,
    seed_from_mnemonic,
)
from xchat.errors import InvalidAddress, InvalidMnemonic

# --- BIP-39 -----------------------------------------------------------------------------

BIP39_ENGLISH_256 = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon abandon abandon art",
    ),
    (
        "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
        "legal winner thank year wave sausage worth useful legal winner thank year wave "
        "sausage worth useful legal winner thank year wave sausage worth title",
    ),
    (
        "8080808080808080808080808080808080808080808080808080808080808080",
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd "
        "amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic bless",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo "
        "zoo zoo vote",
    ),
    (
        "00ac97c48106f0aeb8ba061e0250a559b3251dc35854e694780ba51d53a50120",
        "absent gorilla van acoustic humor firm title dolphin bulk barely citizen recall "
        "crane moment aspect appear track phrase actual enforce steel spoon afraid benefit",
    ),
    (
        "3edc83b60740d77af3afa2fcb82c2f1bc541ee4e2518ddef4996d32453f54a3c",
        "disagree tomato unique attend aspect runway solid violin witness scrap armed daring "
        "favorite warm decade perfect target kid grant play early wide cigar night",
    ),
    (
        "89bb4bc5555992cdaf3444c5e7ca5a6e9f27efab894f1990bae41be8b2a26ea4",
        "meadow surge vanish primary odor grocery rubber mass shine dinner notable tag venue "
        "water purchase clarify book magic ribbon daughter menu eye ritual orchard",
    ),
    (
        "911fec0fbd88029f6fa99164896c18d898c9232af18bdcca3e42d53b86493104",
        "much youth advance kitchen lens exile salt cram goose enter alert raise milk muscle "
        "profit cousin system faint mouse price reveal cause series long",
    ),
]


@pytest.mark.parametrize(("entropy", "phrase"), BIP39_ENGLISH_256)
def test_bip39_vectors(entropy: str, phrase: str) -> None:
    seed = bytes.fromhex(entropy)
    assert mnemonic_from_seed(seed) == phrase
    assert seed_from_mnemonic(phrase) == seed
    assert IdentityKeyPair.from_seed(seed).mnemonic() == phrase
    assert IdentityKeyPair.from_mnemonic(phrase).seed == seed
    # Case and whitespace are forgiven when typed back in.
    assert seed_from_mnemonic("  " + phrase.upper().replace(" ", "  \n") + " ") == seed


@pytest.mark.parametrize(
    "phrase",
    [
        # Last word changed: checksum fails.
        BIP39_ENGLISH_256[0][1].rsplit(" ", 1)[0] + " abandon",
        # Unknown word.
        BIP39_ENGLISH_256[0][1].replace("art", "artt"),
        # Valid 12-word BIP-39 phrase, but XChat seeds are 32 bytes.
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon about",
        # 23 words.
        BIP39_ENGLISH_256[1][1].rsplit(" ", 1)[0],
        "",
        # Two words swapped.
        "legal winner thank year wave sausage worth useful legal winner thank year wave "
        "sausage worth useful legal winner thank year sausage wave worth title",
    ],
)
def test_bip39_invalid(phrase: str) -> None:
    with pytest.raises(InvalidMnemonic):
        seed_from_mnemonic(phrase)
    with pytest.raises(InvalidMnemonic):
        IdentityKeyPair.from_mnemonic(phrase)


# --- BIP-350 ----------------------------------------------------------------------------

BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

BECH32M_INVALID = [
    "\x201xj0phk",  # HRP character out of range
    "\x7f1g6xzxy",  # HRP character out of range
    "\x801vctc34",  # HRP character out of range
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",  # invalid data character
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",  # invalid character in checksum
    "M1VUXWEZ",  # checksum calculated with uppercase form of HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",  # empty HRP
]

# BIP-350 segwit vectors whose checksum is plain Bech32 (not Bech32m) or otherwise broken.
BECH32M_WRONG_CHECKSUM = [
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
]


@pytest.mark.parametrize("s", BECH32M_VALID)
def test_bech32m_valid_checksums(s: str) -> None:
    _hrp, _data, spec = bech32_decode(s)
    assert spec == Encoding.BECH32M
    # Valid bech32m, but not an XChat address (wrong prefix / length): refused, typed.
    with pytest.raises(InvalidAddress):
        decode_address(s)
    assert not is_address(s)


@pytest.mark.parametrize("s", BECH32M_INVALID + BECH32M_WRONG_CHECKSUM)
def test_bech32m_invalid(s: str) -> None:
    try:
        _hrp, _data, spec = bech32_decode(s)
    except ValueError:  # bech32m.DecodeError subclasses ValueError
        pass
    else:
        assert spec != Encoding.BECH32M
    with pytest.raises(InvalidAddress):
        decode_address(s)


def _xc_with(data5: bytes, spec: Encoding = Encoding.BECH32M, hrp: str = "xc") -> str:
    return str(bech32_encode(hrp, data5, spec))


def test_address_with_bech32_not_bech32m_checksum_refused() -> None:
    digest = address_hash(IdentityKeyPair.from_seed(bytes(32)).public.encode())
    data5 = bytes(convertbits(b"\x00" + digest, 8, 5, True))
    assert decode_address(_xc_with(data5)) == digest
    with pytest.raises(InvalidAddress):
        decode_address(_xc_with(data5, Encoding.BECH32))
    with pytest.raises(InvalidAddress):  # other prefix
        decode_address(_xc_with(data5, hrp="xd"))
    with pytest.raises(InvalidAddress):  # version 1
        decode_address(_xc_with(bytes(convertbits(b"\x01" + digest, 8, 5, True))))
    with pytest.raises(InvalidAddress):  # 19-byte hash
        decode_address(_xc_with(bytes(convertbits(b"\x00" + digest[:19], 8, 5, True))))


# --- RFC 5869 ---------------------------------------------------------------------------

RFC5869 = [
    (  # Test Case 1
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (  # Test Case 2
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41"
        "c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (  # Test Case 3: zero-length salt and info
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    out = hkdf(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length)
    assert out.hex() == okm


# --- identity and address (our golden vectors, PROTOCOL Part I §1–§2) -------------------------

GOLDEN_SEED0_IDENTITY = (
    "0164771e811cd8f20c46941c996787b5d1bfb7a2b4cd92eb4776f20bd1e6b74f4c"
    "0264effe0aba58a38915f9f63414e54f1892d5376c396426c252193020308a0f"
)
GOLDEN_SEED0_ADDRESS = "xc1qzxrggj7p8xpavs8pgph06jff403uml5my3rjmm4"


def test_golden_identity_and_address() -> None:
    pair = IdentityKeyPair.from_seed(bytes(32))
    assert pair.public.encode().hex() == GOLDEN_SEED0_IDENTITY
    assert pair.public.address() == GOLDEN_SEED0_ADDRESS
    assert pair.mnemonic() == BIP39_ENGLISH_256[0][1]
    # Derivation as written in PROTOCOL Part I §1, re-done with raw HKDF.
    ed = hkdf(bytes(32), b"", b"XChat-v1-identity-ed25519", 32)
    x = hkdf(bytes(32), b"", b"XChat-v1-identity-x25519", 32)
    assert pair.ed25519_private.private_bytes_raw() == ed
    assert pair.x25519_private.private_bytes_raw() == x


def test_address_shape_and_roundtrip() -> None:
    pair = IdentityKeyPair.from_seed(bytes([7]) * 32)
    addr = pair.public.address()
    assert addr.startswith("xc1q") and len(addr) == 43  # 3 + 34 data + 6 checksum
    assert addr == addr.lower()
    assert decode_address(addr) == address_hash(pair.public.encode())
    assert decode_address(addr.upper()) == decode_address(addr)
    assert normalize_address(" " + addr.upper() + " ") == addr
    assert keys.address_matches(addr, pair.public)
    assert not keys.address_matches(addr, IdentityKeyPair.from_seed(bytes(32)).public)
    with pytest.raises(InvalidAddress):
        decode_address(addr[:10] + addr[10:].upper())  # mixed case
    for bad in ("", "xc1", "x" * 200, "xc1" + "q" * 39):
        assert not is_address(bad)


def test_every_single_substitution_is_caught() -> None:
    addr = GOLDEN_SEED0_ADDRESS
    for i in range(3, len(addr)):  # data part (the HRP is checked separately)
        for c in CHARSET:
            if c != addr[i]:
                assert not is_address(addr[:i] + c + addr[i + 1 :]), (i, c)


def test_transpositions_insertions_deletions_caught() -> None:
    addr = GOLDEN_SEED0_ADDRESS
    for i in range(3, len(addr) - 1):
        if addr[i] != addr[i + 1]:
            assert not is_address(addr[:i] + addr[i + 1] + addr[i] + addr[i + 2 :])
    for i in range(3, len(addr) + 1):
        assert not is_address(addr[:i] + "q" + addr[i:])
    for i in range(3, len(addr)):
        assert not is_address(addr[:i] + addr[i + 1 :])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(3, 42), min_size=2, max_size=4, unique=True),
    st.lists(st.integers(1, 31), min_size=4, max_size=4),
)
def test_up_to_four_substitutions_caught(positions: list[int], shifts: list[int]) -> None:
    """BIP-350: any error of up to 4 substitutions is always detected."""
    chars = list(GOLDEN_SEED0_ADDRESS)
    for pos, shift in zip(positions, shifts, strict=False):
        chars[pos] = CHARSET[(CHARSET.index(chars[pos]) + shift) % 32]
    assert not is_address("".join(chars))


def test_addresses_of_distinct_keys_differ() -> None:
    addrs = {IdentityKeyPair.from_seed(bytes([i]) * 32).public.address() for i in range(50)}
    assert len(addrs) == 50
    assert all(is_address(a) for a in addrs)
    for a, b in itertools.combinations(sorted(addrs)[:5], 2):
        assert decode_address(a) != decode_address(b)
