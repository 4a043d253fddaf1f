"""Error mapping at the HTTP boundary and the reconnect backoff (no server needed)."""

from __future__ import annotations

import random

import httpx
import pytest

from xchat.client.api import Api
from xchat.client.transport import Backoff, ws_url
from xchat.errors import ApiError, ProtocolError, ServerUnreachable


def _api(handler) -> Api:
    return Api("http://relay.test", transport=httpx.MockTransport(handler))


async def test_error_json_and_retry_after() -> None:
    api = _api(
        lambda r: httpx.Response(429, json={"error": "slow down"}, headers={"Retry-After": "7"})
    )
    with pytest.raises(ApiError) as info:
        await api.challenge()
    assert info.value.status == 429 and info.value.retry_after == 7.0
    assert info.value.message == "slow down"
    await api.aclose()


async def test_non_json_error_and_body() -> None:
    api = _api(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiError) as info:
        await api.server_info()
    assert info.value.status == 502
    await api.aclose()
    api = _api(lambda r: httpx.Response(200, text="not json"))
    with pytest.raises(ProtocolError):
        await api.server_info()
    await api.aclose()
    api = _api(lambda r: httpx.Response(200, json=[1, 2]))
    with pytest.raises(ProtocolError):
        await api.server_info()
    await api.aclose()


async def test_connection_errors_are_server_unreachable() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = _api(boom)
    with pytest.raises(ServerUnreachable):
        await api.healthz()
    await api.aclose()

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timeout", request=request)

    api = _api(slow)
    with pytest.raises(ServerUnreachable):
        await api.healthz()
    await api.aclose()


async def test_reauth_once_on_401() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") == "Bearer fresh":
            return httpx.Response(200, json={"ec": 1, "kem": 2})
        return httpx.Response(401, json={"error": "expired"})

    api = _api(handler)
    api.token = "old"

    async def reauth() -> str:
        return "fresh"

    api.reauth = reauth
    assert await api.key_count() == {"ec": 1, "kem": 2}
    assert seen == ["Bearer old", "Bearer fresh"]
    await api.aclose()


def test_backoff_full_jitter_bounds() -> None:
    b = Backoff(base=0.5, cap=4.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(10)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    b.reset()
    assert b.next_delay() <= 0.5


def test_ws_url() -> None:
    assert ws_url("http://h:1/") == "ws://h:1/api/v1/ws"
    assert ws_url("https://h") == "wss://h/api/v1/ws"
