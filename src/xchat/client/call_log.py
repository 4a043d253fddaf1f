"""The call history: one row per call in the profile's local store (PROTOCOL.md Part IX §7).

Its own table, created on open (``CREATE TABLE IF NOT EXISTS``), so older profiles gain
it without a schema version bump. Only this device knows about its calls: the relay keeps
no call rows or call logs (signalling is ordinary sealed-sender mail to it). Like the
``messages`` routing columns, the peer and times are in the clear inside the 0600 store;
no call content (SDP, keys) is kept.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from xchat.client.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id           TEXT NOT NULL,    -- 128-bit call id, hex, chosen by the caller
    peer         TEXT NOT NULL,    -- the other party's address
    direction    TEXT NOT NULL,    -- 'out' | 'in'
    state        TEXT NOT NULL,    -- a live state, then an outcome: ended | declined |
                                   -- busy | missed | failed | answered_elsewhere
    video        INTEGER NOT NULL DEFAULT 0,
    started_ms   INTEGER NOT NULL, -- offer sent / received
    answered_ms  INTEGER,
    ended_ms     INTEGER,
    duration_ms  INTEGER NOT NULL DEFAULT 0, -- connected media time
    reason       TEXT,
    PRIMARY KEY (peer, id)
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_ms);
"""
#: States that mean "still going"; a row left in one by a crashed process reads as failed.
LIVE_STATES = ("dialing", "ringing", "incoming", "connecting", "connected")


@dataclass(frozen=True)
class CallRecord:
    id: str
    peer: str
    direction: str
    state: str
    video: bool
    started_ms: int
    answered_ms: int | None
    ended_ms: int | None
    duration_s: float
    reason: str | None


class CallLog:
    """Read and write the ``calls`` table of one profile's :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._db: sqlite3.Connection = store._db  # the profile's one connection
        self._db.executescript(_SCHEMA)

    def record(
        self,
        call_id: str,
        peer: str,
        direction: str,
        state: str,
        *,
        video: bool,
        started_ms: int,
        answered_ms: int | None = None,
        ended_ms: int | None = None,
        duration_ms: int = 0,
        reason: str | None = None,
    ) -> None:
        """Insert or update the row of (peer, call id)."""
        self._db.execute(
            "INSERT INTO calls (id, peer, direction, state, video, started_ms, answered_ms,"
            " ended_ms, duration_ms, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (peer, id) DO UPDATE SET state = excluded.state,"
            " answered_ms = excluded.answered_ms, ended_ms = excluded.ended_ms,"
            " duration_ms = excluded.duration_ms, reason = excluded.reason",
            (
                call_id,
                peer,
                direction,
                state,
                int(video),
                started_ms,
                answered_ms,
                ended_ms,
                duration_ms,
                reason,
            ),
        )

    def get(self, peer: str, call_id: str) -> CallRecord | None:
        row = self._db.execute(_SELECT + " WHERE peer = ? AND id = ?", (peer, call_id)).fetchone()
        return None if row is None else _record(row)

    def list(self, peer: str | None = None, limit: int = 100) -> list[CallRecord]:
        """Newest first; all peers or one."""
        if peer is None:
            rows = self._db.execute(
                _SELECT + " ORDER BY started_ms DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
                _SELECT + " WHERE peer = ? ORDER BY started_ms DESC LIMIT ?", (peer, limit)
            ).fetchall()
        return [_record(r) for r in rows]


_SELECT = (
    "SELECT id, peer, direction, state, video, started_ms, answered_ms, ended_ms,"
    " duration_ms, reason FROM calls"
)


def _record(row: tuple[object, ...]) -> CallRecord:
    state = str(row[3])
    reason = row[9] if isinstance(row[9], str) else None
    if state in LIVE_STATES:
        state, reason = "failed", reason or "interrupted (the app stopped during the call)"
    return CallRecord(
        id=str(row[0]),
        peer=str(row[1]),
        direction=str(row[2]),
        state=state,
        video=bool(row[4]),
        started_ms=int(row[5]),  # type: ignore[call-overload]
        answered_ms=row[6] if isinstance(row[6], int) else None,
        ended_ms=row[7] if isinstance(row[7], int) else None,
        duration_s=int(row[8]) / 1000,  # type: ignore[call-overload]
        reason=reason,
    )
