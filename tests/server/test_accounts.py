"""Registration, auth, tokens, handles, server info and certificates (PROTOCOL Part III)."""

from __future__ import annotations

import base64

import httpx
import pytest

from _relay_helpers import b64, get_challenge, register, register_body, unb64
from xchat import encoding
from xchat.crypto.certificate import SenderCertificate
from xchat.crypto.keys import IdentityKeyPair
from xchat.server.auth import ServerSecrets, Tokens
from xchat.storage.base import DeviceRecord
from xchat.testing import ServerProcess, anon_headers


def test_server_info(client: httpx.Client) -> None:
    j = client.get("/api/v1/server").json()
    assert j["protocol"] == 1 and j["pow_bits"] == 4
    assert len(base64.b64decode(j["signing_key"])) == 32
    assert j["limits"]["max_envelope"] > 0
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/api/v1/accounts" in client.get("/openapi.json").json()["paths"]


def test_register_with_valid_stamp(client: httpx.Client) -> None:
    acct = register(client)
    assert acct.address == acct.identity.public.address()
    (tok,) = anon_headers(client, acct)  # directory lookups take an anonymous token (Part XI)
    j = client.get(f"/api/v1/accounts/{acct.address}", headers=tok).json()
    assert j["devices"] == [1] and unb64(j["identity_key"]) == acct.identity.public.encode()


def test_register_without_valid_stamp(client: httpx.Client) -> None:
    ik = IdentityKeyPair.generate()
    r = client.post("/api/v1/accounts", json=register_body(client, ik, valid_pow=False))
    assert r.status_code == 401 and "proof of work" in r.json()["error"]


def test_register_bad_signature_and_reused_challenge(client: httpx.Client) -> None:
    ik = IdentityKeyPair.generate()
    body = register_body(client, ik)
    bad = dict(body, signature=b64(IdentityKeyPair.generate().sign(b"x")))
    assert client.post("/api/v1/accounts", json=bad).status_code == 401
    assert client.post("/api/v1/accounts", json=body).status_code == 200
    r = client.post("/api/v1/accounts", json=body)  # same challenge again
    assert r.status_code == 401 and "used" in r.json()["error"]


def test_bad_prekey_signature_rejected(client: httpx.Client) -> None:
    ik = IdentityKeyPair.generate()
    body = register_body(client, ik)
    body["keys"]["signed_prekey"]["signature"] = b64(bytes(64))
    r = client.post("/api/v1/accounts", json=body)
    assert r.status_code == 400 and "signature" in r.json()["error"]


