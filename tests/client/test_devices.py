"""Linked devices end to end through a real relay (PROTOCOL.md Part VII): three devices per
account, linking with history, fan-out, removal, and the attacks the issue names (a device
row injected into the relay's database, a forged list, a rolled-back list; wrong, reused
and expired link codes)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from _crowd import Crowd, texts

from xchat.client import device_events as dev_ev
from xchat.client import events as ev
from xchat.client import files as xf
from xchat.crypto import devicelist as dl
from xchat.errors import ClientError, DeviceRemoved, LinkError, UntrustedDevice
from xchat.testing import ServerProcess, running_server


async def test_three_devices_each_receive_once_and_see_sent_messages(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    a3 = await crowd.link(a1, "browser")
    assert [d.id for d in await a3.devices()] == [1, 2, 3]
    await b.send_text(a1.address, "to all three")
    for c in (a1, a2, a3):
        assert texts(await c.receive()) == ["to all three"]
        assert texts(await c.receive()) == []  # exactly once
    # Sent from one: appears in the others' history, delivered once to bob.
    msg_id = await a2.send_text(b.address, "from the laptop")
    assert texts(await b.receive()) == ["from the laptop"]
    for c in (a1, a3):
        got = await c.receive()
        synced = [e for e in got if isinstance(e, dev_ev.MessageSynced)]
        assert [(e.id, e.to, e.device_id) for e in synced] == [(msg_id, b.address, 2)]
        hist = c.history(c.store.ensure_contact(b.address, 0))
        assert ("out", "from the laptop") in [(h.direction, h.text) for h in hist]
    # bob's reply goes to every device of alice too (bob learned the list).
    await b.send_text(a1.address, "reply")
    for c in (a1, a2, a3):
        assert "reply" in texts(await c.receive())


async def test_linked_device_shows_history_and_replies(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    await a1.send_text(b.address, "old one")
    await b.receive()
    first = await b.send_text(a1.address, "old two")
    await a1.receive()
    a2 = await crowd.link(a1, "laptop")
    peer = a2.find_contact(b.address)
    assert peer is not None and peer.identity_key is not None
    assert [(h.direction, h.text) for h in a2.history(peer)] == [
        ("out", "old one"),
        ("in", "old two"),
    ]
    await a2.send_text(b.address, "answer from the new device", reply_to=first)
    got = [e for e in await b.receive() if isinstance(e, ev.MessageReceived)]
    assert [(e.text, e.reply_to, e.device_id) for e in got] == [
        ("answer from the new device", first, 2)
    ]
    # a verification mark set on one device reaches the other (sync kind "contact")
    bob = a1.find_contact(b.address)
    assert bob is not None and not bob.verified
    await a1.mark_verified_everywhere(bob)
    synced = [e for e in await a2.receive() if isinstance(e, dev_ev.DeviceSynced)]
    assert [e.kind for e in synced] == ["contact"]
    again = a2.find_contact(b.address)
    assert again is not None and again.verified


async def test_no_history(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    await a1.send_text(b.address, "private past")
    a2 = await crowd.link(a1, "kiosk", history=False)
    assert a2.store.history(b.address) == []


async def test_removed_device_receives_nothing(crowd: Crowd, server: ServerProcess) -> None:
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    a3 = await crowd.link(a1, "stolen")
    await b.send_text(a1.address, "before")
    assert texts(await a3.receive()) == ["before"]
    await a2.rename_device(3, "lost phone")
    remaining = await a1.remove_device(3)
    assert [(d.id, d.name) for d in remaining] == [(1, "this device"), (2, "laptop")]
    await b.send_text(a1.address, "after")
    for c in (a1, a2):
        assert "after" in texts(await c.receive())
    with pytest.raises(DeviceRemoved):  # the relay forgot device 3: queue, keys, token
        await a3.receive()
    assert 3 not in b.device_ids(a1.address)
    assert b.store.get_session(a1.address, 3) is None  # its session is gone everywhere


async def test_groups_from_every_device(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    info = await a1.create_group("team", [b.address])
    await b.receive()
    await a2.receive()  # our own copy of the update: the group exists here too
    assert a2.group_info(info.id).name == "team"
    await b.send_group(info.id, "hi team")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["hi team"]
    await a2.send_group(info.id, "from the laptop")
    assert texts(await b.receive()) == ["from the laptop"]
    # bob links a device after the keys went round: the relay's 409 teaches alice his new
    # list, and the new device got the members' sender keys with its history
    b2 = await crowd.link(b, "bob-laptop")
    await a1.send_group(info.id, "after bob linked")
    for c in (b, b2):
        assert "after bob linked" in texts(await c.receive())


async def test_group_send_reaches_own_devices(crowd: Crowd) -> None:
    """A group message sent from one device appears in the sender's other devices' group
    history (same id, outgoing, exactly once), in the same single upload."""
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    info = await a1.create_group("team", [b.address])
    await b.receive()
    await a2.receive()
    mid = await a1.send_group(info.id, "from the phone")
    await a1.send_group(info.id, "again")
    assert texts(await b.receive()) == ["from the phone", "again"]
    got = await a2.receive()
    synced = [e for e in got if isinstance(e, dev_ev.MessageSynced)]
    assert [e.text for e in synced] == ["from the phone", "again"]
    assert synced[0].id == mid and not texts(got)
    await a2.receive()  # nothing is delivered twice
    mine = [m for m in a2.group_history(info.id) if m.text == "from the phone"]
    assert [(m.id, m.direction) for m in mine] == [(mid, "out")]
    # a device linked after the key went round gets this device's key before its next send
    a3 = await crowd.link(a2, "tablet")
    await a1.send_group(info.id, "to three devices")
    for c in (a2, a3):
        got = await c.receive()
        assert [e.text for e in got if isinstance(e, dev_ev.MessageSynced)] == ["to three devices"]
    assert texts(await b.receive()) == ["to three devices"]


async def test_delete_for_me_syncs_to_own_devices(crowd: Crowd) -> None:
    """A delete-for-me on one device deletes the message on our other devices too (sync
    kind ``delete``), in a 1:1 conversation and in a group; the peer keeps its copy."""
    a1, b = await crowd.make("alice", "bob")
    a2 = await crowd.link(a1, "laptop")
    mid = await b.send_text(a1.address, "delete me")
    keep = await b.send_text(a1.address, "keep me")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["delete me", "keep me"]
    await a1.messaging.delete(b.address, mid)
    got = await a2.receive()
    assert [(e.kind, e.data.get("id")) for e in got if isinstance(e, dev_ev.DeviceSynced)] == [
        ("delete", mid)
    ]
    assert a2.store.get_message(b.address, mid) is None
    assert a2.store.get_message(b.address, keep) is not None
    assert b.store.get_message(a1.address, mid) is not None
    info = await a1.create_group("team", [b.address])
    await b.receive()
    await a2.receive()
    gmid = await b.send_group(info.id, "group line")
    for c in (a1, a2):
        assert texts(await c.receive()) == ["group line"]
    await a2.messaging.delete(None, gmid, group=info.id)
    await a1.receive()
    assert [m.id for m in a1.group_history(info.id)] == []
    assert [m.id for m in b.group_history(info.id)] == [gmid]


async def test_history_carries_attachments_up_to_the_chosen_size(
    crowd: Crowd, tmp_path: Path
) -> None:
    """The approving device copies the attachments it holds into the archive, newest first,
    up to the total the user chose; the linked device opens them without the blob store."""
    a1, b = await crowd.make("alice", "bob")
    sizes = {"big.bin": 300_000, "small.bin": 40_000, "newest.bin": 50_000}
    mids = {}
    for name, size in sizes.items():
        src = tmp_path / name
        src.write_bytes(bytes([len(name)]) * size)
        async with xf.BlobClient.from_api(b.api) as blobs:
            manifest = await xf.send_file(blobs, src)
        mids[name] = await b.send_file_manifest(a1.address, manifest.to_json())
        got = [e for e in await a1.receive() if isinstance(e, ev.MessageReceived)]
        assert got[0].id == mids[name] and got[0].file is not None
        async with xf.BlobClient(a1.api.base_url) as blobs:
            path = await xf.receive_file(
                blobs, xf.FileManifest.from_json(got[0].file), tmp_path / "a1-dl"
            )
        a1.messaging.record_file(b.address, mids[name], str(path))
    # 100 kB: the two newest fit (90 kB), the 300 kB one does not
    a2 = await crowd.link(a1, "laptop", max_attachments=100_000)
    for name in ("small.bin", "newest.bin"):
        paths = a2.messaging.state.rs.files(b.address, mids[name])
        assert len(paths) == 1 and Path(paths[0]).parent == xf.downloads_dir(a2.profile.path)
        assert Path(paths[0]).read_bytes() == (tmp_path / name).read_bytes()
    assert a2.messaging.state.rs.files(b.address, mids["big.bin"]) == []
    assert a2.store.get_message(b.address, mids["big.bin"]) is not None  # its manifest came
    a3 = await crowd.link(a1, "tablet", max_attachments=0)
    assert all(a3.messaging.state.rs.files(b.address, m) == [] for m in mids.values())
    with pytest.raises(ClientError, match="0 to 256 MB"):  # refused before anything is sent
        await a1.approve_device("any code", max_attachments=2**40)


async def test_five_devices(crowd: Crowd) -> None:
    a1, b = await crowd.make("alice", "bob")
    devices = [a1]
    for i in range(4):
        devices.append(await crowd.link(devices[-1], f"d{i + 2}"))
    listed = await devices[-1].devices()
    assert [d.id for d in listed] == [1, 2, 3, 4, 5]
    assert [d.current for d in listed] == [False, False, False, False, True]
    await b.send_text(a1.address, "five")
    for c in devices:
        assert texts(await c.receive()) == ["five"]


# --- link codes -------------------------------------------------------------------------------


async def test_wrong_reused_and_malformed_codes(crowd: Crowd) -> None:
    (a1,) = await crowd.make("alice")
    with pytest.raises(LinkError, match="unknown link code"):
        await a1.approve_device(dl.format_code(dl.new_code()))
    with pytest.raises(LinkError, match="not a link code"):
        await a1.approve_device("hello")
    new = crowd.blank("n")
    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        new.link_device(crowd.server.url, on_code=lambda c, _u: code.set_result(c))
    )
    used = await code
    await a1.approve_device(used)
    await task
    with pytest.raises(LinkError, match="already used"):
        await a1.approve_device(used)


async def test_link_times_out_cleanly(crowd: Crowd) -> None:
    new = crowd.blank("n")
    with pytest.raises(LinkError, match="not approved within"):
        await new.link_device(crowd.server.url, wait=1)
    assert not new.profile.initialised


async def test_expired_code(tmp_path: Path, handle) -> None:
    with running_server(tmp_path / "srv", pow_bits=2, XCHAT_LINK_TTL_SECONDS=1) as srv:
        async with Crowd(srv, tmp_path, handle) as crowd:
            (a1,) = await crowd.make("alice")
            new = crowd.blank("n")
            code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                new.link_device(srv.url, wait=30, on_code=lambda c, _u: code.set_result(c))
            )
            text = await code
            slot = dl.slot_id(dl.parse_code(text))
            async with httpx.AsyncClient(base_url=srv.url) as http:
                while (await http.get(f"/api/v1/links/{slot}")).status_code != 410:
                    await asyncio.sleep(0.1)  # polling a condition, not a fixed wait
            with pytest.raises(LinkError, match="expired"):
                await a1.approve_device(text)
            with pytest.raises(LinkError):
                await task


# --- attacks on the device list (each on its own relay: the database is edited) -------------


def _db(srv: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(srv.data_dir / "xchat.db")


async def test_device_row_injected_into_relay_database_is_refused(tmp_path: Path, handle) -> None:
    with running_server(tmp_path / "srv", pow_bits=2) as srv:
        async with Crowd(srv, tmp_path, handle) as crowd:
            a1, b = await crowd.make("alice", "bob")
            a2 = await crowd.link(a1, "laptop")
            await b.send_text(a1.address, "fine")
            srv.kill9()
            with _db(srv) as db:
                db.execute(
                    "INSERT INTO devices (address, device_id, epoch, created_ms)"
                    " VALUES (?, 7, 1, 0)",
                    (a1.address,),
                )
            srv.start()
            with pytest.raises(UntrustedDevice, match=r"device\(s\) \[7\]"):
                await b.send_text(a1.address, "secret")
            with _db(srv) as db:
                (n,) = db.execute(
                    "SELECT COUNT(*) FROM mailbox m JOIN devices d ON m.device_ref = d.ref"
                    " WHERE d.address = ? AND d.device_id = 7",
                    (a1.address,),
                ).fetchone()
            assert n == 0
            assert texts(await a2.receive()) == ["fine"]


async def test_forged_and_rolled_back_lists_are_refused(tmp_path: Path, handle) -> None:
    with running_server(tmp_path / "srv", pow_bits=2) as srv:
        async with Crowd(srv, tmp_path, handle) as crowd:
            a1, b, carol = await crowd.make("alice", "bob", "carol")
            await crowd.link(a1, "laptop")
            await crowd.link(a1, "tablet")
            await b.send_text(a1.address, "v2 seen")  # bob verified version 2 (1, 2, 3)
            with _db(srv) as db:
                old_list, old_version = db.execute(
                    "SELECT list, version FROM device_lists WHERE address = ?", (a1.address,)
                ).fetchone()
            await a1.remove_device(3)
            await b.send_text(a1.address, "v3 seen")  # a 409 taught bob version 3 (1, 2)
            assert b.device_ids(a1.address) == [1, 2]
            srv.kill9()
            with _db(srv) as db:  # roll back to the list that still had device 3
                db.execute(
                    "UPDATE device_lists SET list = ?, version = ? WHERE address = ?",
                    (old_list, old_version, a1.address),
                )
                db.execute(
                    "INSERT INTO devices (address, device_id, epoch, created_ms)"
                    " VALUES (?, 3, 1, 0)",
                    (a1.address,),
                )
            srv.start()
            with pytest.raises(UntrustedDevice, match="rolled back"):
                await b.send_text(a1.address, "to the restored device?")
            srv.kill9()
            forged = bytearray(old_list)
            forged[-1] ^= 1  # one bit of the signature
            with _db(srv) as db:
                db.execute(
                    "UPDATE device_lists SET list = ? WHERE address = ?",
                    (bytes(forged), a1.address),
                )
            srv.start()
            with pytest.raises(UntrustedDevice, match="forged"):
                await carol.send_text(a1.address, "first contact")


async def test_lost_device_restore_phrase_then_remove_the_others(crowd: Crowd) -> None:
    phone = crowd.blank("phone")
    info = await phone.create_account(crowd.server.url, crowd.handle("lost"))
    assert info.recovery_phrase is not None
    (b,) = await crowd.make("bob")
    laptop = await crowd.link(phone, "laptop")
    await phone.close()  # the phone is lost; a new one restores the phrase (device 1 again)
    new_phone = crowd.blank("newphone")
    await new_phone.restore_account(crowd.server.url, info.recovery_phrase)
    assert [d.id for d in await new_phone.devices()] == [1, 2]
    await new_phone.remove_device(2)  # the laptop went with the phone
    await b.send_text(info.address, "only for the new phone")
    assert texts(await new_phone.receive()) == ["only for the new phone"]
    with pytest.raises(DeviceRemoved):
        await laptop.receive()
