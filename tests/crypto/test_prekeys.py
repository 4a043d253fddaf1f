"""Prekey generation, records, bundle JSON and signature checks (PROTOCOL Part II §1–§2)."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from xchat.crypto.keys import IdentityKeyPair, encode_mlkem1024, encode_x25519
from xchat.crypto.prekeys import (
    InMemoryPreKeyStore,
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
    bundles_from_response,
    generate_kem_prekeys,
    generate_one_time_prekeys,
    prekey_signature_message,
    prekey_upload,
)
from xchat.errors import (
    DecodeError,
    InvalidSignature,
    UnsupportedVersion,
    UntrustedIdentity,
    XChatError,
)


def rng_of(seed: int) -> Any:
    return random.Random(seed).randbytes


@pytest.fixture(scope="module")
def bob() -> IdentityKeyPair:
    return IdentityKeyPair.from_seed(b"\x02" * 32)


@pytest.fixture(scope="module")
def records(
    bob: IdentityKeyPair,
) -> tuple[SignedPreKeyRecord, KemPreKeyRecord, OneTimePreKeyRecord]:
    rng = rng_of(1)
    return (
        SignedPreKeyRecord.generate(bob, 11, rng, created_ms=1234),
        KemPreKeyRecord.generate(bob, 22, last_resort=True, rng=rng, created_ms=99),
        OneTimePreKeyRecord.generate(33, rng),
    )


@pytest.fixture(scope="module")
def bundle(bob: IdentityKeyPair, records: Any) -> PreKeyBundle:
    spk, kem, otk = records
    return PreKeyBundle.from_records(bob.public, 7, spk, kem, otk)


def test_signatures_cover_label_and_encoded_key(bob: IdentityKeyPair, records: Any) -> None:
    spk, kem, _ = records
    bob.public.verify(spk.signature, b"XChat-v1-prekey" + b"\x05" + spk.public)
    bob.public.verify(kem.signature, b"XChat-v1-prekey" + b"\x08" + kem.public)
    assert prekey_signature_message(b"k") == b"XChat-v1-prekey" + b"k"


def test_kem_prekey_is_deterministic_from_seed(bob: IdentityKeyPair) -> None:
    a = KemPreKeyRecord.generate(bob, 1, last_resort=False, rng=rng_of(5))
    b = KemPreKeyRecord.generate(bob, 1, last_resort=False, rng=rng_of(5))
    assert a.public == b.public and len(a.public) == 1568 and len(a.seed) == 64


@pytest.mark.parametrize("kind", [SignedPreKeyRecord, KemPreKeyRecord, OneTimePreKeyRecord])
def test_record_round_trip_and_rejects_bad_bytes(records: Any, kind: Any) -> None:
    record = next(r for r in records if isinstance(r, kind))
    data = record.to_bytes()
    again = kind.from_bytes(data)
    assert again == record and again.public == record.public
    with pytest.raises(UnsupportedVersion):
        kind.from_bytes(b"\x02" + data[1:])
    for bad in (data[:-1], data + b"\x00", b"", data[:1]):
        with pytest.raises(DecodeError):
            kind.from_bytes(bad)
    with pytest.raises(DecodeError):  # wrong record kind byte
        kind.from_bytes(data[:1] + b"\x09" + data[2:])


def test_kem_record_flags_and_last_resort(records: Any) -> None:
    kem = records[1]
    data = kem.to_bytes()
    assert KemPreKeyRecord.from_bytes(data).last_resort is True
    with pytest.raises(DecodeError):
        KemPreKeyRecord.from_bytes(data[:14] + b"\x02" + data[15:])


def test_batches_have_sequential_ids(bob: IdentityKeyPair) -> None:
    otks = generate_one_time_prekeys(0xFFFFFFFE, 3, rng_of(2))
    assert [k.id for k in otks] == [0xFFFFFFFE, 0xFFFFFFFF, 0]
    kems = generate_kem_prekeys(bob, 5, 2, rng_of(3))
    assert [k.id for k in kems] == [5, 6] and not any(k.last_resort for k in kems)
    with pytest.raises(DecodeError):
        OneTimePreKeyRecord.generate(-1)
    with pytest.raises(DecodeError):
        OneTimePreKeyRecord.generate(2**32)


def test_upload_json_matches_contract(bob: IdentityKeyPair, records: Any) -> None:
    spk, kem, otk = records
    kem_otk = KemPreKeyRecord.generate(bob, 40, last_resort=False, rng=rng_of(4))
    body = prekey_upload(
        signed_prekey=spk, kem_last_resort=kem, one_time_ec=[otk], one_time_kem=[kem_otk]
    )
    assert set(body) == {"signed_prekey", "kem_last_resort", "one_time_ec", "one_time_kem"}
    assert base64.b64decode(body["signed_prekey"]["key"]) == encode_x25519(spk.public)
    assert base64.b64decode(body["kem_last_resort"]["key"]) == encode_mlkem1024(kem.public)
    assert body["one_time_ec"] == [
        {"id": 33, "key": base64.b64encode(b"\x05" + otk.public).decode()}
    ]
    assert set(body["one_time_kem"][0]) == {"id", "key", "signature"}
    assert prekey_upload() == {}


def test_bundle_json_round_trip_and_verify(bundle: PreKeyBundle) -> None:
    data = bundle.to_json()
    assert data["kem_prekey"]["last_resort"] is True
    assert data["one_time_ec"]["id"] == 33
    again = PreKeyBundle.from_json(data)
    assert again == bundle
    again.verify()
    no_otk = dict(data, one_time_ec=None)
    parsed = PreKeyBundle.from_json(no_otk)
    assert parsed.one_time_prekey is None and parsed.one_time_prekey_id is None


def test_full_bundle_response(bundle: PreKeyBundle, bob: IdentityKeyPair) -> None:
    device = bundle.to_json()
    identity = device.pop("identity_key")
    response = {"address": bob.public.address(), "identity_key": identity, "devices": [device]}
    assert bundles_from_response(response) == [bundle]
    other = IdentityKeyPair.from_seed(b"\x03" * 32)
    with pytest.raises(UntrustedIdentity):
        bundles_from_response(dict(response, address=other.public.address()))
    with pytest.raises(DecodeError):
        bundles_from_response(dict(response, devices="x"))


def _forge(data: dict[str, Any], section: str, field: str, value: Any) -> dict[str, Any]:
    return dict(data, **{section: dict(data[section], **{field: value})})


@pytest.mark.parametrize("section", ["signed_prekey", "kem_prekey"])
def test_forged_signatures_rejected(bundle: PreKeyBundle, section: str) -> None:
    data = bundle.to_json()
    sig = bytearray(base64.b64decode(data[section]["signature"]))
    sig[5] ^= 1
    forged = PreKeyBundle.from_json(
        _forge(data, section, "signature", base64.b64encode(sig).decode())
    )
    with pytest.raises(InvalidSignature):
        forged.verify()


def test_key_swapped_under_valid_signature_rejected(
    bob: IdentityKeyPair, bundle: PreKeyBundle
) -> None:
    other = SignedPreKeyRecord.generate(bob, 12, rng_of(9))
    data = _forge(
        bundle.to_json(), "signed_prekey", "key", base64.b64encode(b"\x05" + other.public).decode()
    )
    with pytest.raises(InvalidSignature):
        PreKeyBundle.from_json(data).verify()
    # signed by someone else entirely
    mallory = IdentityKeyPair.from_seed(b"\x04" * 32)
    forged = PreKeyBundle.from_json(bundle.to_json(), mallory.public)
    with pytest.raises(InvalidSignature):
        forged.verify()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: dict(d, device_id=True),
        lambda d: dict(d, device_id=-1),
        lambda d: dict(d, device_id=2**32),
        lambda d: dict(d, device_id="1"),
        lambda d: dict(d, signed_prekey=None),
        lambda d: dict(d, one_time_ec=[]),
        lambda d: dict(d, identity_key="!!"),
        lambda d: _forge(d, "signed_prekey", "key", "AAAA"),
        lambda d: _forge(d, "signed_prekey", "key", base64.b64encode(b"\x08" + b"k" * 32).decode()),
        lambda d: _forge(d, "signed_prekey", "key", "not base64!"),
        lambda d: _forge(d, "signed_prekey", "key", 5),
        lambda d: _forge(d, "signed_prekey", "signature", "AAAA"),
        lambda d: _forge(d, "signed_prekey", "id", 1.0),
        lambda d: _forge(d, "kem_prekey", "last_resort", "yes"),
        lambda d: _forge(
            d, "kem_prekey", "key", base64.b64encode(b"\x08" + b"\xff" * 1568).decode()
        ),
        lambda d: _forge(
            d, "kem_prekey", "key", base64.b64encode(b"\x05" + b"\x00" * 1568).decode()
        ),
        lambda d: _forge(d, "one_time_ec", "key", None),
        lambda d: "not a dict",
    ],
)
def test_malformed_bundle_json_is_decode_error(bundle: PreKeyBundle, mutate: Any) -> None:
    with pytest.raises(DecodeError):
        PreKeyBundle.from_json(mutate(bundle.to_json())).verify()


def test_invalid_mlkem_key_caught_before_use(bundle: PreKeyBundle) -> None:
    """A KEM key failing the FIPS 203 modulus check is a DecodeError at use, not a crash."""
    from xchat.crypto.prekeys import mlkem_public_from_bytes

    with pytest.raises(DecodeError):
        mlkem_public_from_bytes(b"\xff" * 1568)
    with pytest.raises(XChatError):
        mlkem_public_from_bytes(b"\x00" * 10)


def test_in_memory_store(records: Any) -> None:
    spk, kem, otk = records
    store = InMemoryPreKeyStore([spk], [otk], [kem])
    assert store.signed_prekey(11) is spk and store.kem_prekey(22) is kem
    assert store.one_time_prekey(33) is otk and store.one_time_prekey(34) is None


def test_rotation_plan_rotates_weekly_and_deletes_after_the_grace_period() -> None:
    from xchat.crypto.prekeys import DAY_MS, GRACE_MS, ROTATE_AFTER_MS, rotation_plan

    assert rotation_plan([], 0).rotate  # nothing held: create one
    fresh = rotation_plan([(1, 0)], ROTATE_AFTER_MS - 1)
    assert not fresh.rotate and fresh.delete == ()
    assert rotation_plan([(1, 0)], ROTATE_AFTER_MS).rotate
    # Key 1 was replaced by key 2 on day 7: kept through the grace period, then deleted.
    gens = [(1, 0), (2, 7 * DAY_MS)]
    assert rotation_plan(gens, 7 * DAY_MS + GRACE_MS - 1).delete == ()
    plan = rotation_plan(gens, 7 * DAY_MS + GRACE_MS)
    assert plan.delete == (1,) and plan.rotate  # and key 2 is itself due by then
    # Order of the input does not matter; the newest is the current one.
    assert rotation_plan([(2, 7 * DAY_MS), (1, 0)], 8 * DAY_MS) == rotation_plan(gens, 8 * DAY_MS)
