"""The realm protocol end to end without HTTP (PROTOCOL.md Part X §4–§6): real realm
services on real SQLite stores, the client's sans-I/O Recovery, and the attacks that do not
need a network (what a realm's stored data reveals, forged and replayed answers)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from xchat.crypto import oprf, shamir
from xchat.crypto import pow as xpow
from xchat.crypto import recovery as rc
from xchat.errors import (
    ApiError,
    BackupUnavailable,
    DecryptionError,
    InvalidSignature,
    ProtocolError,
)
from xchat.realm.service import RealmService
from xchat.realm.store import RealmStore

ADDRESS = "xc1qexampleaddressforrealmtests"
PIN = "482913"


def now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def realms(tmp_path: Path) -> list[RealmService]:
    return [RealmService(RealmStore(tmp_path / f"r{i}"), pow_bits=2) for i in range(3)]


def call(r: RealmService, op: str, body: dict[str, Any], address: str = ADDRESS) -> dict[str, Any]:
    nonce = os.urandom(16)
    record = rc.record_id(r.store.public_key, address)
    req = {**body, "record": record.hex(), "nonce": rc.b64e(nonce)}
    if callable(req.get("owner_signature")):
        req["owner_signature"] = rc.b64e(req["owner_signature"](nonce))
    if op in ("register", "evaluate"):
        chal = r.challenge(now())
        c = rc.b64d(chal["challenge"], "c")
        res = (
            rc.register_pow_resource(record)
            if op == "register"
            else rc.guess_pow_resource(record, rc.b64d(req["blinded"], "b"))
        )
        req["challenge"] = chal["challenge"]
        req["pow_nonce"] = xpow.solve(c, res, chal["pow_bits"])
    return rc.open_response(r.store.public_key, op, record, nonce, r.handle(op, req, now()))


def enrol(realms: list[RealmService], secret: bytes, t: int, pin: str = PIN) -> None:
    regs = rc.enrol(secret, pin, ADDRESS, [r.store.public_key for r in realms], t)
    for r, reg in zip(realms, regs, strict=True):
        assert call(r, "register", {"registration": reg.to_json()})["status"] == "registered"


def attempt(live: list[RealmService], pin: str, liar: int | None = None) -> bytes:
    """One recovery; WrongPin raised as the client would. Realm ``liar`` (an index in
    ``live``) answers with a forged unlock commitment."""
    rv = rc.Recovery(pin, ADDRESS)
    infos = {r.store.public_key: call(r, "info", {}) for r in live}
    idx = rv.choose({k: v for k, v in infos.items() if v["status"] == "registered"})
    blinded = rv.blinded()
    evals, left = {}, []
    for r in live:
        a = call(r, "evaluate", {"blinded": rc.b64e(blinded), "version": rc.b64e(rv.version)})
        if a["status"] == "ok":
            z, proof, commitment = (
                rc.b64d(a[f], f) for f in ("evaluated", "proof", "unlock_commitment")
            )
            if liar is not None and r is live[liar]:
                commitment = os.urandom(32)
            evals[idx[r.store.public_key]] = (z, proof, commitment)
    ok = rv.check_evaluations(evals)
    released = {}
    for r in live:
        tag = rc.b64e(rv.tag(r.store.public_key))
        a = call(r, "recover", {"version": rc.b64e(rv.version), "unlock_tag": tag})
        if a["status"] == "ok":
            released[idx[r.store.public_key]] = (
                rc.b64d(a["key_share"], "k"),
                rc.b64d(a["encrypted_secret"], "e"),
            )
        else:
            left.append(a["guesses_remaining"])
    if not ok:
        raise rc.wrong_pin(min(left))
    return rv.open_secret(released)


def test_two_of_three_recovers_with_any_two(realms: list[RealmService]) -> None:
    secret = os.urandom(32)
    enrol(realms, secret, 2)
    for pair in itertools.combinations(realms, 2):
        assert attempt(list(pair), PIN) == secret
    with pytest.raises(BackupUnavailable):
        attempt(realms[:1], PIN)


def test_right_pin_resets_the_counter(realms: list[RealmService]) -> None:
    secret = os.urandom(32)
    enrol(realms, secret, 3)
    for left in (9, 8):
        with pytest.raises(rc.WrongPin) as err:
            attempt(realms, "777001")
        assert err.value.guesses_remaining == left
    assert attempt(realms, PIN) == secret
    with pytest.raises(rc.WrongPin) as err:
        attempt(realms, "777001")
    assert err.value.guesses_remaining == 9


def _dump(r: RealmService) -> dict[str, Any]:
    """Everything a realm's operator holds: the database rows (and its own keys)."""
    db = sqlite3.connect(r.store.root / "realm.sqlite3")
    ((reg_json,),) = db.execute("SELECT registration FROM records").fetchall()
    return dict(json.loads(reg_json))


