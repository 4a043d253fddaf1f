"""Prekey directory: upload checks, counts, exactly-once hand-out, KEYS_LOW (PROTOCOL Part III)."""

from __future__ import annotations

import asyncio

import httpx

from _relay_helpers import (
    b64,
    key_upload,
    recv_frame,
    recv_until_drained,
    register,
    register_body,
    unb64,
    ws_connect,
)
from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.prekeys import bundles_from_response, generate_one_time_prekeys
from xchat.protocol.frames import KeysLow
from xchat.testing import ServerProcess, anon_headers


def test_upload_count_and_bad_keys(client: httpx.Client) -> None:
    acct = register(client, n_ec=2, n_kem=2)
    assert client.get("/api/v1/keys/count", headers=acct.headers).json() == {"ec": 2, "kem": 2}
    more = key_upload(acct.identity, n_ec=5, n_kem=1, start=10)
    r = client.put("/api/v1/keys", json=more, headers=acct.headers)
    assert r.status_code == 200 and r.json() == {"ec": 7, "kem": 3}
    other = IdentityKeyPair.generate()
    forged = key_upload(other, n_ec=0, n_kem=1, start=50)  # signed by someone else
    r = client.put("/api/v1/keys", json=forged, headers=acct.headers)
    assert r.status_code == 400 and "signature" in r.json()["error"]
    bad_len = {"one_time_ec": [{"id": 1, "key": b64(b"\x05" + bytes(10))}]}
    assert client.put("/api/v1/keys", json=bad_len, headers=acct.headers).status_code == 400
    bad_type = {"one_time_ec": [{"id": 1, "key": b64(b"\x08" + bytes(32))}]}
    assert client.put("/api/v1/keys", json=bad_type, headers=acct.headers).status_code == 400
    assert client.get("/api/v1/keys/count", headers=acct.headers).json() == {"ec": 7, "kem": 3}


def test_bundle_verifies_and_falls_back_to_last_resort(client: httpx.Client) -> None:
    bob = register(client, n_ec=1, n_kem=1)
    alice = register(client)
    t1, t2 = anon_headers(client, alice, 2)
    first = client.get(f"/api/v1/bundles/{bob.address}", headers=t1).json()
    dev = first["devices"][0]
    assert dev["one_time_ec"] is not None and dev["kem_prekey"]["last_resort"] is False
    bundles = bundles_from_response(first)
    assert bundles and bundles[0].identity_key.encode() == unb64(first["identity_key"])
    second = client.get(f"/api/v1/bundles/{bob.address}", headers=t2).json()
    dev = second["devices"][0]
    assert dev["one_time_ec"] is None and dev["kem_prekey"]["last_resort"] is True
    assert client.get(f"/api/v1/bundles/{bob.address}").status_code == 401  # token required


