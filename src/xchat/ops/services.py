"""PostgreSQL, Redis, HAProxy and relay nodes as plain processes on loopback (no systemd).

One implementation serves ``make cluster`` (``xchat.ops.cluster``), the backend-parametrized
test suite (a session fixture) and the cluster benchmark, so what the tests exercise is what
an operator starts. Every process is started in its own session (it outlives the command
that started it), and its pid is what the caller records: stopping kills exactly that pid,
after checking it still runs the program we started (pids get reused).

PostgreSQL refuses to run as root: when we are root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (``runuser``), and the data directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/bin")


class ServiceError(RuntimeError):
    """A supporting service could not be started (missing binary, port, timeout)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def pg_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    return shutil.which(name)


def have_postgres() -> bool:
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


def have_redis() -> bool:
    return shutil.which("redis-server") is not None


def have_haproxy() -> bool:
    return shutil.which("haproxy") is not None


def alive(pid: int, needle: str = "") -> bool:
    """Whether ``pid`` runs and (if given) its command line contains ``needle``."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is gone
        return False
    return needle in cmd


def kill_pid(pid: int, needle: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Signal ``pid`` if it still runs ``needle``; wait for it to exit (SIGKILL after
    ``timeout``). Returns whether it was running."""
    if not alive(pid, needle):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid, needle):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.02)
    return True


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


@dataclass
class Postgres:
    """A PostgreSQL server in ``data_dir`` on 127.0.0.1:``port`` (trust auth, loopback only)."""

    data_dir: Path
    port: int = 0
    user: str = "xchat"

    @property
    def pid(self) -> int:
        line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(line)

    def dsn(self, database: str = "xchat") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        if not have_postgres():
            raise ServiceError("PostgreSQL is not installed (apt-get install postgresql)")
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        assert initdb and pg_ctl
        self.port = self.port or free_port()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            os.chmod(self.data_dir, 0o700)
        if fresh:
            subprocess.run(
                _as_postgres(
                    [
                        initdb,
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
            " -c fsync=on -c synchronous_commit=on -c max_connections=200"
            " -c shared_buffers=128MB"
        )
        log = self.data_dir / "server.log"
        proc = subprocess.run(
            _as_postgres(
                [
                    pg_ctl,
                    "-D",
                    str(self.data_dir),
                    "-o",
                    opts,
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else proc.stderr
            raise ServiceError(f"PostgreSQL did not start: {tail}")
        wait_port(self.port, timeout)
        if fresh:
            self.create_database("xchat")

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (a fresh database per test module); returns its DSN."""
        psql = pg_bin("psql") or "psql"
        subprocess.run(
            [
                psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f'CREATE DATABASE "{name}"',
            ],
            check=True,
            capture_output=True,
        )
        return self.dsn(name)

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl is None or not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Redis:
    """``redis-server`` on 127.0.0.1:``port``, no persistence (routes are soft state)."""

    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if not have_redis():
            raise ServiceError("redis-server is not installed (apt-get install redis-server)")
        self.port = self.port or free_port()
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--protected-mode", "yes"]  # fmt: skip
        self.proc = _spawn(cmd, self.log)
        self.pid = self.proc.pid
        wait_port(self.port, timeout, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.pid:
            kill_pid(self.pid, "redis-server", sig)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(1)
        self.proc = None
        self.pid = 0

    def restart(self) -> None:
        self.stop(signal.SIGKILL)
        self.start()


@dataclass
class Node:
    """One relay process (``xchat serve``) of a scaled-out deployment."""

    name: str
    data: Path
    log: Path
    database: str
    redis: str
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.port = self.port or free_port()
        cmd = [sys.executable, "-m", "xchat", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data", str(self.data),
               "--database", self.database, "--redis", self.redis, *self.args]  # fmt: skip
        self.proc = _spawn(cmd, self.log, {**os.environ, **self.env})
        self.pid = self.proc.pid
        try:
            wait_healthy(self.url, timeout, self.proc)
        except ServiceError as exc:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise ServiceError(f"{self.name}: {exc}\n{tail}") from None

    def kill9(self) -> None:
        if self.pid:
            kill_pid(self.pid, "xchat", signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        if self.pid:
            kill_pid(self.pid, "xchat", signal.SIGTERM)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(5)
        self.proc = None
        self.pid = 0


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{url}: process exited with status {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/healthz", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise ServiceError(f"{url} never became healthy")


HAPROXY_TEMPLATE = """\
# HAProxy in front of the relay nodes (generated by xchat.ops.services; see docs/haproxy.cfg).
global
    maxconn 8000
    log stdout format raw local0 warning

defaults
    mode http
    option http-server-close
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s
    timeout client-fin 5s

frontend xchat
    bind 127.0.0.1:{port}
    default_backend relays

backend relays
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


@dataclass
class HAProxy:
    """HAProxy on one port, health-checking every node's ``/healthz``."""

    config: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, backends: list[tuple[str, int]]) -> None:
        servers = "\n".join(f"    server {n} 127.0.0.1:{p} check" for n, p in backends)
        self.config.write_text(HAPROXY_TEMPLATE.format(port=self.port, servers=servers))

    def start(self, backends: list[tuple[str, int]], timeout: float = 10.0) -> None:
        if not have_haproxy():
            raise ServiceError("haproxy is not installed (apt-get install haproxy)")
        self.port = self.port or free_port()
        self.write_config(backends)
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True)
        if check.returncode != 0:
            raise ServiceError(f"bad HAProxy config: {check.stderr.decode()[-500:]}")
        self.proc = _spawn(["haproxy", "-db", "-f", str(self.config)], self.log)
        self.pid = self.proc.pid
        wait_port(self.port, timeout, self.proc)
        wait_healthy(self.url, timeout, self.proc)

    def stop(self) -> None:
        if self.pid:
            kill_pid(self.pid, "haproxy", signal.SIGTERM)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(5)
        self.proc = None
        self.pid = 0
