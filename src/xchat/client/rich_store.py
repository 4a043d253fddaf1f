"""Local tables of rich messaging (PROTOCOL.md Part VIII §9), in the profile's store.

Created on open with ``CREATE TABLE IF NOT EXISTS`` (no schema-version bump: an older
client ignores them). Secret values — reaction emoji, earlier versions of edited
messages, group notice texts, saved attachment paths — are sealed like the ``messages``
body (``Store.seal``: AES-256-GCM under the profile key, table/column/row bound as
associated data). Routing metadata (conversation, author, times, flags) is in the clear,
as for ``messages`` (Part IV §7.2).

The connection runs with ``PRAGMA secure_delete=ON``: a disappearing message deleted
here is overwritten in the database file, not left in a free page, and the WAL is
checkpointed after each expiry sweep so no copy survives there either.

Conversation keys (``conv``): a contact's address, or ``group:<gid>`` for a group.
Message rows are keyed like ``messages``: ``peer`` is the address (1:1) or
``group:<gid>:<author>`` (group).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from xchat.client.store import MessageRecord, Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rich_conversations (
    conv        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,            -- 'accepted' | 'request' | 'blocked'
    timer_s     INTEGER,                  -- disappearing timer, NULL = off
    timer_ts    INTEGER NOT NULL DEFAULT 0, -- sender ts of the setting (last writer wins)
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rich_messages (
    peer        TEXT NOT NULL,            -- as messages.peer
    id          TEXT NOT NULL,
    conv        TEXT NOT NULL,
    author      TEXT NOT NULL,
    origin_ms   INTEGER NOT NULL,         -- relay timestamp (in) / send time (out)
    timer_s     INTEGER,                  -- the timer it was sent under
    expires_at  INTEGER,                  -- set from read (in) / sent (out)
    read_ms     INTEGER,                  -- in: when we read it
    edited      INTEGER NOT NULL DEFAULT 0,
    deleted     INTEGER NOT NULL DEFAULT 0,
    quote       TEXT,                     -- 'ok' | 'forged' | 'missing' | NULL
    PRIMARY KEY (peer, id)
);
CREATE INDEX IF NOT EXISTS rich_messages_expiry ON rich_messages (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS rich_messages_conv ON rich_messages (conv);
CREATE TABLE IF NOT EXISTS rich_versions (
    peer        TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,         -- 0 = the original, 1.. = replaced texts
    ts_ms       INTEGER NOT NULL,
    body        BLOB NOT NULL,            -- sealed text
    PRIMARY KEY (peer, id, version)
);
CREATE TABLE IF NOT EXISTS rich_reactions (
    peer        TEXT NOT NULL,
    id          TEXT NOT NULL,
    reactor     TEXT NOT NULL,
    emoji       BLOB NOT NULL,            -- sealed
    ts_ms       INTEGER NOT NULL,         -- reactor's ts (later wins)
    PRIMARY KEY (peer, id, reactor)
);
CREATE TABLE IF NOT EXISTS rich_receipts (
    peer        TEXT NOT NULL,            -- OUR message's row
    id          TEXT NOT NULL,
    member      TEXT NOT NULL,            -- who confirmed
    delivered_ms INTEGER,
    read_ms     INTEGER,
    PRIMARY KEY (peer, id, member)
);
CREATE TABLE IF NOT EXISTS rich_outbox (  -- receipts owed (read, group delivered)
    recipient   TEXT NOT NULL,
    conv        TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- 'delivered' | 'read'
    id          TEXT NOT NULL,
    queued_ms   INTEGER NOT NULL,
    PRIMARY KEY (recipient, conv, kind, id)
);
CREATE TABLE IF NOT EXISTS rich_files (
    peer        TEXT NOT NULL,
    id          TEXT NOT NULL,
    path        BLOB NOT NULL,            -- sealed local path of the decrypted file
    PRIMARY KEY (peer, id)
);
CREATE TABLE IF NOT EXISTS rich_notices (
    conv        TEXT NOT NULL,
    id          TEXT NOT NULL,
    ts_ms       INTEGER NOT NULL,
    body        BLOB NOT NULL,            -- sealed JSON {"type", "text", ...}
    PRIMARY KEY (conv, id)
);
"""

STATES = ("accepted", "request", "blocked")


@dataclass(frozen=True)
class RichRow:
    peer: str
    id: str
    conv: str
    author: str
    origin_ms: int
    timer_s: int | None
    expires_at: int | None
    read_ms: int | None
    edited: int
    deleted: bool
    quote: str | None


@dataclass(frozen=True)
class ConversationRow:
    conv: str
    state: str
    timer_s: int | None
    timer_ts: int


