"""The relay accepts only what PROTOCOL.md allows in request bodies (issue #18 conformance):
a JSON boolean is not an integer, and an ML-KEM key must pass the FIPS 203 modulus check."""

from __future__ import annotations

import base64

import httpx

from xchat.crypto.keys import LABEL_PREKEY_SIGNATURE, IdentityKeyPair
from xchat.testing import key_upload, register


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_boolean_is_not_an_integer(client: httpx.Client) -> None:
    ik = IdentityKeyPair.generate()
    acct = register(client, ik=ik)
    body = key_upload(ik, n_ec=1, n_kem=0, start=50)
    body["one_time_ec"][0]["id"] = True
    r = client.put("/api/v1/keys", json=body, headers=acct.headers)
    assert r.status_code == 422 and "integer" in r.json()["error"]
    body["one_time_ec"][0]["id"] = "51"  # nor is a string of digits
    assert client.put("/api/v1/keys", json=body, headers=acct.headers).status_code == 422
    body["one_time_ec"][0]["id"] = 51
    assert client.put("/api/v1/keys", json=body, headers=acct.headers).status_code == 200
    fetch = client.get("/api/v1/messages?limit=true", headers=acct.headers)
    assert fetch.status_code == 422 and "error" in fetch.json()


def test_mlkem_key_failing_the_modulus_check_is_refused(client: httpx.Client) -> None:
    """A correctly signed ML-KEM-1024 key whose first coefficient is 4095 ≥ q = 3329: every
    sender would refuse it, so accepting it would make the account unreachable once the
    one-time KEM keys run out (FIPS 203 §7.2 ByteDecode_12 + modulus check)."""
    ik = IdentityKeyPair.generate()
    acct = register(client, ik=ik)
    body = key_upload(ik, n_ec=0, n_kem=1, start=60)
    for field in ("kem_last_resort", "one_time_kem"):
        bad_body = key_upload(ik, n_ec=0, n_kem=1, start=60)
        entry = bad_body[field] if field == "kem_last_resort" else bad_body[field][0]
        key = bytearray(base64.b64decode(entry["key"]))
        key[1] = 0xFF  # 0x08 type byte, then coefficient 0 = low 12 bits of bytes 1..2
        key[2] |= 0x0F
        entry["key"] = _b64(bytes(key))
        entry["signature"] = _b64(ik.sign(LABEL_PREKEY_SIGNATURE + bytes(key)))
        r = client.put("/api/v1/keys", json=bad_body, headers=acct.headers)
        assert r.status_code == 400, r.text
        assert "ML-KEM" in r.json()["error"]
    assert client.put("/api/v1/keys", json=body, headers=acct.headers).status_code == 200
