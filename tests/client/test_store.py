"""Local store sealing and profile key handling (PROTOCOL.md Part IV §7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xchat.client.profile import Profile
from xchat.client.store import Store
from xchat.errors import DecryptionError, ProfileError, ProfileLocked


@pytest.fixture(autouse=True)
def _no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCHAT_NO_KEYRING", "1")


def _all_bytes(dirpath: Path) -> bytes:
    return b"".join(p.read_bytes() for p in dirpath.iterdir() if p.is_file())


def test_secret_columns_are_not_plaintext_on_disk(tmp_path: Path) -> None:
    key = os.urandom(32)
    body = b"the eagle lands at midnight " + os.urandom(4).hex().encode()
    session_secret = os.urandom(48)
    prekey_secret = os.urandom(32)
    s = Store(tmp_path / "store.sqlite", key)
    with s.transaction():
        s.add_message("ab" * 16, "xc1peer", "in", 1, "received", body, 2)
        s.put_session("xc1peer", 1, session_secret, 3)
        s.put_prekey("ec", 7, prekey_secret, 4)
        s.put_meta("identity_seed", b"S" * 32)
        s.ensure_contact("xc1peer", 5)
        s.update_contact("xc1peer", delivery_token=b"T" * 16)
    s.close()
    raw = _all_bytes(tmp_path)
    assert b"xc1peer" in raw  # routing metadata is in the clear (documented)
    for secret in (body, session_secret, prekey_secret, b"S" * 32, b"T" * 16):
        assert secret not in raw
    s = Store(tmp_path / "store.sqlite", key)
    msg = s.get_message("xc1peer", "ab" * 16)
    assert msg is not None and msg.body == body
    assert s.get_session("xc1peer", 1) == session_secret
    assert s.get_prekey("ec", 7) == prekey_secret
    c = s.get_contact("xc1peer")
    assert c is not None and c.delivery_token == b"T" * 16
    s.close()


def test_wrong_store_key_fails_to_open(tmp_path: Path) -> None:
    s = Store(tmp_path / "store.sqlite", os.urandom(32))
    s.put_meta("x", b"secret")
    s.close()
    s = Store(tmp_path / "store.sqlite", os.urandom(32))
    with pytest.raises(DecryptionError):
        s.get_meta("x")
    s.close()


def test_sealed_value_bound_to_its_row(tmp_path: Path) -> None:
    s = Store(tmp_path / "store.sqlite", os.urandom(32))
    sealed = s.seal("sessions", "state", "a:1", b"state")
    assert s.unseal("sessions", "state", "a:1", sealed) == b"state"
    with pytest.raises(DecryptionError):
        s.unseal("sessions", "state", "b:1", sealed)
    with pytest.raises(DecryptionError):
        s.unseal("messages", "body", "a:1", sealed)
    s.close()


def test_message_dedup_and_status(tmp_path: Path) -> None:
    s = Store(tmp_path / "store.sqlite", os.urandom(32))
    assert s.add_message("01" * 16, "p", "out", 1, "sent", b"x", 1)
    assert not s.add_message("01" * 16, "p", "out", 1, "sent", b"y", 2)
    assert s.add_message("01" * 16, "q", "in", 1, "received", b"z", 2)  # other peer: fine
    assert not s.set_message_status("q", "01" * 16, "delivered")  # not ours to mark
    assert s.set_message_status("p", "01" * 16, "delivered")
    assert [m.status for m in s.history("p")] == ["delivered"]
    assert s.mark_seen("p", "r1", 1) and not s.mark_seen("p", "r1", 2)
    assert s.mark_seen("q", "r1", 3)
    s.close()


def test_profile_key_file_fallback_is_0600(tmp_path: Path) -> None:
    with Profile.open(tmp_path / "p") as p:
        key = p.create_key(None)
        p.save_config()
        assert p.config.key_source == "file"
        assert (p.path / "profile.key").stat().st_mode & 0o777 == 0o600
    with Profile.open(tmp_path / "p") as p:
        assert p.unlock() == key


def test_passphrase_wrong_is_profile_locked(tmp_path: Path) -> None:
    with Profile.open(tmp_path / "p") as p:
        key = p.create_key("correct horse")
        p.config.address = "xc1test"
        p.save_config()
    with Profile.open(tmp_path / "p") as p:
        with pytest.raises(ProfileLocked):
            p.unlock("wrong horse")
        with pytest.raises(ProfileLocked):
            p.unlock(None)
        assert p.unlock("correct horse") == key


def test_uninitialised_profile_unlock_is_profile_error(tmp_path: Path) -> None:
    with Profile.open(tmp_path / "p") as p, pytest.raises(ProfileError):
        p.unlock()


def test_second_process_gets_profile_locked(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from xchat.client.profile import Profile\n"
        "from xchat.errors import ProfileLocked\n"
        "try:\n"
        f"    Profile.open({str(tmp_path / 'p')!r})\n"
        "except ProfileLocked:\n"
        "    sys.exit(42)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    with Profile.open(tmp_path / "p"):
        r = subprocess.run([sys.executable, "-c", code], env=env, check=False)
        assert r.returncode == 42
    r = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert r.returncode == 0


def test_profile_key_in_keyring_when_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class MemoryKeyring(KeyringBackend):
        priority = 10  # type: ignore[assignment]

        def __init__(self) -> None:
            self.data: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.data.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.data[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.data.pop((service, username), None)

    monkeypatch.delenv("XCHAT_NO_KEYRING")
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    try:
        with Profile.open(tmp_path / "p") as p:
            key = p.create_key(None)
            p.config.address = "xc1test"
            p.save_config()
            assert p.config.key_source == "keyring"
            assert not (p.path / "profile.key").exists()
        with Profile.open(tmp_path / "p") as p:
            assert p.unlock() == key
        kr.data.clear()  # keyring entry gone -> locked, not a crash
        with Profile.open(tmp_path / "p") as p, pytest.raises(ProfileLocked):
            p.unlock()
    finally:
        keyring.set_keyring(previous)


def test_ack_after_receipt_never_downgrades_status(tmp_path: Path) -> None:
    """The server ack can be processed after the delivery receipt (race seen by the app):
    'delivered' must stay, and a late failure must not overwrite it either."""
    store = Store(tmp_path / "s.db", os.urandom(32))
    store.add_message("a" * 32, "peer", "out", 1, "sending", b"{}", 1)
    assert store.set_message_status("peer", "a" * 32, "delivered")
    assert not store.mark_sent("peer", "a" * 32)
    assert not store.mark_failed("peer", "a" * 32)
    assert store.get_message("peer", "a" * 32).status == "delivered"  # type: ignore[union-attr]
    store.add_message("b" * 32, "peer", "out", 1, "sending", b"{}", 1)
    assert store.mark_sent("peer", "b" * 32)
    assert store.get_message("peer", "b" * 32).status == "sent"  # type: ignore[union-attr]


def test_group_rows_are_sealed(tmp_path: Path) -> None:
    from xchat.client.store import GroupRow

    store = Store(tmp_path / "s.db", os.urandom(32))
    secret = b"group history " + os.urandom(8).hex().encode()
    store.put_group(GroupRow("ab" * 16, secret, b"own key", b'["x"]', False), 1)
    store.put_sender_key("ab" * 16, "xc1qaddr", 1, b"chain " + secret)
    row = store.get_group("ab" * 16)
    assert row is not None and row.history == secret and row.own_key == b"own key"
    assert store.get_sender_key("ab" * 16, "xc1qaddr", 1) == b"chain " + secret
    store.close()
    assert secret not in _all_bytes(tmp_path)


_V2_MESSAGES = """
CREATE TABLE messages (
    id TEXT NOT NULL, peer TEXT NOT NULL, direction TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (peer, id)
);
"""


def test_v2_store_is_migrated_and_old_rows_are_not_replayed(tmp_path: Path) -> None:
    """A store written before schema 3 gains messages.unseen (0 for old rows: they were
    shown) and the pending_receipts table (PROTOCOL Part IV §5.3, §7)."""
    import sqlite3

    key = os.urandom(32)
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.executescript(_V2_MESSAGES)
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    s = Store(path, key)
    assert s.add_message("aa" * 16, "peer", "in", 1, "received", b"new", 2)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.execute(
        "INSERT INTO messages (id, peer, direction, ts_ms, stored_ms, seq, status, body) "
        "VALUES ('old', 'peer', 'in', 1, 1, 0, 'received', x'00')"
    )
    db.commit()
    db.close()
    assert [m.id for m in s.unseen_messages()] == ["aa" * 16]
    s.add_pending_receipt("peer", "aa" * 16, 3)
    assert s.receipt_peers() == ["peer"]
    s.close()
    Store(path, key).close()  # reopening a migrated store is a no-op


def test_unseen_flag_and_pending_rows(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db", os.urandom(32))
    s.add_message("01" * 16, "p", "in", 1, "received", b"a", 1)
    s.add_message("02" * 16, "p", "in", 2, "received", b"b", 2)
    s.add_message("03" * 16, "p", "out", 3, "sending", b"c", 3)  # outgoing: never unseen
    s.add_message("04" * 16, "q", "out", 4, "failed", b"d", 4)
    s.add_message("05" * 16, "q", "out", 5, "sent", b"e", 5)
    assert [m.id for m in s.unseen_messages()] == ["01" * 16, "02" * 16]
    assert s.clear_unseen("p", "01" * 16)
    assert not s.clear_unseen("p", "01" * 16)
    assert [m.body for m in s.unseen_messages()] == [b"b"]
    assert s.mark_unseen("p", "01" * 16)  # keep_unseen: shown later
    assert not s.mark_unseen("p", "03" * 16)  # outgoing rows are never unseen
    assert [m.id for m in s.unseen_messages()] == ["01" * 16, "02" * 16]
    assert s.clear_unseen("p", "01" * 16)
    assert [(m.peer, m.status) for m in s.pending_outgoing()] == [("p", "sending"), ("q", "failed")]
    assert s.mark_sent("q", "04" * 16)
    assert [m.id for m in s.pending_outgoing()] == ["03" * 16]


def test_pending_receipts_roundtrip(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db", os.urandom(32))
    for i in range(5):
        s.add_pending_receipt("p", f"{i:032x}", i)
    s.add_pending_receipt("p", f"{0:032x}", 9)  # the same id twice is owed once
    s.add_pending_receipt("q", "ff" * 16, 1)
    assert s.receipt_peers() == ["p", "q"]
    assert s.pending_receipts("p", 3) == [f"{i:032x}" for i in range(3)]
    s.delete_pending_receipts("p", [f"{i:032x}" for i in range(3)])
    assert s.pending_receipts("p") == [f"{i:032x}" for i in (3, 4)]
    s.delete_pending_receipts("p")
    assert s.receipt_peers() == ["q"]
