"""The realm's operations (PROTOCOL.md Part X §5), independent of HTTP.

Each ``POST /api/v1/realm/<op>`` body is a JSON object with ``record`` (64 hex digits) and
``nonce`` (16 random bytes, base64, fresh per request). Malformed requests, bad proofs of
work and spent challenges are plain HTTP errors (:class:`ApiError`); every *outcome* —
including "wrong PIN" and "no guesses left" — is a signed answer (``sign_response``), so a
network attacker can neither fake a release nor fake a deletion.

The guess counter is written before the evaluation leaves the realm, and a wrong unlock
tag at a record whose guesses are used up deletes the record (share and OPRF key) at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any, Final

from xchat.crypto import ed25519, oprf
from xchat.crypto import pow as xpow
from xchat.crypto.recovery import (
    DEFAULT_GUESS_LIMIT,
    NONCE_LEN,
    PROTOCOL_VERSION,
    RECORD_LEN,
    VERSION_LEN,
    Registration,
    b64d,
    b64e,
    guess_pow_resource,
    owner_message,
    register_pow_resource,
    sign_response,
)
from xchat.errors import ApiError, DecodeError, InvalidSignature
from xchat.realm.store import RealmStore

LABEL_CHALLENGE: Final = b"XChat-v1-realm-challenge"
CHALLENGE_TTL_MS: Final = 300_000  # time to solve a stamp on a slow phone
DEFAULT_POW_BITS: Final = 18  # ~0.2 s of one core per guess (pow.solve ~1.5 M hashes/s)
_CHALLENGE = struct.Struct(">BQ16s")
CHALLENGE_LEN: Final = _CHALLENGE.size + 16

OPS: Final = ("register", "info", "evaluate", "recover", "delete")


class RealmService:
    """One realm: ``handle(op, body, now_ms) -> signed answer`` over a :class:`RealmStore`."""

    def __init__(
        self,
        store: RealmStore,
        *,
        name: str = "realm",
        pow_bits: int = DEFAULT_POW_BITS,
        max_guess_limit: int = DEFAULT_GUESS_LIMIT,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.name = name
        self.pow_bits = pow_bits
        self.max_guess_limit = max_guess_limit
        self.rng = rng

    # --- public endpoints --------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """``GET /api/v1/realm``: what a client pins at enrolment."""
        return {
            "protocol": PROTOCOL_VERSION,
            "name": self.name,
            "public_key": b64e(self.store.public_key),
            "pow_bits": self.pow_bits,
            "guess_limit": self.max_guess_limit,
        }

    def challenge(self, now_ms: int) -> dict[str, Any]:
        """``POST /api/v1/realm/challenge``: stateless (HMAC), single use, 300 s."""
        body = _CHALLENGE.pack(1, now_ms + CHALLENGE_TTL_MS, self.rng(16))
        value = body + self._mac(body)
        return {
            "challenge": b64e(value),
            "expires_ms": now_ms + CHALLENGE_TTL_MS,
            "pow_bits": self.pow_bits,
        }

    def handle(self, op: str, body: object, now_ms: int) -> dict[str, str]:
        if op not in OPS:
            raise ApiError(404, "no such realm operation")
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            record = _record(body.get("record"))
            nonce = b64d(body.get("nonce"), "nonce", NONCE_LEN)
            result: dict[str, Any] = getattr(self, "_" + op)(record, body, now_ms)
        except DecodeError as exc:
            raise ApiError(400, str(exc)) from None
        result.update(op=op, record=record.hex(), nonce=b64e(nonce))
        return sign_response(self.store.signing_key, nonce, result)

    # --- operations ----------------------------------------------------------------------

    def _register(self, record: bytes, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        self._pay(body, register_pow_resource(record), now_ms)
        reg = Registration.from_json(body.get("registration"))
        if reg.guess_limit > self.max_guess_limit:
            raise ApiError(400, f"this realm allows at most {self.max_guess_limit} guesses")
        existing = self.store.get(record)
        if existing is not None and not self._owner_ok("register", record, existing, body):
            return {"status": "taken"}
        self.store.put(record, reg, now_ms)
        return {"status": "registered", "version": b64e(reg.version)}

    def _info(self, record: bytes, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        rec = self.store.get(record)
        if rec is None:
            return {"status": "not_registered"}
        reg = rec.registration
        return {
            "status": "registered",
            "version": b64e(reg.version),
            "threshold": reg.threshold,
            "count": reg.count,
            "index": reg.index,
            "guess_limit": reg.guess_limit,
            "guesses_remaining": max(0, reg.guess_limit - rec.guess_count),
            "public_shares": [b64e(p) for p in reg.public_shares],
        }

    def _evaluate(self, record: bytes, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        blinded = oprf.deserialize_element(b64d(body.get("blinded"), "blinded", 32))
        version = b64d(body.get("version"), "version", VERSION_LEN)
        self._pay(body, guess_pow_resource(record, blinded), now_ms)
        rec = self.store.get(record)
        if rec is None or rec.registration.version != version:
            return {"status": "not_registered"}
        reg = rec.registration
        if rec.guess_count >= reg.guess_limit:
            self.store.delete(record)
            return {"status": "no_guesses", "guesses_remaining": 0}
        count = rec.guess_count + 1
        self.store.set_guesses(record, count)  # committed before the evaluation leaves
        public = reg.public_shares[reg.index - 1]
        evaluated, proof = oprf.blind_evaluate_verifiable(reg.oprf_key, public, [blinded])
        return {
            "status": "ok",
            "evaluated": b64e(evaluated[0]),
            "proof": b64e(proof),
            "unlock_commitment": b64e(reg.unlock_commitment),
            "guesses_remaining": reg.guess_limit - count,
        }

    def _recover(self, record: bytes, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        version = b64d(body.get("version"), "version", VERSION_LEN)
        tag = b64d(body.get("unlock_tag"), "unlock_tag", 32)
        rec = self.store.get(record)
        if rec is None or rec.registration.version != version:
            return {"status": "not_registered"}
        reg = rec.registration
        if hmac.compare_digest(tag, reg.unlock_tag):
            self.store.set_guesses(record, 0)
            return {
                "status": "ok",
                "key_share": b64e(reg.key_share),
                "encrypted_secret": b64e(reg.encrypted_secret),
            }
        if rec.guess_count >= reg.guess_limit:
            self.store.delete(record)
            return {"status": "no_guesses", "guesses_remaining": 0}
        return {"status": "wrong_pin", "guesses_remaining": reg.guess_limit - rec.guess_count}

    def _delete(self, record: bytes, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        rec = self.store.get(record)
        if rec is None:
            return {"status": "not_registered"}
        if not self._owner_ok("delete", record, rec, body):
            return {"status": "forbidden"}
        self.store.delete(record)
        return {"status": "deleted"}

    # --- checks --------------------------------------------------------------------------

    def _owner_ok(self, op: str, record: bytes, rec: Any, body: dict[str, Any]) -> bool:
        sig = body.get("owner_signature")
        if sig is None:
            return False
        nonce = b64d(body.get("nonce"), "nonce", NONCE_LEN)
        message = owner_message(op, record, rec.registration.version, nonce)
        try:
            ed25519.verify(rec.registration.owner_key, b64d(sig, "owner_signature", 64), message)
        except InvalidSignature:
            return False
        return True

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self.store.mac_key, LABEL_CHALLENGE + data, hashlib.sha256).digest()[:16]

    def _pay(self, body: dict[str, Any], resource: bytes, now_ms: int) -> None:
        """Proof of work on a fresh realm challenge (Part I §5 stamps), then spend it."""
        challenge = b64d(body.get("challenge"), "challenge", CHALLENGE_LEN)
        nonce = body.get("pow_nonce")
        if not isinstance(nonce, int) or isinstance(nonce, bool):
            raise ApiError(400, "pow_nonce must be an integer")
        head, mac = challenge[:-16], challenge[-16:]
        version, expires, _ = _CHALLENGE.unpack(head)
        if version != 1 or not hmac.compare_digest(mac, self._mac(head)) or expires <= now_ms:
            raise ApiError(401, "invalid or expired challenge")
        if not xpow.stamp_ok(challenge, resource, nonce, self.pow_bits):
            raise ApiError(401, f"proof of work does not meet {self.pow_bits} bits")
        if not self.store.use_challenge(challenge, expires, now_ms):
            raise ApiError(401, "challenge already used")


def _record(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * RECORD_LEN:
        raise DecodeError("record must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError("record must be 64 hex digits") from None
