"""Run the relay under uvicorn (PROTOCOL Part III §9).

We bind the listening socket ourselves so ``--port 0`` works and so the ready line
``xchat server listening on http://HOST:PORT`` is printed only once the socket accepts
connections (after the store is open: uvicorn runs the lifespan before serving).
"""

from __future__ import annotations

import gc
import importlib.util
import resource
import socket
import sys
from dataclasses import replace
from typing import Any

import uvicorn

from xchat.crypto.relaykey import relay_address
from xchat.server.app import create_app
from xchat.server.backends import BackendError
from xchat.server.backends import check as check_backends
from xchat.server.config import ServerConfig
from xchat.server.logs import setup_logging
from xchat.server.wsfast import protocol_class


def _ws_impl() -> str:
    try:
        if importlib.util.find_spec("uvicorn.protocols.websockets.websockets_sansio_impl"):
            return "websockets-sansio"
    except ImportError:
        pass
    return "websockets"


def raise_nofile_limit(want: int = 1_048_576) -> int:
    """Raise RLIMIT_NOFILE as far as allowed: every WebSocket is a descriptor and the usual
    soft limit (1024) would cap the relay far below its 50,000-socket target. The hard limit
    is raised too when the process may (CAP_SYS_RESOURCE); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_soft, new_hard in ((want, want), (hard, hard)):
        if new_hard == resource.RLIM_INFINITY:
            new_soft = new_hard = want
        if new_soft <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, max(new_hard, new_soft)))
            return new_soft
        except (ValueError, OSError):
            continue
    return soft


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The listening socket. With ``reuse_port`` (SO_REUSEPORT) every relay process binds
    the same port and the kernel hashes each new connection to one of them: one process
    per core, and more sockets in all than one process's RLIMIT_NOFILE allows."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


#: Young-generation threshold (CPython's default is 700). A relay allocates a few objects per
#: frame, almost all freed by reference counting; a larger first generation means fewer
#: collections per second, each still well under a millisecond.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep collector pauses out of delivery latency (issue #20).

    Everything alive once the relay is ready (modules, FastAPI/pydantic models, the
    directory cache: hundreds of thousands of objects) would otherwise be traversed by
    every full collection: a 40-110 ms stop of the event loop, and of the store's writer
    thread waiting for the GIL, measured at half load. ``gc.freeze()`` moves them to the
    permanent generation, so a full collection only visits what was allocated since;
    cycles among frozen objects are never collected, which is fine for start-up state
    that lives as long as the process."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            tune_gc()
            sys.stdout.write(self.ready_line + "\n")
            sys.stdout.flush()


def run_server(config: ServerConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    try:
        check_backends(config)
    except BackendError as exc:
        sys.stderr.write(f"xchat serve: {exc}\n")
        raise SystemExit(2) from None
    if config.tls_cert:
        # TLS runs inside the asyncio transport: the fast path must not write to the raw fd.
        config = replace(config, ws_direct_writes=False)
    if config.reuse_port and not config.redis:
        # Without shared storage and fan-out, a device's mail would wait in another
        # process's SQLite and its wake-ups never reach the process holding its socket.
        sys.stderr.write("xchat serve: --reuse-port needs --database and --redis\n")
        raise SystemExit(2)
    setup_logging(config.log_level)
    raise_nofile_limit()
    if config.gil_switch_ms > 0:
        sys.setswitchinterval(config.gil_switch_ms / 1000)
    try:
        sock = bind_socket(config.host, config.port, config.reuse_port)
    except OSError as exc:
        sys.stderr.write(
            f"xchat serve: cannot listen on {config.host}:{config.port}: {exc.strerror}\n"
        )
        raise SystemExit(2) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app = create_app(config)
    # Always our protocol: it enforces the connection cap and read timeouts (PROTOCOL Part III §6);
    # with ws_fast, /api/v1/ws upgrades also bypass ASGI (PROTOCOL Part III §5.1).
    http: Any = protocol_class(app.state.relay, config.ws_ping_seconds, config.ws_fast)
    uconfig = uvicorn.Config(
        app,
        loop="uvloop",
        http=http,
        ws=_ws_impl(),
        ws_max_size=2 * config.max_request,  # beyond this uvicorn closes with 1009
        ws_per_message_deflate=False,
        access_log=False,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        backlog=4096,
        ssl_certfile=config.tls_cert or None,
        ssl_keyfile=config.tls_key or None,
    )
    scheme = "https" if config.tls_cert else "http"
    url = f"{scheme}://{shown}:{port}"
    # The second line is the address to share: the fragment pins the relay's signing key
    # in every client given it (PROTOCOL Part III §3.1).
    address = relay_address(url, app.state.relay.secrets.signing_public)
    server = _Server(
        uconfig, f"xchat server listening on {url}\nxchat relay address (share this): {address}"
    )
    server.run(sockets=[sock])
