"""Backup and recovery against a real relay and three real realm processes (PROTOCOL.md
Part X): 2-of-3 enrolment, restore with a realm down, the guess limit, attacks on the realm
channel, an interrupted history upload, and another account's backup."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _proxies import FlakyProxy

from xchat.client import backup as bk
from xchat.client import events as ev
from xchat.client.backup_state import BACKUP_INTERVAL_MS, META_KEY, PENDING_META
from xchat.client.client import Client
from xchat.client.files import BlobClient
from xchat.crypto import recovery as rc
from xchat.crypto.keys import mnemonic_from_seed
from xchat.errors import BackupUnavailable, DecryptionError, ServerUnreachable, WeakPin, WrongPin
from xchat.realm.testing import RealmProcess, running_realms
from xchat.testing import ServerProcess, running_server

PIN = "482913"
_RELAY: list[ServerProcess] = []  # the module's relay, for _records()


class Env:
    def __init__(self, relay: ServerProcess, realms: list[RealmProcess], root: Path) -> None:
        self.relay = relay
        self.realms = realms
        self.root = root
        self.n = 0

    def profile(self, name: str) -> Path:
        self.n += 1
        return self.root / f"{name}{self.n}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp_path = tmp_path_factory.mktemp("backup")
    with running_realms(tmp_path / "realms", 3) as realms:
        urls = ",".join(r.url for r in realms)
        with running_server(tmp_path / "relay", pow_bits=2, rate_limits=False, realms=urls) as s:
            _RELAY[:] = [s]
            yield Env(s, realms, tmp_path)


async def _account(env: Env, name: str, handle: str) -> Path:
    p = env.profile(name)
    async with Client(p) as c:
        await c.create_account(env.relay.url, handle)
    return p


async def _chat(alice: Path, bob: Path, bob_handle: str, alice_handle: str, n: int = 3) -> None:
    for i in range(n):
        async with Client(alice) as a:
            await a.send_text(f"@{bob_handle}", f"hello {i}")
        async with Client(bob) as b:
            await b.receive(wait=0.5)
            await b.send_text(f"@{alice_handle}", f"reply {i}")
        async with Client(alice) as a:
            await a.receive(wait=0.5)


def _texts(c: Client, to: str) -> list[str]:
    contact = c.find_contact(to)
    assert contact is not None
    return [h.text for h in c.history(contact, 100)]


def _locator(relay: ServerProcess, address: str) -> bytes:
    """The account's backup locator, as the relay hands it to anyone who pays the PoW."""
    from xchat.crypto import pow as xpow

    chal = httpx.post(relay.url + "/api/v1/challenge").json()
    ch = rc.b64d(chal["challenge"], "c")
    nonce = xpow.solve(ch, b"XChat-v1-backup-locate|" + address.encode(), chal["pow_bits"])
    body = {"address": address, "challenge": chal["challenge"], "pow_nonce": nonce}
    found = httpx.post(relay.url + "/api/v1/backup/locate", json=body).json()
    return rc.b64d(found["locator"], "locator", 16) if found.get("locator") else b""


def _records(realm: RealmProcess, address: str, relay: ServerProcess | None = None) -> int:
    """Records of one account at one realm (the test knows the realm's key and asks the
    relay for the locator; without the relay it could not even name the record)."""
    key = rc.b64d(httpx.get(realm.url + "/api/v1/realm").json()["public_key"], "key", 32)
    locator = _locator(relay or _RELAY[0], address)
    db = sqlite3.connect(realm.data_dir / "realm.sqlite3")
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM records WHERE id = ?", (rc.record_id(key, address, locator),)
        ).fetchone()
        return int(row[0])
    finally:
        db.close()


