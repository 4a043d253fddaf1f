"""Test helpers: real realm processes on loopback (like :mod:`xchat.testing` for the relay).

``running_realms(tmp_path, 3)`` starts three ``python -m xchat.realm serve --port 0``
subprocesses, waits for each ready line and ``/healthz``; ``RealmProcess.kill9()`` takes
one down mid-test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from xchat.testing import ChildProcess

READY_PREFIX = "xchat realm listening on "


class RealmProcess(ChildProcess):
    """A running realm: ``url``, ``data_dir``, ``pid``; ``kill9()``, ``stop()``, ``start()``."""

    what = "realm"
    ready_prefix = READY_PREFIX
    log_name = "realm.log"

    def __init__(self, data_dir: Path, name: str, pow_bits: int = 2, port: int = 0) -> None:
        super().__init__(data_dir, port)
        self.name = name
        self.pow_bits = pow_bits

    def start(self, timeout: float = 15.0, rate_per_s: float = 0.0) -> None:
        """Start (again, on the same port once it had one); ``rate_per_s`` 0 = no limit."""
        cmd = [
            sys.executable,
            "-m",
            "xchat.realm",
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--name",
            self.name,
            "--pow-bits",
            str(self.pow_bits),
        ]
        env = {**os.environ, "XCHAT_REALM_RATE_PER_S": str(rate_per_s)}
        self._launch(cmd, env, timeout)


@contextmanager
def running_realms(
    root: Path | str, count: int = 3, pow_bits: int = 2
) -> Iterator[list[RealmProcess]]:
    """``count`` realm subprocesses under ``root/realm<i>`` for the ``with`` block."""
    with ExitStack() as stack:
        realms = []
        for i in range(count):
            r = RealmProcess(Path(root) / f"realm{i}", f"realm-{i}", pow_bits)
            r.start()
            stack.callback(r.stop)
            realms.append(r)
        yield realms
