"""Safety numbers: detect a relay that substitutes identity keys (PROTOCOL.md Part I §10).

Follows Signal's numeric fingerprint (libsignal ``rust/protocol/src/fingerprint.rs``,
"Safety number updates" 2016): each party's fingerprint is SHA-512 iterated 5200 times, so
finding another key with the same 30 displayed digits costs ~2^112 hash evaluations times
the iteration factor. Per party::

    h = u16 FINGERPRINT_VERSION || IdentityKey(65) || stable_id
    repeat 5200 times:  h = SHA-512(h || IdentityKey(65))

``stable_id`` is the party's address as ASCII (our stable identifier, where Signal uses the
ACI/phone number). The display digits are six 5-byte big-endian chunks of ``h[:30]``, each
``mod 100000``, zero-padded to five digits. The 60-digit safety number is the two parties'
30-digit strings in ascending order, so both phones show the same number.

QR payload (deviation: Signal uses a protobuf; we need no extensibility beyond a version)::

    QR_VERSION u8 || min(fp_a[:32], fp_b[:32]) || max(fp_a[:32], fp_b[:32])

Sorting makes the payload symmetric, so scanning either phone's code works. A scanner
compares the scanned bytes with its own payload (constant time); no XChat client scans, so
the comparison is specified (PROTOCOL Part I §10) but not implemented here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from xchat.crypto.keys import IdentityPublicKey
from xchat.errors import DecodeError

#: Hash-iteration version, hashed first (Signal's is also 0).
FINGERPRINT_VERSION: Final = 0
#: Signal's iteration count: slows a brute-force search for a colliding key.
ITERATIONS: Final = 5200
#: Version byte of the scannable QR payload.
QR_VERSION: Final = 0x01
QR_FINGERPRINT_LEN: Final = 32
QR_PAYLOAD_LEN: Final = 1 + 2 * QR_FINGERPRINT_LEN


def party_fingerprint(identity: IdentityPublicKey) -> bytes:
    """The 64-byte iterated hash of one party (stable id = its address)."""
    key = identity.encode()
    h = struct.pack(">H", FINGERPRINT_VERSION) + key + identity.address().encode("ascii")
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + key).digest()
    return h


def displayable(fingerprint: bytes) -> str:
    """30 digits from the first 30 bytes: six 40-bit chunks, each ``mod 100000``."""
    if len(fingerprint) < 30:
        raise DecodeError("fingerprint too short")
    return "".join(
        f"{int.from_bytes(fingerprint[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


@dataclass(frozen=True)
class SafetyNumber:
    """The safety number of one pair of identities, identical on both sides."""

    digits: str
    qr_payload: bytes

    def format(self) -> str:
        """Twelve groups of five digits separated by spaces (as shown to users)."""
        return " ".join(self.digits[i : i + 5] for i in range(0, len(self.digits), 5))


def _qr(fp_a: bytes, fp_b: bytes) -> bytes:
    lo, hi = sorted((fp_a[:QR_FINGERPRINT_LEN], fp_b[:QR_FINGERPRINT_LEN]))
    return bytes([QR_VERSION]) + lo + hi


def safety_number(local: IdentityPublicKey, remote: IdentityPublicKey) -> SafetyNumber:
    """Compute the 60-digit number and the QR payload for ``local`` and ``remote``."""
    fp_local, fp_remote = party_fingerprint(local), party_fingerprint(remote)
    d_local, d_remote = displayable(fp_local), displayable(fp_remote)
    digits = d_local + d_remote if d_local <= d_remote else d_remote + d_local
    return SafetyNumber(digits=digits, qr_payload=_qr(fp_local, fp_remote))
