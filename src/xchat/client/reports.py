"""Sends the user has not been told about yet (PROTOCOL.md Part IV §3.8, "Resume").

``xchat send TO TEXT`` may be killed at any point. Before a new message is sent, its id is
noted here; once the command has printed the id (the user knows it went), the note is
removed and the process exits at once (``os._exit``, skipping interpreter teardown, where a
kill used to leave a finished-looking but unreported send). A later ``send_text(...,
resume=True)`` with the same recipient, text and ``reply_to`` that finds a noted id is
*that* message: re-sent with its id if the relay never confirmed it, or just returned if
it did — never sent again under a new id.

Own table in the profile store (created on open, no schema bump); ids and peers only.
"""

from __future__ import annotations

import os
import sqlite3

from xchat.client.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS unreported_sends (
    peer      TEXT NOT NULL,
    id        TEXT NOT NULL,
    noted_ms  INTEGER NOT NULL,
    PRIMARY KEY (peer, id)
)
"""
MAX_AGE_MS = 7 * 24 * 3600 * 1000  # an older note is stale (the user has long moved on)


class SendReports:
    def __init__(self, store: Store) -> None:
        self._db: sqlite3.Connection = store._db  # the profile's one connection
        self._db.execute(_SCHEMA)

    def note(self, peer: str, msg_id: str, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO unreported_sends (peer, id, noted_ms) VALUES (?, ?, ?)",
            (peer, msg_id, now_ms),
        )

    def unreported(self, peer: str, now_ms: int) -> list[str]:
        """Noted ids to ``peer``, oldest first (stale notes are dropped)."""
        self._db.execute("DELETE FROM unreported_sends WHERE noted_ms < ?", (now_ms - MAX_AGE_MS,))
        rows = self._db.execute(
            "SELECT id FROM unreported_sends WHERE peer = ? ORDER BY noted_ms", (peer,)
        )
        return [str(r[0]) for r in rows]

    def reported(self, msg_id: str) -> None:
        self._db.execute("DELETE FROM unreported_sends WHERE id = ?", (msg_id,))


def mark_reported(store_path: str | os.PathLike[str], msg_id: str) -> None:
    """Remove the note from a closed profile store (the CLI's last act before exiting):
    one autocommit statement on the unsealed ``unreported_sends`` table."""
    db = sqlite3.connect(store_path, isolation_level=None)
    try:
        db.execute(_SCHEMA)
        db.execute("DELETE FROM unreported_sends WHERE id = ?", (msg_id,))
    finally:
        db.close()
