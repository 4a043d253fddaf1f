"""Link slots shared by relay nodes (PROTOCOL.md Part VII §3.2, ``server/link_slots.py``):
two real relay processes on one PostgreSQL and one Redis, each on its own port. The new
device talks only to node 1, the approving device only to node 2, and the link succeeds
(with its history and attachments, through the shared blob store); a reused, wrong or
expired code fails cleanly, and two nodes racing on one slot answer it, and hand its answer
out, exactly once."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.crypto import devicelist as dl
from xchat.errors import LinkError
from xchat.testing import ServerProcess, env_from_kwargs, register, running_nodes

Nodes = tuple[ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, backend_env: Callable[[str], dict[str, Any]]
) -> Iterator[Nodes]:
    env = env_from_kwargs({**backend_env("postgres"), "rate_limits": False})
    with running_nodes(tmp_path_factory.mktemp("nodes") / "shared", 2, env) as pair:
        yield pair


@pytest.fixture
def _no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCHAT_NO_KEYRING", "1")


def _handle(base: str) -> str:
    return f"{base}{os.getpid() % 1000}{os.urandom(3).hex()}"


@pytest.mark.usefixtures("_no_keyring")
async def test_link_across_two_nodes(nodes: Nodes, tmp_path: Path) -> None:
    node1, node2 = nodes
    assert node1.url != node2.url
    alice = Client(tmp_path / "alice")  # the approving device: node 2 only
    bob = Client(tmp_path / "bob")  # node 1
    new = Client(tmp_path / "laptop")  # the new device: node 1 only
    task: asyncio.Task[Any] | None = None
    try:
        await alice.create_account(node2.url, _handle("alice"))
        await bob.create_account(node1.url, _handle("bob"))
        await alice.send_text(bob.address, "before the link")
        assert [e.text for e in await bob.receive() if isinstance(e, ev.MessageReceived)] == [
            "before the link"
        ]
        code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            new.link_device(node1.url, name="laptop", on_code=lambda c, _u: code.set_result(c))
        )
        text = await code
        approval = await alice.approve_device(text)
        res = await task
        assert (res.address, res.device_id, approval.device_id) == (alice.address, 2, 2)
        assert res.messages == 1
        peer = new.find_contact(bob.address)
        assert peer is not None
        assert [h.text for h in new.history(peer)] == ["before the link"]
        # the account now has two devices on two nodes: a message reaches both
        await bob.send_text(alice.address, "to both nodes")
        for c in (alice, new):
            got = [e.text for e in await c.receive() if isinstance(e, ev.MessageReceived)]
            assert got == ["to both nodes"]
        # the used code, on either node, is refused cleanly
        with pytest.raises(LinkError, match="already used"):
            await alice.approve_device(text)
        async with httpx.AsyncClient(base_url=node1.url) as http:
            r = await http.get(f"/api/v1/links/{dl.slot_id(dl.parse_code(text))}/answer")
        assert (r.status_code, r.json()) == (410, {"error": "link code already used"})
        with pytest.raises(LinkError, match="unknown link code"):
            await alice.approve_device(dl.format_code(dl.new_code()))
    finally:
        if task is not None and not task.done():
            task.cancel()
        for c in (alice, bob, new):
            await c.close()


def _slot() -> str:
    return dl.slot_id(dl.new_code())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_two_nodes_race_on_one_slot(nodes: Nodes) -> None:
    """One slot, two approving devices answering at once through different nodes: one
    wins, the other gets 410; then two takers on different nodes: one gets the answer."""
    node1, node2 = nodes
    with (
        httpx.Client(base_url=node1.url, timeout=30) as h1,
        httpx.Client(base_url=node2.url, timeout=30) as h2,
    ):
        a, b = register(h1), register(h2)
        for _ in range(5):
            sid = _slot()
            r = h1.put(f"/api/v1/links/{sid}", json={"offer": _b64(b"offer")})
            assert r.status_code == 201, r.text
            assert h2.put(f"/api/v1/links/{sid}", json={"offer": _b64(b"x")}).status_code == 409
            assert h2.get(f"/api/v1/links/{sid}").json()["offer"] == _b64(b"offer")

            async def answers(sid: str = sid) -> list[int]:
                async with (
                    httpx.AsyncClient(base_url=node1.url) as c1,
                    httpx.AsyncClient(base_url=node2.url) as c2,
                ):
                    rs = await asyncio.gather(
                        c1.post(
                            f"/api/v1/links/{sid}/answer",
                            json={"answer": _b64(b"from a")},
                            headers=a.headers,
                        ),
                        c2.post(
                            f"/api/v1/links/{sid}/answer",
                            json={"answer": _b64(b"from b")},
                            headers=b.headers,
                        ),
                    )
                    codes = sorted(r.status_code for r in rs)
                    takes = await asyncio.gather(
                        c1.get(f"/api/v1/links/{sid}/answer"), c2.get(f"/api/v1/links/{sid}/answer")
                    )
                    got = [t.json().get("answer") for t in takes if t.status_code == 200]
                    assert sorted(t.status_code for t in takes) == [200, 410]
                    assert len(got) == 1 and got[0] in (_b64(b"from a"), _b64(b"from b"))
                    return codes

            assert asyncio.run(answers()) == [200, 410]


def test_long_poll_on_one_node_sees_the_answer_posted_on_the_other(nodes: Nodes) -> None:
    node1, node2 = nodes
    with (
        httpx.Client(base_url=node1.url, timeout=30) as h1,
        httpx.Client(base_url=node2.url, timeout=30) as h2,
    ):
        a = register(h2)
        sid = _slot()
        assert h1.put(f"/api/v1/links/{sid}", json={"offer": _b64(b"o")}).status_code == 201

        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=node1.url, timeout=40) as c1:
                poll = asyncio.create_task(c1.get(f"/api/v1/links/{sid}/answer?wait=25"))
                r = h2.post(
                    f"/api/v1/links/{sid}/answer", json={"answer": _b64(b"ans")}, headers=a.headers
                )
                assert r.status_code == 200, r.text
                resp = await poll
                assert resp.status_code == 200
                body: dict[str, Any] = resp.json()
                return body

        assert asyncio.run(run())["answer"] == _b64(b"ans")


def test_expired_code_on_two_nodes(
    tmp_path: Path, backend_env: Callable[[str], dict[str, Any]]
) -> None:
    env = env_from_kwargs({**backend_env("postgres"), "rate_limits": False})
    env["XCHAT_LINK_TTL_SECONDS"] = "1"
    with (
        running_nodes(tmp_path / "shared", 2, env) as (node1, node2),
        httpx.Client(base_url=node1.url, timeout=30) as h1,
        httpx.Client(base_url=node2.url, timeout=30) as h2,
    ):
        a = register(h2)
        sid = _slot()
        assert h1.put(f"/api/v1/links/{sid}", json={"offer": _b64(b"o")}).status_code == 201
        deadline = time.monotonic() + 30
        while (r := h2.get(f"/api/v1/links/{sid}")).status_code == 200:
            assert time.monotonic() < deadline  # polling a condition (the expiry)
        expired = {"error": "link code expired (codes are valid for 10 minutes)"}
        assert (r.status_code, r.json()) == (410, expired)
        r = h2.post(f"/api/v1/links/{sid}/answer", json={"answer": _b64(b"x")}, headers=a.headers)
        assert (r.status_code, r.json()) == (410, expired)
        r = h1.get(f"/api/v1/links/{sid}/answer?wait=5")
        assert (r.status_code, r.json()) == (410, expired)
        assert h1.get(f"/api/v1/links/{_slot()}").status_code == 404
        assert h2.get("/api/v1/links/short").status_code == 422  # the path rule


def test_redis_down_is_a_clean_503(
    tmp_path: Path, backend_env: Callable[[str], dict[str, Any]]
) -> None:
    """The node's Redis goes away: link-slot calls answer 503 with a JSON error (never a
    traceback or a hang), and work again once Redis is back (a new slot; the old is gone)."""
    from xchat.ops.services import Redis

    redis = Redis(tmp_path / "redis.log")
    redis.start()
    env = env_from_kwargs({**backend_env("postgres"), "rate_limits": False})
    env["XCHAT_REDIS"] = redis.url
    node = ServerProcess(tmp_path / "relay", 2, env)
    try:
        node.start()
        with httpx.Client(base_url=node.url, timeout=30) as h:
            url = f"/api/v1/links/{_slot()}"
            assert h.put(url, json={"offer": _b64(b"o")}).status_code == 201
            redis.stop()
            r = h.get(url)
            assert r.status_code == 503 and r.headers.get("retry-after") == "1"
            assert r.json() == {"error": "link codes are unavailable right now, try again"}
            again = h.put(f"/api/v1/links/{_slot()}", json={"offer": _b64(b"o")})
            assert again.status_code == 503
            redis.start()
            url2 = f"/api/v1/links/{_slot()}"
            deadline = time.monotonic() + 30
            while (r := h.put(url2, json={"offer": _b64(b"o")})).status_code == 503:
                assert time.monotonic() < deadline  # until the client reconnects (a condition)
            assert r.status_code == 201
            assert h.get(url).status_code == 404  # lost with Redis's memory
    finally:
        node.stop()
        redis.stop()