def test_one_realm_of_two_of_three_learns_nothing(realms: list[RealmService]) -> None:
    """The attacker holds one realm's complete data and knows the address. It can neither
    test a PIN offline nor recover the secret: its OPRF key share and key share are
    consistent with every possible full key, and the AEAD does not open."""
    secret = os.urandom(32)
    enrol(realms, secret, 2)
    stolen = _dump(realms[0])
    reg = rc.Registration.from_json(stolen)
    # 1. Offline PIN test with only its own key share fails for the right PIN itself:
    from xchat.crypto.pin import stretch_pin

    sp = stretch_pin(PIN, reg.version, ADDRESS)
    y_guess = oprf.evaluate(reg.oprf_key, sp.access_key, rc.OPRF_MODE)
    # Private calls here and below on purpose: the attacker runs the recovery math offline.
    assert rc._unlock(y_guess)[1] != reg.unlock_commitment
    # 2. Its share is consistent with any OPRF key / any encryption scalar (perfect secrecy):
    for candidate in (1, shamir.random_scalar()):
        k_i = shamir.scalar_from_bytes(reg.oprf_key)
        # the line through (0, candidate) and (1, k_i) gives a valid second share
        slope = (k_i - candidate) % shamir.RISTRETTO255_ORDER
        other = shamir.Share(2, (candidate + 2 * slope) % shamir.RISTRETTO255_ORDER)
        assert shamir.combine([shamir.Share(1, k_i), other]) == candidate
    # 3. Using the one share as if it were the key does not open the secret:
    with pytest.raises(DecryptionError):
        rv = rc.Recovery(PIN, ADDRESS)
        rv.version, rv.threshold = reg.version, 1
        rv._stretched = sp
        rv.open_secret({1: (reg.key_share, reg.encrypted_secret)})
    # 4. Nothing in it names the account: no address, handle or PIN anywhere in the row.
    blob = json.dumps(stolen)
    assert ADDRESS not in blob and PIN not in blob


def test_two_realms_of_three_of_three_learn_nothing(realms: list[RealmService]) -> None:
    secret = os.urandom(32)
    enrol(realms, secret, 3)
    regs = [rc.Registration.from_json(_dump(r)) for r in realms[:2]]
    from xchat.crypto.pin import stretch_pin

    sp = stretch_pin(PIN, regs[0].version, ADDRESS)
    partial = {
        i + 1: oprf.blind_evaluate(reg.oprf_key, oprf.hash_to_group(sp.access_key, rc.OPRF_MODE))
        for i, reg in enumerate(regs)
    }
    # Two of three OPRF key shares combined are not the key: the commitment does not match
    combined = rc.combine_evaluations(partial)
    lp = lambda b: len(b).to_bytes(2, "big") + b  # noqa: E731 - RFC 9497 length prefix
    import hashlib

    y = hashlib.sha512(lp(sp.access_key) + lp(combined) + b"Finalize").digest()
    assert rc._unlock(y)[1] != regs[0].unlock_commitment
    rv = rc.Recovery(PIN, ADDRESS)
    rv.version, rv.threshold, rv._stretched = regs[0].version, 2, sp
    with pytest.raises(DecryptionError):
        rv.open_secret({i + 1: (r.key_share, r.encrypted_secret) for i, r in enumerate(regs)})


