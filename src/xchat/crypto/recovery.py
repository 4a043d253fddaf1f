"""PIN-guarded secret recovery across independent realms (PROTOCOL.md Part X §3–§6).

The construction follows the Juicebox protocol (Trapp and Ongaro, "Juicebox Protocol:
Distributed Storage and Recovery of Secrets Using Simple PIN Authentication", IACR ePrint
2025/348) — a *threshold* OPRF plus Shamir-shared key material — with the OPRF of RFC 9497
(ristretto255-SHA512, :mod:`xchat.crypto.oprf`). Overview, numbered as in Part X:

1. Enrolment (client only): ``version`` = 16 random bytes; ``access_key || seed`` =
   Argon2id(PIN) (:mod:`xchat.crypto.pin`). A random OPRF key ``k`` is Shamir-split into
   ``k_i`` (realm ``i`` stores ``k_i`` and every realm stores the public shares
   ``P_j = k_j·G``). ``y = OPRF(k, access_key)`` gives ``unlock_key`` and
   ``unlock_commitment``; realm ``i`` stores the commitment and its own
   ``unlock_tag_i = HMAC(unlock_key, realm_key_i)``. A random scalar ``S`` is split into
   ``S_i``; ``enc_key = HKDF(seed || S)`` encrypts the account secret with AES-256-GCM, and
   every realm stores that ciphertext (it is useless without ``S`` *and* the PIN).
2. Recovery, phase 1 (``info``): each realm says which ``version`` it holds, its share
   index, the threshold and the public shares. The client keeps the majority version.
3. Phase 2 (``evaluate``, costs the guesser a proof of work and the realm counts it):
   the client blinds ``access_key`` once and sends the same blinded element ``B`` to every
   realm; realm ``i`` returns ``Z_i = k_i·B`` with a DLEQ proof against ``P_i`` (RFC 9497
   §2.2) and the commitment. The client combines any ``t`` valid ``Z_i`` with Lagrange
   coefficients, ``Z = Σ λ_i Z_i = k·B``, finalizes ``y`` and checks the commitment.
4. Phase 3 (``recover``): the client sends ``unlock_tag_i``; a realm compares it in constant
   time, and on a match resets its guess counter and releases ``S_i`` and the ciphertext.
   A wrong tag at a realm with no guesses left deletes the record there.

No single realm, nor any ``t - 1`` of them, can test a PIN offline: that needs ``k``. They
hold ``t - 1`` shares of ``k`` and of ``S``, which are independent of the secrets
(:mod:`xchat.crypto.shamir`). A realm response is signed by the realm's Ed25519 key over
the client's fresh per-request nonce (§5), so a tampered or replayed response is refused.

Everything here is sans-I/O: the client shell (:mod:`xchat.client.backup`) and the realm
server (:mod:`xchat.realm`) move these values over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import rbcl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat import encoding
from xchat.crypto import ed25519, oprf, shamir
from xchat.crypto.keys import hkdf
from xchat.crypto.pin import StretchedPin, stretch_pin
from xchat.errors import (
    BackupUnavailable,
    DecodeError,
    DecryptionError,
    ProtocolError,
    WrongPin,
)

# --- constants (Part X §8) -------------------------------------------------------------------

PROTOCOL_VERSION: Final = 1
DEFAULT_GUESS_LIMIT: Final = 10  # Signal's SVR and Juicebox default; 10 / 10^6 for a 6-digit PIN
MAX_GUESS_LIMIT: Final = 100  # a realm refuses more: the limit is what makes a PIN safe
MAX_REALMS: Final = 16  # share indices are one byte; more realms only add round trips
VERSION_LEN: Final = 16
NONCE_LEN: Final = 16
RECORD_LEN: Final = 32
KEY_LEN: Final = 32
SECRET_LEN: Final = 32  # the account secret is the 32-byte identity seed (Part I §1)
MAX_ENCRYPTED_SECRET: Final = 12 + 256 + 16  # nonce || ciphertext(<= 256) || tag
OPRF_MODE: Final = oprf.MODE_VOPRF  # the verifiable mode: every evaluation carries a proof

LABEL_RECORD: Final = b"XChat-v1-realm-record"
LABEL_RESPONSE: Final = b"XChat-v1-realm-response"
LABEL_OWNER_KEY: Final = b"XChat-v1-realm-owner-key"
LABEL_OWNER_SIG: Final = b"XChat-v1-realm-owner"
LABEL_UNLOCK_KEY: Final = b"XChat-v1-backup-unlock-key"
LABEL_UNLOCK_COMMITMENT: Final = b"XChat-v1-backup-unlock-commitment"
LABEL_UNLOCK_TAG: Final = b"XChat-v1-backup-unlock-tag"
LABEL_SECRET_KEY: Final = b"XChat-v1-backup-secret-key"
LABEL_SECRET_AAD: Final = b"XChat-v1-backup-secret"
LABEL_GUESS_POW: Final = b"XChat-v1-realm-guess"
LABEL_REGISTER_POW: Final = b"XChat-v1-realm-register"

Rng = Callable[[int], bytes]


b64e = encoding.b64encode
b64d = encoding.b64decode


def _int(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    v = obj.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise DecodeError(f"{name} must be an integer in {lo}..{hi}")
    return v


# --- identifiers and keys --------------------------------------------------------------------


LOCATOR_LEN: Final = 16


def record_id(realm_key: bytes, address: str, locator: bytes = b"") -> bytes:
    """The realm-side name of an account's record: ``SHA-256(label || realm_key || address
    || locator)``. ``locator`` is a random 16-byte value the account keeps at its relay
    (Part X §9.6): the realm never receives the address, and without the relay's help it
    cannot even test whether an address it knows has a record (threat model, §7)."""
    return hashlib.sha256(LABEL_RECORD + realm_key + address.encode("ascii") + locator).digest()


def owner_key(secret: bytes, realm_key: bytes) -> Ed25519PrivateKey:
    """The per-realm key that may overwrite or delete the record (derived from the account
    secret, so a restored device can manage the backup it restored from; different per
    realm, so two realms cannot link records by it)."""
    seed = hkdf(secret, b"", LABEL_OWNER_KEY + realm_key, 32)
    return Ed25519PrivateKey.from_private_bytes(seed)


def owner_message(op: str, record: bytes, version: bytes, nonce: bytes) -> bytes:
    """What the owner signs to overwrite (``register``) or ``delete`` a record: bound to
    the record's *current* version, so an old signed delete cannot remove a newer record."""
    return LABEL_OWNER_SIG + op.encode("ascii") + b"|" + record + version + nonce


