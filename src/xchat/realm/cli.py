"""``xchat realm serve`` (PROTOCOL.md Part X §5): one realm, on its own port and data
directory. Prints ``xchat realm listening on http://HOST:PORT`` once it accepts
connections (the same ready-line convention as ``xchat serve``)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import click


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving (so ``--port 0`` works and the ready line has the real port);
    the realm does not import the relay's server modules."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@click.group("realm")
def realm_group() -> None:
    """Run a backup realm (hold PIN-guarded shares for other people's backups)."""


@realm_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, default=8480, show_default=True, help="TCP port (0 = any).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("realm-data"),
    show_default=True,
    help="Data directory (keys and records).",
)
@click.option("--name", default="realm", show_default=True, help="Name shown to users.")
@click.option(
    "--pow-bits",
    type=click.IntRange(0, 40),
    default=None,
    help="Proof of work per guess [XCHAT_REALM_POW_BITS, 18].",
)
def serve(host: str, port: int, data: Path, name: str, pow_bits: int | None) -> None:
    """Run one realm until SIGINT/SIGTERM."""
    import uvicorn

    from xchat.realm.app import create_app
    from xchat.realm.service import DEFAULT_POW_BITS, RealmService
    from xchat.realm.store import RealmStore
    from xchat.server.logs import setup_logging

    if pow_bits is None:
        pow_bits = int(os.environ.get("XCHAT_REALM_POW_BITS", DEFAULT_POW_BITS))
    rate = float(os.environ.get("XCHAT_REALM_RATE_PER_S", "20"))
    setup_logging(os.environ.get("XCHAT_LOG_LEVEL", "info"))
    service = RealmService(RealmStore(data), name=name, pow_bits=pow_bits)
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        create_app(service, rate_per_s=rate),
        loop="uvloop",
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
        date_header=False,
    )
    ready = f"xchat realm listening on http://{shown}:{bound_port}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                sys.stdout.write(ready + "\n")
                sys.stdout.flush()

    _Server(config).run(sockets=[sock])
