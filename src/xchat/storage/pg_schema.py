"""Versioned PostgreSQL schema of the scaled-out relay (PROTOCOL.md Part III §8).

The tables mirror the SQLite schema (``migrations.py``) column for column, so
``xchat admin migrate`` can copy a single node's database table by table and a test suite
can run unchanged against both backends. ``PG_MIGRATIONS[i]`` upgrades version ``i`` to
``i + 1``; the applied version is kept in ``schema_version``. Append; never edit an applied
migration. Several nodes may start at once: migrations run under an advisory lock.
"""

from __future__ import annotations

from typing import Any

#: Arbitrary constant: the advisory lock that serialises schema migrations between nodes.
MIGRATION_LOCK = 0x7863_6861_7401

PG_MIGRATIONS: list[str] = [
    # 0 -> 1: the schema of SQLite migrations 1 and 2, plus blob metadata.
    """
    CREATE TABLE accounts (
        address      TEXT PRIMARY KEY,
        identity_key BYTEA NOT NULL,
        handle       TEXT UNIQUE,
        skeleton     TEXT UNIQUE,
        token_hash   BYTEA,
        created_ms   BIGINT NOT NULL
    );
    CREATE TABLE devices (
        ref        BIGSERIAL PRIMARY KEY,
        address    TEXT NOT NULL REFERENCES accounts(address),
        device_id  INTEGER NOT NULL,
        epoch      INTEGER NOT NULL,
        created_ms BIGINT NOT NULL,
        spk_id BIGINT, spk_key BYTEA, spk_sig BYTEA,
        lr_id  BIGINT, lr_key  BYTEA, lr_sig  BYTEA,
        UNIQUE (address, device_id)
    );
    CREATE TABLE otk_ec (
        device_ref BIGINT NOT NULL,
        id         BIGINT NOT NULL,
        key        BYTEA NOT NULL,
        PRIMARY KEY (device_ref, id)
    );
    CREATE TABLE otk_kem (
        device_ref BIGINT NOT NULL,
        id         BIGINT NOT NULL,
        key        BYTEA NOT NULL,
        sig        BYTEA NOT NULL,
        PRIMARY KEY (device_ref, id)
    );
    CREATE TABLE mailbox (
        seq         BIGSERIAL PRIMARY KEY,
        device_ref  BIGINT NOT NULL,
        envelope_id BYTEA NOT NULL,
        ts_ms       BIGINT NOT NULL,
        expires_ms  BIGINT NOT NULL,
        content     BYTEA NOT NULL
    );
    CREATE UNIQUE INDEX mailbox_device_envelope ON mailbox (device_ref, envelope_id);
    CREATE INDEX mailbox_device_seq ON mailbox (device_ref, seq);
    CREATE INDEX mailbox_expires ON mailbox (expires_ms);
    CREATE TABLE used_challenges (
        challenge  BYTEA PRIMARY KEY,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE blobs (
        id         TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        size       BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX blobs_owner ON blobs (owner);
    CREATE INDEX blobs_expires ON blobs (expires_ms);
    """,
    # 1 -> 2: operator settings changed at run time (``xchat admin pow``).
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2 -> 3: the account's signed device list (SQLite migration 4, PROTOCOL Part VII §2).
    """
    CREATE TABLE device_lists (
        address       TEXT PRIMARY KEY,
        version       BIGINT NOT NULL,
        list          BYTEA NOT NULL,
        max_device_id INTEGER NOT NULL
    );
    """,
]

#: Sequences to move past copied ids after ``xchat admin migrate`` (table, column).
SERIALS: tuple[tuple[str, str], ...] = (("devices", "ref"), ("mailbox", "seq"))


async def migrate(conn: Any) -> int:
    """Bring the schema to the latest version (each migration in its own transaction,
    all under one advisory lock so concurrent node starts do not race); return it."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0
        if version > len(PG_MIGRATIONS):
            raise RuntimeError(f"database schema v{version} is newer than this server")
        for target in range(version + 1, len(PG_MIGRATIONS) + 1):
            async with conn.transaction():
                await conn.execute(PG_MIGRATIONS[target - 1])
                await conn.execute("UPDATE schema_version SET version = $1", target)
        return len(PG_MIGRATIONS)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
