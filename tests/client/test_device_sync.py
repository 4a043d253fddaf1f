"""Own-device sync and the history archive format through a real relay (PROTOCOL.md Part VII
§5–§6): read positions, conversation changes (accept, block, unblock, decline), account
settings (read receipts, typing), history attachments as their own blobs, and a junk
archive field refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _crowd import Crowd, texts

from xchat.client import device_events as dev_ev
from xchat.client import device_history as dh
from xchat.client import events as ev
from xchat.client import files as xf
from xchat.client import rich_events as rev
from xchat.client.client import Client
from xchat.client.store import Store
from xchat.errors import DecodeError, LinkError


def _synced(events: list[ev.Event]) -> list[str]:
    return [e.kind for e in events if isinstance(e, dev_ev.DeviceSynced)]


def _read_flags(c: Client, peer: str) -> dict[str, bool]:
    st = c.messaging.state
    return {m.id: st.describe(m)["read"] for m in st.rs.conversation_messages(peer, direction="in")}


async def test_read_on_one_device_is_read_on_the_others(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    await a1.send_text(b.address, "hi")
    await b.receive()
    m1 = await b.send_text(a1.address, "one")
    m2 = await b.send_text(a1.address, "two")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["one", "two"]
    assert _read_flags(a2, b.address) == {m1: False, m2: False}
    assert await a1.messaging.mark_read(b.address) == [m1, m2]  # what `xchat read` calls
    assert _synced(await a2.receive()) == ["read"]
    assert _read_flags(a2, b.address) == {m1: True, m2: True}
    # the same position again sends nothing; a newer message stays unread on both
    await a1.messaging.mark_read(b.address)
    m3 = await b.send_text(a1.address, "three")
    got = await a2.receive()
    assert texts(got) == ["three"] and _synced(got) == []
    assert _read_flags(a2, b.address)[m3] is False
    # and back: read on the laptop, read on the phone
    await a1.receive()
    await a2.messaging.mark_read(b.address)
    assert _synced(await a1.receive()) == ["read"]
    assert _read_flags(a1, b.address) == {m1: True, m2: True, m3: True}


async def test_conversation_changes_sync(crowd: Crowd) -> None:
    """Accepting a request, blocking, unblocking and declining a request on one device
    happen on the others too (sync kind ``conversation``)."""
    (a1,) = await crowd.make("alice")
    a2 = await crowd.link(a1, "laptop")
    carol, dave = await crowd.make("carol", "dave")
    await carol.send_text(a1.address, "hello stranger")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["hello stranger"]
        assert c.messaging.state.state(carol.address) == "request"
    await a1.messaging.accept(carol.address)
    assert _synced(await a2.receive()) == ["conversation"]
    assert a2.messaging.state.state(carol.address) == "accepted"
    await a2.messaging.block(carol.address)
    assert _synced(await a1.receive()) == ["conversation"]
    assert a1.messaging.state.state(carol.address) == "blocked"
    await carol.send_text(a1.address, "blocked here and there")
    for c in (a1, a2):
        assert texts(await c.receive()) == []  # dropped on both devices
    await a1.messaging.unblock(carol.address)
    assert _synced(await a2.receive()) == ["conversation"]
    assert a2.messaging.state.state(carol.address) == "accepted"
    await dave.send_text(a1.address, "buy now")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["buy now"]
    assert await a2.messaging.decline(dave.address) == 1
    assert _synced(await a1.receive()) == ["conversation"]
    assert [r.address for r in a1.messaging.requests()] == []
    assert a1.store.history(dave.address) == []
    # a redelivered or stale change does nothing (the request is gone, carol stays)
    assert a1.messaging.state.conversation_synced(dave.address, "delete_request", 0) is False
    assert a1.messaging.state.conversation_synced(carol.address, "unblock", 0) is False


def _read_receipts(events: list[ev.Event]) -> list[rev.RichReceipt]:
    return [e for e in events if isinstance(e, rev.RichReceipt) and e.kind == "read"]


def _typing(events: list[ev.Event]) -> list[rev.TypingChanged]:
    return [e for e in events if isinstance(e, rev.TypingChanged)]


async def test_settings_switched_on_one_device_switch_the_others(crowd: Crowd) -> None:
    """Read receipts and typing off on the phone: the laptop sends neither (the peer gets
    none from it before a later text), a device linked afterwards starts with them off,
    and switching back on from the laptop turns the phone's receipts on again."""
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    await a1.send_text(b.address, "hi")
    await b.receive()
    assert await a1.messaging.set_setting("read-receipts", False)
    assert await a1.messaging.set_setting("typing", False)
    assert _synced(await a2.receive()) == ["settings", "settings"]
    assert (a2.messaging.setting("read-receipts"), a2.messaging.setting("typing")) == (
        False,
        False,
    )
    m1 = await b.send_text(a1.address, "read me?")
    assert texts(await a2.receive()) == ["read me?"]
    await a2.messaging.mark_read(b.address)
    assert await a2.messaging.typing(b.address, True) is False
    await a2.send_text(b.address, "marker")  # anything a2 sent before it arrives first
    got = await b.receive()
    assert texts(got) == ["marker"]
    assert _read_receipts(got) == [] and _typing(got) == []
    assert b.messaging.state.describe(b.store.get_message(a1.address, m1))["read"] is False  # type: ignore[arg-type]
    await b.messaging.typing(a1.address, True)  # off: the laptop shows none either
    assert _typing(await a2.receive()) == []

    a3 = await crowd.link(a1, "tablet")  # the history archive carries the settings
    assert (a3.messaging.setting("read-receipts"), a3.messaging.setting("typing")) == (
        False,
        False,
    )

    await a1.receive()
    assert await a2.messaging.set_setting("read-receipts", True)
    assert "settings" in _synced(await a1.receive())
    assert a1.messaging.setting("read-receipts") is True
    m2 = await b.send_text(a1.address, "and now?")
    assert texts(await a1.receive()) == ["and now?"]
    await a1.messaging.mark_read(b.address)
    assert any(m2 in e.message_ids for e in _read_receipts(await b.receive()))


