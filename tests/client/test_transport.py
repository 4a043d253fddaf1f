"""The receive socket against a real relay: a displaced copy (close 4409) is told why and
does not take the connection back by itself (issue #19 bug 3, PROTOCOL Part III §5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from xchat.client.transport import Backoff, ReceiveLoop, ws_url
from xchat.protocol import frames as fr
from xchat.testing import register, running_server


async def _wait(cond: object, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_displaced_copy_is_told_why_and_waits_to_be_resumed(tmp_path: Path) -> None:
    with running_server(tmp_path, pow_bits=4) as srv:
        with httpx.Client(base_url=srv.url) as c:
            acct = register(c)

        async def token(force: bool) -> str:
            return acct.token

        async def ignore(frame: fr.Frame, loop: ReceiveLoop) -> None:
            return None

        changes: dict[str, list[bool]] = {"one": [], "two": []}

        def tracker(name: str):  # type: ignore[no-untyped-def]
            async def on_connection(up: bool) -> None:
                changes[name].append(up)

            return on_connection

        # A 10 ms backoff: were it to reconnect by itself, it would within the round trips below.
        fast = Backoff(base=0.01, cap=0.01)
        one = ReceiveLoop(
            ws_url(srv.url), token, ignore, backoff=fast, on_connection=tracker("one")
        )
        two = ReceiveLoop(ws_url(srv.url), token, ignore, on_connection=tracker("two"))
        tasks = [asyncio.create_task(one.run())]
        try:
            await asyncio.wait_for(one.connected.wait(), 10)
            tasks.append(asyncio.create_task(two.run()))
            await _wait(lambda: one.displaced is not None)
            assert one.displaced == "This account is now used on another device"
            await asyncio.wait_for(two.connected.wait(), 10)
            # The displaced copy stays off: many relay round trips later, the other one still
            # holds its single connection (a reconnect of ours would have displaced it).
            with httpx.Client(base_url=srv.url) as c:
                for _ in range(30):
                    assert c.get("/healthz").status_code == 200
            assert two.connected.is_set() and two.displaced is None
            assert one.connections == 1 and not one.connected.is_set()
            assert changes["one"] == [True, False] and two.displaced is None
            # Used here again on purpose: now the other copy is displaced.
            one.resume()
            await _wait(lambda: two.displaced is not None)
            await asyncio.wait_for(one.connected.wait(), 10)
            assert one.displaced is None and one.connections == 2
        finally:
            await one.stop()
            await two.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_restored_elsewhere_is_displaced_too(tmp_path: Path) -> None:
    """Re-registering the same identity (a restore on another machine) closes our socket
    4401 "device revoked or re-registered": we stop there too instead of re-authenticating
    and taking the socket back from the restored copy."""
    with running_server(tmp_path, pow_bits=4) as srv, httpx.Client(base_url=srv.url) as c:
        acct = register(c)

        async def token(force: bool) -> str:
            return acct.token

        async def ignore(frame: fr.Frame, loop: ReceiveLoop) -> None:
            return None

        loop = ReceiveLoop(ws_url(srv.url), token, ignore, backoff=Backoff(0.01, 0.01))
        task = asyncio.create_task(loop.run())
        try:
            await asyncio.wait_for(loop.connected.wait(), 10)
            register(c, ik=acct.identity)  # the restore
            await _wait(lambda: loop.displaced is not None)
            assert loop.displaced == "This account is now used on another device"
            assert loop.connections == 1
        finally:
            await loop.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
