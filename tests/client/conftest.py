"""Client-test fixtures: unique handles, a ``crowd`` of accounts on the module's relay
(``server``, from tests/conftest.py; :mod:`_crowd`), and a relay for blob transfers."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _crowd import Crowd

from xchat.client.client import Client
from xchat.testing import ServerProcess, running_server

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCHAT_NO_KEYRING", "1")


@pytest.fixture(scope="module")
def blob_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A relay for blob transfers (test_files, test_blobhttp): the 1 MiB request limit is
    lifted as in tests/server/test_blobs_api.py (blob PATCH bodies are large)."""
    with running_server(
        tmp_path_factory.mktemp("relay"), pow_bits=2, rate_limits=False, max_request=16 << 30
    ) as s:
        yield s


@pytest.fixture(scope="module")
def blob_profile(blob_relay: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client profile with an account on :func:`blob_relay`."""
    path = tmp_path_factory.mktemp("alice")

    async def go() -> None:
        async with Client(path) as c:
            await c.create_account(blob_relay.url, use_keyring=False)

    os.environ["XCHAT_NO_KEYRING"] = "1"
    asyncio.run(go())
    return path


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
