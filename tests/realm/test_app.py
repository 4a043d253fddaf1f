"""A real realm process over HTTP (PROTOCOL.md Part X §5): the public endpoints, typed
errors for bad input (never a 500, never a traceback), the body limit, the rate limit, and
that the relay lists it with its name and key."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from xchat.realm.testing import RealmProcess
from xchat.testing import running_server


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealmProcess]:
    r = RealmProcess(tmp_path_factory.mktemp("realm"), "test-realm", pow_bits=2)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _op(realm: RealmProcess, op: str, body: object) -> httpx.Response:
    return httpx.post(f"{realm.url}/api/v1/realm/{op}", json=body, timeout=10)


def test_public_endpoints(realm: RealmProcess) -> None:
    assert httpx.get(realm.url + "/healthz").json() == {"status": "ok"}
    info = httpx.get(realm.url + "/api/v1/realm").json()
    assert info["protocol"] == 1 and info["name"] == "test-realm" and info["guess_limit"] == 10
    assert len(base64.b64decode(info["public_key"])) == 32
    chal = httpx.post(realm.url + "/api/v1/realm/challenge").json()
    assert len(base64.b64decode(chal["challenge"])) == 41 and chal["pow_bits"] == 2


def test_bad_input_is_a_typed_error(realm: RealmProcess) -> None:
    nonce = base64.b64encode(os.urandom(16)).decode()
    record = "ab" * 32
    cases = [
        ("info", {"record": "zz", "nonce": nonce}, 400),
        ("info", {"record": record, "nonce": "short"}, 400),
        ("info", ["not", "an", "object"], 400),
        ("evaluate", {"record": record, "nonce": nonce, "blinded": "AAAA"}, 400),
        (
            "evaluate",
            {"record": record, "nonce": nonce, "blinded": base64.b64encode(bytes(32)).decode()},
            400,  # the identity element
        ),
        (
            "register",
            {
                "record": record,
                "nonce": nonce,
                "challenge": base64.b64encode(b"x" * 41).decode(),
                "pow_nonce": 1,
            },
            401,
        ),
        ("nosuchop", {"record": record, "nonce": nonce}, 404),
    ]
    for op, body, status in cases:
        r = _op(realm, op, body)
        assert r.status_code == status, (op, body, r.text)
        assert set(r.json()) == {"error"}
    for junk in (b"{not json", b"[" * 20_000 + b"]" * 20_000):
        r = httpx.post(f"{realm.url}/api/v1/realm/info", content=junk, timeout=10)
        assert r.status_code == 400
    r = httpx.post(f"{realm.url}/api/v1/realm/info", content=b"x" * (65 * 1024), timeout=10)
    assert r.status_code == 413
    assert httpx.get(f"{realm.url}/api/v1/realm/info").status_code == 405
    assert httpx.get(f"{realm.url}/nothing").status_code == 404
    log = (realm.data_dir / "realm.log").read_text()
    assert "Traceback" not in log and record not in log


def test_rate_limit(tmp_path: Path) -> None:
    r = RealmProcess(tmp_path / "limited", "limited", pow_bits=2)
    r.start(rate_per_s=1.0)
    try:
        with httpx.Client(base_url=r.url) as c:  # burst 100, then 1 per second
            statuses = [c.post("/api/v1/realm/challenge").status_code for _ in range(110)]
        assert 429 in statuses and statuses[0] == 200
    finally:
        r.stop()


def test_relay_lists_the_realm(realm: RealmProcess, tmp_path: Path) -> None:
    with running_server(
        tmp_path / "relay", pow_bits=2, realms=realm.url + ",http://127.0.0.1:9"
    ) as s:
        listed = httpx.get(s.url + "/api/v1/realms").json()["realms"]
    key = httpx.get(realm.url + "/api/v1/realm").json()["public_key"]
    assert listed == [{"name": "test-realm", "public_key": key, "url": realm.url}]
