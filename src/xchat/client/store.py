"""The local store: one SQLite file per profile (PROTOCOL.md Part IV §7).

Secret columns (identity seed, prekey private keys, ratchet state, delivery tokens,
message bodies) are sealed with AES-256-GCM under the 32-byte profile key:

    sealed = nonce(12) || AES-256-GCM(profile_key, nonce, plaintext, aad)
    aad    = b"XChat-v1-store|" || table || b"|" || column || b"|" || row_key

``row_key`` is the row's natural primary key as text, so a sealed value copied into
another row or column fails to open (:class:`DecryptionError`). Non-secret routing
metadata (peer addresses, handles, timestamps, delivery status) stays in the clear so it
can be indexed; the file is 0600 inside a 0700 directory.

The store is synchronous ``sqlite3`` in WAL mode: every call is a few hundred
microseconds, well below the cost of a network round trip, so the async client calls it
directly instead of hopping to a thread.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.errors import DecryptionError, ProfileError

# 2: groups, group_sender_keys (CREATE IF NOT EXISTS migrates v1)
# 3: messages.unseen, pending_receipts (PROTOCOL Part IV §5.3, §3.6; _migrate adds the column)
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL           -- sealed
);
CREATE TABLE IF NOT EXISTS prekeys (
    kind        TEXT NOT NULL,    -- 'signed' | 'kem_last_resort' | 'ec' | 'kem'
    id          INTEGER NOT NULL,
    private     BLOB NOT NULL,    -- sealed
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS sessions (
    address     TEXT NOT NULL,
    device_id   INTEGER NOT NULL,
    state       BLOB NOT NULL,    -- sealed
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (address, device_id)
);
CREATE TABLE IF NOT EXISTS contacts (
    address         TEXT PRIMARY KEY,
    handle          TEXT,
    identity_key    BLOB,         -- public; compared on every session/prekey message
    delivery_token  BLOB,         -- sealed
    verified        INTEGER NOT NULL DEFAULT 0,
    identity_changed INTEGER NOT NULL DEFAULT 0,
    token_shared    INTEGER NOT NULL DEFAULT 0,
    added_ms        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id          TEXT NOT NULL,    -- 128-bit hex, chosen by the sender
    peer        TEXT NOT NULL,
    direction   TEXT NOT NULL,    -- 'in' | 'out'
    ts_ms       INTEGER NOT NULL, -- sender's timestamp
    stored_ms   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    status      TEXT NOT NULL,    -- out: 'sending' | 'failed' | 'sent' | 'delivered';
                                  -- in: 'received'
    body        BLOB NOT NULL,    -- sealed JSON content
    unseen      INTEGER NOT NULL DEFAULT 0, -- in: stored but not yet shown to the app
    PRIMARY KEY (peer, id)        -- ids are unique per conversation: a peer cannot
                                  -- suppress another peer's message by reusing its id
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, seq);
CREATE TABLE IF NOT EXISTS groups (
    id          TEXT PRIMARY KEY, -- group id, hex (only members' devices ever hold a group)
    history     BLOB NOT NULL,    -- sealed GroupHistory.to_bytes() (PROTOCOL Part V §5.4)
    own_key     BLOB,             -- sealed own SenderKeyState; NULL: generate on next send
    pending     BLOB NOT NULL,    -- sealed JSON list: members still owed our sender key
    left_group  INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_sender_keys (
    group_id    TEXT NOT NULL,
    address     TEXT NOT NULL,
    device_id   INTEGER NOT NULL,
    record      BLOB NOT NULL,    -- sealed SenderKeyRecord (PROTOCOL Part V §2.5)
    PRIMARY KEY (group_id, address, device_id)
);
CREATE TABLE IF NOT EXISTS seen (
    peer        TEXT NOT NULL,
    id          TEXT NOT NULL,    -- content ids already processed (receipts, resets)
    seen_ms     INTEGER NOT NULL,
    PRIMARY KEY (peer, id)
);
CREATE TABLE IF NOT EXISTS pending_receipts (
    peer        TEXT NOT NULL,    -- the sender we owe a delivery receipt
    id          TEXT NOT NULL,    -- content id of its message we stored
    queued_ms   INTEGER NOT NULL,
    PRIMARY KEY (peer, id)
);
"""

