"""Durable state of one realm: its keys and its records, in ``<data>/realm.sqlite3``.

Guess counts must survive a crash, or a guesser could kill-and-retry past the limit: the
store runs SQLite in WAL mode with ``synchronous=FULL`` and every count change commits
before the realm answers (PROTOCOL.md Part X §5.4).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat.crypto.recovery import Registration

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id           BLOB PRIMARY KEY,   -- record id (32 bytes); never an address
    registration TEXT NOT NULL,      -- Registration.to_json()
    guess_count  INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS used_challenges (
    challenge   BLOB PRIMARY KEY,
    expires_ms  INTEGER NOT NULL
);
"""


def _load_or_create(path: Path, size: int) -> bytes:
    if path.exists():
        data = path.read_bytes()
        if len(data) != size:
            raise SystemExit(f"{path} is corrupt (expected {size} bytes)")
        return data
    data = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


@dataclass(frozen=True)
class Record:
    registration: Registration
    guess_count: int


class RealmStore:
    """Keys (``realm_signing.key``: Ed25519 seed; ``realm_mac.key``: challenge MAC key, both
    0600) and the SQLite database."""

    def __init__(self, data: str | os.PathLike[str]) -> None:
        self.root = Path(data)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        seed = _load_or_create(self.root / "realm_signing.key", 32)
        self.signing_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.signing_key.public_key().public_bytes_raw()
        self.mac_key = _load_or_create(self.root / "realm_mac.key", 32)
        db = self.root / "realm.sqlite3"
        if not db.exists():
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, record: bytes) -> Record | None:
        row = self._db.execute(
            "SELECT registration, guess_count FROM records WHERE id = ?", (record,)
        ).fetchone()
        if row is None:
            return None
        return Record(Registration.from_json(json.loads(row[0])), int(row[1]))

    def put(self, record: bytes, reg: Registration, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO records (id, registration, guess_count, created_ms) "
            "VALUES (?, ?, 0, ?)",
            (record, json.dumps(reg.to_json()), now_ms),
        )

    def set_guesses(self, record: bytes, count: int) -> None:
        self._db.execute("UPDATE records SET guess_count = ? WHERE id = ?", (count, record))

    def delete(self, record: bytes) -> bool:
        return self._db.execute("DELETE FROM records WHERE id = ?", (record,)).rowcount > 0

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def use_challenge(self, challenge: bytes, expires_ms: int, now_ms: int) -> bool:
        """Mark a challenge spent; False if it already was (single use survives restarts)."""
        self._db.execute("DELETE FROM used_challenges WHERE expires_ms <= ?", (now_ms,))
        cur = self._db.execute(
            "INSERT OR IGNORE INTO used_challenges (challenge, expires_ms) VALUES (?, ?)",
            (challenge, expires_ms),
        )
        return cur.rowcount == 1
