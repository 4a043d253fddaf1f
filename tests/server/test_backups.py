"""The relay's backup endpoints (PROTOCOL.md Part X §5.8, §9.4, §9.6) over HTTP, on every
storage backend: the backup record and its blobs, the PoW-paid handle lookup, the realm list."""

from __future__ import annotations

import base64
import os

import httpx

from xchat.crypto import pow as xpow
from xchat.testing import ServerProcess, get_challenge, register

LOCATE = b"XChat-v1-backup-locate|"


def _blob(client: httpx.Client, headers: dict[str, str], data: bytes, complete: bool = True) -> str:
    r = client.post("/api/v1/blobs", json={"size": len(data)}, headers=headers)
    assert r.status_code == 201, r.text
    blob = r.json()["id"]
    body = data if complete else data[: len(data) // 2]
    r = client.patch(
        f"/api/v1/blobs/{blob}",
        content=body,
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    return str(blob)


def _put(client: httpx.Client, headers: dict[str, str], blobs: list[str]) -> httpx.Response:
    manifest = base64.b64encode(os.urandom(64)).decode()
    return client.put(
        "/api/v1/backup", json={"manifest": manifest, "blobs": blobs}, headers=headers
    )


def test_backup_record_lifecycle(client: httpx.Client) -> None:
    a = register(client)
    assert client.get("/api/v1/backup", headers=a.headers).status_code == 404
    assert client.get("/api/v1/backup").status_code == 401
    first = _blob(client, a.headers, os.urandom(1000))
    r = _put(client, a.headers, [first])
    assert r.status_code == 200 and r.json()["ok"] is True
    # pinned: the blob now outlives the 30-day blob TTL (400 days from now)
    assert r.json()["expires_ms"] > r.json()["updated_ms"] + 300 * 86_400_000
    got = client.get("/api/v1/backup", headers=a.headers).json()
    assert got["blobs"] == [first] and base64.b64decode(got["manifest"])
    # a new record that no longer names the first blob deletes it
    second = _blob(client, a.headers, os.urandom(2000))
    assert _put(client, a.headers, [second]).status_code == 200
    assert client.head(f"/api/v1/blobs/{first}").status_code == 404
    assert client.head(f"/api/v1/blobs/{second}").status_code == 200
    r = client.delete("/api/v1/backup", headers=a.headers)
    assert r.json() == {"deleted": 1}
    assert client.head(f"/api/v1/blobs/{second}").status_code == 404
    assert client.get("/api/v1/backup", headers=a.headers).status_code == 404


def test_backup_record_refuses_foreign_incomplete_and_bad_input(client: httpx.Client) -> None:
    a, b = register(client), register(client)
    theirs = _blob(client, b.headers, os.urandom(100))
    assert _put(client, a.headers, [theirs]).status_code == 404  # not the caller's blob
    half = _blob(client, a.headers, os.urandom(100), complete=False)
    assert _put(client, a.headers, [half]).status_code == 409
    assert _put(client, a.headers, ["not-a-blob-id"]).status_code == 400
    r = client.put("/api/v1/backup", json={"manifest": "%%%", "blobs": []}, headers=a.headers)
    assert r.status_code == 400
    r = client.put("/api/v1/backup", json={"manifest": "", "blobs": []}, headers=a.headers)
    assert r.status_code == 400
    assert client.put("/api/v1/backup", json={"blobs": []}, headers=a.headers).status_code == 422
    # B's record is B's alone
    assert _put(client, b.headers, [theirs]).status_code == 200
    assert client.get("/api/v1/backup", headers=a.headers).status_code == 404


def test_locate_costs_a_proof_of_work(client: httpx.Client) -> None:
    handle = f"locate{os.getpid() % 10000}"
    a = register(client, handle=handle)
    ch, bits = get_challenge(client)
    nonce = xpow.solve(ch, LOCATE + handle.encode(), bits)
    body = {
        "handle": "@" + handle.upper(),
        "challenge": base64.b64encode(ch).decode(),
        "pow_nonce": nonce,
    }
    r = client.post("/api/v1/backup/locate", json=body)
    assert r.status_code == 200 and r.json() == {"address": a.address, "locator": None}
    assert client.post("/api/v1/backup/locate", json=body).status_code == 401  # spent
    # with a locator set, locate by address returns it; only its owner can set or read it
    loc = base64.b64encode(os.urandom(16)).decode()
    assert client.put("/api/v1/backup/locator", json={"locator": loc}).status_code == 401
    assert client.get("/api/v1/backup/locator", headers=a.headers).status_code == 404
    r = client.put("/api/v1/backup/locator", json={"locator": "AAAA"}, headers=a.headers)
    assert r.status_code == 400  # not 16 bytes
    r = client.put("/api/v1/backup/locator", json={"locator": loc}, headers=a.headers)
    assert r.status_code == 200
    assert client.get("/api/v1/backup/locator", headers=a.headers).json() == {"locator": loc}
    ch, bits = get_challenge(client)
    nonce = xpow.solve(ch, LOCATE + a.address.encode(), bits)
    body2 = {"address": a.address, "challenge": base64.b64encode(ch).decode(), "pow_nonce": nonce}
    r = client.post("/api/v1/backup/locate", json=body2)
    assert r.json() == {"address": a.address, "locator": loc}
    both = {**body2, "handle": handle}
    assert client.post("/api/v1/backup/locate", json=both).status_code == 400
    ch, bits = get_challenge(client)
    wrong = next(
        n for n in range(10**6) if not xpow.stamp_ok(ch, LOCATE + handle.encode(), n, bits)
    )
    body = {"handle": handle, "challenge": base64.b64encode(ch).decode(), "pow_nonce": wrong}
    assert client.post("/api/v1/backup/locate", json=body).status_code == 401
    ch, bits = get_challenge(client)
    nobody = "nobody_here_at_all"
    nonce = xpow.solve(ch, LOCATE + nobody.encode(), bits)
    body = {"handle": nobody, "challenge": base64.b64encode(ch).decode(), "pow_nonce": nonce}
    assert client.post("/api/v1/backup/locate", json=body).status_code == 404


def test_realm_list_is_empty_without_realms(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/api/v1/realms").json() == {"realms": []}
