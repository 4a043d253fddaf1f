"""Signed and last-resort prekeys rotate on a schedule; the replaced private keys are
deleted after the grace period (PROTOCOL.md Part II §1.5), through the client's
replenish path, against a real relay."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from xchat.client import events as ev
from xchat.client.client import Client
from xchat.crypto.prekeys import DAY_MS, GRACE_MS
from xchat.testing import ServerProcess


def _signed_ids(c: Client) -> list[int]:
    """The signed prekeys the profile's store holds on disk."""
    with contextlib.closing(sqlite3.connect(c.profile.store_path)) as db:
        return [int(r[0]) for r in db.execute("SELECT id FROM prekeys WHERE kind = 'signed'")]


async def _published(fetcher: Client, target: Client) -> tuple[int, int]:
    # Private on purpose: a look at the raw bundle the relay publishes (no SDK call
    # returns it; sessions consume it).
    api = await fetcher._authed()
    dev = (await api.bundles(target.address))["devices"][0]
    return dev["signed_prekey"]["id"], dev["kem_prekey"]["id"]


async def test_rotation_schedule_and_grace(server: ServerProcess, tmp_path: Path, handle) -> None:
    a = Client(tmp_path / "a")
    b = Client(tmp_path / "b")
    try:
        await a.create_account(server.url, handle("rota"))
        await b.create_account(server.url, handle("rotb"))
        now = time.time_ns() // 1_000_000
        assert not await b.rotate_prekeys(now=now)  # fresh keys: nothing due
        (old_spk,) = _signed_ids(b)
        assert not await b.rotate_prekeys(now=now + 6 * DAY_MS)
        assert await b.rotate_prekeys(now=now + 8 * DAY_MS)  # a week old: replaced
        new_spk = max(_signed_ids(b))
        assert new_spk != old_spk and sorted(_signed_ids(b)) == [old_spk, new_spk]
        # The relay hands out the new signed key (and a last-resort key once one-time
        # keys are rationed); the old private key is still held for in-flight messages.
        spk_id, _ = await _published(a, b)
        assert spk_id == new_spk
        # Sessions from the new bundle work end to end.
        await a.send_text(b.address, "after rotation")
        got = await b.receive()
        assert [e.text for e in got if isinstance(e, ev.MessageReceived)] == ["after rotation"]
        # Past the grace period the old private key is deleted and logged as retired.
        await b.rotate_prekeys(now=now + 8 * DAY_MS + GRACE_MS - 1)  # rotates again
        assert old_spk in _signed_ids(b) and len(_signed_ids(b)) == 3
        await b.rotate_prekeys(now=now + 8 * DAY_MS + GRACE_MS)
        assert old_spk not in _signed_ids(b)
        assert b.replay_guard.used("signed", old_spk)
    finally:
        await a.close()
        await b.close()
