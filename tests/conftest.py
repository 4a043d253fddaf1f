"""Session-wide services for the backend-parametrized suites (issue #16).

``pg_service`` and ``redis_service`` are real PostgreSQL and Redis processes on loopback,
started once per test session (by ``xchat.ops.services``, the code ``make cluster`` uses)
and stopped at its end. Tests that need them are skipped only when the binaries are absent
(``scripts/os-packages.sh`` installs them). The ``backend_env`` fixture gives the
``XCHAT_*`` settings of a fresh database for one relay.

``server`` is the one relay per test module that the client and CLI tests share (SQLite;
tests/server overrides it with one per storage backend).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xchat.ops.services import Postgres, Redis, have_postgres, have_redis
from xchat.testing import ServerProcess, running_server

BACKENDS = ("sqlite", "postgres")
_db_serial = itertools.count(1)


@pytest.fixture(scope="session")
def pg_service() -> Iterator[Postgres]:
    if not have_postgres():
        pytest.skip("PostgreSQL binaries are not installed")
    # Not under pytest's 0700 tmp dir: the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="xchat-pg-"))
    os.chmod(root, 0o755)
    pg = Postgres(root / "pgdata")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    r = Redis(tmp_path_factory.mktemp("redis") / "redis.log")
    r.start()
    try:
        yield r
    finally:
        r.stop()


def fresh_database(pg: Postgres) -> str:
    return pg.create_database(f"xchat_t{os.getpid()}_{next(_db_serial)}")


@pytest.fixture(scope="session")
def backend_env(request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """``backend_env("postgres")``: extra ``running_server`` settings for that backend (a
    fresh database and the session's Redis); ``backend_env("sqlite")`` is ``{}``."""

    def make(backend: str) -> dict[str, Any]:
        if backend == "sqlite":
            return {}
        pg: Postgres = request.getfixturevalue("pg_service")
        redis: Redis = request.getfixturevalue("redis_service")
        return {"database": fresh_database(pg), "redis": redis.url}

    return make


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real relay subprocess for one test module (proof of work cheap, no rate limits)."""
    os.environ.setdefault("XCHAT_NO_KEYRING", "1")
    with running_server(tmp_path_factory.mktemp("server"), pow_bits=2, rate_limits=False) as srv:
        yield srv
