"""Backup PINs: the acceptance policy and Argon2id stretching (PROTOCOL.md Part X §2).

A PIN guards the account secret only together with the realms' guess limits: the realms
allow ``GUESS_LIMIT`` (10) OPRF evaluations, so an online attacker wins with probability
about 10 / (number of likely PINs). That is why the policy refuses short PINs and the few
hundred PINs people choose most (a 6-digit PIN from the common list would be found in
far fewer than 10 guesses by anyone who tries the list first). A passphrase (anything that
is not all digits) must be at least 8 characters and not a common password.

Stretching (Argon2id, RFC 9106) makes every *offline* guess expensive for whoever manages
to collect ``threshold`` realms' data (the only party who can test guesses offline, §7):
``Argon2id(PIN, salt, t=3, m=64 MiB, p=1) -> 64 bytes``, split into the OPRF input
(``access_key``) and a key-encryption seed that never leaves the device.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from dataclasses import dataclass
from typing import Final

from argon2.low_level import Type, hash_secret_raw

from xchat.errors import WeakPin

# --- policy --------------------------------------------------------------------------------

MIN_DIGITS: Final = 6  # 10^6 PINs: 10 guesses find a random one with p = 10^-5
MIN_PASSPHRASE_CHARS: Final = 8  # shorter non-digit strings are guessable word fragments
MAX_PIN_BYTES: Final = 1024  # bounds the Argon2 input; nobody types more

# The most common 6-digit PINs and patterns (after the published PIN-frequency studies:
# Bonneau et al., "A birthday present every eleven wallets?", FC 2012; Wang et al., "Understanding
# human-chosen PINs", CCS 2017) and the most common passwords of 8+ characters. Sequences,
# repeats and calendar dates are refused by rule as well (see _weak_digits).
COMMON_PINS: Final = frozenset(
    """
    123456 654321 111111 000000 123123 666666 121212 112233 789456 159753 456789 987654
    123321 112211 101010 147258 520520 131313 222222 333333 444444 555555 777777 888888
    999999 696969 159357 147852 963852 258456 741852 852456 456123 321654 789123 135790
    246810 102030 100200 998877 778899 123654 124578 147369 369258 159951 753951 101112
    121314 202020 212121 232323 252525 282828 292929 303030 313131 456456 789789 123789
    010203 007007 100100 111222 112358 142536 147147 159159 190190 198019 199199 200000
    """.split()  # noqa: SIM905 - a word list reads better as a block
)
COMMON_PASSPHRASES: Final = frozenset(
    """
    password password1 12345678 123456789 1234567890 qwertyui qwertyuiop iloveyou
    sunshine princess football baseball welcome1 passw0rd abc12345 abcdefgh 11111111
    00000000 87654321 qwerty123 letmein1 trustno1 superman starwars whatever dragon12
    monkey12 master12 shadow12 michael1 jennifer computer internet corvette mercedes
    """.split()  # noqa: SIM905
)


def normalize_pin(pin: str) -> str:
    """NFKC (so the same PIN typed on two keyboards gives the same bytes), outer
    whitespace removed. Inner spaces of a passphrase are kept."""
    return unicodedata.normalize("NFKC", pin).strip()


def check_pin(pin: str) -> str:
    """The normalized PIN if the policy accepts it, else :class:`WeakPin` saying why."""
    p = normalize_pin(pin)
    if len(p.encode()) > MAX_PIN_BYTES:
        raise WeakPin(f"PIN longer than {MAX_PIN_BYTES} bytes")
    if p.isascii() and p.isdigit():
        if len(p) < MIN_DIGITS:
            raise WeakPin(f"a PIN needs at least {MIN_DIGITS} digits (or use a passphrase)")
        why = _weak_digits(p)
        if why:
            raise WeakPin(f"that PIN is too easy to guess ({why}); choose another")
        return p
    if len(p) < MIN_PASSPHRASE_CHARS:
        raise WeakPin(
            f"a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters "
            f"(or use a PIN of {MIN_DIGITS}+ digits)"
        )
    if p.lower() in COMMON_PASSPHRASES or len(set(p)) < 3:
        raise WeakPin("that passphrase is too common; choose another")
    return p


def _weak_digits(p: str) -> str | None:
    if p in COMMON_PINS:
        return "one of the most common PINs"
    if len(set(p)) == 1:
        return "one repeated digit"
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(p)}
    if len(steps) == 1:
        return "a sequence"
    for size in (2, 3):
        if len(p) % size == 0 and p == p[:size] * (len(p) // size):
            return "a repeated pattern"
    if len(p) == 6 and _is_date(p):
        return "a date"
    if len(p) == 8 and _is_date(p[:4] + p[6:]) and p[4:6] in ("19", "20"):
        return "a date"
    return None


def _is_date(p: str) -> bool:
    """DDMMYY, MMDDYY or YYMMDD with a plausible day and month (birthdays are the most
    common structured PINs)."""
    a, b, c = int(p[0:2]), int(p[2:4]), int(p[4:6])
    return any(1 <= m <= 12 and 1 <= d <= 31 for d, m in ((a, b), (b, a), (c, b)))


# --- stretching ----------------------------------------------------------------------------

ARGON2_TIME_COST: Final = 3  # RFC 9106 §4, second recommended option (t = 3, p = 4 there)
ARGON2_MEMORY_KIB: Final = 65_536  # 64 MiB: runs on phones; same as the profile passphrase
ARGON2_PARALLELISM: Final = 1  # one lane: the browser/phone case, and no thread pool needed
STRETCH_LEN: Final = 64
LABEL_PIN_SALT: Final = b"XChat-v1-pin-salt"


@dataclass(frozen=True)
class StretchedPin:
    """``access_key`` is the OPRF input (the realms see it only blinded);
    ``encryption_seed`` is mixed into the key that encrypts the secret (§4)."""

    access_key: bytes
    encryption_seed: bytes


def pin_salt(version: bytes, address: str) -> bytes:
    """Salt = SHA-256(label || version(16) || address ASCII): distinct per account and per
    enrolment, so no table of stretched PINs can be precomputed."""
    return hashlib.sha256(LABEL_PIN_SALT + version + address.encode("ascii")).digest()


def stretch_pin(pin: str, version: bytes, address: str) -> StretchedPin:
    """Argon2id over the normalized PIN (the policy is not re-checked: a restore must
    accept whatever PIN was enrolled, even under a stricter later policy)."""
    out = hash_secret_raw(
        normalize_pin(pin).encode("utf-8"),
        pin_salt(version, address),
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        hash_len=STRETCH_LEN,
        type=Type.ID,
    )
    return StretchedPin(out[:32], out[32:])
