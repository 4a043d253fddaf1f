"""A scaled-out relay on one machine: PostgreSQL, Redis, N relay nodes, HAProxy in front.

    python -m xchat.ops.cluster start data/cluster [--nodes 3] [--port 8480]
    python -m xchat.ops.cluster stop data/cluster

``make cluster`` / ``make cluster-stop`` run exactly this. Everything listens on 127.0.0.1;
state lives under the cluster directory: ``postgres/`` (the database cluster), ``shared/``
(the relay data directory every node uses: server keys and blob files, as a shared mount
would be across machines), one log per process, and ``NAME.pid`` for every process started
(``node1.pid`` ..., ``postgres.pid``, ``redis.pid``, ``haproxy.pid``). ``stop`` reads those
files and stops exactly those processes (each pid is checked to still run the program it
was started as), so it never touches another PostgreSQL or Redis on the machine.

The same class starts the clusters of the failure tests and of ``bench/cluster_bench.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from xchat.ops.services import (
    HAProxy,
    Node,
    Postgres,
    Redis,
    ServiceError,
    alive,
    free_port,
    kill_pid,
    wait_healthy,
)

NEEDLES = {"redis": "redis-server", "haproxy": "haproxy", "postgres": "postgres"}


class Cluster:
    """``nodes`` relay processes on one PostgreSQL and one Redis, behind HAProxy."""

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        port: int = 0,
        node_env: dict[str, str] | None = None,
        node_args: list[str] | None = None,
        haproxy: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.pg = Postgres(self.root / "postgres")
        self.redis = Redis(self.root / "redis.log")
        self.database = ""
        self.nodes = [
            Node(
                f"node{i}",
                self.root / "shared",
                self.root / f"node{i}.log",
                "",
                "",
                env=dict(node_env or {}),
                args=list(node_args or []),
            )
            for i in range(1, nodes + 1)
        ]
        self.proxy = HAProxy(self.root / "haproxy.cfg", self.root / "haproxy.log", port)
        self.with_haproxy = haproxy

    @property
    def url(self) -> str:
        return self.proxy.url if self.with_haproxy else self.nodes[0].url

    def _pid_file(self, name: str, pid: int) -> None:
        (self.root / f"{name}.pid").write_text(f"{pid}\n")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the postgres user must reach postgres/
        self.pg.start()
        self._pid_file("postgres", self.pg.pid)
        self.database = self.pg.dsn("xchat")
        self.redis.start()
        self._pid_file("redis", self.redis.pid)
        for i, node in enumerate(self.nodes):
            node.database, node.redis = self.database, self.redis.url
            if i == 0:  # the first node creates the shared server keys
                self.start_node(node)
        for node in self.nodes[1:]:
            node.port = node.port or free_port()
        self._start_rest()
        if self.with_haproxy:
            self.proxy.start([(n.name, n.port) for n in self.nodes])
            self._pid_file("haproxy", self.proxy.pid)
        (self.root / "cluster.json").write_text(
            json.dumps(
                {
                    "url": self.url,
                    "database": self.database,
                    "redis": self.redis.url,
                    "nodes": {n.name: n.url for n in self.nodes},
                },
                indent=1,
            )
            + "\n"
        )

    def _start_rest(self) -> None:
        """Start nodes 2..N in parallel (each takes ~1 s to import and open the store)."""
        from xchat.ops.services import _spawn

        for node in self.nodes[1:]:
            cmd = [sys.executable, "-m", "xchat", "serve", "--host", "127.0.0.1",
                   "--port", str(node.port), "--data", str(node.data),
                   "--database", node.database, "--redis", node.redis, *node.args]  # fmt: skip
            node.proc = _spawn(cmd, node.log, {**os.environ, **node.env})
            node.pid = node.proc.pid
        for node in self.nodes[1:]:
            wait_healthy(node.url, 30, node.proc)
            self._pid_file(node.name, node.pid)

    def start_node(self, node: Node) -> None:
        node.database, node.redis = self.database, self.redis.url
        node.start()
        self._pid_file(node.name, node.pid)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.proxy.stop()
        self.redis.stop()
        self.pg.stop()
        for name in ["haproxy", "redis", "postgres", *(n.name for n in self.nodes)]:
            with contextlib.suppress(FileNotFoundError):
                (self.root / f"{name}.pid").unlink()


def stop_from_pid_files(root: Path) -> list[str]:
    """``make cluster-stop``: stop exactly the processes named by ``root/*.pid``."""
    stopped = []
    for pid_file in sorted(root.glob("*.pid")):
        name = pid_file.stem
        try:
            pid = int(pid_file.read_text().split()[0])
        except (ValueError, IndexError):
            pid_file.unlink()
            continue
        if name == "postgres":
            if alive(pid, "postgres"):
                Postgres(root / "postgres").stop()
                kill_pid(pid, "postgres")
                stopped.append(name)
        elif kill_pid(pid, NEEDLES.get(name, "xchat")):
            stopped.append(name)
        pid_file.unlink()
    return stopped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xchat.ops.cluster")
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("root", type=Path)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--port", type=int, default=8480)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if args.action == "stop":
        stopped = stop_from_pid_files(root)
        print("cluster stopped: " + (", ".join(stopped) or "nothing was running"))
        return 0
    running = [p.stem for p in root.glob("*.pid")]
    if running:
        print(f"cluster: already running ({', '.join(sorted(running))}); make cluster-stop first")
        return 1
    cluster = Cluster(root, args.nodes, args.port)
    try:
        cluster.start()
    except (ServiceError, OSError) as exc:
        print(f"cluster: failed to start: {exc}", file=sys.stderr)
        stop_from_pid_files(root)
        return 1
    print(f"cluster: {cluster.url}")
    print(
        f"  {len(cluster.nodes)} relay nodes, PostgreSQL {cluster.database},"
        f" Redis {cluster.redis.url}"
    )
    print(f"  logs and pid files in {root}; stop with: make cluster-stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