def test_auth_flow_and_failures(client: httpx.Client) -> None:
    acct = register(client)
    ch, _ = get_challenge(client)
    body = {
        "address": acct.address,
        "device_id": 1,
        "challenge": b64(ch),
        "signature": b64(acct.identity.sign(b"XChat-v1-auth" + ch)),
    }
    r = client.post("/api/v1/auth", json=body)
    assert r.status_code == 200
    token = r.json()["token"]
    assert client.get("/api/v1/keys/count", headers={"Authorization": f"Bearer {token}"}).json()
    assert client.post("/api/v1/auth", json=body).status_code == 401  # challenge single-use
    ch2, _ = get_challenge(client)
    wrong = dict(
        body, challenge=b64(ch2), signature=b64(acct.identity.sign(b"XChat-v1-register" + ch2))
    )
    assert client.post("/api/v1/auth", json=wrong).status_code == 401
    forged = dict(body, challenge=b64(bytes(41)))
    assert client.post("/api/v1/auth", json=forged).status_code == 401
    assert client.post("/api/v1/auth", json=dict(body, device_id=9)).status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nope", "Basic abc", "Bearer " + "A" * 50, "Bearer ###"],
)
def test_missing_or_garbage_token(client: httpx.Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/api/v1/keys/count", headers=headers)
    assert r.status_code == 401 and r.json()["error"]


def test_foreign_expired_and_revoked_tokens(
    client: httpx.Client, server: ServerProcess, tmp_path: object
) -> None:
    acct = register(client)
    ref = _ref_of(client, acct.token, server)
    dev = DeviceRecord(ref, acct.address, 1, 1)
    foreign = Tokens(ServerSecrets(tmp_path), 3600_000).issue(dev, 10**13)[0]  # type: ignore[arg-type]
    expired = Tokens(ServerSecrets(server.data_dir), 1000).issue(dev, 0)[0]
    for tok in (foreign, expired):
        r = client.get("/api/v1/keys/count", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401
    # Re-registering (restore) keeps the address but revokes older tokens.
    again = register(client, ik=acct.identity, delivery_token=False)
    assert again.address == acct.address
    assert client.get("/api/v1/keys/count", headers=acct.headers).status_code == 401
    assert client.get("/api/v1/keys/count", headers=again.headers).status_code == 200


_URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_token_in_another_spelling_is_refused(client: httpx.Client) -> None:
    """The decoder used to skip characters outside the alphabet and ignore the unused
    trailing bits, so one token had many accepted spellings; each is a 401 now."""
    acct = register(client)
    tok = acct.token
    assert len(tok) == 50  # 37 bytes: the last character carries 4 unused bits
    sibling = _URL_ALPHABET[_URL_ALPHABET.index(tok[-1]) ^ 1]  # same bytes, other low bit
    for spelling in (  # junk in groups of 4 kept the old padding arithmetic right
        tok[:10] + "!!!!" + tok[10:],
        tok[:10] + "...." + tok[10:],
        tok + "****",
        tok[:20] + "    " + tok[20:],
        tok[:-1] + sibling,
    ):
        r = client.get("/api/v1/keys/count", headers={"Authorization": f"Bearer {spelling}"})
        assert (r.status_code, r.json()) == (401, {"error": "invalid token"}), spelling
    assert client.get("/api/v1/keys/count", headers=acct.headers).status_code == 200


def _ref_of(client: httpx.Client, token: str, server: ServerProcess) -> int:
    raw = encoding.b64url_decode(token, "token")
    return int.from_bytes(raw[1:9], "big")


def test_handles(client: httpx.Client) -> None:
    a = register(client, handle="Handle_One")
    tok = iter(anon_headers(client, a, 4))  # one anonymous token per lookup (Part XI)
    assert (
        client.get("/api/v1/handles/handle_one", headers=next(tok)).json()["address"] == a.address
    )
    assert (
        client.get("/api/v1/handles/HANDLE_ONE", headers=next(tok)).json()["handle"] == "handle_one"
    )
    b = register(client)
    for taken in ("handle_one", "HANDLE_ONE", "hand1e_one", "handie_one", "handleone"):
        r = client.put("/api/v1/handle", json={"handle": taken}, headers=b.headers)
        assert r.status_code == 409, taken
    for bad in ("ab", "1abc", "a" * 33, "bad-name", "名前abc", ""):
        r = client.put("/api/v1/handle", json={"handle": bad or "x"}, headers=b.headers)
        assert r.status_code == 400, bad
    r = client.put("/api/v1/handle", json={"handle": "second_h"}, headers=b.headers)
    assert r.status_code == 200 and r.json()["handle"] == "second_h"
    assert client.get("/api/v1/handles/nobody_here", headers=next(tok)).status_code == 404
    # Releasing a handle makes it available again.
    assert client.put("/api/v1/handle", json={"handle": None}, headers=b.headers).status_code == 200
    assert client.get("/api/v1/handles/second_h", headers=next(tok)).status_code == 404


def test_sender_certificate(client: httpx.Client) -> None:
    acct = register(client)
    server_key = unb64(client.get("/api/v1/server").json()["signing_key"])
    j = client.get("/api/v1/sender-certificate", headers=acct.headers).json()
    cert = SenderCertificate.decode(unb64(j["certificate"]))
    cert.verify(server_key, j["expires_ms"] - 1000)
    assert cert.identity == acct.identity.public and cert.device_id == 1