def guess_pow_resource(record: bytes, blinded: bytes) -> bytes:
    """Proof-of-work resource of one guess (Part I §5 stamps): bound to the record and the
    blinded element, so a stamp pays for exactly one evaluation."""
    return LABEL_GUESS_POW + record + blinded


def register_pow_resource(record: bytes) -> bytes:
    return LABEL_REGISTER_POW + record


def _unlock(oprf_output: bytes) -> tuple[bytes, bytes]:
    return (
        hkdf(oprf_output, b"", LABEL_UNLOCK_KEY, 32),
        hkdf(oprf_output, b"", LABEL_UNLOCK_COMMITMENT, 32),
    )


def unlock_tag(unlock_key: bytes, realm_key: bytes) -> bytes:
    return hmac.new(unlock_key, LABEL_UNLOCK_TAG + realm_key, hashlib.sha256).digest()


def _secret_key(stretched: StretchedPin, s: int) -> bytes:
    return hkdf(stretched.encryption_seed + shamir.scalar_to_bytes(s), b"", LABEL_SECRET_KEY, 32)


def _secret_aad(version: bytes, address: str) -> bytes:
    return LABEL_SECRET_AAD + version + address.encode("ascii")


# --- what a realm stores ---------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """Realm ``index``'s part of one enrolment (the ``registration`` object of Part X §5.2)."""

    version: bytes
    threshold: int
    count: int
    index: int
    guess_limit: int
    oprf_key: bytes
    public_shares: tuple[bytes, ...]
    unlock_commitment: bytes
    unlock_tag: bytes
    key_share: bytes
    encrypted_secret: bytes
    owner_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": b64e(self.version),
            "threshold": self.threshold,
            "count": self.count,
            "index": self.index,
            "guess_limit": self.guess_limit,
            "oprf_key": b64e(self.oprf_key),
            "public_shares": [b64e(p) for p in self.public_shares],
            "unlock_commitment": b64e(self.unlock_commitment),
            "unlock_tag": b64e(self.unlock_tag),
            "key_share": b64e(self.key_share),
            "encrypted_secret": b64e(self.encrypted_secret),
            "owner_key": b64e(self.owner_key),
        }

    @classmethod
    def from_json(cls, obj: object) -> Registration:
        """Validate everything a realm must check before storing (DecodeError otherwise)."""
        if not isinstance(obj, dict):
            raise DecodeError("registration must be an object")
        count = _int(obj, "count", 1, MAX_REALMS)
        threshold = _int(obj, "threshold", 1, count)
        index = _int(obj, "index", 1, count)
        shares = obj.get("public_shares")
        if not isinstance(shares, list) or len(shares) != count:
            raise DecodeError("public_shares must list one element per realm")
        public = tuple(oprf.deserialize_element(b64d(p, "public share", 32)) for p in shares)
        oprf_key = oprf.deserialize_scalar(b64d(obj.get("oprf_key"), "oprf_key", 32))
        if oprf.public_key(oprf_key) != public[index - 1]:
            raise DecodeError("oprf_key does not match its public share")
        enc = b64d(obj.get("encrypted_secret"), "encrypted_secret")
        if not 12 + 16 <= len(enc) <= MAX_ENCRYPTED_SECRET:
            raise DecodeError("encrypted_secret has a bad length")
        owner = b64d(obj.get("owner_key"), "owner_key", 32)
        ed25519.check_public_key(owner)
        key_share = b64d(obj.get("key_share"), "key_share", 32)
        shamir.scalar_from_bytes(key_share)
        return cls(
            version=b64d(obj.get("version"), "version", VERSION_LEN),
            threshold=threshold,
            count=count,
            index=index,
            guess_limit=_int(obj, "guess_limit", 1, MAX_GUESS_LIMIT),
            oprf_key=oprf_key,
            public_shares=public,
            unlock_commitment=b64d(obj.get("unlock_commitment"), "unlock_commitment", 32),
            unlock_tag=b64d(obj.get("unlock_tag"), "unlock_tag", 32),
            key_share=key_share,
            encrypted_secret=enc,
            owner_key=owner,
        )


