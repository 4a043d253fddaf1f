"""Size limits, rate limits and a malformed-input matrix for every endpoint and frame type
(PROTOCOL Part III §6). Nothing may produce a 500 or an unstructured error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _relay_helpers import close_code, recv_frame, register, send_body, ws_connect
from xchat.protocol import frames as F
from xchat.testing import ServerProcess, running_server


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("small"), rate_limits=False, max_envelope=1024, max_request=65536
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def acct(small: ServerProcess) -> object:
    with httpx.Client(base_url=small.url) as c:
        return register(c)


@pytest.fixture(scope="module")
def hc(small: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.url, timeout=10) as c:
        yield c


ADDR = "xc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
ENDPOINTS = [
    ("POST", "/api/v1/accounts"),
    ("POST", "/api/v1/auth"),
    ("PUT", "/api/v1/handle"),
    ("PUT", "/api/v1/keys"),
    ("PUT", "/api/v1/delivery-token"),
    ("POST", "/api/v1/messages"),
    ("POST", "/api/v1/messages/ack"),
]
BODIES = [
    b"not json",
    b"[]",
    b"{}",
    b"null",
    b'{"identity_key": 5, "challenge": [], "signature": {}, "keys": "x", "handle": 7}',
    b'{"address": "%s", "device_id": -1, "challenge": "!!", "signature": "=="}' % ADDR.encode(),
    b'{"handle": "\\u0000\\u0000"}',
    b'{"one_time_ec": [{"id": 99999999999, "key": "AAAA"}], "signed_prekey": {"id": 1}}',
    b'{"signed_prekey": {"id": 1, "key": "not base64!", "signature": "AA=="}}',
    b'{"token_hash": "AAAA"}',
    b'{"destinations": [{"address": "nope", "envelopes": []}]}',
    b'{"destinations": [{"address": "%s", "delivery_token": "%%%%", "envelopes": '
    b'[{"device_id": 1, "id": "AA==", "content": "AA=="}]}]}' % ADDR.encode(),
    b'{"ids": ["AA==", 5]}',
    b'{"ids": ["@@@@"]}',
    b"\xff\xfe\x00",
]


#: The pinned answer per (endpoint, authenticated?) for each of BODIES, in order. Read as:
#: a body that is not JSON text is 422 (400 if not even UTF-8); on an authenticated endpoint
#: without a token, 401 once the body is JSON; then schema (422, unknown fields included:
#: extra="forbid") before values (400: bad base64, handle syntax). The only 200 is PUT /keys
#: with ``{}``, a valid upload of nothing.
_ANON_AUTH = [422] + [401] * 13 + [400]
_SCHEMA = [422] * 14 + [400]
EXPECTED: dict[tuple[str, str, bool], list[int]] = {
    ("POST", "/api/v1/accounts", False): _SCHEMA,
    ("POST", "/api/v1/accounts", True): _SCHEMA,
    ("POST", "/api/v1/auth", False): _SCHEMA,
    ("POST", "/api/v1/auth", True): _SCHEMA,
    ("PUT", "/api/v1/handle", False): _ANON_AUTH,
    ("PUT", "/api/v1/handle", True): [422] * 6 + [400] + [422] * 7 + [400],
    ("PUT", "/api/v1/keys", False): _ANON_AUTH,
    ("PUT", "/api/v1/keys", True): [422, 422, 200] + [422] * 5 + [400] + [422] * 5 + [400],
    ("PUT", "/api/v1/delivery-token", False): _ANON_AUTH,
    ("PUT", "/api/v1/delivery-token", True): [422] * 9 + [400] + [422] * 4 + [400],
    ("POST", "/api/v1/messages", False): [422] * 10 + [400, 400, 422, 422, 400],
    ("POST", "/api/v1/messages", True): [422] * 10 + [400, 400, 422, 422, 400],
    ("POST", "/api/v1/messages/ack", False): _ANON_AUTH,
    ("POST", "/api/v1/messages/ack", True): [422] * 13 + [400, 400],
}


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("index", range(len(BODIES)))
@pytest.mark.parametrize("authed", [False, True])
def test_malformed_http_bodies(
    hc: httpx.Client, acct: object, method: str, path: str, index: int, authed: bool
) -> None:
    headers = {"content-type": "application/json"}
    if authed:
        headers.update(acct.headers)  # type: ignore[attr-defined]
    r = hc.request(method, path, content=BODIES[index], headers=headers)
    assert r.status_code == EXPECTED[(method, path, authed)][index], (BODIES[index], r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)


def test_unknown_fields_are_refused(hc: httpx.Client, acct: object) -> None:
    """A misspelt or unknown field is a 422 naming it, never silently dropped (a typo in an
    optional field would otherwise look like success)."""
    r = hc.put("/api/v1/keys", json={"one_time_ecc": []}, headers=acct.headers)  # type: ignore[attr-defined]
    assert r.status_code == 422 and "one_time_ecc" in r.json()["error"], r.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/accounts/not-an-address",
        f"/api/v1/accounts/{ADDR}",
        "/api/v1/handles/%00",
        "/api/v1/handles/" + "x" * 300,
        f"/api/v1/bundles/{ADDR}",
        "/api/v1/messages?limit=-5",
        "/api/v1/messages?limit=abc",
        "/api/v1/nope",
    ],
)
def test_malformed_gets(hc: httpx.Client, acct: object, path: str) -> None:
    r = hc.get(path, headers=acct.headers)  # type: ignore[attr-defined]
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_malformed_delete(hc: httpx.Client, acct: object) -> None:
    """The envelope id's path pattern (PROTOCOL Part III §1) refuses a malformed id with
    422 naming it, a non-canonical spelling included (last character with set low bits)."""
    for bad in ("short", "!!!!", "A" * 100, "A" * 21 + "B", "A" * 22 + "="):
        r = hc.delete(f"/api/v1/messages/{bad}", headers=acct.headers)  # type: ignore[attr-defined]
        assert r.status_code == 422 and "envelope_id" in r.json()["error"], (bad, r.text)
    for good in ("A" * 22, "A" * 22 + "=="):  # unknown but well formed: nothing deleted
        r = hc.delete(f"/api/v1/messages/{good}", headers=acct.headers)  # type: ignore[attr-defined]
        assert r.status_code == 200 and r.json()["deleted"] == 0, r.text


def test_http_size_limits(small: ServerProcess, acct: object) -> None:
    with httpx.Client(base_url=small.url) as c:
        r = c.post("/api/v1/messages", json=send_body(acct, [os.urandom(1025)]))  # type: ignore[arg-type]
        assert r.status_code == 413 and "1024" in r.json()["error"]
        r = c.post(
            "/api/v1/messages", content=b"x" * 70000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "65536" in r.json()["error"]
        assert (
            c.post("/api/v1/messages", json=send_body(acct, [os.urandom(1024)])).status_code == 200
        )  # type: ignore[arg-type]


SEND_OK_PREFIX = b"\x01" + b"\x00\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    "payload,code",
    [
        (b"", F.CLOSE_MALFORMED),
        (b"\x7f", F.CLOSE_MALFORMED),
        (b"\x01\x00", F.CLOSE_MALFORMED),
        (SEND_OK_PREFIX + b"\x05ab", F.CLOSE_MALFORMED),
        (b"\x02\x00\x05" + bytes(16), F.CLOSE_MALFORMED),
        (F.encode_frame(F.SendResult(1, 200)), F.CLOSE_MALFORMED),
        (F.encode_frame(F.Deliver(())), F.CLOSE_MALFORMED),
        (F.encode_frame(F.Drained()), F.CLOSE_MALFORMED),
        (F.encode_frame(F.KeysLow(1, 1)), F.CLOSE_MALFORMED),
        ("text frame", F.CLOSE_MALFORMED),
        (b"\x01" + bytes(70000), F.CLOSE_TOO_LARGE),
    ],
)
async def test_malformed_frames_close_socket(
    small: ServerProcess, acct: object, payload: bytes | str, code: int
) -> None:
    for token in (None, acct.token):  # type: ignore[attr-defined]
        ws = await ws_connect(small.ws_url, token)
        await ws.send(payload)
        assert await close_code(ws) == code


async def test_ws_envelope_too_large(small: ServerProcess, acct: object) -> None:
    ws = await ws_connect(small.ws_url)
    dest = F.Destination(
        acct.address,
        F.TokenAccess(acct.delivery_token),  # type: ignore[attr-defined]
        (F.OutEnvelope(1, os.urandom(16), os.urandom(2000)),),
    )
    await ws.send(F.encode_frame(F.Send(5, (dest,))))
    r = await recv_frame(ws)
    assert (r.req_id, r.status) == (5, 413)
    await ws.close()


def test_rate_limits(tmp_path: Path) -> None:
    with (
        running_server(
            tmp_path, rate_ip_burst=12, rate_ip_per_s=0.01, rate_send_burst=3, rate_send_per_s=0.01
        ) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        bob = register(c)
        statuses = [
            c.post("/api/v1/messages", json=send_body(bob, [b"x"])).status_code for _ in range(5)
        ]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
        r = c.post("/api/v1/messages", json=send_body(bob, [b"x"]))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        codes = [c.get("/healthz").status_code for _ in range(10)]
        assert 429 in codes
        r = c.get("/healthz")
        assert (
            r.status_code == 429
            and r.json() == {"error": "rate limited"}
            and r.headers["retry-after"]
        )


async def test_ws_send_rate_limit(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_send_burst=2, rate_send_per_s=0.01) as srv:
        with httpx.Client(base_url=srv.url) as c:
            bob = register(c)
        ws = await ws_connect(srv.ws_url)

        def dest() -> F.Destination:
            return F.Destination(
                bob.address,
                F.TokenAccess(bob.delivery_token),
                (F.OutEnvelope(1, os.urandom(16), b"x"),),
            )

        results = []
        for i in range(3):
            await ws.send(F.encode_frame(F.Send(i, (dest(),))))
            results.append(await recv_frame(ws))
        assert [r.status for r in results] == [200, 200, 429]
        assert results[2].retry_after_ms > 0
        await ws.close()
