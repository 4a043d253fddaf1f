"""Test helpers: real realm processes on loopback (like :mod:`xchat.testing` for the relay).

``running_realms(tmp_path, 3)`` starts three ``python -m xchat.realm serve --port 0``
subprocesses, waits for each ready line and ``/healthz``; ``RealmProcess.kill9()`` takes
one down mid-test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from xchat.testing import _readline_with_timeout

READY_PREFIX = "xchat realm listening on "


class RealmProcess:
    """A running realm: ``url``, ``data_dir``, ``pid``; ``kill9()``, ``stop()``, ``start()``."""

    def __init__(self, data_dir: Path, name: str, pow_bits: int = 2, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.pow_bits = pow_bits
        self.port = port
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 15.0, rate_per_s: float = 0.0) -> None:
        """Start (again, on the same port once it had one); ``rate_per_s`` 0 = no limit."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
        self._log = open(self.data_dir / "realm.log", "a")  # noqa: SIM115
        env = {**os.environ, "XCHAT_REALM_RATE_PER_S": str(rate_per_s)}
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env
        )
        line = _readline_with_timeout(self._proc, timeout)
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"realm did not start: {line!r} (see {self.data_dir}/realm.log)")
        self.url = line[len(READY_PREFIX) :].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("realm never became healthy")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()

    def kill9(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


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