class RichStore:
    """Read and write the Part VIII tables of one profile's :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db: sqlite3.Connection = store._db  # the profile's one connection
        fresh = (
            self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'rich_conversations'"
            ).fetchone()
            is None
        )
        self.db.execute("PRAGMA secure_delete=ON")
        # One statement at a time, not executescript (which COMMITs first): the store may
        # be opened here inside the receive path's transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(statement)
        if fresh:
            # A profile from before Part VIII: everyone it already talks to is a contact,
            # not a request (PROTOCOL Part VIII §7).
            self.db.execute(
                "INSERT OR IGNORE INTO rich_conversations (conv, state, updated_ms) "
                "SELECT DISTINCT peer, 'accepted', 0 FROM messages "
                "WHERE peer NOT LIKE 'group:%'"
            )

    # --- conversations -----------------------------------------------------------------

    def conversation(self, conv: str) -> ConversationRow | None:
        r = self.db.execute(
            "SELECT conv, state, timer_s, timer_ts FROM rich_conversations WHERE conv = ?",
            (conv,),
        ).fetchone()
        return None if r is None else ConversationRow(r[0], r[1], r[2], r[3])

    def set_state(self, conv: str, state: str, now_ms: int) -> None:
        assert state in STATES
        self.db.execute(
            "INSERT INTO rich_conversations (conv, state, updated_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (conv) DO UPDATE SET state = excluded.state, "
            "updated_ms = excluded.updated_ms",
            (conv, state, now_ms),
        )

    def forget_conversation(self, conv: str) -> None:
        self.db.execute("DELETE FROM rich_conversations WHERE conv = ?", (conv,))

    def set_timer(self, conv: str, seconds: int | None, ts: int, now_ms: int) -> bool:
        """Last writer (by sender ts, then arrival) wins; False if an older setting."""
        row = self.conversation(conv)
        if row is not None and ts < row.timer_ts:
            return False
        self.db.execute(
            "INSERT INTO rich_conversations (conv, state, timer_s, timer_ts, updated_ms) "
            "VALUES (?, 'accepted', ?, ?, ?) ON CONFLICT (conv) DO UPDATE SET "
            "timer_s = excluded.timer_s, timer_ts = excluded.timer_ts, "
            "updated_ms = excluded.updated_ms",
            (conv, seconds, ts, now_ms),
        )
        return True

    def conversations_in(self, state: str) -> list[str]:
        rows = self.db.execute(
            "SELECT conv FROM rich_conversations WHERE state = ? ORDER BY updated_ms DESC",
            (state,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # --- per-message state -------------------------------------------------------------

    def put_row(self, row: RichRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rich_messages (peer, id, conv, author, origin_ms, timer_s, "
            "expires_at, read_ms, edited, deleted, quote) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.peer,
                row.id,
                row.conv,
                row.author,
                row.origin_ms,
                row.timer_s,
                row.expires_at,
                row.read_ms,
                row.edited,
                int(row.deleted),
                row.quote,
            ),
        )

    def row(self, peer: str, msg_id: str) -> RichRow | None:
        r = self.db.execute(
            "SELECT peer, id, conv, author, origin_ms, timer_s, expires_at, read_ms, edited, "
            "deleted, quote FROM rich_messages WHERE peer = ? AND id = ?",
            (peer, msg_id),
        ).fetchone()
        if r is None:
            return None
        return RichRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]), r[10])

    def due(self, now_ms: int, limit: int = 1000) -> list[tuple[str, str, str]]:
        """(peer, id, conv) of messages whose disappearing timer ran out."""
        rows = self.db.execute(
            "SELECT peer, id, conv FROM rich_messages WHERE expires_at IS NOT NULL "
            "AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def next_expiry(self) -> int | None:
        r = self.db.execute(
            "SELECT MIN(expires_at) FROM rich_messages WHERE expires_at IS NOT NULL"
        ).fetchone()
        return None if r is None or r[0] is None else int(r[0])

    # --- message bodies (messages table) ----------------------------------------------

    def replace_body(self, peer: str, msg_id: str, body: bytes) -> None:
        sealed = self.store.seal("messages", "body", f"{peer}:{msg_id}", body)
        self.db.execute(
            "UPDATE messages SET body = ? WHERE peer = ? AND id = ?", (sealed, peer, msg_id)
        )

    def delete_message(self, peer: str, msg_id: str) -> None:
        """Remove a message and everything attached to it (files are the caller's)."""
        for table in (
            "messages",
            "rich_messages",
            "rich_versions",
            "rich_reactions",
            "rich_receipts",
            "rich_files",
        ):
            self.db.execute(f"DELETE FROM {table} WHERE peer = ? AND id = ?", (peer, msg_id))
        self.db.execute("DELETE FROM pending_receipts WHERE peer = ? AND id = ?", (peer, msg_id))

    def conversation_messages(
        self, conv: str, *, direction: str | None = None
    ) -> list[MessageRecord]:
        """Every stored message of ``conv`` (1:1 or group), oldest first."""
        if conv.startswith("group:"):
            where, args = "peer >= ? AND peer < ?", [f"{conv}:", f"{conv};"]
        else:
            where, args = "peer = ?", [conv]
        if direction is not None:
            where += " AND direction = ?"
            args.append(direction)
        rows = self.db.execute(
            f"SELECT id, peer, direction, ts_ms, status, body FROM messages WHERE {where} "
            "ORDER BY seq",
            args,
        ).fetchall()
        return [self.store._message(r) for r in rows]

    def message(self, peer: str, msg_id: str) -> MessageRecord | None:
        return self.store.get_message(peer, msg_id)

    def all_messages(self) -> list[MessageRecord]:
        rows = self.db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages ORDER BY seq"
        ).fetchall()
        return [self.store._message(r) for r in rows]

    # --- versions ----------------------------------------------------------------------

    def add_version(self, peer: str, msg_id: str, version: int, ts: int, text: str) -> None:
        rk = f"{peer}:{msg_id}:{version}"
        self.db.execute(
            "INSERT OR REPLACE INTO rich_versions (peer, id, version, ts_ms, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                peer,
                msg_id,
                version,
                ts,
                self.store.seal("rich_versions", "body", rk, text.encode()),
            ),
        )

    def versions(self, peer: str, msg_id: str) -> list[tuple[int, int, str]]:
        """(version, ts, text) of earlier versions, oldest first."""
        rows = self.db.execute(
            "SELECT version, ts_ms, body FROM rich_versions WHERE peer = ? AND id = ? "
            "ORDER BY version",
            (peer, msg_id),
        ).fetchall()
        out = []
        for v, ts, body in rows:
            rk = f"{peer}:{msg_id}:{v}"
            out.append(
                (int(v), int(ts), self.store.unseal("rich_versions", "body", rk, body).decode())
            )
        return out

    def drop_versions(self, peer: str, msg_id: str) -> None:
        self.db.execute("DELETE FROM rich_versions WHERE peer = ? AND id = ?", (peer, msg_id))

    # --- reactions ---------------------------------------------------------------------

    def set_reaction(
        self, peer: str, msg_id: str, reactor: str, emoji: str | None, ts: int
    ) -> bool:
        """Replace (or with None remove) ``reactor``'s one reaction; False when an older
        reaction arrives after a newer one (by the reactor's ts)."""
        r = self.db.execute(
            "SELECT ts_ms FROM rich_reactions WHERE peer = ? AND id = ? AND reactor = ?",
            (peer, msg_id, reactor),
        ).fetchone()
        if r is not None and int(r[0]) > ts:
            return False
        if emoji is None:
            self.db.execute(
                "DELETE FROM rich_reactions WHERE peer = ? AND id = ? AND reactor = ?",
                (peer, msg_id, reactor),
            )
            return r is not None
        rk = f"{peer}:{msg_id}:{reactor}"
        self.db.execute(
            "INSERT OR REPLACE INTO rich_reactions (peer, id, reactor, emoji, ts_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                peer,
                msg_id,
                reactor,
                self.store.seal("rich_reactions", "emoji", rk, emoji.encode()),
                ts,
            ),
        )
        return True

    def reactions(self, peer: str, msg_id: str) -> list[tuple[str, str]]:
        """(reactor, emoji), oldest first."""
        rows = self.db.execute(
            "SELECT reactor, emoji FROM rich_reactions WHERE peer = ? AND id = ? ORDER BY ts_ms",
            (peer, msg_id),
        ).fetchall()
        out = []
        for reactor, emoji in rows:
            rk = f"{peer}:{msg_id}:{reactor}"
            out.append(
                (str(reactor), self.store.unseal("rich_reactions", "emoji", rk, emoji).decode())
            )
        return out

    def drop_reactions(self, peer: str, msg_id: str) -> None:
        self.db.execute("DELETE FROM rich_reactions WHERE peer = ? AND id = ?", (peer, msg_id))

    # --- receipts on our messages ------------------------------------------------------

    def add_receipt(self, peer: str, msg_id: str, member: str, kind: str, ts: int) -> bool:
        if (
            self.db.execute(
                "SELECT 1 FROM messages WHERE peer = ? AND id = ? AND direction = 'out'",
                (peer, msg_id),
            ).fetchone()
            is None
        ):
            return False
        col = "read_ms" if kind == "read" else "delivered_ms"
        self.db.execute(
            "INSERT OR IGNORE INTO rich_receipts (peer, id, member) VALUES (?, ?, ?)",
            (peer, msg_id, member),
        )
        cur = self.db.execute(
            f"UPDATE rich_receipts SET {col} = ? WHERE peer = ? AND id = ? AND member = ? "
            f"AND {col} IS NULL",
            (ts, peer, msg_id, member),
        )
        if kind == "read":  # read implies delivered
            self.db.execute(
                "UPDATE rich_receipts SET delivered_ms = ? WHERE peer = ? AND id = ? "
                "AND member = ? AND delivered_ms IS NULL",
                (ts, peer, msg_id, member),
            )
        return cur.rowcount == 1

    def receipts(self, peer: str, msg_id: str) -> list[tuple[str, int | None, int | None]]:
        rows = self.db.execute(
            "SELECT member, delivered_ms, read_ms FROM rich_receipts WHERE peer = ? AND id = ? "
            "ORDER BY member",
            (peer, msg_id),
        ).fetchall()
        return [(str(m), d, r) for m, d, r in rows]

    # --- owed receipts -----------------------------------------------------------------

    def owe(self, recipient: str, conv: str, kind: str, msg_id: str, now_ms: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO rich_outbox (recipient, conv, kind, id, queued_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (recipient, conv, kind, msg_id, now_ms),
        )

    def owed(self, limit: int = 256) -> list[tuple[str, str, str, list[str]]]:
        """(recipient, conv, kind, ids) batches still owed."""
        rows = self.db.execute(
            "SELECT recipient, conv, kind, id FROM rich_outbox ORDER BY queued_ms, rowid"
        ).fetchall()
        groups: dict[tuple[str, str, str], list[str]] = {}
        for recipient, conv, kind, msg_id in rows:
            ids = groups.setdefault((recipient, conv, kind), [])
            if len(ids) < limit:
                ids.append(str(msg_id))
        return [(r, c, k, ids) for (r, c, k), ids in groups.items()]

    def paid(self, recipient: str, conv: str, kind: str, ids: list[str] | None) -> None:
        if ids is None:
            self.db.execute(
                "DELETE FROM rich_outbox WHERE recipient = ? AND conv = ?", (recipient, conv)
            )
            return
        self.db.executemany(
            "DELETE FROM rich_outbox WHERE recipient = ? AND conv = ? AND kind = ? AND id = ?",
            [(recipient, conv, kind, i) for i in ids],
        )

    def forget_owed_to(self, recipient: str) -> None:
        self.db.execute("DELETE FROM rich_outbox WHERE recipient = ?", (recipient,))
        self.db.execute("DELETE FROM pending_receipts WHERE peer = ?", (recipient,))

    # --- saved attachments -------------------------------------------------------------

    def put_file(self, peer: str, msg_id: str, path: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rich_files (peer, id, path) VALUES (?, ?, ?)",
            (
                peer,
                msg_id,
                self.store.seal("rich_files", "path", f"{peer}:{msg_id}", path.encode()),
            ),
        )

    def files(self, peer: str, msg_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT path FROM rich_files WHERE peer = ? AND id = ?", (peer, msg_id)
        ).fetchall()
        return [
            self.store.unseal("rich_files", "path", f"{peer}:{msg_id}", r[0]).decode() for r in rows
        ]

    # --- notices -----------------------------------------------------------------------

    def add_notice(self, conv: str, notice_id: str, ts: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.db.execute(
            "INSERT OR IGNORE INTO rich_notices (conv, id, ts_ms, body) VALUES (?, ?, ?, ?)",
            (
                conv,
                notice_id,
                ts,
                self.store.seal("rich_notices", "body", f"{conv}:{notice_id}", raw),
            ),
        )

    def notices(self, conv: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, ts_ms, body FROM rich_notices WHERE conv = ? ORDER BY ts_ms DESC LIMIT ?",
            (conv, limit),
        ).fetchall()
        out = []
        for nid, ts, body in reversed(rows):
            obj = json.loads(self.store.unseal("rich_notices", "body", f"{conv}:{nid}", body))
            out.append({**obj, "id": nid, "ts": ts})
        return out

    def drop_conversation(self, conv: str) -> list[tuple[str, str]]:
        """Delete every message and notice of ``conv``; returns the (peer, id) removed."""
        gone = [(m.peer, m.id) for m in self.conversation_messages(conv)]
        for peer, msg_id in gone:
            self.delete_message(peer, msg_id)
        self.db.execute("DELETE FROM rich_notices WHERE conv = ?", (conv,))
        return gone

    def checkpoint(self) -> None:
        """Fold the WAL into the database (after deletions that must not linger)."""
        # inside a transaction or busy: the next sweep does it
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
