"""The blob HTTP API against a real relay process (PROTOCOL.md Part VI §4–§7)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from xchat.client.client import Client
from xchat.crypto.keys import IdentityKeyPair
from xchat.testing import ServerProcess, running_server

QUOTA = 64 * 1024 * 1024
#: The relay's generic body limit (1 MiB) would refuse blob PATCH bodies; the blob router
#: bounds those by the declared size itself (PROTOCOL Part VI §4.3), so tests lift the generic one.
BIG_REQUEST = 16 * 1024**3


def _server(tmp: Path, **env: object) -> AbstractContextManager[ServerProcess]:
    return running_server(tmp, pow_bits=2, rate_limits=False, max_request=BIG_REQUEST, **env)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _server(tmp_path_factory.mktemp("relay"), blob_quota_bytes=QUOTA) as s:
        yield s


def _account(url: str, profile: Path) -> IdentityKeyPair:
    async def go() -> IdentityKeyPair:
        async with Client(profile) as c:
            await c.create_account(url, use_keyring=False)
            return c.identity

    return asyncio.run(go())


def _token(http: httpx.Client, ident: IdentityKeyPair) -> str:
    chal = http.post("/api/v1/challenge").json()["challenge"]
    sig = ident.sign(b"XChat-v1-auth" + base64.b64decode(chal))
    body = {
        "address": ident.public.address(),
        "device_id": 1,
        "challenge": chal,
        "signature": base64.b64encode(sig).decode(),
    }
    resp = http.post("/api/v1/auth", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


@pytest.fixture(scope="module")
def http(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    ident = _account(srv.url, tmp_path_factory.mktemp("alice"))
    with httpx.Client(base_url=srv.url, timeout=30) as h:
        h.headers["Authorization"] = "Bearer " + _token(h, ident)
        yield h


def _create(http: httpx.Client, size: int) -> str:
    resp = http.post("/api/v1/blobs", json={"size": size})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["upload_offset"] == 0 and body["size"] == size
    return str(body["id"])


def _patch(http: httpx.Client, blob: str, offset: int, data: bytes) -> httpx.Response:
    return http.patch(
        f"/api/v1/blobs/{blob}",
        content=data,
        headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )


def test_upload_resume_and_ranged_download(http: httpx.Client, srv: ServerProcess) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    blob = _create(http, len(data))
    assert len(blob) == 32 and int(blob, 16) >= 0
    resp = _patch(http, blob, 0, data[:1000])
    assert resp.status_code == 200 and resp.json()["upload_offset"] == 1000
    assert not resp.json()["complete"]
    # incomplete blobs are not downloadable
    assert httpx.get(f"{srv.url}/api/v1/blobs/{blob}").status_code == 409
    # wrong offsets are refused and change nothing
    assert _patch(http, blob, 0, data[:10]).status_code == 409
    assert _patch(http, blob, 2000, data[2000:2010]).status_code == 409
    head = httpx.head(f"{srv.url}/api/v1/blobs/{blob}")
    assert head.headers["Upload-Offset"] == "1000"
    assert head.headers["Upload-Length"] == str(len(data))
    resp = _patch(http, blob, 1000, data[1000:])
    assert resp.json()["complete"]
    # download needs no authentication (capability)
    got = httpx.get(f"{srv.url}/api/v1/blobs/{blob}")
    assert got.status_code == 200 and got.content == data
    part = httpx.get(f"{srv.url}/api/v1/blobs/{blob}", headers={"Range": "bytes=5000-"})
    assert part.status_code == 206 and part.content == data[5000:]
    assert part.headers["Content-Range"] == f"bytes 5000-{len(data) - 1}/{len(data)}"


def test_broken_upload_keeps_prefix(http: httpx.Client, srv: ServerProcess) -> None:
    """A client that dies mid-body: the server keeps what arrived; HEAD tells where to
    resume."""
    data = b"x" * (3 * 1024 * 1024)
    blob = _create(http, len(data))

    def dying() -> Iterator[bytes]:
        yield data[: 1024 * 1024]
        yield data[1024 * 1024 : 2 * 1024 * 1024]
        raise OSError("cable pulled")

    with pytest.raises(OSError):
        http.patch(
            f"/api/v1/blobs/{blob}",
            content=dying(),
            headers={"Upload-Offset": "0", "Content-Length": str(len(data))},
        )
    offset = 0
    for _ in range(100):  # the server notices the disconnect asynchronously
        status = httpx.head(f"{srv.url}/api/v1/blobs/{blob}")
        assert status.status_code == 200, (status.status_code, dict(status.headers))
        offset = int(status.headers["Upload-Offset"])
        if offset == 2 * 1024 * 1024:
            break
        time.sleep(0.05)
    assert 0 < offset <= 2 * 1024 * 1024
    assert _patch(http, blob, offset, data[offset:]).json()["complete"]
    assert httpx.get(f"{srv.url}/api/v1/blobs/{blob}").content == data


def test_zero_byte_blob(http: httpx.Client, srv: ServerProcess) -> None:
    blob = _create(http, 0)
    got = httpx.get(f"{srv.url}/api/v1/blobs/{blob}")
    assert got.status_code == 200 and got.content == b""


def test_body_past_declared_size_is_413(http: httpx.Client) -> None:
    blob = _create(http, 10)
    resp = _patch(http, blob, 0, b"y" * 11)
    assert resp.status_code == 413 and "error" in resp.json()


def test_auth_and_ownership(http: httpx.Client, srv: ServerProcess) -> None:
    anon = httpx.post(f"{srv.url}/api/v1/blobs", json={"size": 1})
    assert anon.status_code == 401
    blob = _create(http, 5)
    anon_patch = httpx.patch(
        f"{srv.url}/api/v1/blobs/{blob}", content=b"abcde", headers={"Upload-Offset": "0"}
    )
    assert anon_patch.status_code == 401
    assert http.post("/api/v1/blobs", json={"size": -1}).status_code == 422


def test_unknown_and_hostile_ids(srv: ServerProcess) -> None:
    """A well-formed unknown id is 404; a malformed one is refused by the path pattern
    (422, JSON) before the store sees it; an encoded traversal matches no route."""
    assert httpx.get(f"{srv.url}/api/v1/blobs/{'0' * 32}").status_code == 404
    for bad in ("abc", "G" * 32, "A" * 32, "0" * 33):
        for method in ("GET", "PATCH"):
            r = httpx.request(method, f"{srv.url}/api/v1/blobs/{bad}")
            assert r.status_code == (422 if method == "GET" else 401), (method, bad)
        r = httpx.get(f"{srv.url}/api/v1/blobs/{bad}")
        assert "blob_id" in r.json()["error"], r.text
    assert httpx.head(f"{srv.url}/api/v1/blobs/abc").status_code == 422
    assert httpx.get(f"{srv.url}/api/v1/blobs/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_quota(http: httpx.Client) -> None:
    assert http.post("/api/v1/blobs", json={"size": QUOTA + 1}).status_code == 413
    big = QUOTA // 2
    for _ in range(2):
        resp = http.post("/api/v1/blobs", json={"size": big})
        if resp.status_code == 413:
            break
    resp = http.post("/api/v1/blobs", json={"size": big})
    assert resp.status_code == 413
    assert "quota" in resp.json()["error"]


def test_openapi_lists_blob_routes(srv: ServerProcess) -> None:
    paths = httpx.get(f"{srv.url}/openapi.json").json()["paths"]
    assert "/api/v1/blobs" in paths
    assert {"patch", "head", "get"} <= set(paths["/api/v1/blobs/{blob_id}"])


def test_ttl_expiry(tmp_path: Path) -> None:
    with _server(tmp_path / "relay", blob_ttl_seconds=1, blob_sweep_seconds=0) as s:
        ident = _account(s.url, tmp_path / "bob")
        with httpx.Client(base_url=s.url, timeout=30) as h:
            h.headers["Authorization"] = "Bearer " + _token(h, ident)
            blob = _create(h, 3)
            assert _patch(h, blob, 0, b"abc").status_code == 200
            assert httpx.get(f"{s.url}/api/v1/blobs/{blob}").content == b"abc"
            time.sleep(1.2)
            assert httpx.get(f"{s.url}/api/v1/blobs/{blob}").status_code == 404
            _create(h, 1)  # triggers the sweep
            files = [p for p in (s.data_dir / "blobs").rglob("*") if p.name == blob]
            assert files == []


def test_invalid_range_is_ignored_and_errors_are_json(
    http: httpx.Client, srv: ServerProcess
) -> None:
    """RFC 9110 §14.2: a reversed or otherwise invalid Range is ignored (200, whole blob);
    one no range of which overlaps the blob is 416, with a JSON body (issue #18)."""
    data = bytes(range(100))
    blob = _create(http, len(data))
    assert _patch(http, blob, 0, data).json()["complete"]
    url = f"{srv.url}/api/v1/blobs/{blob}"
    for ignored in ("bytes=5-2", "bytes=abc", "items=0-1", "bytes=", "bytes=-0", "bytes=1-2,9-3"):
        r = httpx.get(url, headers={"Range": ignored})
        assert r.status_code == 200 and r.content == data, ignored
    r = httpx.get(url, headers={"Range": "bytes=200-300"})
    assert r.status_code == 416 and r.json() == {"error": "range not satisfiable"}
    assert r.headers["Content-Range"] == "bytes */100"
    r = httpx.get(url, headers={"Range": "bytes=90-"})
    assert r.status_code == 206 and r.content == data[90:]
    r = http.post("/api/v1/blobs", json={"size": True})
    assert r.status_code == 422 and "error" in r.json()
