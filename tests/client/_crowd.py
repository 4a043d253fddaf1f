"""Accounts on the module's real relay for the client tests, closed together.

One helper for what test_groups (``Crowd``), test_rich_e2e (``People``),
test_group_forgery (``trio``) and the linked-device tests (``Accounts``) each used to
build by hand; the ``crowd`` fixture in ``conftest.py`` hands one out per test, a test
with a relay of its own uses ``async with Crowd(srv, tmp_path, handle) as crowd``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.testing import ServerProcess


class Crowd:
    """Clients with fresh handles on one server; :meth:`close` closes every one."""

    def __init__(self, server: ServerProcess, root: Path, handle: Callable[[str], str]) -> None:
        self.server, self.root, self.handle = server, root, handle
        self.clients: list[Client] = []

    async def make(self, *names: str) -> list[Client]:
        """One new account per name (the handle is the name plus a unique suffix)."""
        out = []
        for name in names:
            c = self.blank(name)  # closed even if the registration fails
            await c.create_account(self.server.url, self.handle(name))
            out.append(c)
        return out

    async def many(self, n: int, base: str = "m") -> list[Client]:
        """``n`` new accounts named ``base0``, ``base1``, ..."""
        return await self.make(*(f"{base}{i}" for i in range(n)))

    def blank(self, name: str) -> Client:
        """A client with no account yet (to link, create or restore one by hand)."""
        c = Client(self.root / f"{name}{len(self.clients)}")
        self.clients.append(c)
        return c

    async def link(
        self, existing: Client, name: str, *, history: bool = True, **approve: Any
    ) -> Client:
        """A new device of ``existing``'s account, through the real link flow (PROTOCOL
        Part VII §3): the new client shows a code, ``existing`` approves it (``approve``
        goes to :meth:`Client.approve_device`). The new client is :attr:`clients`' last,
        even when linking fails."""
        new = self.blank(name)
        code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            new.link_device(
                self.server.url,
                name=name,
                history=history,
                on_code=lambda c, _uri: code.set_result(c),
            )
        )
        await existing.approve_device(await code, **approve)
        res = await task
        assert res.device_id == new.device_id and res.address == existing.address
        return new

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    async def __aenter__(self) -> Crowd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def messages(events: list[ev.Event]) -> list[ev.MessageReceived]:
    return [e for e in events if isinstance(e, ev.MessageReceived)]


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in messages(events)]
