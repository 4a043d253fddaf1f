from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from xchat.testing import ServerProcess, running_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend_env: Callable[[str], dict[str, Any]],
) -> Iterator[ServerProcess]:
    """One relay per test module and storage backend: every test using it runs on SQLite
    and on PostgreSQL + Redis (issue #16; rate limits off, limit tests start their own)."""
    env = backend_env(request.param)
    with running_server(
        tmp_path_factory.mktemp("relay"), pow_bits=4, rate_limits=False, **env
    ) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c
