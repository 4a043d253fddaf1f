"""The web app's file routes (``app/files.py``) on a real ``xchat app`` process and relay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _app_helpers import AppProcess, start_app


def _post(app: AppProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        app.base + path, headers={"X-XChat-Secret": app.secret}, json=body, timeout=60
    )


@pytest.fixture(scope="module")
def app_with_account(relay: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    app = start_app(Path(tmp_path_factory.mktemp("files-app")) / "p", relay.url)
    try:
        r = _post(app, "/api/account/create", {"server": relay.url, "handle": "files_ann"})
        assert r.status_code == 200, r.text
        j = r.json()
        words = [j["recovery_phrase"][i - 1] for i in j["confirm_indices"]]
        assert _post(app, "/api/account/confirm", {"words": words}).status_code == 200
        yield app
    finally:
        app.stop()


@pytest.mark.parametrize(
    "data",
    [
        "aGVsbG8=!",  # a junk character after valid base64
        "aGVs bG8=",  # whitespace inside
        "aGVsbG8",  # missing padding
        "aGVsbG9=",  # non-canonical: the unused low bits are set (same bytes as "aGVsbG8=")
        "aGVsbG8-",  # the URL-safe alphabet
        "aGVsbG8=\n",
    ],
)
def test_upload_data_that_is_not_canonical_base64_is_400(
    app_with_account: AppProcess, data: str
) -> None:
    r = _post(
        app_with_account,
        "/api/files/send",
        {"to": "@nobody", "name": "a.txt", "data": data},
    )
    assert (r.status_code, r.json()) == (400, {"error": "'data' must be base64"})


def test_canonical_base64_gets_past_the_decoder(app_with_account: AppProcess) -> None:
    """The control for the cases above: the same request with canonical data is refused
    for the unknown recipient, not for its data."""
    r = _post(
        app_with_account,
        "/api/files/send",
        {"to": "@nobody", "name": "a.txt", "data": "aGVsbG8="},
    )
    assert (r.status_code, r.json()) == (404, {"error": "unknown contact '@nobody'"})
