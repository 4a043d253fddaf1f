"""The client's anonymous token wallet against a real relay (PROTOCOL.md Part XI §5)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx

from xchat.client.api import Api
from xchat.client.client import Client
from xchat.client.wallet import BATCH, LOW_WATER
from xchat.testing import ServerProcess


class Recording(httpx.AsyncBaseTransport):
    """The real network transport, noting each request's path and Authorization."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("authorization", "")))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_stock_at_creation_and_one_token_per_lookup(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a = Client(tmp_path / "a")
    b = Client(tmp_path / "b")
    try:
        await a.create_account(server.url, handle("walla"))
        await b.create_account(server.url, handle("wallb"))
        assert a.wallet.count() == BATCH  # fetched ahead of need, at creation
        rec = Recording()
        api = Api(server.url, transport=rec)
        api.anon = a.wallet.take
        data = await api.lookup_handle(b.whoami().handle or "")
        assert data["address"] == b.address
        await api.bundles(b.address)
        await api.aclose()
        assert a.wallet.count() == BATCH - 2
        anonymous = [auth for path, auth in rec.seen if "/handles/" in path or "/bundles/" in path]
        assert len(anonymous) == 2
        assert all(auth.startswith("PrivateToken token=") for auth in anonymous)
        assert not any("Bearer" in auth for auth in anonymous)
        # Spent tokens are gone from the profile: a copy of the store cannot replay them.
        with contextlib.closing(sqlite3.connect(a.profile.store_path)) as db:
            tokens = db.execute("SELECT token FROM anon_tokens").fetchall()
        spent = {auth.split('"')[1] for auth in anonymous}
        from xchat.crypto import tokens as tk

        assert not spent & {tk.encode_token(tk.Token.from_bytes(bytes(t[0]))) for t in tokens}
        # top_up() does nothing while the stock is above the low-water mark.
        assert await a.wallet.top_up() == 0
        while a.wallet.count() >= LOW_WATER:
            await a.wallet.take()
        assert await a.wallet.top_up() == BATCH
    finally:
        await a.close()
        await b.close()


async def test_empty_wallet_refills_on_demand(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    a = Client(tmp_path / "a")
    b = Client(tmp_path / "b")
    try:
        await a.create_account(server.url, handle("wallc"))
        await b.create_account(server.url, handle("walld"))
        a.store._db.execute("DELETE FROM anon_tokens")  # fault injection: the stock is gone
        c = await a.resolve(b.address)  # a lookup with an empty stock still works
        assert c.address == b.address
        assert a.wallet.count() == BATCH - 1
    finally:
        await a.close()
        await b.close()