def test_tampered_and_replayed_answers_are_refused(realms: list[RealmService]) -> None:
    r = realms[0]
    enrol(realms, os.urandom(32), 2)
    record = rc.record_id(r.store.public_key, ADDRESS)
    nonce = os.urandom(16)
    body = {"record": record.hex(), "nonce": rc.b64e(nonce)}
    answer = r.handle("info", body, now())
    # tampered: flip the guess count in the payload
    payload = json.loads(base64.b64decode(answer["payload"]))
    payload["guesses_remaining"] = 0
    forged = {**answer, "payload": rc.b64e(json.dumps(payload).encode())}
    with pytest.raises(InvalidSignature):
        rc.open_response(r.store.public_key, "info", record, nonce, forged)
    # signed by another realm (an impostor)
    with pytest.raises(InvalidSignature):
        rc.open_response(realms[1].store.public_key, "info", record, nonce, answer)
    # replayed: a genuine old answer offered for a new request
    with pytest.raises((InvalidSignature, ProtocolError)):
        rc.open_response(r.store.public_key, "info", record, os.urandom(16), answer)
    assert rc.open_response(r.store.public_key, "info", record, nonce, answer)["status"]


def test_registration_overwrite_needs_the_owner(realms: list[RealmService]) -> None:
    secret = os.urandom(32)
    enrol(realms, secret, 2)
    squatter = rc.enrol(os.urandom(32), PIN, ADDRESS, [r.store.public_key for r in realms], 2)
    r = realms[0]
    assert call(r, "register", {"registration": squatter[0].to_json()})["status"] == "taken"
    assert call(r, "delete", {})["status"] == "forbidden"
    assert attempt(realms, PIN) == secret  # untouched
    version = rc.b64d(call(r, "info", {})["version"], "v")
    key = rc.owner_key(secret, r.store.public_key)
    record = rc.record_id(r.store.public_key, ADDRESS)
    signer = lambda n: key.sign(rc.owner_message("delete", record, version, n))  # noqa: E731
    assert call(r, "delete", {"owner_signature": signer})["status"] == "deleted"


def test_guesses_need_a_fresh_proof_of_work(realms: list[RealmService]) -> None:
    r = realms[0]
    r.pow_bits = 16  # a stamp for another resource passes by chance with p = 2^-16
    enrol(realms, os.urandom(32), 2)
    record = rc.record_id(r.store.public_key, ADDRESS)
    blinded = oprf.blind(b"x", mode=rc.OPRF_MODE)[1]
    chal = r.challenge(now())
    c = rc.b64d(chal["challenge"], "c")
    stamp = xpow.solve(c, rc.guess_pow_resource(record, blinded), 16)
    body = {
        "record": record.hex(),
        "nonce": rc.b64e(os.urandom(16)),
        "blinded": rc.b64e(blinded),
        "version": call(r, "info", {})["version"],
        "challenge": chal["challenge"],
        "pow_nonce": stamp,
    }
    r.handle("evaluate", body, now())
    with pytest.raises(ApiError) as err:
        r.handle("evaluate", {**body, "nonce": rc.b64e(os.urandom(16))}, now())  # reused
    assert err.value.status == 401
    other = oprf.blind(b"y", mode=rc.OPRF_MODE)[1]
    chal2 = r.challenge(now())
    with pytest.raises(ApiError):  # a stamp for another element does not pay
        r.handle(
            "evaluate",
            {**body, "blinded": rc.b64e(other), **{"challenge": chal2["challenge"]}},
            now(),
        )


def test_a_realm_lying_about_the_commitment_cannot_fail_a_right_pin(
    realms: list[RealmService],
) -> None:
    secret = os.urandom(32)
    enrol(realms, secret, 2)
    for liar in range(3):
        assert attempt(realms, PIN, liar=liar) == secret
