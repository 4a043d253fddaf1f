"""API conformance: schemathesis against a real relay's own ``/openapi.json``
(RELIABILITY.md §3).

For every operation, Hypothesis-generated requests (valid and invalid bodies, paths and
query strings), sent with a valid bearer token so authenticated handlers are reached:

* no 5xx (``not_a_server_error``);
* every documented response body matches its schema (``response_schema_conformance``);
* the content type is the documented one (``content_type_conformance``).

Every authenticated operation must document 401 and the bearer security scheme
(:func:`test_error_statuses_are_documented`); the error statuses each route can answer are
documented with the ``{"error": str}`` schema, so the checks above cover them too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from _rel_helpers import register
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from xchat.testing import ServerProcess, running_server

EXAMPLES = int(os.environ.get("XCHAT_API_EXAMPLES", "12"))

# The blob PATCH body is raw bytes under the tus-style media type (PROTOCOL Part VI §4).
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("conformance"), pow_bits=4, rate_limits=False) as s:
        yield s


@pytest.fixture(scope="module")
def token(relay: ServerProcess) -> str:
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        return register(c).token


def _operations() -> dict[str, Any]:
    """The app's OpenAPI document, built in-process
    (collection must not need a running server)."""
    import tempfile
    from pathlib import Path

    from xchat.server.app import create_app
    from xchat.server.config import ServerConfig

    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(ServerConfig(data=Path(tmp))).openapi()
    return spec


SPEC = _operations()
OPERATIONS = [f"{m.upper()} {p}" for p, ops in SPEC["paths"].items() for m in ops]


def _can_be_invalid(op: dict[str, Any]) -> bool:
    """A body, or a parameter whose schema some value violates (a plain string path
    parameter accepts every string: nothing to make negative there)."""
    if op.get("requestBody"):
        return True
    for param in op.get("parameters", []):
        schema = param.get("schema", {})
        if schema.get("type") != "string" or set(schema) & {"pattern", "minLength", "maxLength"}:
            return True
    return False


#: Negative cases are generated only where something can be invalid, instead of being
#: generated and then skipped at run time, so a skip can never hide an operation that lost
#: its inputs by mistake.
WITH_INPUTS = [
    f"{m.upper()} {p}"
    for p, ops in SPEC["paths"].items()
    for m, op in ops.items()
    if _can_be_invalid(op)
]
CASES = [(label, "positive") for label in OPERATIONS] + [
    (label, "negative") for label in WITH_INPUTS
]


@pytest.fixture(scope="module")
def api_schema(relay: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(relay.url + "/openapi.json")


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _operation(api_schema: Any, label: str) -> Any:
    method, path = label.split(" ", 1)
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == method and op.path == path:
            return op
    raise AssertionError(f"{label} missing from the live /openapi.json")


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_api_conforms(
    label: str, mode: str, api_schema: Any, relay: ServerProcess, token: str
) -> None:
    op = _operation(api_schema, label)
    headers = {"Authorization": f"Bearer {token}"}
    strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @SETTINGS
    @given(strategy)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=relay.url, headers=headers, checks=CHECKS)

    run()


AUTHENTICATED = [
    "PUT /api/v1/handle",
    "PUT /api/v1/keys",
    "GET /api/v1/keys/count",
    "GET /api/v1/bundles/{address}",
    "POST /api/v1/tokens",
    "PUT /api/v1/delivery-token",
    "GET /api/v1/sender-certificate",
    "GET /api/v1/messages",
    "DELETE /api/v1/messages/{envelope_id}",
    "POST /api/v1/messages/ack",
    "POST /api/v1/blobs",
    "PATCH /api/v1/blobs/{blob_id}",
]


def test_authenticated_operations_exist() -> None:
    assert set(AUTHENTICATED) <= set(OPERATIONS)


def test_error_statuses_are_documented(relay: ServerProcess) -> None:
    spec = httpx.get(relay.url + "/openapi.json", timeout=10).json()
    missing = []
    for label in AUTHENTICATED:
        method, path = label.split(" ", 1)
        op = spec["paths"][path][method.lower()]
        if "401" not in op.get("responses", {}) or not op.get("security"):
            missing.append(label)
    assert not missing, missing
