"""The relay's ``/openapi.json``: one error schema for every error status.

FastAPI documents its own 422 body (``HTTPValidationError``: ``{"detail": [...]}``) on
every route that takes input, but the relay answers a validation failure like every other
error, ``{"error": "invalid request: ..."}`` (``server/app.py``, PROTOCOL Part III §1). A
client generated from the document, or a schema-driven fuzzer checking responses, would
otherwise be told the wrong shape. So the document is post-processed once: each 422 refers
to :class:`~xchat.server.models.Error` (the schema the routes' other error statuses already
use, via :func:`~xchat.server.models.errors`), and FastAPI's two validation schemas go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_REF = "#/components/schemas/Error"
#: FastAPI's own validation-error schemas, which no relay response has.
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
VALIDATION_DESCRIPTION = (
    "Request shape invalid (a missing, unknown or mistyped field or parameter);"
    ' body {"error": "invalid request: ..."}'
)


def with_error_schema(document: dict[str, Any]) -> dict[str, Any]:
    """Point every operation's 422 at the Error schema and drop FastAPI's validation
    schemas (in place, idempotent); return ``document``."""
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": VALIDATION_DESCRIPTION,
                    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                }
    schemas = document.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the post-processed document at ``/openapi.json`` (FastAPI builds and caches
    it on first use; the post-processing runs on that cached copy)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return with_error_schema(build())

    app.openapi = openapi  # type: ignore[method-assign]
