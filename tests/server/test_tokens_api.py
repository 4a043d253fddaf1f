"""Anonymous access tokens on a real relay (PROTOCOL.md Part XI): issuance, redemption at
every directory endpoint, double spend, the daily allowance, and unlinkability (nothing the
relay stores about an issuance matches the token later redeemed)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from _relay_helpers import b64, register
from xchat.crypto import oprf
from xchat.crypto import tokens as tk
from xchat.testing import ServerProcess, anon_headers, running_server

ENDPOINTS = ("/api/v1/bundles/{a}", "/api/v1/accounts/{a}")


def _issue(client: httpx.Client, headers: dict[str, str], n: int) -> tuple[tk.PendingBatch, dict]:
    keys = client.get("/api/v1/tokens/keys").json()["keys"][0]
    pending = tk.begin_batch(keys["epoch"], base64.b64decode(keys["public_key"]), n)
    r = client.post(
        "/api/v1/tokens",
        json={"epoch": keys["epoch"], "blinded": [b64(b) for b in pending.blinded]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return pending, r.json()


def test_fetch_without_token_is_refused(client: httpx.Client) -> None:
    bob = register(client, handle="tok_bob")
    for path in (*ENDPOINTS, "/api/v1/handles/tok_bob"):
        url = path.format(a=bob.address)
        r = client.get(url)
        assert r.status_code == 401
        assert "PrivateToken" in r.json()["error"]
        r = client.get(url, headers=bob.headers)  # the account's bearer token: refused too
        assert r.status_code == 401 and "anonymous access token" in r.json()["error"]
        r = client.get(url, headers={"Authorization": 'PrivateToken token="AAAA"'})
        assert r.status_code == 401 and r.json()["error"] == "invalid access token"


def test_each_token_buys_one_lookup_and_double_spend_is_refused(client: httpx.Client) -> None:
    bob = register(client, handle="tok_bob2", n_ec=5, n_kem=5)
    alice = register(client)
    h1, h2, h3 = anon_headers(client, alice, 3)
    assert client.get(f"/api/v1/bundles/{bob.address}", headers=h1).status_code == 200
    r = client.get(f"/api/v1/bundles/{bob.address}", headers=h1)
    assert r.status_code == 401 and r.json()["error"] == "access token already spent"
    # Spent is spent everywhere: not reusable on another endpoint either.
    assert client.get("/api/v1/handles/tok_bob2", headers=h1).status_code == 401
    assert client.get("/api/v1/handles/tok_bob2", headers=h2).json()["address"] == bob.address
    assert client.get(f"/api/v1/accounts/{bob.address}", headers=h3).status_code == 200
    # A token with a flipped authenticator bit does not verify.
    raw = tk.decode_token(anon_headers(client, alice, 1)[0]["Authorization"][20:-1])
    bad = tk.Token(
        raw.epoch, raw.nonce, raw.key_id, bytes([raw.authenticator[0] ^ 1]) + raw.authenticator[1:]
    )
    r = client.get(
        f"/api/v1/accounts/{bob.address}",
        headers={"Authorization": f'PrivateToken token="{tk.encode_token(bad)}"'},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid access token"


def test_double_spend_refused_after_restart(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        bob = register(c, n_ec=2, n_kem=2)
        (h,) = anon_headers(c, register(c), 1)
        assert c.get(f"/api/v1/accounts/{bob.address}", headers=h).status_code == 200
        assert c.get("/api/v1/keys/count", headers=bob.headers).status_code == 200  # a commit
    server.restart()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get(f"/api/v1/accounts/{bob.address}", headers=h)
        assert r.status_code == 401 and r.json()["error"] == "access token already spent"


def test_issuance_checks(client: httpx.Client) -> None:
    alice = register(client)
    keys = client.get("/api/v1/tokens/keys").json()
    assert keys["token_type"] == tk.TOKEN_TYPE and keys["max_batch"] == tk.MAX_BATCH
    epoch = keys["keys"][0]["epoch"]
    blinded = [b64(oprf.blind(b"x", mode=oprf.MODE_VOPRF)[1])]
    r = client.post("/api/v1/tokens", json={"epoch": epoch, "blinded": blinded})
    assert r.status_code == 401  # issuance needs the account
    r = client.post(
        "/api/v1/tokens", json={"epoch": epoch - 1, "blinded": blinded}, headers=alice.headers
    )
    assert r.status_code == 409
    r = client.post(
        "/api/v1/tokens", json={"epoch": epoch, "blinded": [b64(bytes(32))]}, headers=alice.headers
    )
    assert r.status_code == 400  # the identity is not a blinded element
    r = client.post(
        "/api/v1/tokens", json={"epoch": True, "blinded": blinded}, headers=alice.headers
    )
    assert r.status_code == 422  # a boolean is not an epoch
    r = client.post(
        "/api/v1/tokens", json={"epoch": epoch, "blinded": blinded * 65}, headers=alice.headers
    )
    assert r.status_code == 422


def test_daily_allowance(client: httpx.Client) -> None:
    alice = register(client)
    limit = client.get("/api/v1/tokens/keys").json()["daily_limit"]
    got = len(anon_headers(client, alice, limit))
    assert got == limit
    keys = client.get("/api/v1/tokens/keys").json()["keys"][0]
    blinded = [b64(oprf.blind(b"x", mode=oprf.MODE_VOPRF)[1])]
    r = client.post(
        "/api/v1/tokens", json={"epoch": keys["epoch"], "blinded": blinded}, headers=alice.headers
    )
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert len(anon_headers(client, register(client), 1)) == 1  # per account


def test_redeemed_token_matches_nothing_stored_at_issuance(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "relay", pow_bits=2, rate_limits=False) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        _unlinkability(server, client)


def _unlinkability(server: ServerProcess, client: httpx.Client) -> None:
    """The attack: the relay tries to tell which account obtained the token it is shown.
    Everything the relay wrote to disk around issuance, and everything it saw, is checked
    against the redeemed token: only the spent key (written at redemption) matches."""
    bob = register(client, n_ec=2, n_kem=2)
    accounts = [register(client) for _ in range(3)]
    seen: list[bytes] = []  # what the relay received and answered at issuance
    batches = []
    for acct in accounts:
        pending, resp = _issue(client, acct.headers, 4)
        evaluated = [base64.b64decode(e) for e in resp["evaluated"]]
        seen += list(pending.blinded) + evaluated + [base64.b64decode(resp["proof"])]
        batches.append(tk.finish_batch(pending, evaluated, base64.b64decode(resp["proof"])))
    token = batches[1][2]  # obtained by accounts[1]
    h = {"Authorization": f'PrivateToken token="{tk.encode_token(token)}"'}
    assert client.get(f"/api/v1/bundles/{bob.address}", headers=h).status_code == 200
    assert client.get("/api/v1/keys/count", headers=bob.headers).status_code == 200
    # The relay's own key can recompute the token's PRF value, but no issuance value
    # equals it, the token's input hash point, or any part of the token.
    seed = (Path(server.data_dir) / "server_token.key").read_bytes()
    sk, _ = tk.epoch_key(seed, token.epoch)
    point = oprf.hash_to_group(token.token_input, oprf.MODE_VOPRF)
    evaluated_point = oprf.blind_evaluate(sk, point)
    for value in seen:
        for part in (token.nonce, token.authenticator, point, evaluated_point):
            assert part not in value and value not in part
    stored = b"".join(p.read_bytes() for p in Path(server.data_dir).rglob("*") if p.is_file())
    assert tk.spent_key(token) in stored  # the scan does see what the relay stored
    for part in (token.nonce, token.authenticator, token.to_bytes(), *seen):
        assert part not in stored
