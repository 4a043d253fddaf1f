"""Shared fixtures: one real relay subprocess per test module (xchat.testing), and a
``crowd`` of accounts on it (:mod:`_crowd`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _crowd import Crowd

from xchat.testing import ServerProcess, running_server

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCHAT_NO_KEYRING", "1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    os.environ.setdefault("XCHAT_NO_KEYRING", "1")
    with running_server(tmp_path_factory.mktemp("server"), pow_bits=2, rate_limits=False) as srv:
        yield srv


@pytest.fixture
def handle() -> HandleFactory:
    return HandleFactory()


class HandleFactory:
    """Unique handles across tests sharing one server."""

    def __call__(self, base: str) -> str:
        return f"{base}{os.getpid() % 1000}x{next(_counter)}"


@pytest.fixture
async def crowd(
    server: ServerProcess, tmp_path: Path, handle: HandleFactory
) -> AsyncIterator[Crowd]:
    """Accounts on the module's relay, made with ``await crowd.make("ann", "ben")``."""
    cr = Crowd(server, tmp_path, handle)
    try:
        yield cr
    finally:
        await cr.close()
