"""The Double Ratchet (Perrin & Marlinspike, "The Double Ratchet Algorithm", rev. 1, 2016).

Implements spec §3 ("Double Ratchet with header in the clear") with the §5.2 recommended
functions, made concrete in PROTOCOL.md Part II §4:

- ``KDF_RK(rk, dh_out) = HKDF-SHA256(ikm=dh_out, salt=rk, info="XChat_Ratchet_v1", 64)``
  split into (new root key, chain key).
- ``KDF_CK(ck)``: message key ``HMAC-SHA256(ck, 0x01)``, next chain key
  ``HMAC-SHA256(ck, 0x02)``.
- ``ENCRYPT(mk, pt, ad)``: ``HKDF-Expand-SHA256(prk=mk, info="XChat_MessageKeys_v1", 44)``
  gives an AES-256-GCM key (32) and nonce (12); AEAD associated data is
  ``session AD || header``. The HKDF-Extract step is skipped (RFC 5869 §3.3): ``mk`` is
  already an HMAC-SHA256 output, i.e. a uniformly random HashLen-byte PRK. Signal runs
  full HKDF here; skipping Extract saves one HMAC per message and changes no security
  argument.

Hardening beyond the spec's pseudo-code:

- Bounded work and state: at most ``MAX_SKIP`` skipped keys per chain per message
  (TooManySkipped), at most ``MAX_SKIPPED_KEYS`` stored in total (oldest evicted).
- Transactional decryption: every new value is computed into locals and written to the
  state only after the AEAD check passes, so a forged or corrupt message changes nothing.
- Replay detection: a message whose key was already used (counter below the chain position
  and not among skipped keys, or a recently retired ratchet key) is ``DuplicateMessage``.
- Used message keys are deleted at once (spec §3.5 / §6.2, forward secrecy).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from xchat.crypto import constants as C
from xchat.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ProtocolError,
    TooLarge,
    TooManySkipped,
    UnsupportedVersion,
)

Rng = Callable[[int], bytes]

#: version || type || ratchet public key (32) || pn u32 || n u32
HEADER_LEN = 2 + C.X25519_LEN + 8
_PREFIX = bytes([C.MESSAGE_VERSION, C.MESSAGE_TYPE_NORMAL])
_COUNTERS = struct.Struct(">II")
_U32 = struct.Struct(">I")
_SHA256 = hashes.SHA256()
_MK_LEN = C.AES_KEY_LEN + C.AES_NONCE_LEN
_MAX_COUNTER = 0xFFFFFFFF
_ZERO_KEY = b"\x00" * 32
_MIN_LEN = HEADER_LEN + C.AES_TAG_LEN


# --- KDFs (spec §5.2) ------------------------------------------------------------------------


def kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """KDF_RK: ``HKDF(salt=rk, ikm=dh_out, info=RATCHET_ROOT_INFO)`` -> (rk', ck)."""
    out = HKDF(_SHA256, 64, root_key, C.RATCHET_ROOT_INFO).derive(dh_out)
    return out[:32], out[32:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """KDF_CK: -> (next chain key, message key)."""
    h = hmac.HMAC(chain_key, _SHA256)
    h2 = h.copy()
    h.update(C.CHAIN_NEXT_KEY_SEED)
    h2.update(C.CHAIN_MESSAGE_KEY_SEED)
    return h.finalize(), h2.finalize()


def message_key_material(message_key: bytes) -> tuple[bytes, bytes]:
    """Expand a 32-byte message key into (AES-256-GCM key, 12-byte nonce)."""
    out = HKDFExpand(_SHA256, _MK_LEN, C.MESSAGE_KEYS_INFO).derive(message_key)
    return out[:32], out[32:]


def _open(message_key: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    key, nonce = message_key_material(message_key)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise DecryptionError("message authentication failed") from None


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # all-zero output: low-order point
        raise DecryptionError("invalid ratchet key") from None


def _dh_key(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # all-zero output: low-order point
        raise DecryptionError("invalid ratchet key") from None


def _new_keypair(rng: Rng) -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.from_private_bytes(rng(C.X25519_LEN))
    return private, private.public_key().public_bytes_raw()


# --- header ---------------------------------------------------------------------------------


def parse_header(message: bytes) -> tuple[bytes, int, int]:
    """Split a normal message into (ratchet public key, pn, n); checks version, type, sizes."""
    if len(message) > C.MAX_MESSAGE_LEN:
        raise TooLarge("message exceeds MAX_MESSAGE_LEN")
    if len(message) < HEADER_LEN + C.AES_TAG_LEN:
        if len(message) >= 1 and message[0] != C.MESSAGE_VERSION:
            raise UnsupportedVersion(f"unknown message version {message[0]}")
        raise DecodeError("truncated message")
    if message[0] != C.MESSAGE_VERSION:
        raise UnsupportedVersion(f"unknown message version {message[0]}")
    if message[1] != C.MESSAGE_TYPE_NORMAL:
        raise DecodeError("not a normal ratchet message")
    pn, n = _COUNTERS.unpack_from(message, 34)
    return bytes(message[2:34]), pn, n


# --- state ----------------------------------------------------------------------------------


class RatchetState:
    """One side's Double Ratchet state (spec §3.2 ``state``), with bounded skipped keys.

    A plain ``__slots__`` class rather than a dataclass: it is mutated on every message and
    this is the hot path.
    """

    __slots__ = (
        "ad",
        "ckr",
        "cks",
        "dhr",
        "dhs",
        "dhs_pub",
        "nr",
        "ns",
        "pn",
        "previous_dhr",
        "rk",
        "skipped",
    )

    def __init__(
        self,
        *,
        ad: bytes,
        rk: bytes,
        dhs: X25519PrivateKey,
        dhr: bytes | None,
        cks: bytes | None,
        ckr: bytes | None,
        ns: int = 0,
        nr: int = 0,
        pn: int = 0,
        skipped: dict[tuple[bytes, int], bytes] | None = None,
        previous_dhr: list[bytes] | None = None,
    ) -> None:
        self.ad = ad
        self.rk = rk
        self.dhs = dhs
        self.dhs_pub = dhs.public_key().public_bytes_raw()
        self.dhr = dhr
        self.cks = cks
        self.ckr = ckr
        self.ns = ns
        self.nr = nr
        self.pn = pn
        self.skipped: dict[tuple[bytes, int], bytes] = {} if skipped is None else skipped
        self.previous_dhr: list[bytes] = [] if previous_dhr is None else previous_dhr

    # -- initialisation (spec §3.3) --

    @classmethod
    def init_alice(
        cls, shared_secret: bytes, ad: bytes, bob_ratchet_key: bytes, rng: Rng = os.urandom
    ) -> RatchetState:
        """RatchetInitAlice: fresh DHs, DHr = Bob's signed prekey, first sending chain."""
        dhs, _ = _new_keypair(rng)
        rk, cks = kdf_rk(shared_secret, _dh(dhs, bob_ratchet_key))
        return cls(ad=ad, rk=rk, dhs=dhs, dhr=bob_ratchet_key, cks=cks, ckr=None)

    @classmethod
    def init_bob(
        cls, shared_secret: bytes, ad: bytes, bob_ratchet_key: X25519PrivateKey
    ) -> RatchetState:
        """RatchetInitBob: DHs = signed prekey pair, RK = SK, no chains yet."""
        return cls(ad=ad, rk=shared_secret, dhs=bob_ratchet_key, dhr=None, cks=None, ckr=None)

    # -- sending (spec §3.4 RatchetEncrypt) --

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt under the next sending message key; returns ``header || AES-GCM(...)``."""
        cks = self.cks
        if cks is None:
            # Bob before receiving anything: the spec never lets him send first.
            raise ProtocolError("cannot send before the first message is received")
        ns = self.ns
        if ns > _MAX_COUNTER:
            raise ProtocolError("sending chain exhausted")
        self.cks, mk = kdf_ck(cks)
        self.ns = ns + 1
        header = _PREFIX + self.dhs_pub + _COUNTERS.pack(self.pn, ns)
        key, nonce = message_key_material(mk)
        return header + AESGCM(key).encrypt(nonce, plaintext, self.ad + header)

    # -- receiving (spec §3.5 RatchetDecrypt, transactional) --

    def decrypt(self, message: bytes, rng: Rng = os.urandom) -> bytes:
        """Decrypt a normal message; on any error the state is unchanged.

        Raises DecodeError/UnsupportedVersion/TooLarge (malformed), DuplicateMessage (key
        already used), TooManySkipped (counter too far ahead), DecryptionError (forged).
        """
        if type(message) is not bytes:
            message = bytes(message)
        size = len(message)
        if (
            size > C.MAX_MESSAGE_LEN
            or size < _MIN_LEN
            or message[0] != C.MESSAGE_VERSION
            or message[1] != C.MESSAGE_TYPE_NORMAL
        ):
            parse_header(message)  # raises the precise error
        dh = message[2:34]
        n = _U32.unpack_from(message, 38)[0]
        ad = self.ad + message[:HEADER_LEN]
        ciphertext = message[HEADER_LEN:]
        # 1. a key we skipped earlier (spec TrySkippedMessageKeys)
        skipped = self.skipped
        if skipped:
            mk = skipped.get((dh, n))
            if mk is not None:
                plaintext = _open(mk, ciphertext, ad)
                del skipped[(dh, n)]
                return plaintext
        # 2. the current receiving chain
        if dh == self.dhr:
            ckr = self.ckr
            if ckr is None:
                raise DecryptionError("no receiving chain for this key")
            nr = self.nr
            if n == nr:  # fast path: in order
                next_ckr, mk = kdf_ck(ckr)
                plaintext = _open(mk, ciphertext, ad)
                self.ckr = next_ckr
                self.nr = n + 1
                return plaintext
            if n < nr:
                raise DuplicateMessage("message key already used")
            if n - nr > C.MAX_SKIP:
                raise TooManySkipped("message counter too far ahead")
            new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
            ckr = _skip(ckr, dh, nr, n, new_skipped)
            ckr, mk = kdf_ck(ckr)
            plaintext = _open(mk, ciphertext, ad)
            self.ckr = ckr
            self.nr = n + 1
            self._store_skipped(new_skipped)
            return plaintext
        if dh in self.previous_dhr:
            raise DuplicateMessage("message from a retired ratchet key")
        # 3. a new ratchet key: DH ratchet step (spec DHRatchet), computed into locals
        pn = _U32.unpack_from(message, 34)[0]
        return self._decrypt_with_ratchet_step(dh, pn, n, ciphertext, ad, rng)

    def _decrypt_with_ratchet_step(
        self, dh: bytes, pn: int, n: int, ciphertext: bytes, ad: bytes, rng: Rng
    ) -> bytes:
        new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
        old_dhr = self.dhr
        if old_dhr is not None and self.ckr is not None and pn > self.nr:
            if pn - self.nr > C.MAX_SKIP:
                raise TooManySkipped("previous chain length too far ahead")
            _skip(self.ckr, old_dhr, self.nr, pn, new_skipped)
        if n > C.MAX_SKIP:
            raise TooManySkipped("message counter too far ahead")
        peer = X25519PublicKey.from_public_bytes(dh)  # parsed once, used for both DHs
        rk, ckr = kdf_rk(self.rk, _dh_key(self.dhs, peer))
        ckr = _skip(ckr, dh, 0, n, new_skipped)
        ckr, mk = kdf_ck(ckr)
        plaintext = _open(mk, ciphertext, ad)
        # authenticated: now take the second half of the step and commit
        dhs, dhs_pub = _new_keypair(rng)
        rk, cks = kdf_rk(rk, _dh_key(dhs, peer))
        if old_dhr is not None:
            self.previous_dhr.append(old_dhr)
            del self.previous_dhr[: -C.MAX_PREVIOUS_RATCHET_KEYS]
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        self.dhr = dh
        self.dhs = dhs
        self.dhs_pub = dhs_pub
        self.rk = rk
        self.cks = cks
        self.ckr = ckr
        self._store_skipped(new_skipped)
        return plaintext

    def _store_skipped(self, new: list[tuple[tuple[bytes, int], bytes]]) -> None:
        skipped = self.skipped
        skipped.update(new)
        excess = len(skipped) - C.MAX_SKIPPED_KEYS
        if excess > 0:  # evict oldest first (dicts keep insertion order)
            for key in list(skipped)[:excess]:
                del skipped[key]

    # -- serialization (PROTOCOL Part II §6) --

    def to_bytes(self) -> bytes:
        """Fixed layout, see PROTOCOL Part II §6.2."""
        flags = (self.dhr is not None) | (self.cks is not None) << 1 | (self.ckr is not None) << 2
        parts = [
            struct.pack(">B", flags),
            self.rk,
            self.dhs.private_bytes_raw(),
            self.dhr or _ZERO_KEY,
            self.cks or _ZERO_KEY,
            self.ckr or _ZERO_KEY,
            struct.pack(">IIIB", self.ns, self.nr, self.pn, len(self.previous_dhr)),
            *self.previous_dhr,
            struct.pack(">H", len(self.skipped)),
        ]
        for (dh, n), mk in self.skipped.items():
            parts += (dh, struct.pack(">I", n), mk)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, ad: bytes) -> tuple[RatchetState, int]:
        """Parse :meth:`to_bytes` output at the start of ``data``; returns (state, length)."""
        fixed = 1 + 5 * 32 + 13
        if len(data) < fixed + 2:
            raise DecodeError("truncated ratchet state")
        flags = data[0]
        if flags & ~0x07:
            raise DecodeError("unknown ratchet state flags")
        rk, dhs, dhr, cks, ckr = (bytes(data[1 + 32 * i : 33 + 32 * i]) for i in range(5))
        ns, nr, pn, n_prev = struct.unpack_from(">IIIB", data, 161)
        if n_prev > C.MAX_PREVIOUS_RATCHET_KEYS:
            raise DecodeError("too many previous ratchet keys")
        pos = fixed
        if len(data) < pos + 32 * n_prev + 2:
            raise DecodeError("truncated ratchet state")
        previous = [bytes(data[pos + 32 * i : pos + 32 * i + 32]) for i in range(n_prev)]
        pos += 32 * n_prev
        (n_skipped,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if n_skipped > C.MAX_SKIPPED_KEYS:
            raise DecodeError("too many skipped keys")
        if len(data) < pos + 68 * n_skipped:
            raise DecodeError("truncated ratchet state")
        skipped: dict[tuple[bytes, int], bytes] = {}
        for _ in range(n_skipped):
            key = bytes(data[pos : pos + 32])
            (counter,) = struct.unpack_from(">I", data, pos + 32)
            skipped[(key, counter)] = bytes(data[pos + 36 : pos + 68])
            pos += 68
        state = cls(
            ad=ad,
            rk=rk,
            dhs=X25519PrivateKey.from_private_bytes(dhs),
            dhr=dhr if flags & 1 else None,
            cks=cks if flags & 2 else None,
            ckr=ckr if flags & 4 else None,
            ns=ns,
            nr=nr,
            pn=pn,
            skipped=skipped,
            previous_dhr=previous,
        )
        return state, pos


def _skip(
    chain_key: bytes,
    dh: bytes,
    start: int,
    until: int,
    out: list[tuple[tuple[bytes, int], bytes]],
) -> bytes:
    """Spec SkipMessageKeys into ``out`` (not the state); returns the advanced chain key."""
    for i in range(start, until):
        chain_key, mk = kdf_ck(chain_key)
        out.append(((dh, i), mk))
    return chain_key