def enrol(
    secret: bytes,
    pin: str,
    address: str,
    realm_keys: Sequence[bytes],
    threshold: int,
    *,
    guess_limit: int = DEFAULT_GUESS_LIMIT,
    rng: Rng = os.urandom,
) -> list[Registration]:
    """Step 1 of Part X §4: one :class:`Registration` per realm, in ``realm_keys`` order
    (realm ``j`` of the list gets share index ``j + 1``). The PIN must already have passed
    :func:`xchat.crypto.pin.check_pin`."""
    n = len(realm_keys)
    if not 1 <= threshold <= n <= MAX_REALMS:
        raise ValueError(f"need 1 <= threshold <= realms <= {MAX_REALMS}")
    if len(set(realm_keys)) != n:
        raise ValueError("the same realm twice would hold two shares")
    if len(secret) != SECRET_LEN or not 1 <= guess_limit <= MAX_GUESS_LIMIT:
        raise ValueError("bad secret length or guess limit")
    version = rng(VERSION_LEN)
    stretched = stretch_pin(pin, version, address)
    k = shamir.random_scalar()
    k_shares = _split_nonzero(k, threshold, n)
    public = tuple(oprf.public_key(shamir.scalar_to_bytes(sh.y)) for sh in k_shares)
    y = oprf.evaluate(shamir.scalar_to_bytes(k), stretched.access_key, OPRF_MODE)
    unlock_key, commitment = _unlock(y)
    s = shamir.random_scalar()
    s_shares = shamir.split(s, threshold, n)
    nonce = rng(12)
    encrypted = nonce + AESGCM(_secret_key(stretched, s)).encrypt(
        nonce, secret, _secret_aad(version, address)
    )
    out = []
    for j, realm_key in enumerate(realm_keys):
        out.append(
            Registration(
                version=version,
                threshold=threshold,
                count=n,
                index=j + 1,
                guess_limit=guess_limit,
                oprf_key=shamir.scalar_to_bytes(k_shares[j].y),
                public_shares=public,
                unlock_commitment=commitment,
                unlock_tag=unlock_tag(unlock_key, realm_key),
                key_share=shamir.scalar_to_bytes(s_shares[j].y),
                encrypted_secret=encrypted,
                owner_key=owner_key(secret, realm_key).public_key().public_bytes_raw(),
            )
        )
    return out


