"""Replay-safe session resets (PROTOCOL.md Part IV §3.7).

The attack this closes: the relay keeps a copy of a sealed envelope and delivers it again
later. The recipient unseals it (learning the sender, which it already knew) but can no
longer decrypt it: the one-time prekey it named is gone (``UnknownPreKey``) or its chain
was ratcheted away ("no session"). A client that answered such a failure by resetting the
session would fetch the sender's bundle and write to it — and the relay, watching which
bundle is fetched and where a message goes right after its replay, learns who sent the
sealed envelope (and burns the sender's one-time prekeys each time).

So a failure is answered only if a replay cannot have caused it:

- a **normal** (non-PreKey) message that fails is never answered: a replay of any old
  message fails the same way;
- a **PreKey** message is answered only if it is *fresh*: its PQXDH part was never
  accepted before (``prekey_seen``), it names no prekey this profile consumed or retired
  (``prekeys_used``), and its sender certificate is still valid by the *local* clock
  (the relay chooses the DELIVER timestamp, not the certificate inside the sealed
  envelope, which only the sender can produce);
- and at most once per peer per :data:`RESET_INTERVAL_MS`, recorded in ``session_resets``
  so a restart does not reopen the budget.

A PreKey message whose PQXDH part was already accepted is a replay even when the session
it created is gone: it is dropped as a duplicate instead of creating a second session
(which would make the replayed copy the active session).

Tables live in the profile store (created on open, no schema bump); they hold digests,
prekey ids and peer addresses, nothing secret.
"""

from __future__ import annotations

import hashlib
import sqlite3

from xchat.client.store import Store
from xchat.crypto.session import PREKEY_HEADER_LEN, MessageKind, PreKeyMessage, message_kind
from xchat.errors import XChatError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prekey_seen (
    digest  BLOB PRIMARY KEY,   -- SHA-256 of an accepted PreKey message's 1680-byte PQXDH part
    seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS prekeys_used (
    kind    TEXT NOT NULL,      -- 'ec' | 'kem' (one-time, consumed) | 'signed' (retired)
    id      INTEGER NOT NULL,
    used_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS session_resets (
    peer    TEXT NOT NULL,
    why     TEXT NOT NULL,      -- 'reset' (we asked the peer) | 'restart' (token refused)
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, why)
);
"""
RESET_INTERVAL_MS = 24 * 3600 * 1000  # one reset (and one restart) per peer per day


def prekey_digest(message: bytes) -> bytes | None:
    """The digest that names a PreKey message's PQXDH run (None for a normal message)."""
    try:
        if message_kind(message) != MessageKind.PREKEY or len(message) < PREKEY_HEADER_LEN:
            return None
    except XChatError:
        return None
    return hashlib.sha256(message[:PREKEY_HEADER_LEN]).digest()


class ReplayGuard:
    """The persistent memory that tells a fresh PreKey message from a replayed one."""

    def __init__(self, store: Store) -> None:
        self._db: sqlite3.Connection = store._db  # the profile's one connection
        for statement in _SCHEMA.split(";"):  # not executescript: it would COMMIT an open
            if statement.strip():  # transaction (this may be created inside one)
                self._db.execute(statement)

    # --- recording (inside the receive transaction) ---

    def seen(self, digest: bytes) -> bool:
        row = self._db.execute("SELECT 1 FROM prekey_seen WHERE digest = ?", (digest,))
        return row.fetchone() is not None

    def record_prekey_message(self, digest: bytes, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO prekey_seen (digest, seen_ms) VALUES (?, ?)", (digest, now_ms)
        )

    def record_used(self, kind: str, key_id: int, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO prekeys_used (kind, id, used_ms) VALUES (?, ?, ?)",
            (kind, key_id, now_ms),
        )

    def used(self, kind: str, key_id: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM prekeys_used WHERE kind = ? AND id = ?", (kind, key_id)
        )
        return row.fetchone() is not None

    # --- decisions ---

    def fresh_prekey_failure(self, message: bytes, cert_expires_ms: int, now_ms: int) -> bool:
        """True if a failed message is a PreKey message no replay can explain."""
        digest = prekey_digest(message)
        if digest is None or self.seen(digest) or cert_expires_ms <= now_ms:
            return False
        try:
            pk = PreKeyMessage.parse(message)
        except XChatError:
            return False
        if self.used("signed", pk.signed_prekey_id) or self.used("kem", pk.kem_prekey_id):
            return False
        return pk.one_time_prekey_id is None or not self.used("ec", pk.one_time_prekey_id)

    def allow(self, peer: str, why: str, now_ms: int) -> bool:
        """Spend the peer's budget for ``why`` ('reset' or 'restart'); False if used."""
        row = self._db.execute(
            "SELECT last_ms FROM session_resets WHERE peer = ? AND why = ?", (peer, why)
        ).fetchone()
        if row is not None and now_ms - int(row[0]) < RESET_INTERVAL_MS:
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO session_resets (peer, why, last_ms) VALUES (?, ?, ?)",
            (peer, why, now_ms),
        )
        return True
