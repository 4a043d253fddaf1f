"""Several relay processes on one port (``xchat serve --reuse-port``, issue #20).

Two real relay processes bind the same port with SO_REUSEPORT and share PostgreSQL and
Redis. The kernel picks a process for every new connection, so the test finds out which
process accepted each connection (the server end's socket inode in /proc/net/tcp, looked up
in each process's file descriptors) and keeps connecting until it has the recipient's
socket on one process and the sender's HTTP connection on the other.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _relay_helpers import recv_frame, recv_until_drained, send_body, ws_connect
from xchat.protocol.frames import Deliver
from xchat.testing import ServerProcess, env_from_kwargs, register, running_nodes


def _socket_inode(server_port: int, client_port: int) -> str | None:
    """Inode of the server end of the loopback connection client_port → server_port."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == local and parts[2] == remote and parts[9] != "0":
            return parts[9]
    return None


def owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which relay process holds the accepted end of this connection (waits for the accept:
    until then the kernel's entry has no inode and no process has the descriptor)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inode = _socket_inode(server_port, client_port)
        want = f"socket:[{inode}]"
        for pid in pids if inode is not None else []:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == want:
                        return pid
                except OSError:
                    continue
        time.sleep(0.01)
    return None


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, backend_env: Callable[[str], dict[str, Any]]
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = env_from_kwargs(
        {
            **backend_env("postgres"),
            "rate_limits": False,
            "reuse_port": True,
            "resync_seconds": 3600,
        }
    )  # no catch-up poll: only Redis can wake the socket
    with running_nodes(tmp_path_factory.mktemp("shared"), 4, env, share_port=True) as nodes:
        yield nodes


def _http_on(pid: int, port: int, pids: list[int]) -> http.client.HTTPConnection:
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        assert conn.sock is not None
        if owner(port, conn.sock.getsockname()[1], pids) == pid:
            return conn
        conn.close()
    raise AssertionError(f"no connection landed on process {pid}")


async def _ws_on(pid: int, port: int, pids: list[int], url: str, token: str) -> Any:
    for _ in range(200):
        ws = await ws_connect(url, token)
        if owner(port, ws.local_address[1], pids) == pid:
            return ws
        await ws.close()
    raise AssertionError(f"no WebSocket landed on process {pid}")


def test_two_processes_bind_one_port(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    assert a.port == b.port and a.pid != b.pid
    pids = [a.pid, b.pid]
    seen = set()
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        conn.connect()
        assert conn.sock is not None
        seen.add(owner(a.port, conn.sock.getsockname()[1], pids))
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        if seen == set(pids):
            break
    assert seen == set(pids)  # the kernel spreads connections over both processes


async def test_message_through_one_process_reaches_socket_on_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    pids = [a.pid, b.pid]
    with httpx.Client(base_url=a.url, timeout=10) as c:
        bob = register(c)
    ws = await _ws_on(b.pid, b.port, pids, b.ws_url, bob.token)
    try:
        assert await recv_until_drained(ws) == []
        conn = _http_on(a.pid, a.port, pids)  # the sender's connection is on the other one
        body = json.dumps(send_body(bob, [b"across processes"]))
        conn.request("POST", "/api/v1/messages", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        frame = await recv_frame(ws, timeout=10)  # woken through Redis, not by a poll
        while not isinstance(frame, Deliver):  # KEYS_LOW may come first
            frame = await recv_frame(ws, timeout=10)
        assert [e.content for e in frame.envelopes] == [b"across processes"]
    finally:
        await ws.close()


def test_reuse_port_without_shared_backends_is_refused(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "xchat", "serve", "--data", str(tmp_path), "--reuse-port"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "xchat serve: --reuse-port needs --database and --redis"
    ]
