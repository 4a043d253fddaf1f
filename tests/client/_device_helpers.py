"""Linked-device test helpers: clients on one relay, linked through the real link flow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xchat.client import events as ev
from xchat.client.client import Client


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.MessageReceived)]


class Accounts:
    """Clients on one relay, closed together."""

    def __init__(self, url: str, root: Path, handle: Callable[[str], str]) -> None:
        self.url, self.root, self.handle = url, root, handle
        self.clients: list[Client] = []

    async def account(self, base: str) -> Client:
        c = Client(self.root / f"{base}{len(self.clients)}")
        self.clients.append(c)
        await c.create_account(self.url, self.handle(base))
        return c

    async def link(
        self, existing: Client, name: str, *, history: bool = True, **approve: Any
    ) -> Client:
        new = Client(self.root / f"{name}{len(self.clients)}")
        self.clients.append(new)
        code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            new.link_device(
                self.url, name=name, history=history, on_code=lambda c, _uri: code.set_result(c)
            )
        )
        await existing.approve_device(await code, **approve)
        res = await task
        assert res.device_id == new.device_id and res.address == existing.address
        return new

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
