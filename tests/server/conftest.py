from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from xchat.testing import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One relay per test module (rate limits off; tests of limits start their own)."""
    with running_server(tmp_path_factory.mktemp("relay"), pow_bits=4, rate_limits=False) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c