# Created after _migrate (an old messages table gets its unseen column first).
_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_unseen ON messages (seq) WHERE unseen = 1;
CREATE INDEX IF NOT EXISTS messages_pending ON messages (seq)
    WHERE direction = 'out' AND status IN ('sending', 'failed');
"""


@dataclass(frozen=True)
class ContactRecord:
    address: str
    handle: str | None
    identity_key: bytes | None
    delivery_token: bytes | None
    verified: bool
    identity_changed: bool
    token_shared: bool


@dataclass(frozen=True)
class MessageRecord:
    id: str
    peer: str
    direction: str
    ts_ms: int
    status: str
    body: bytes


@dataclass(frozen=True)
class GroupRow:
    """One group as this device stores it (all secret fields sealed at rest)."""

    id: str
    history: bytes
    own_key: bytes | None
    pending: bytes
    left: bool


class Store:
    """Sealed SQLite store for one profile."""

    def __init__(
        self, path: str | os.PathLike[str], key: bytes, *, sync: str | None = None
    ) -> None:
        if len(key) != 32:
            raise ProfileError("profile key must be 32 bytes")
        self._aead = AESGCM(key)
        p = Path(path)
        new = not p.exists()
        try:
            if new:
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (kill -9) but not
            # necessarily a power failure; FULL fsyncs every commit, which dominated the
            # cost of the 1,000-message test. PROTOCOL Part IV §7.3. XCHAT_STORE_SYNC=full opts in.
            level = (sync or os.environ.get("XCHAT_STORE_SYNC") or "normal").upper()
            if level not in ("NORMAL", "FULL"):
                raise ProfileError("XCHAT_STORE_SYNC must be 'normal' or 'full'")
            self._db.execute(f"PRAGMA synchronous={level}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.executescript(_INDEXES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ProfileError(f"local store {p} is unusable: {exc}") from None
        self._seq = self._scalar("SELECT COALESCE(MAX(seq), 0) FROM messages") or 0

    def _migrate(self) -> None:
        """Bring a store written by an older version up to SCHEMA_VERSION (additive
        only: an older client opening a newer store ignores the extra column/table)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(messages)").fetchall()}
        if "unseen" not in cols:
            # Existing rows were shown by the version that stored them: default 0.
            self._db.execute("ALTER TABLE messages ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit (e.g. ratchet state + message row, before the server ack)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- sealing ------------------------------------------------------------------------

    def seal(self, table: str, column: str, row_key: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, _aad(table, column, row_key))

    def unseal(self, table: str, column: str, row_key: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], _aad(table, column, row_key))
        except (InvalidTag, ValueError):
            raise DecryptionError("a sealed store value failed to open") from None

    def _scalar(self, sql: str, *args: object) -> int | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # --- meta (small secrets and settings) ----------------------------------------------

    def put_meta(self, key: str, value: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (key, self.seal("meta", "value", key, value)),
        )

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else self.unseal("meta", "value", key, row[0])

    # --- prekeys ------------------------------------------------------------------------

    def put_prekey(self, kind: str, key_id: int, private: bytes, now_ms: int) -> None:
        rk = f"{kind}:{key_id}"
        self._db.execute(
            "INSERT OR REPLACE INTO prekeys (kind, id, private, created_ms) VALUES (?, ?, ?, ?)",
            (kind, key_id, self.seal("prekeys", "private", rk, private), now_ms),
        )

    def get_prekey(self, kind: str, key_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT private FROM prekeys WHERE kind = ? AND id = ?", (kind, key_id)
        ).fetchone()
        return (
            None if row is None else self.unseal("prekeys", "private", f"{kind}:{key_id}", row[0])
        )

    def delete_prekey(self, kind: str, key_id: int) -> None:
        self._db.execute("DELETE FROM prekeys WHERE kind = ? AND id = ?", (kind, key_id))

    def max_prekey_id(self, kind: str) -> int:
        return self._scalar("SELECT COALESCE(MAX(id), 0) FROM prekeys WHERE kind = ?", kind) or 0

    # --- sessions -----------------------------------------------------------------------

    def put_session(self, address: str, device_id: int, state: bytes, now_ms: int) -> None:
        rk = f"{address}:{device_id}"
        self._db.execute(
            "INSERT OR REPLACE INTO sessions (address, device_id, state, updated_ms) "
            "VALUES (?, ?, ?, ?)",
            (address, device_id, self.seal("sessions", "state", rk, state), now_ms),
        )

    def get_session(self, address: str, device_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT state FROM sessions WHERE address = ? AND device_id = ?", (address, device_id)
        ).fetchone()
        if row is None:
            return None
        return self.unseal("sessions", "state", f"{address}:{device_id}", row[0])

    def session_devices(self, address: str) -> list[int]:
        rows = self._db.execute(
            "SELECT device_id FROM sessions WHERE address = ? ORDER BY device_id", (address,)
        ).fetchall()
        return [r[0] for r in rows]

    def delete_sessions(self, address: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE address = ?", (address,))

    def delete_session(self, address: str, device_id: int) -> None:
        """One device's session (a device removed from its account's list, Part VII)."""
        self._db.execute(
            "DELETE FROM sessions WHERE address = ? AND device_id = ?", (address, device_id)
        )

    # --- contacts -----------------------------------------------------------------------

    def get_contact(self, address: str) -> ContactRecord | None:
        row = self._db.execute(
            "SELECT address, handle, identity_key, delivery_token, verified, identity_changed, "
            "token_shared FROM contacts WHERE address = ?",
            (address,),
        ).fetchone()
        return None if row is None else self._contact(row)

    def contact_by_handle(self, handle: str) -> ContactRecord | None:
        row = self._db.execute(
            "SELECT address, handle, identity_key, delivery_token, verified, identity_changed, "
            "token_shared FROM contacts WHERE handle = ?",
            (handle.lower(),),
        ).fetchone()
        return None if row is None else self._contact(row)

    def list_contacts(self) -> list[ContactRecord]:
        rows = self._db.execute(
            "SELECT address, handle, identity_key, delivery_token, verified, identity_changed, "
            "token_shared FROM contacts ORDER BY COALESCE(handle, address)"
        ).fetchall()
        return [self._contact(r) for r in rows]

    def _contact(self, row: tuple[object, ...]) -> ContactRecord:
        address = str(row[0])
        token = row[3]
        return ContactRecord(
            address=address,
            handle=row[1] if isinstance(row[1], str) else None,
            identity_key=row[2] if isinstance(row[2], bytes) else None,
            delivery_token=(
                self.unseal("contacts", "delivery_token", address, token)
                if isinstance(token, bytes)
                else None
            ),
            verified=bool(row[4]),
            identity_changed=bool(row[5]),
            token_shared=bool(row[6]),
        )

    def ensure_contact(self, address: str, now_ms: int) -> ContactRecord:
        self._db.execute(
            "INSERT OR IGNORE INTO contacts (address, added_ms) VALUES (?, ?)", (address, now_ms)
        )
        c = self.get_contact(address)
        assert c is not None
        return c

    def update_contact(
        self,
        address: str,
        *,
        handle: str | None = None,
        identity_key: bytes | None = None,
        delivery_token: bytes | None = None,
        verified: bool | None = None,
        identity_changed: bool | None = None,
        token_shared: bool | None = None,
    ) -> None:
        """Set the given fields of an existing contact (None = leave unchanged)."""
        sets: list[str] = []
        args: list[object] = []
        if handle is not None:
            sets.append("handle = ?")
            args.append(handle.lower())
        if identity_key is not None:
            sets.append("identity_key = ?")
            args.append(identity_key)
        if delivery_token is not None:
            sets.append("delivery_token = ?")
            args.append(self.seal("contacts", "delivery_token", address, delivery_token))
        for name, flag in (
            ("verified", verified),
            ("identity_changed", identity_changed),
            ("token_shared", token_shared),
        ):
            if flag is not None:
                sets.append(f"{name} = ?")
                args.append(int(flag))
        if sets:
            args.append(address)
            self._db.execute(f"UPDATE contacts SET {', '.join(sets)} WHERE address = ?", args)

    def clear_handle(self, address: str) -> None:
        self._db.execute("UPDATE contacts SET handle = NULL WHERE address = ?", (address,))

    # --- messages -----------------------------------------------------------------------

    def add_message(
        self,
        msg_id: str,
        peer: str,
        direction: str,
        ts_ms: int,
        status: str,
        body: bytes,
        now_ms: int,
        *,
        unseen: bool | None = None,
    ) -> bool:
        """Insert a message; False (and no change) if this id is already stored (dedup).

        ``unseen`` (default: True for incoming rows) marks a row the app has not been
        shown yet; it is set in the caller's store transaction and cleared by
        :meth:`clear_unseen` once the event was emitted (PROTOCOL Part IV §5.3)."""
        if unseen is None:
            unseen = direction == "in"
        self._seq += 1
        cur = self._db.execute(
            "INSERT OR IGNORE INTO messages (id, peer, direction, ts_ms, stored_ms, seq, status, "
            "body, unseen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                msg_id,
                peer,
                direction,
                ts_ms,
                now_ms,
                self._seq,
                status,
                self.seal("messages", "body", f"{peer}:{msg_id}", body),
                int(unseen),
            ),
        )
        return cur.rowcount == 1

    def unseen_messages(self, limit: int = 1000) -> list[MessageRecord]:
        """Incoming rows stored but never shown to the app (e.g. the process died between
        the store commit and the event), oldest first."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages WHERE unseen = 1 "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._message(r) for r in rows]

    def mark_unseen(self, peer: str, msg_id: str) -> bool:
        """Flag an incoming row unseen again (the app will show it later)."""
        cur = self._db.execute(
            "UPDATE messages SET unseen = 1 WHERE peer = ? AND id = ? AND direction = 'in'",
            (peer, msg_id),
        )
        return cur.rowcount == 1

    def clear_unseen(self, peer: str, msg_id: str) -> bool:
        cur = self._db.execute(
            "UPDATE messages SET unseen = 0 WHERE peer = ? AND id = ? AND unseen = 1",
            (peer, msg_id),
        )
        return cur.rowcount == 1

    def pending_outgoing(self, limit: int = 1000) -> list[MessageRecord]:
        """Our rows whose send was never confirmed by the relay ('sending': the process
        died mid-send; 'failed': the send gave up), oldest first (PROTOCOL Part IV §3.8)."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages "
            "WHERE direction = 'out' AND status IN ('sending', 'failed') ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._message(r) for r in rows]

    def set_message_status(self, peer: str, msg_id: str, status: str) -> bool:
        """Update one of OUR messages to ``peer`` (receipts from others cannot touch it)."""
        cur = self._db.execute(
            "UPDATE messages SET status = ? WHERE peer = ? AND id = ? AND direction = 'out'",
            (status, peer, msg_id),
        )
        return cur.rowcount == 1

    def mark_sent(self, peer: str, msg_id: str) -> bool:
        """Server acked one of our messages: 'sending'/'failed' -> 'sent'. Never downgrades
        a 'delivered' set by a receipt that was processed before the ack."""
        cur = self._db.execute(
            "UPDATE messages SET status = 'sent' WHERE peer = ? AND id = ? "
            "AND direction = 'out' AND status IN ('sending', 'failed')",
            (peer, msg_id),
        )
        return cur.rowcount == 1

    def mark_failed(self, peer: str, msg_id: str) -> bool:
        """A send failed: only a message still 'sending' becomes 'failed'."""
        cur = self._db.execute(
            "UPDATE messages SET status = 'failed' WHERE peer = ? AND id = ? "
            "AND direction = 'out' AND status = 'sending'",
            (peer, msg_id),
        )
        return cur.rowcount == 1

    def get_message(self, peer: str, msg_id: str) -> MessageRecord | None:
        row = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages "
            "WHERE peer = ? AND id = ?",
            (peer, msg_id),
        ).fetchone()
        return None if row is None else self._message(row)

    def undelivered(self, peer: str, limit: int) -> list[MessageRecord]:
        """Our last ``limit`` messages to ``peer`` without a delivery receipt, oldest first."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages WHERE peer = ? "
            "AND direction = 'out' AND status != 'delivered' ORDER BY seq DESC LIMIT ?",
            (peer, limit),
        ).fetchall()
        return [self._message(r) for r in reversed(rows)]

    def history(self, peer: str, limit: int = 100) -> list[MessageRecord]:
        """The last ``limit`` messages with ``peer``, oldest first."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages WHERE peer = ? "
            "ORDER BY seq DESC LIMIT ?",
            (peer, limit),
        ).fetchall()
        return [self._message(r) for r in reversed(rows)]

    def _message(self, row: tuple[object, ...]) -> MessageRecord:
        msg_id = str(row[0])
        body = row[5]
        assert isinstance(body, bytes)
        return MessageRecord(
            id=msg_id,
            peer=str(row[1]),
            direction=str(row[2]),
            ts_ms=int(str(row[3])),
            status=str(row[4]),
            body=self.unseal("messages", "body", f"{row[1]}:{msg_id}", body),
        )

    # --- groups (PROTOCOL Part V §10) ---------------------------------------------------------

    def put_group(self, row: GroupRow, now_ms: int) -> None:
        gid = row.id
        self._db.execute(
            "INSERT OR REPLACE INTO groups (id, history, own_key, pending, left_group, "
            "updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (
                gid,
                self.seal("groups", "history", gid, row.history),
                None if row.own_key is None else self.seal("groups", "own_key", gid, row.own_key),
                self.seal("groups", "pending", gid, row.pending),
                int(row.left),
                now_ms,
            ),
        )

    def get_group(self, gid: str) -> GroupRow | None:
        r = self._db.execute(
            "SELECT id, history, own_key, pending, left_group FROM groups WHERE id = ?", (gid,)
        ).fetchone()
        if r is None:
            return None
        return GroupRow(
            gid,
            self.unseal("groups", "history", gid, r[1]),
            None if r[2] is None else self.unseal("groups", "own_key", gid, r[2]),
            self.unseal("groups", "pending", gid, r[3]),
            bool(r[4]),
        )

    def group_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM groups ORDER BY id").fetchall()]

    def put_sender_key(self, gid: str, address: str, device_id: int, record: bytes) -> None:
        rk = f"{gid}:{address}:{device_id}"
        self._db.execute(
            "INSERT OR REPLACE INTO group_sender_keys (group_id, address, device_id, record) "
            "VALUES (?, ?, ?, ?)",
            (gid, address, device_id, self.seal("group_sender_keys", "record", rk, record)),
        )

    def get_sender_key(self, gid: str, address: str, device_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT record FROM group_sender_keys WHERE group_id = ? AND address = ? "
            "AND device_id = ?",
            (gid, address, device_id),
        ).fetchone()
        if row is None:
            return None
        rk = f"{gid}:{address}:{device_id}"
        return self.unseal("group_sender_keys", "record", rk, row[0])

    def orphan_sender_key_counts(self, address: str) -> tuple[int, int]:
        """(records from ``address``, records from anyone) filed under groups this device
        does not hold: what bounds sender keys that arrive before their group (Part V §10.2)."""
        orphan = "FROM group_sender_keys WHERE group_id NOT IN (SELECT id FROM groups)"
        total = self._db.execute(f"SELECT COUNT(*) {orphan}").fetchone()[0]
        mine = self._db.execute(f"SELECT COUNT(*) {orphan} AND address = ?", (address,))
        return int(mine.fetchone()[0]), int(total)

    def delete_sender_keys(self, gid: str, address: str | None = None) -> None:
        if address is None:
            self._db.execute("DELETE FROM group_sender_keys WHERE group_id = ?", (gid,))
        else:
            self._db.execute(
                "DELETE FROM group_sender_keys WHERE group_id = ? AND address = ?",
                (gid, address),
            )

    def group_history(self, gid: str, limit: int = 100) -> list[MessageRecord]:
        """The last ``limit`` messages of group ``gid`` (peer ``group:<gid>:<sender>``)."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body FROM messages WHERE peer >= ? "
            "AND peer < ? ORDER BY seq DESC LIMIT ?",
            (f"group:{gid}:", f"group:{gid};", limit),
        ).fetchall()
        return [self._message(r) for r in reversed(rows)]

    # --- history backup (PROTOCOL Part X §9) --------------------------------------------

    def messages_after(self, seq: int, limit: int) -> list[tuple[int, int, MessageRecord]]:
        """``(seq, stored_ms, message)`` of the rows stored after ``seq``, oldest first
        (the incremental backup's cursor)."""
        rows = self._db.execute(
            "SELECT id, peer, direction, ts_ms, status, body, seq, stored_ms FROM messages "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [(int(r[6]), int(r[7]), self._message(r)) for r in rows]

    def last_seq(self) -> int:
        """The insertion counter of the newest message row (0 when empty)."""
        return self._seq

    def sender_key_rows(self) -> list[tuple[str, str, int, bytes]]:
        """Every stored sender key record ``(group, address, device, record)``."""
        rows = self._db.execute(
            "SELECT group_id, address, device_id, record FROM group_sender_keys "
            "ORDER BY group_id, address, device_id"
        ).fetchall()
        return [
            (
                str(g),
                str(a),
                int(d),
                self.unseal("group_sender_keys", "record", f"{g}:{a}:{d}", rec),
            )
            for g, a, d, rec in rows
        ]

    # --- dedup of non-message content ---------------------------------------------------

    def mark_seen(self, peer: str, content_id: str, now_ms: int) -> bool:
        """Record a processed content id from ``peer``; False if seen before."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO seen (peer, id, seen_ms) VALUES (?, ?, ?)",
            (peer, content_id, now_ms),
        )
        return cur.rowcount == 1

    # --- delivery receipts owed (PROTOCOL Part IV §3.6) ----------------------------------------

    def add_pending_receipt(self, peer: str, msg_id: str, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO pending_receipts (peer, id, queued_ms) VALUES (?, ?, ?)",
            (peer, msg_id, now_ms),
        )

    def pending_receipts(self, peer: str, limit: int = 1024) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM pending_receipts WHERE peer = ? ORDER BY queued_ms, rowid LIMIT ?",
            (peer, limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def receipt_peers(self) -> list[str]:
        """Senders we still owe at least one receipt."""
        rows = self._db.execute("SELECT DISTINCT peer FROM pending_receipts ORDER BY peer")
        return [str(r[0]) for r in rows.fetchall()]

    def delete_pending_receipts(self, peer: str, ids: list[str] | None = None) -> None:
        """Forget receipts owed to ``peer``: the given ids (sent), or all of them."""
        if ids is None:
            self._db.execute("DELETE FROM pending_receipts WHERE peer = ?", (peer,))
            return
        self._db.executemany(
            "DELETE FROM pending_receipts WHERE peer = ? AND id = ?", [(peer, i) for i in ids]
        )


def _aad(table: str, column: str, row_key: str) -> bytes:
    return b"XChat-v1-store|" + f"{table}|{column}|{row_key}".encode()
