"""Read-your-writes across relay nodes: retry a refusal once the directory cache caught up.

Why: every node answers directory lookups (account known? token hash? device epoch?) from
its in-memory cache, kept fresh by PostgreSQL LISTEN/NOTIFY. A client that registers
through node A and, a millisecond later, reaches node B (HAProxy balances each request)
could be told 404 or 401 by B before B has seen A's notification. So a refusal that a stale
cache could explain (401, 404, 409) is not sent at once on a shared store: the node waits
for :meth:`PostgresStore.sync` (a barrier: every change committed before it is applied)
and, if the cache moved meanwhile, runs the request again; otherwise the original answer
goes out. A single node (SQLite) never pays anything: its cache is the truth.

Not retried: account registration (it has effects before a possible 409 on the handle)
and streamed blob uploads (their bodies are not buffered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from xchat.errors import ApiError
from xchat.server.relay import Relay
from xchat.storage.postgres import PostgresStore

log = logging.getLogger("xchat.server")

STALE_STATUSES = frozenset((401, 404, 409))

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _not_retried(scope: Scope) -> bool:
    method, path = scope.get("method"), scope.get("path", "")
    if method == "POST" and path == "/api/v1/accounts":
        return True
    return method == "PATCH" and path.startswith("/api/v1/blobs/")


class StaleRetryMiddleware:
    """HTTP side (innermost middleware, so body limits still apply before buffering)."""

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.relay.store
        if scope["type"] != "http" or not isinstance(store, PostgresStore) or _not_retried(scope):
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:
            msg = await receive()
            body.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                break
        generation = store.generation
        held = await self._attempt(scope, body, send)
        if held is None:
            return
        try:
            fresh = await store.sync() != generation
        except ApiError:
            fresh = False
        if fresh:
            self.relay.metrics.inc("stale_retries_total")
            await self.app(scope, _replay(body), send)
            return
        for msg in held:
            await send(msg)

    async def _attempt(self, scope: Scope, body: list[Message], send: Send) -> list[Message] | None:
        """Run the app; return the response messages if it refused with a stale-able
        status (nothing sent yet), else None (the response already went out)."""
        held: list[Message] | None = None

        async def capture(msg: Message) -> None:
            nonlocal held
            if msg["type"] == "http.response.start" and msg["status"] in STALE_STATUSES:
                held = [msg]
                return
            if held is not None:
                held.append(msg)
                return
            await send(msg)

        await self.app(scope, _replay(body), capture)
        return held


def _replay(body: list[Message]) -> Receive:
    queue = list(body)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # like a client that sent everything: wait forever
        raise AssertionError("unreachable")

    return receive


def retry_when_fresh(
    relay: Relay, exc: ApiError, again: Callable[[], None], fail: Callable[[], None]
) -> bool:
    """WebSocket side: for a refused SEND on a shared store, wait for the directory barrier
    in the background, then ``again()`` if the cache moved, else ``fail()``. Returns False
    (caller answers at once) when a stale cache cannot explain the refusal."""
    store = relay.store
    if exc.status not in STALE_STATUSES or not isinstance(store, PostgresStore):
        return False
    generation = store.generation

    async def run() -> None:
        try:
            fresh = await store.sync() != generation
        except ApiError:
            fresh = False
        if fresh:
            relay.metrics.inc("stale_retries_total")
            again()
        else:
            fail()

    task = asyncio.get_running_loop().create_task(run())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return True


_pending: set[asyncio.Task[None]] = set()