def _split_nonzero(k: int, t: int, n: int) -> list[shamir.Share]:
    """Shares of the OPRF key must be valid (non-zero) OPRF keys themselves; a zero share
    has probability n/2^252, and we simply draw another polynomial."""
    while True:
        shares = shamir.split(k, t, n)
        if all(sh.y != 0 for sh in shares):
            return shares


# --- signed realm responses (Part X §5.1) ----------------------------------------------------


def response_message(nonce: bytes, payload: bytes) -> bytes:
    return LABEL_RESPONSE + nonce + payload


def sign_response(key: Ed25519PrivateKey, nonce: bytes, result: dict[str, Any]) -> dict[str, str]:
    """The realm's answer: ``{"payload": b64(JSON), "signature": b64(Ed25519(label ||
    nonce || payload))}``. The payload echoes ``op``, ``record`` and ``nonce``."""
    payload = json.dumps(result, separators=(",", ":"), sort_keys=True).encode()
    return {"payload": b64e(payload), "signature": b64e(key.sign(response_message(nonce, payload)))}


def open_response(
    realm_key: bytes, op: str, record: bytes, nonce: bytes, body: object
) -> dict[str, Any]:
    """Check a realm answer against the pinned key and *this* request's nonce; return the
    payload object. A forged or tampered answer is InvalidSignature; a replayed one (another
    request's nonce, op or record) is ProtocolError."""
    if not isinstance(body, dict):
        raise ProtocolError("realm answer is not a JSON object")
    payload = b64d(body.get("payload"), "payload")
    signature = b64d(body.get("signature"), "signature", 64)
    ed25519.verify(realm_key, signature, response_message(nonce, payload))
    try:
        result = json.loads(payload)
    except ValueError:
        raise ProtocolError("realm payload is not JSON") from None
    if not isinstance(result, dict):
        raise ProtocolError("realm payload is not an object")
    if (
        result.get("op") != op
        or result.get("record") != record.hex()
        or result.get("nonce") != b64e(nonce)
    ):
        raise ProtocolError("realm answer is for another request (replayed?)")
    return result


# --- the client side of a recovery (Part X §6) -----------------------------------------------


