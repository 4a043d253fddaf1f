"""Fixtures for the web-app tests: a real relay, real ``xchat app`` processes, Chromium.

The browser is Debian's Chromium (``apt-get install chromium``) driven by the Python
``playwright`` package; ``playwright install`` is never needed. Tests that need the
browser skip with a clear reason when /usr/bin/chromium is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _app_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, AppProcess, start_app

from xchat.testing import running_server


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with running_server(tmp_path_factory.mktemp("relay"), pow_bits=4) as srv:
        yield srv


@pytest.fixture(scope="module")
def apps(relay: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AppProcess]]:
    base = tmp_path_factory.mktemp("profiles")
    started = [
        start_app(base / "first", relay.url),  # type: ignore[attr-defined]
        start_app(base / "second", relay.url),  # type: ignore[attr-defined]
    ]
    try:
        yield started
    finally:
        for a in started:
            a.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; `make` does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