async def test_fifty_concurrent_fetches_get_distinct_keys(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as c:
        bob = register(c, n_ec=50, n_kem=50)
        fetcher = register(c)
        toks = anon_headers(c, fetcher, 50)
    async with httpx.AsyncClient(
        base_url=server.url, limits=httpx.Limits(max_connections=50), timeout=20
    ) as ac:
        rs = await asyncio.gather(
            *[ac.get(f"/api/v1/bundles/{bob.address}", headers=t) for t in toks]
        )
    assert all(r.status_code == 200 for r in rs)
    devs = [r.json()["devices"][0] for r in rs]
    ec_ids = [d["one_time_ec"]["id"] for d in devs]
    kem_ids = [d["kem_prekey"]["id"] for d in devs]
    assert len(set(ec_ids)) == 50 and len(set(kem_ids)) == 50
    assert not any(d["kem_prekey"]["last_resort"] for d in devs)


async def test_keys_low_frame_and_count(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as c:
        bob = register(c, n_ec=3, n_kem=3)
        alice = register(c)
        ws = await ws_connect(server.ws_url, bob.token)
        assert await recv_until_drained(ws) == []
        low = await recv_frame(ws)  # stock below the threshold at connect
        assert low == KeysLow(3, 3)
        c.get(f"/api/v1/bundles/{bob.address}", headers=anon_headers(c, alice)[0])
        assert await recv_frame(ws) == KeysLow(2, 2)
        await ws.close()
        upload = {"one_time_ec": [k.to_public_json() for k in generate_one_time_prekeys(7, 4)]}
        assert c.put("/api/v1/keys", json=upload, headers=bob.headers).json() == {"ec": 6, "kem": 2}


def test_prekey_drain_is_bounded_per_target(tmp_path) -> None:
    """Attack 5 of issue #18: 35 bundle fetches used to empty an account's one-time keys
    (35 → 0/0). Now one-time keys go out at a bounded rate per target account and the
    rest of the fetches get the signed and last-resort keys (PROTOCOL Part III §4.3)."""
    from xchat.testing import running_server

    with (
        running_server(
            tmp_path / "relay", pow_bits=2, rate_ip_per_s=1000, rate_ip_burst=1000
        ) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        victim = register(c, n_ec=35, n_kem=35)
        attacker = register(c)
        one_time = last_resort = 0
        for h in anon_headers(c, attacker, 35):
            r = c.get(f"/api/v1/bundles/{victim.address}", headers=h)
            assert r.status_code == 200, r.text
            dev = r.json()["devices"][0]
            if dev["kem_prekey"]["last_resort"]:
                assert dev["one_time_ec"] is None
                last_resort += 1
            else:
                one_time += 1
        assert one_time == 10 and last_resort == 25  # otk_burst = 10 per target
        assert c.get("/api/v1/keys/count", headers=victim.headers).json() == {"ec": 25, "kem": 25}
        # Bundles stay usable: a drained fetch still verifies and names the last-resort key.
        assert bundles_from_response(r.json())[0].kem_last_resort
        # Another target's budget is its own.
        other = register(c, n_ec=2, n_kem=2)
        (h,) = anon_headers(c, attacker, 1)
        dev = c.get(f"/api/v1/bundles/{other.address}", headers=h).json()["devices"][0]
        assert dev["one_time_ec"] is not None


def test_handle_certificate(client: httpx.Client) -> None:
    """PROTOCOL Part IV §3.2: the relay vouches for the caller's own handle only."""
    import base64

    from xchat.crypto import handle_cert

    info = client.get("/api/v1/server").json()
    relay_key = base64.b64decode(info["signing_key"])
    nameless = register(client)
    r = client.get("/api/v1/handle-certificate", headers=nameless.headers)
    assert r.status_code == 404 and "no handle" in r.json()["error"]
    assert client.get("/api/v1/handle-certificate").status_code == 401
    named = register(client, handle="cert_owner")
    r = client.get("/api/v1/handle-certificate", headers=named.headers)
    assert r.status_code == 200
    cert = base64.b64decode(r.json()["certificate"])
    assert handle_cert.verify([relay_key], cert, 0) == (named.address, "cert_owner")


def test_one_time_stock_is_bounded_per_device(tmp_path) -> None:
    """``max_one_time_keys`` bounds the unused one-time keys a device holds, EC and KEM
    each (PROTOCOL Part III §4): an upload past it is refused whole with a 413 naming the
    list, registration too; a signed-prekey rotation still goes through when the stock is
    full."""
    from xchat.testing import running_server

    with (
        running_server(tmp_path / "relay", pow_bits=2, max_one_time_keys=12) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        acct = register(c, n_ec=10, n_kem=2)
        up = key_upload(acct.identity, n_ec=3, n_kem=0, start=100)
        r = c.put("/api/v1/keys", json=up, headers=acct.headers)
        assert r.status_code == 413, r.text
        assert r.json() == {
            "error": "one_time_ec: too many one-time keys: this device would hold 13 "
            "(it holds 10, the relay keeps at most 12)"
        }
        assert c.get("/api/v1/keys/count", headers=acct.headers).json() == {"ec": 10, "kem": 2}
        up = key_upload(acct.identity, n_ec=2, n_kem=10, start=100)
        assert c.put("/api/v1/keys", json=up, headers=acct.headers).json() == {"ec": 12, "kem": 12}
        up = key_upload(acct.identity, n_ec=0, n_kem=1, start=200)
        r = c.put("/api/v1/keys", json=up, headers=acct.headers)
        assert r.status_code == 413 and r.json()["error"].startswith("one_time_kem: ")
        rotate = key_upload(acct.identity, n_ec=0, n_kem=0)  # signed + last resort only
        assert c.put("/api/v1/keys", json=rotate, headers=acct.headers).status_code == 200
        # a bundle fetch frees one of each: the next single key fits again
        (h,) = anon_headers(c, register(c), 1)
        assert c.get(f"/api/v1/bundles/{acct.address}", headers=h).status_code == 200
        up = key_upload(acct.identity, n_ec=1, n_kem=1, start=300)
        assert c.put("/api/v1/keys", json=up, headers=acct.headers).json() == {"ec": 12, "kem": 12}
        body = register_body(c, IdentityKeyPair.generate(), n_ec=13, n_kem=1)
        r = c.post("/api/v1/accounts", json=body)
        assert r.status_code == 413 and r.json()["error"].startswith("one_time_ec: ")
