"""One relay process per CLI test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xchat.testing import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("server"), pow_bits=2, rate_limits=False) as s:
        yield s
