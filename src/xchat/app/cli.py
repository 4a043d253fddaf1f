"""``xchat app [--port P] [--server URL]``: serve the web app for one profile on 127.0.0.1.

Prints exactly one line on stdout, the URL to open (it carries the per-launch secret in
its fragment), then serves until Ctrl-C / SIGTERM. Mounted in the main command with
``cli.add_command(app_command)``; reads the shared context object (``obj.profile``,
``obj.passphrase()``) without importing :mod:`xchat.cli.main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from xchat.client.client import Client
from xchat.client.profile import default_home

HOST = "127.0.0.1"
DEFAULT_PORT = 8471


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 only (never 0.0.0.0); port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would kill
        the process before the Client closes its store and releases the profile lock."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            sigs = (signal.SIGINT, signal.SIGTERM)
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    return QuietServer


async def serve(profile: Path, passphrase: str | None, port: int, server: str | None) -> None:
    import uvicorn

    from xchat.app.server import AppState, build_app, new_secret

    client = Client(profile, passphrase=passphrase)  # takes the profile lock (or fails)
    sock = bind(port)
    try:
        port = sock.getsockname()[1]
        stored = client.profile.config.server if client.profile.initialised else None
        state = AppState(
            client=client, secret=new_secret(), port=port, default_server=stored or server
        )
        app = build_app(state)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
            date_header=False,
        )
        userver = _server_class()(config)
        await state.start_receiving()
        # The fragment never reaches a server or a Referer header (security.py).
        click.echo(f"http://{HOST}:{port}/#secret={state.secret}")
        sys.stdout.flush()
        await userver.serve(sockets=[sock])
    finally:
        sock.close()
        await client.close()


@click.command("app")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port on 127.0.0.1 (0 picks a free one).",
)
@click.option(
    "--server",
    default=None,
    help="Relay URL offered when creating an account (default: the profile's server).",
)
@click.pass_obj
def app_command(obj: Any, port: int, server: str | None) -> None:
    """Open XChat in your browser; keys stay in this process, on this device."""
    if obj is not None and hasattr(obj, "profile"):
        profile = Path(obj.profile)
        passphrase = obj.passphrase() if hasattr(obj, "passphrase") else None
    else:
        profile = default_home()
        passphrase = os.environ.get("XCHAT_PASSPHRASE")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(profile, passphrase, port, server))
