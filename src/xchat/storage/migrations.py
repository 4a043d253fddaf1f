"""Versioned SQLite schema (PROTOCOL.md Part III §8).

``MIGRATIONS[i]`` upgrades the schema from version ``i`` to ``i + 1``; the applied version is
kept in ``schema_version``. Append new migrations; never edit an applied one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 0 -> 1: initial schema.
    """
    CREATE TABLE accounts (
        address      TEXT PRIMARY KEY,
        identity_key BLOB NOT NULL,
        handle       TEXT UNIQUE,
        skeleton     TEXT UNIQUE,
        token_hash   BLOB,
        created_ms   INTEGER NOT NULL
    );
    CREATE TABLE devices (
        ref        INTEGER PRIMARY KEY,
        address    TEXT NOT NULL REFERENCES accounts(address),
        device_id  INTEGER NOT NULL,
        epoch      INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        spk_id INTEGER, spk_key BLOB, spk_sig BLOB,
        lr_id  INTEGER, lr_key  BLOB, lr_sig  BLOB,
        UNIQUE (address, device_id)
    );
    CREATE TABLE otk_ec (
        device_ref INTEGER NOT NULL,
        id         INTEGER NOT NULL,
        key        BLOB NOT NULL,
        PRIMARY KEY (device_ref, id)
    ) WITHOUT ROWID;
    CREATE TABLE otk_kem (
        device_ref INTEGER NOT NULL,
        id         INTEGER NOT NULL,
        key        BLOB NOT NULL,
        sig        BLOB NOT NULL,
        PRIMARY KEY (device_ref, id)
    );
    CREATE TABLE mailbox (
        seq         INTEGER PRIMARY KEY,
        device_ref  INTEGER NOT NULL,
        envelope_id BLOB NOT NULL,
        ts_ms       INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        content     BLOB NOT NULL
    );
    CREATE UNIQUE INDEX mailbox_device_envelope ON mailbox (device_ref, envelope_id);
    CREATE INDEX mailbox_device_seq ON mailbox (device_ref, seq);
    """,
    # 1 -> 2: used single-use challenges survive a restart (PROTOCOL Part III §3).
    """
    CREATE TABLE used_challenges (
        challenge  BLOB PRIMARY KEY,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2 -> 3: operator settings (``xchat admin pow``), read when the relay starts.
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3 -> 4: the account's signed device list, opaque to the relay (PROTOCOL Part VII §2).
    """
    CREATE TABLE device_lists (
        address       TEXT PRIMARY KEY,
        version       INTEGER NOT NULL,
        list          BLOB NOT NULL,
        max_device_id INTEGER NOT NULL
    );
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the latest version, one transaction per migration; return it."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0
    else:
        version = int(row[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema v{version} is newer than this server")
    for target in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (target,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
