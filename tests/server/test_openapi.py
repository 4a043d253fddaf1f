"""The relay's ``/openapi.json`` describes the error bodies it really sends
(``server/openapi.py``, PROTOCOL Part III §1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from xchat.testing import register, running_server

ERROR_REF = "#/components/schemas/Error"
ERROR_STATUSES = {"400", "401", "403", "404", "409", "410", "413", "416", "422", "429", "503"}


@pytest.fixture(scope="module")
def relay_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_server(Path(tmp_path_factory.mktemp("openapi")), pow_bits=4) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def document(relay_client: httpx.Client) -> dict[str, Any]:
    r = relay_client.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


@pytest.fixture(scope="module")
def headers(relay_client: httpx.Client) -> dict[str, str]:
    """An account's bearer token: authenticated routes reach validation."""
    return register(relay_client, None).headers


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def _schema_ref(response: dict[str, Any]) -> str | None:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return ref if isinstance(ref, str) else None


def test_every_422_refers_to_the_error_schema(document: dict[str, Any]) -> None:
    with_input = 0
    for label, op in _operations(document):
        takes_input = bool(op.get("requestBody") or op.get("parameters"))
        responses = op["responses"]
        if not takes_input:
            assert "422" not in responses, label  # nothing to validate, nothing to refuse
            continue
        with_input += 1
        assert "422" in responses, label
        assert _schema_ref(responses["422"]) == ERROR_REF, (label, responses["422"])
    assert with_input >= 20  # the walk saw the routes (a broken walk checks nothing)


def test_every_error_status_with_a_body_uses_the_one_error_schema(
    document: dict[str, Any],
) -> None:
    for label, op in _operations(document):
        for status, response in op["responses"].items():
            if status in ERROR_STATUSES and "content" in response:
                assert _schema_ref(response) == ERROR_REF, (label, status, response)


def test_no_fastapi_validation_schema_remains(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "ErrorOut" not in schemas
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and "#/components/schemas/ValidationError" not in text
    error = schemas["Error"]
    assert error["required"] == ["error"] and error["properties"]["error"]["type"] == "string"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/auth", {}),  # missing fields
        ("POST", "/api/v1/accounts", {"identity_key": 5}),
        ("PUT", "/api/v1/handle", {"handle": "abc", "extra": 1}),
        ("GET", "/api/v1/messages?limit=true", None),
        ("GET", "/api/v1/blobs/NOT-HEX", None),
    ],
)
def test_a_real_422_matches_the_documented_schema(
    relay_client: httpx.Client,
    document: dict[str, Any],
    headers: dict[str, str],
    method: str,
    path: str,
    body: Any,
) -> None:
    r = relay_client.request(method, path, json=body, headers=headers)
    if r.status_code != 422:
        pytest.fail(f"{method} {path}: expected 422, got {r.status_code} {r.text}")
    body_keys = set(r.json())
    assert body_keys == set(document["components"]["schemas"]["Error"]["required"])
    assert r.json()["error"].startswith("invalid request: ")
