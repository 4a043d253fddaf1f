"""Attack 2 of issue #18: a relay that re-delivers old sealed envelopes must not learn
their sender (PROTOCOL.md Part IV §3.7).

The test double is a real proxy (Starlette on uvicorn) in front of the real relay process:
it forwards every HTTP request and bridges the WebSocket, records what the client does,
and can inject old DELIVER frames. Bob talks to the relay only through it. Before the fix,
a replayed envelope made Bob fetch the sender's bundle (``GET /bundles/{alice}``) and send
a ``reset`` to her: the relay learned who sent the envelope, and burned her one-time keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from _crowd import texts
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.protocol import frames as fr
from xchat.testing import ServerProcess

_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class ReplayingRelay:
    """A man in the middle with the relay's powers: sees and replays traffic."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self.sent_frames: list[fr.Frame] = []  # frames from the client (SEND, ACK)
        self.delivered: list[fr.Delivered] = []  # envelopes the client received
        self.inject: list[fr.Delivered] = []  # delivered again at the next connection
        self.http = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        app = Starlette(
            routes=[
                WebSocketRoute("/api/v1/ws", self.ws),
                Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    async def forward(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        r = await self.http.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
        out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        return Response(r.content, status_code=r.status_code, headers=out)

    async def ws(self, websocket: WebSocket) -> None:
        auth = websocket.headers.get("authorization")
        await websocket.accept()
        url = self.upstream.replace("http", "ws", 1) + "/api/v1/ws"
        async with connect(
            url, additional_headers={"Authorization": auth} if auth else None, compression=None
        ) as up:
            if auth and self.inject:  # the replay: old envelopes first, as if still queued
                await websocket.send_bytes(fr.encode_frame(fr.Deliver(tuple(self.inject))))
                self.inject = []

            async def down() -> None:
                async for data in up:
                    assert isinstance(data, bytes)
                    frame = fr.decode_frame(data)
                    if isinstance(frame, fr.Deliver):
                        self.delivered.extend(frame.envelopes)
                    await websocket.send_bytes(data)

            task = asyncio.create_task(down())
            try:
                while True:
                    data = await websocket.receive_bytes()
                    self.sent_frames.append(fr.decode_frame(data))
                    await up.send(data)
            except WebSocketDisconnect:
                pass
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def bundle_fetches(self) -> list[str]:
        return [p for m, p in self.requests if "/bundles/" in p]

    def lookups(self) -> list[str]:
        return [p for m, p in self.requests if "/handles/" in p or "/accounts/" in p]

    def sends(self) -> list[fr.Send]:
        return [f for f in self.sent_frames if isinstance(f, fr.Send)]


@contextlib.asynccontextmanager
async def replaying_relay(server: ServerProcess) -> AsyncIterator[ReplayingRelay]:
    proxy = ReplayingRelay(server.url)
    task = asyncio.create_task(proxy.server.serve(sockets=[proxy.sock]))
    while not proxy.server.started:
        await asyncio.sleep(0.01)
    try:
        yield proxy
    finally:
        proxy.server.should_exit = True
        await task
        await proxy.http.aclose()


def _forget_prekeys(c: Client) -> None:
    # Fault injection (private on purpose): the one-time prekeys are lost.
    c.store._db.execute("DELETE FROM prekeys WHERE kind IN ('ec', 'kem')")


async def _key_count(c: Client) -> dict[str, int]:
    api = await c.authed_api()
    return await api.key_count()


async def test_replayed_envelopes_reveal_no_sender(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    async with replaying_relay(server) as relay:
        alice = Client(tmp_path / "alice")
        bob = Client(tmp_path / "bob")
        try:
            await alice.create_account(server.url, handle("ra"))
            await bob.create_account(relay.url, handle("rb"))  # Bob only through the relay
            # A conversation with several ratchet turns, so old chains are gone.
            await alice.send_text(bob.address, "m1 (PreKey message)")
            assert texts(await bob.receive()) == ["m1 (PreKey message)"]
            for i in range(3):
                await bob.send_text(alice.address, f"reply {i}")
                assert texts(await alice.receive()) == [f"reply {i}"]
                await alice.send_text(bob.address, f"m{i + 2}")
                assert texts(await bob.receive()) == [f"m{i + 2}"]
            old = list(relay.delivered)  # every envelope Bob ever got, receipts included
            assert len(old) >= 5
            alice_keys = await _key_count(alice)
            n_requests, n_frames = len(relay.requests), len(relay.sent_frames)

            relay.inject = old  # the attack
            got = await bob.receive()
            assert texts(got) == []  # nothing shown twice
            new_requests = relay.requests[n_requests:]
            new_frames = relay.sent_frames[n_frames:]
            # No bundle fetch, no lookup, no SEND: nothing ties any envelope to Alice.
            assert [p for _, p in new_requests if "/bundles/" in p] == []
            assert [p for _, p in new_requests if "/handles/" in p or "/accounts/" in p] == []
            assert [f for f in new_frames if isinstance(f, fr.Send)] == []
            # Every replayed envelope was acked (dropped silently, not retried forever).
            acked = {i for f in new_frames if isinstance(f, fr.Ack) for i in f.envelope_ids}
            assert {d.envelope_id for d in old} <= acked
            assert await _key_count(alice) == alice_keys  # no one-time key burned

            # The sessions survived the replay: both directions still work.
            await alice.send_text(bob.address, "after the replay")
            assert texts(await bob.receive()) == ["after the replay"]
            await bob.send_text(alice.address, "still here")
            assert texts(await alice.receive()) == ["still here"]
        finally:
            await alice.close()
            await bob.close()


async def test_fresh_prekey_failure_resets_once_per_peer_even_across_restarts(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """The one failure that is answered: a PreKey message for prekeys Bob never consumed
    (e.g. fetched before he restored). Once per peer per day, kept across restarts."""
    async with replaying_relay(server) as relay:
        carol = Client(tmp_path / "carol")
        bob = Client(tmp_path / "bob")
        try:
            await carol.create_account(server.url, handle("rc"))
            await bob.create_account(relay.url, handle("rb2"))
            _forget_prekeys(bob)  # Bob "lost" his prekeys (as after a restore)
            await carol.send_text(bob.address, "first")
            got = await bob.receive()
            assert any(isinstance(e, ev.DecryptionFailed) for e in got)
            assert relay.bundle_fetches() == [f"/api/v1/bundles/{carol.address}"]  # the reset
            assert any(isinstance(f, fr.Send) for f in relay.sent_frames)
            got = await carol.receive()  # the reset arrives; Carol re-sends "first"
            assert texts(await bob.receive()) == ["first"]
            profile = bob.profile.path
            await bob.close()

            # A second such failure the same day, by a fresh process: not answered.
            bob = Client(profile)
            bob.store.delete_sessions(carol.address)
            _forget_prekeys(bob)
            carol.store.delete_sessions(bob.address)
            await carol.send_text(bob.address, "second")
            fetches = len(relay.bundle_fetches())
            got = await bob.receive()
            assert any(isinstance(e, ev.DecryptionFailed) for e in got)
            assert len(relay.bundle_fetches()) == fetches
        finally:
            await carol.close()
            await bob.close()


@pytest.mark.parametrize("count", [1])
async def test_replayed_prekey_message_after_its_session_is_gone(
    server: ServerProcess, tmp_path: Path, handle, count: int
) -> None:
    """A PreKey message that used only the last-resort KEM key (no one-time keys left)
    would decrypt again once its session is archived away; the replay log drops it."""
    async with replaying_relay(server) as relay:
        alice = Client(tmp_path / "alice")
        bob = Client(tmp_path / "bob")
        try:
            await alice.create_account(server.url, handle("ra3"))
            await bob.create_account(relay.url, handle("rb3"))
            await alice.send_text(bob.address, "hello")
            assert texts(await bob.receive()) == ["hello"]
            first = list(relay.delivered)
            bob.store.delete_sessions(alice.address)  # the session is gone (archived away)
            n = len(relay.requests)
            relay.inject = first
            got = await bob.receive()
            assert texts(got) == []
            assert relay.bundle_fetches() == [] and len(relay.requests) >= n
            assert bob.store.session_devices(alice.address) == []  # no session from a replay
        finally:
            await alice.close()
            await bob.close()


async def test_restored_device_announces_itself_when_it_writes_first(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """Without answering failures, a restored device still recovers mail from a contact
    that does not hold its delivery token: its first new session to that contact starts
    with a `reset`, and the contact re-sends what the lost session never confirmed."""
    alice = Client(tmp_path / "alice")
    bob = Client(tmp_path / "bob")
    try:
        await alice.create_account(server.url, handle("ra4"))
        await bob.create_account(server.url, handle("rb4"))
        await alice.send_text(bob.address, "hello")
        assert texts(await bob.receive()) == ["hello"]
        await bob.send_text(alice.address, "hi")
        assert texts(await alice.receive()) == ["hi"]
        # She does not hold his delivery token (pays PoW): no refused token tells her.
        alice.store._db.execute(  # state set up below the SDK (private on purpose)
            "UPDATE contacts SET delivery_token = NULL WHERE address = ?", (bob.address,)
        )
        phrase = bob.identity.mnemonic()
        await bob.close()
        bob = Client(tmp_path / "bob-restored")
        await bob.restore_account(server.url, phrase)
        await alice.send_text(bob.address, "sent to the lost session")
        got = await bob.receive()
        assert texts(got) == [] and any(isinstance(e, ev.DecryptionFailed) for e in got)
        await bob.send_text(alice.address, "I am back")  # bob writes first
        assert texts(await alice.receive()) == ["I am back"]  # (the reset is not shown)
        assert texts(await bob.receive()) == ["sent to the lost session"]
    finally:
        await alice.close()
        await bob.close()


async def test_first_message_handle_is_adopted_without_a_lookup(
    server: ServerProcess, tmp_path: Path, handle
) -> None:
    """A stranger's claimed handle comes with the relay's handle certificate: the
    recipient adopts it without `GET /handles/...`, which would name the sender of the
    message the relay just delivered (PROTOCOL Part IV §3.2)."""
    async with replaying_relay(server) as relay:
        alice = Client(tmp_path / "alice")
        bob = Client(tmp_path / "bob")
        try:
            await alice.create_account(server.url, handle("ra5"))
            await bob.create_account(relay.url, handle("rb5"))
            await alice.send_text(bob.address, "hi, it is me")
            got = await bob.receive()
            msgs = [e for e in got if isinstance(e, ev.MessageReceived)]
            assert msgs and msgs[0].handle == alice.whoami().handle
            assert bob.find_contact(alice.address).handle == alice.whoami().handle  # type: ignore[union-attr]
            assert relay.lookups() == []
        finally:
            await alice.close()
            await bob.close()
