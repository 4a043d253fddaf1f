"""Accounts on the module's real relay for the client tests, closed together.

One helper for what test_groups (``Crowd``), test_rich_e2e (``People``) and
test_group_forgery (``trio``) each used to build by hand; the ``crowd`` fixture in
``conftest.py`` hands one out per test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
            c = Client(self.root / f"{name}{len(self.clients)}")
            self.clients.append(c)  # closed even if the registration fails
            await c.create_account(self.server.url, self.handle(name))
            out.append(c)
        return out

    async def many(self, n: int, base: str = "m") -> list[Client]:
        """``n`` new accounts named ``base0``, ``base1``, ..."""
        return await self.make(*(f"{base}{i}" for i in range(n)))

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def messages(events: list[ev.Event]) -> list[ev.MessageReceived]:
    return [e for e in events if isinstance(e, ev.MessageReceived)]


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in messages(events)]