async def test_settings_conflicts_resolve_the_same_everywhere(crowd: Crowd) -> None:
    """Last writer wins per setting; a tie goes to "off"; an older or malformed sync
    changes nothing; a local switch always beats what the device has seen."""
    (a1,) = await crowd.make("alice")
    st = a1.messaging.state
    st.settings_synced({"typing": {"on": False, "ts": 1_000}})
    assert (st.setting("typing"), st.setting_ts("typing")) == (False, 1_000)
    assert st.settings_synced({"typing": {"on": True, "ts": 999}}) is False  # older
    assert st.settings_synced({"typing": {"on": True, "ts": 1_000}}) is False  # tie: off
    assert st.setting("typing") is False
    st.settings_synced({"read_receipts": {"on": True, "ts": 5}})
    assert st.settings_synced({"read_receipts": {"on": False, "ts": 5}}) is True  # tie: off
    with pytest.raises(DecodeError):
        st.settings_synced({"typing": {"on": "yes", "ts": 2_000}, "read_receipts": None})
    with pytest.raises(DecodeError):
        st.settings_synced({"typing": {"on": True, "ts": True}})
    assert st.setting("typing") is False
    far = 2**63  # a device whose clock runs ahead: the local switch still wins here
    st.settings_synced({"typing": {"on": False, "ts": far}})
    assert st.set_setting("typing", True) == far + 1 and st.setting("typing") is True


async def test_history_attachments_travel_as_their_own_blobs(crowd: Crowd, tmp_path: Path) -> None:
    """A large attachment goes as its own encrypted blob: the archive stays small (it
    carries the manifest, not the bytes), and the file arrives intact."""
    a1, b = await crowd.make("alice", "bob")
    data = os.urandom(3_000_000)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    async with xf.BlobClient.from_api(b.api) as blobs:
        manifest = await xf.send_file(blobs, src)
    mid = await b.send_file_manifest(a1.address, manifest.to_json())
    got = [e for e in await a1.receive() if isinstance(e, ev.MessageReceived)]
    assert got[0].file is not None
    async with xf.BlobClient(a1.api.base_url) as blobs:
        path = await xf.receive_file(
            blobs, xf.FileManifest.from_json(got[0].file), tmp_path / "a1-dl"
        )
    a1.messaging.record_file(b.address, mid, str(path))
    phases: dict[str, tuple[int, int]] = {}

    def progress(phase: str, done: int, total: int) -> None:
        phases[phase] = (done, total)

    a2 = await crowd.link(a1, "laptop", progress=progress, max_attachments=4 * 2**20)
    archive_bytes = phases["upload"][1]
    assert archive_bytes < 16 * 1024  # the manifest, not 3 MB of base64
    done, total = phases["files"]
    assert done == total >= len(data)
    paths = a2.messaging.state.rs.files(b.address, mid)
    assert len(paths) == 1 and Path(paths[0]).parent == xf.downloads_dir(a2.profile.path)
    assert Path(paths[0]).read_bytes() == data


async def test_junk_archive_field_is_refused(crowd: Crowd, monkeypatch: pytest.MonkeyPatch) -> None:
    a1, b = await crowd.make("alice", "bob")
    await a1.send_text(b.address, "a message")
    real = dh.encode

    def junk(doc: dict[str, Any]) -> bytes:  # the approving side writes a broken field
        doc["messages"][0]["body"] = "bm90*YmFzZTY0"
        return real(doc)

    monkeypatch.setattr(dh, "encode", junk)
    with pytest.raises(LinkError, match=r"messages\[0\]\.body: not standard base64"):
        await crowd.link(a1, "laptop")
    new = crowd.clients[-1]
    assert new.store.history(b.address) == []  # nothing of the archive was written


def test_import_checks_every_field_before_writing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", bytes(32))
    good = {"address": "xc1peer", "identity_key": None, "delivery_token": None}
    doc = {
        "v": 1,
        "contacts": [good],
        "messages": [],
        "sender_keys": [{"group": "g", "address": "a", "device": 1, "record": "AAAA"}],
        "groups": [{"id": "g", "history": "Zm9v\n"}],  # a newline: non-canonical
    }
    with pytest.raises(DecodeError, match=r"groups\[0\]\.history"):
        dh.import_into(store, doc, 0)
    assert store.get_contact("xc1peer") is None
    doc["groups"] = []
    doc["files"] = [{"peer": "p", "id": "i", "file": {"blob": "x"}}]
    with pytest.raises(DecodeError, match=r"files\[0\]: file manifest blob id invalid"):
        dh.import_into(store, doc, 0)
    store.close()