class Recovery:
    """One recovery attempt. Feed it the realms' answers in phase order:
    :meth:`choose` (phase 1 infos) → :meth:`blinded` → :meth:`check_evaluations`
    (phase 2) → :meth:`tag` per realm → :meth:`open_secret` (phase 3 shares)."""

    def __init__(self, pin: str, address: str) -> None:
        self.pin = pin
        self.address = address
        self.version = b""
        self.threshold = 0
        self.public_shares: tuple[bytes, ...] = ()
        self._stretched: StretchedPin | None = None
        self._blind = b""
        self._blinded = b""
        self._unlock_key = b""

    def choose(self, infos: Mapping[bytes, Mapping[str, Any]]) -> dict[bytes, int]:
        """Phase 1: from ``{realm_key: info payload}`` of the realms that answered
        ``registered``, pick the version most realms hold (it must reach its threshold) and
        return ``{realm_key: share index}`` of the realms holding it."""
        votes: Counter[tuple[bytes, int, int, tuple[bytes, ...]]] = Counter()
        parsed: dict[bytes, tuple[tuple[bytes, int, int, tuple[bytes, ...]], int]] = {}
        for key, info in infos.items():
            try:
                count = _int(info, "count", 1, MAX_REALMS)
                t = _int(info, "threshold", 1, count)
                idx = _int(info, "index", 1, count)
                shares = info.get("public_shares")
                if not isinstance(shares, list) or len(shares) != count:
                    raise DecodeError("bad public_shares")
                pub = tuple(oprf.deserialize_element(b64d(p, "share", 32)) for p in shares)
                version = b64d(info.get("version"), "version", VERSION_LEN)
            except DecodeError:
                continue  # a realm with a malformed record does not get a vote
            sig = (version, t, count, pub)
            votes[sig] += 1
            parsed[key] = (sig, idx)
        for sig, n in votes.most_common():
            if n >= sig[1]:
                self.version, self.threshold, _, self.public_shares = sig
                chosen = {k: idx for k, (s, idx) in parsed.items() if s == sig}
                if len(set(chosen.values())) != len(chosen):
                    raise ProtocolError("two realms claim the same share index")
                return chosen
        raise BackupUnavailable(
            "no PIN backup for this account at enough of these realms "
            "(never enrolled, deleted after too many wrong PINs, or realms unreachable)"
        )

    def blinded(self) -> bytes:
        """Phase 2 request element (Argon2id runs here, once)."""
        if not self.version:
            raise ProtocolError("choose() first")
        self._stretched = stretch_pin(self.pin, self.version, self.address)
        self._blind, self._blinded = oprf.blind(self._stretched.access_key, mode=OPRF_MODE)
        return self._blinded

    def check_evaluations(self, evaluations: Mapping[int, tuple[bytes, bytes, bytes]]) -> bool:
        """Phase 2 answers ``{index: (evaluated, proof, unlock_commitment)}``. Evaluations
        whose DLEQ proof fails against the agreed public share are dropped; any
        ``threshold`` of the rest are combined. True if the PIN is right (the commitment
        matches); False if it is wrong. BackupUnavailable if too few valid evaluations."""
        good: dict[int, tuple[bytes, bytes]] = {}
        for idx, (z, proof, commitment) in evaluations.items():
            if not 1 <= idx <= len(self.public_shares):
                continue
            try:
                z = oprf.deserialize_element(z)
            except DecodeError:
                continue
            pub = self.public_shares[idx - 1]
            if oprf.verify_proof(oprf.GENERATOR, pub, [self._blinded], [z], proof, mode=OPRF_MODE):
                good[idx] = (z, commitment)
        if len(good) < self.threshold:
            raise BackupUnavailable(
                f"only {len(good)} realm(s) gave a valid answer; {self.threshold} are needed"
            )
        chosen = sorted(good)[: self.threshold]
        combined = combine_evaluations({i: good[i][0] for i in chosen})
        assert self._stretched is not None
        y = oprf.finalize(self._stretched.access_key, self._blind, combined)
        unlock_key, commitment = _unlock(y)
        # Only the true OPRF output hashes to the stored commitment, so one realm reporting
        # it suffices; a realm that reports a wrong one cannot turn a right PIN "wrong".
        ok = False
        for _, claimed in good.values():
            ok |= hmac.compare_digest(commitment, claimed)
        self._unlock_key = unlock_key
        return ok

    def tag(self, realm_key: bytes) -> bytes:
        """Phase 3 request value for one realm (after :meth:`check_evaluations`)."""
        if not self._unlock_key:
            raise ProtocolError("check_evaluations() first")
        return unlock_tag(self._unlock_key, realm_key)

    def open_secret(self, released: Mapping[int, tuple[bytes, bytes]]) -> bytes:
        """Phase 3 answers ``{index: (key_share, encrypted_secret)}`` → the account secret.
        DecryptionError if the shares or the ciphertext are not this account's."""
        if len(released) < self.threshold:
            raise BackupUnavailable(
                f"only {len(released)} realm(s) released a share; {self.threshold} are needed"
            )
        assert self._stretched is not None
        shares = [
            shamir.Share(i, shamir.scalar_from_bytes(ks)) for i, (ks, _) in sorted(released.items())
        ][: self.threshold]
        s = shamir.combine(shares)
        key = AESGCM(_secret_key(self._stretched, s))
        for enc in {e for _, e in released.values()}:
            try:
                secret = key.decrypt(enc[:12], enc[12:], _secret_aad(self.version, self.address))
            except (InvalidTag, ValueError):
                continue
            if len(secret) == SECRET_LEN:
                return secret
        raise DecryptionError("the released shares do not open this account's backup")


def combine_evaluations(evaluated: Mapping[int, bytes]) -> bytes:
    """``Σ λ_i Z_i`` over ristretto255 for share indices ``i`` (Lagrange at 0): the
    evaluation under the full key ``k`` of the element all ``Z_i`` were computed on."""
    xs = sorted(evaluated)
    lam = shamir.lagrange_coefficients(xs)
    acc: bytes | None = None
    for x, lc in zip(xs, lam, strict=True):
        term = bytes(
            rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(
                shamir.scalar_to_bytes(lc), evaluated[x]
            )
        )
        acc = term if acc is None else bytes(rbcl.crypto_core_ristretto255_add(acc, term))
    assert acc is not None
    return oprf.deserialize_element(acc)


def wrong_pin(remaining: int) -> WrongPin:
    """The error a wrong PIN ends in (exit status 8 in the CLI)."""
    if remaining <= 0:
        return WrongPin("wrong PIN; no guesses remain: the PIN backup is deleted", 0)
    return WrongPin(f"wrong PIN; {remaining} guess(es) remain", remaining)