async def test_two_of_three_restore_with_one_realm_down(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b1")
    bob = await _account(env, "bob", "bob_b1")
    await _chat(alice, bob, "bob_b1", "alice_b1", n=2)
    async with Client(alice) as a:
        address = a.address
        before = _texts(a, "@bob_b1")
        st = await bk.enable(a, PIN)  # default: the relay's three realms, majority 2
    assert st.enabled and st.threshold == 2 and len(st.realms) == 3
    assert st.last_backup_ms and st.last_backup_size and st.messages == len(before) == 4
    assert all(_records(r, address) == 1 for r in env.realms)

    env.realms[0].kill9()
    fresh = env.profile("alice-new")
    try:
        async with Client(fresh) as c:
            info, restored = await bk.restore_with_pin(c, env.relay.url, "@alice_b1", PIN)
    finally:
        env.realms[0].start()  # same port and data: the other tests share the realms
    async with Client(fresh) as c:
        assert info.address == address and info.handle == "alice_b1"
        assert restored is not None and restored.messages == 4 and restored.contacts == 1
        assert _texts(c, "@bob_b1") == before
        await c.send_text("@bob_b1", "back again")
    # Bob sees the same identity: no "identity changed", and the message arrives.
    async with Client(bob) as b:
        events = await b.receive(wait=1.0)
    assert not any(isinstance(e, ev.IdentityChangedEvent) for e in events)
    texts = [e.text for e in events if isinstance(e, ev.MessageReceived)]
    assert "back again" in texts
    async with Client(fresh) as c:
        status = bk.status(c)
        assert status.enabled and status.threshold == 2
        await bk.backup_now(c)  # the restored device keeps backing up to the same record


async def test_ten_wrong_pins_delete_everywhere_but_the_phrase_still_works(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b2")
    bob = await _account(env, "bob", "bob_b2")
    await _chat(alice, bob, "bob_b2", "alice_b2", n=1)
    async with Client(alice) as a:
        phrase, address = mnemonic_from_seed(a.identity.seed), a.address
        await bk.enable(a, PIN)
    seen = []
    for _ in range(10):
        async with Client(env.profile("thief")) as c:
            with pytest.raises(WrongPin) as err:
                await bk.restore_with_pin(c, env.relay.url, "@alice_b2", "777001")
            seen.append(err.value.guesses_remaining)
            assert not c.profile.initialised  # nothing restored
    assert seen == list(range(9, -1, -1))
    assert all(_records(r, address) == 0 for r in env.realms)  # shares and OPRF keys deleted
    async with Client(env.profile("alice-pin")) as c:
        with pytest.raises(BackupUnavailable):
            await bk.restore_with_pin(c, env.relay.url, "@alice_b2", PIN)  # for good
    async with Client(env.profile("alice-phrase")) as c:
        await c.restore_account(env.relay.url, phrase)
        got = await bk.restore_history(c)
        assert got.messages == 2 and _texts(c, "@bob_b2") == ["hello 0", "reply 0"]


async def test_weak_pin_refused(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b3")
    async with Client(alice) as a:
        address = a.address
        for weak in ("1234", "123456", "000000", "password"):
            with pytest.raises(WeakPin):
                await bk.enable(a, weak)
    assert all(_records(r, address) == 0 for r in env.realms)


class Attacker(httpx.AsyncBaseTransport):
    """A network attacker between the client and the realms: forwards to the real realm
    processes and rewrites the answers of the realms in ``targets``."""

    def __init__(self, targets: set[int], mode: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.targets = targets
        self.mode = mode
        self.saved: dict[tuple[int, str], bytes] = {}
        self.touched = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        body = await resp.aread()
        port = request.url.port or 0
        op = request.url.path.rsplit("/", 1)[-1]
        if port in self.targets and op not in ("challenge",) and resp.status_code == 200:
            obj = json.loads(body)
            if self.mode == "tamper":
                payload = json.loads(rc.b64d(obj["payload"], "p"))
                payload["guesses_remaining"] = 0
                payload["status"] = "no_guesses"
                obj["payload"] = rc.b64e(json.dumps(payload).encode())
                self.touched += 1
            elif self.mode == "replay":
                key = (port, op)
                old = self.saved.get(key)
                self.saved[key] = body
                if old is not None:
                    obj = json.loads(old)
                    self.touched += 1
            body = json.dumps(obj).encode()
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "content-length"]
        return httpx.Response(resp.status_code, headers=headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("mode", ["tamper", "replay"])
async def test_tampered_or_replayed_realm_answers_are_refused(env: Env, mode: str) -> None:
    alice = await _account(env, "alice", f"alice_{mode[:3]}")
    async with Client(alice) as a:
        address = a.address
        await bk.enable(a, PIN)
    ports = [r.port for r in env.realms]
    if mode == "replay":  # prime the attacker with genuine answers to earlier requests
        warm = Attacker(set(ports), "replay")
        async with Client(env.profile("warm")) as c:
            await bk.restore_with_pin(c, env.relay.url, address, PIN, realm_transport=warm)
    # Every realm attacked: nothing forged is believed, so the restore cannot proceed.
    attacker = Attacker(set(ports), mode)
    if mode == "replay":
        attacker.saved = warm.saved
    async with Client(env.profile("victim")) as c:
        with pytest.raises(BackupUnavailable):
            await bk.restore_with_pin(c, env.relay.url, address, PIN, realm_transport=attacker)
        assert not c.profile.initialised
    assert attacker.touched > 0
    assert all(_records(r, address) == 1 for r in env.realms)  # forged "no guesses" deleted nothing
    # One realm attacked of three: its answers are dropped, the other two suffice.
    one = Attacker({ports[0]}, mode)
    if mode == "replay":
        one.saved = {k: v for k, v in warm.saved.items() if k[0] == ports[0]}
    async with Client(env.profile("ok")) as c:
        info, _ = await bk.restore_with_pin(c, env.relay.url, address, PIN, realm_transport=one)
        assert info.address == address
    assert one.touched > 0


async def test_interrupted_backup_upload_resumes(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b4")
    async with Client(alice) as a:
        await bk.enable(a, PIN)
        peer = "xc1qzxrggj7p8xpavs8pgph06jff403uml5my3rjmm4"
        with a.store.transaction():
            for i in range(400):  # ~400 KiB of incompressible history
                body = json.dumps({"type": "text", "text": os.urandom(700).hex()}).encode()
                a.store.add_message(
                    f"{i:032x}", peer, "in", 1000 + i, "received", body, 1, unseen=False
                )
        async with FlakyProxy(env.relay.port) as proxy:
            proxy.cut_up = 200_000
            flaky = BlobClient(proxy.url, reauth=a.api.reauth, retries=0, backoff=0.01)
            with pytest.raises(ServerUnreachable):
                await bk.backup_now(a, blobs=flaky)
            await flaky.aclose()
            assert proxy.cuts == 1
        assert bk.status(a).pending_upload
        pending = json.loads(a.store.get_meta(PENDING_META) or b"{}")
        async with BlobClient(a.api.base_url) as probe:
            done = await probe.offset(pending["blob"])
        assert 0 < done < pending["blob_size"]  # the relay kept what arrived
        phrase = mnemonic_from_seed(a.identity.seed)
    # Another process (the CLI) resumes the same blob from the relay's offset.
    cmd = [sys.executable, "-m", "xchat", "--profile", str(alice), "backup", "now", "--json"]
    done_proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done_proc.returncode == 0, done_proc.stderr
    st = json.loads(done_proc.stdout)
    assert not st["pending_upload"] and st["messages"] == 400
    async with Client(alice) as a:
        cfg = json.loads(a.store.get_meta(META_KEY) or b"{}")
        assert cfg["history"]["segments"][-1]["blob"] == pending["blob"]
    async with Client(env.profile("alice-restored")) as c:
        await c.restore_account(env.relay.url, phrase)
        got = await bk.restore_history(c)
        assert got.messages == 400


async def test_a_backup_of_another_account_cannot_be_restored(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b5")
    carol = await _account(env, "carol", "carol_b5")
    bob = await _account(env, "bob", "bob_b5")
    await _chat(carol, bob, "bob_b5", "carol_b5", n=1)
    for p in (alice, carol):
        async with Client(p) as c:
            await bk.enable(c, PIN)
    async with Client(alice) as a:
        alice_addr, phrase = a.address, mnemonic_from_seed(a.identity.seed)
    async with Client(carol) as c:
        carol_addr = c.address
    # A malicious relay serves Carol's backup record as Alice's.
    db = sqlite3.connect(env.relay.data_dir / "backups.sqlite3")
    (manifest, blobs) = db.execute(
        "SELECT manifest, blobs FROM backups WHERE owner = ?", (carol_addr,)
    ).fetchone()
    db.execute(
        "UPDATE backups SET manifest = ?, blobs = ? WHERE owner = ?", (manifest, blobs, alice_addr)
    )
    db.commit()
    db.close()
    async with Client(env.profile("alice-new")) as c:
        await c.restore_account(env.relay.url, phrase)
        with pytest.raises(DecryptionError):
            await bk.restore_history(c)
        assert c.contacts() == []  # nothing of Carol's
    # With the PIN the same: Alice's identity comes back from her own realm records, and the
    # swapped history is refused, not imported.
    async with Client(env.profile("alice-pin")) as c:
        with pytest.raises(DecryptionError):
            await bk.restore_with_pin(c, env.relay.url, alice_addr, PIN)
        assert c.address == alice_addr and c.contacts() == []


def _stolen(realm: RealmProcess, address: str) -> rc.Registration:
    """Everything one realm's operator holds about this account (its database row; the
    attacker is even given the locator, which a realm alone does not have)."""
    key = rc.b64d(httpx.get(realm.url + "/api/v1/realm").json()["public_key"], "k", 32)
    locator = _locator(_RELAY[0], address)
    db = sqlite3.connect(realm.data_dir / "realm.sqlite3")
    ((reg_json,),) = db.execute(
        "SELECT registration FROM records WHERE id = ?", (rc.record_id(key, address, locator),)
    ).fetchall()
    db.close()
    return rc.Registration.from_json(json.loads(reg_json))


@pytest.mark.parametrize("threshold,stolen", [(2, 1), (3, 2)])
async def test_realm_data_alone_reveals_nothing(env: Env, threshold: int, stolen: int) -> None:
    """The test's attacker: the whole data directory of one realm (2-of-3) or of two realms
    (3-of-3), plus the victim's address and handle and — to make it as strong as possible —
    the right PIN. It finds no address, handle or PIN in the data, cannot confirm the PIN
    offline (its OPRF key shares do not give the commitment) and cannot open the secret
    with its key shares."""
    from xchat.crypto import oprf
    from xchat.crypto.pin import stretch_pin

    name = f"alice_b6{threshold}"
    alice = await _account(env, "alice", name)
    async with Client(alice) as a:
        address = a.address
        await bk.enable(a, PIN, threshold=threshold)
    for realm in env.realms[:stolen]:
        everything = b"".join(p.read_bytes() for p in realm.data_dir.rglob("*") if p.is_file())
        for needle in (address, name, PIN):
            assert needle.encode() not in everything
    for realm in env.realms[:stolen]:  # without the relay's locator, no record to name
        key = rc.b64d(httpx.get(realm.url + "/api/v1/realm").json()["public_key"], "k", 32)
        db = sqlite3.connect(realm.data_dir / "realm.sqlite3")
        bare = rc.record_id(key, address)
        assert db.execute("SELECT COUNT(*) FROM records WHERE id = ?", (bare,)).fetchone()[0] == 0
        db.close()
    regs = [_stolen(r, address) for r in env.realms[:stolen]]
    sp = stretch_pin(PIN, regs[0].version, address)
    element = oprf.hash_to_group(sp.access_key, rc.OPRF_MODE)
    partial = {r.index: oprf.blind_evaluate(r.oprf_key, element) for r in regs}
    combined = rc.combine_evaluations(partial)  # as if these shares were enough
    lp = lambda b: len(b).to_bytes(2, "big") + b  # noqa: E731 - RFC 9497 length prefix
    y = hashlib.sha512(lp(sp.access_key) + lp(combined) + b"Finalize").digest()
    # Private calls on purpose: the thief runs the recovery math offline with what it stole.
    assert rc._unlock(y)[1] != regs[0].unlock_commitment
    attempt = rc.Recovery(PIN, address)
    attempt.version, attempt.threshold, attempt._stretched = regs[0].version, stolen, sp
    with pytest.raises(DecryptionError):
        attempt.open_secret({r.index: (r.key_share, r.encrypted_secret) for r in regs})


async def test_disable_deletes_shares_and_blobs(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b7")
    async with Client(alice) as a:
        address = a.address
        await bk.enable(a, PIN)
        cfg: dict[str, Any] = json.loads(a.store.get_meta(META_KEY) or b"{}")
        blob = cfg["history"]["segments"][0]["blob"]
        env.realms[2].kill9()  # one realm is down when the user disables the backup
        try:
            out = await bk.disable(a)
        finally:
            env.realms[2].start()
        assert out == {"realms": 2, "blobs": 1, "unreachable": [env.realms[2].url]}
        assert not bk.status(a).enabled
        assert _records(env.realms[2], address) == 1  # still there: it was unreachable
        again = await bk.disable(a)  # the second run reaches it
        assert again == {"realms": 1, "blobs": 0, "unreachable": []}
    assert all(_records(r, address) == 0 for r in env.realms)
    r = httpx.head(f"{env.relay.url}/api/v1/blobs/{blob}")
    assert r.status_code == 404


async def test_daily_backup_runs_when_a_day_has_passed(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b8")
    async with Client(alice) as a:
        assert not await bk.maybe_backup(a)  # backup off: nothing to do
        await bk.enable(a, PIN)
        assert not await bk.maybe_backup(a)  # just backed up
        cfg = json.loads(a.store.get_meta(META_KEY) or b"{}")
        cfg["history"]["last_ms"] -= 2 * BACKUP_INTERVAL_MS
        a.store.put_meta(META_KEY, json.dumps(cfg).encode())
        before = cfg["history"]["last_ms"]
        assert await bk.maybe_backup(a)
        assert (bk.status(a).last_backup_ms or 0) > before + BACKUP_INTERVAL_MS


async def test_attachments_are_backed_up_when_asked(env: Env) -> None:
    alice = await _account(env, "alice", "alice_b9")
    data = os.urandom(300_000)
    async with Client(alice) as a:
        await bk.enable(a, PIN, attachments=True)
        downloads = Path(a.profile.path) / "downloads"
        downloads.mkdir(exist_ok=True)
        (downloads / "photo.jpg").write_bytes(data)
        st = await bk.backup_now(a)
        assert st.attachments and st.files == 1 and (st.last_backup_size or 0) > len(data)
        again = await bk.backup_now(a)  # unchanged: not uploaded twice
        assert again.files == 1 and again.last_backup_size == st.last_backup_size
        phrase = mnemonic_from_seed(a.identity.seed)
    async with Client(env.profile("alice-files")) as c:
        await c.restore_account(env.relay.url, phrase)
        got = await bk.restore_history(c)
        assert got.files == 1
        assert (Path(c.profile.path) / "downloads" / "photo.jpg").read_bytes() == data
        assert bk.status(c).attachments
