"""``xchat admin migrate``: a single SQLite node into PostgreSQL, nothing lost.

Why table by table and column by column: the PostgreSQL schema (``storage/pg_schema.py``)
mirrors the SQLite one name for name, so the copy is generic — a table another feature adds
to both schemas is carried without code here — and it refuses, before writing anything,
when a non-empty SQLite table or column has no PostgreSQL counterpart (that data would be
lost). Ids are kept (device refs are inside every bearer token, mailbox seqs order the
queues), the sequences are moved past them, and the row counts are compared at the end.
One transaction: a failed migration leaves the target as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from xchat.storage.migrations import migrate as migrate_sqlite
from xchat.storage.pg_schema import SERIALS
from xchat.storage.pg_schema import migrate as migrate_pg

SKIP = {"schema_version", "sqlite_sequence", "sqlite_stat1"}


class MigrationError(Exception):
    """The migration was refused or failed; the target database is unchanged."""


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return [r[0] for r in rows if r[0] not in SKIP and not r[0].startswith("sqlite_")]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


async def migrate_sqlite_to_postgres(data: Path, dsn: str) -> dict[str, int]:
    db = data / "xchat.db"
    if not db.exists():
        raise MigrationError(f"no relay database at {db}")
    src = sqlite3.connect(db, timeout=10)
    try:
        migrate_sqlite(src)  # the node may predate the latest SQLite schema
        sources: list[tuple[str, sqlite3.Connection]] = [(t, src) for t in _tables(src)]
        index_db = data / "blobs" / "index.sqlite3"
        index = sqlite3.connect(index_db) if index_db.exists() else None
        if index is not None:
            sources.append(("blobs", index))
        try:
            return await _copy(sources, dsn)
        finally:
            if index is not None:
                index.close()
    finally:
        src.close()


async def _copy(sources: list[tuple[str, sqlite3.Connection]], dsn: str) -> dict[str, int]:
    try:
        conn: Any = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(f"cannot connect to PostgreSQL: {exc}") from None
    try:
        await migrate_pg(conn)
        pg_cols: dict[str, set[str]] = {}
        for r in await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        ):
            pg_cols.setdefault(r[0], set()).add(r[1])
        plan: list[tuple[str, sqlite3.Connection, list[str], int]] = []
        for table, sconn in sources:
            n = int(sconn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
            if table not in pg_cols:
                if n:
                    raise MigrationError(
                        f"table {table} has {n} rows and no PostgreSQL counterpart;"
                        " nothing was migrated"
                    )
                continue
            cols = _columns(sconn, table)
            lost = [c for c in cols if c not in pg_cols[table]]
            for c in lost:
                used = sconn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "{c}" IS NOT NULL')
                if used.fetchone()[0]:
                    raise MigrationError(
                        f"column {table}.{c} has data and no PostgreSQL counterpart;"
                        " nothing was migrated"
                    )
            if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
                raise MigrationError(f"the target table {table} is not empty")
            plan.append((table, sconn, [c for c in cols if c in pg_cols[table]], n))
        counts: dict[str, int] = {}
        async with conn.transaction():
            for table, sconn, cols, _ in plan:
                quoted = ", ".join(f'"{c}"' for c in cols)
                records = sconn.execute(f'SELECT {quoted} FROM "{table}"').fetchall()
                if records:
                    await conn.copy_records_to_table(table, records=records, columns=cols)
                counts[table] = len(records)
            for table, col in SERIALS:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'),"
                    f" COALESCE((SELECT MAX({col}) FROM {table}), 0) + 1, false)"
                )
            for table, _, _, n in plan:
                got = int(await conn.fetchval(f'SELECT COUNT(*) FROM "{table}"'))
                if got != n:
                    raise MigrationError(f"{table}: copied {got} of {n} rows; rolled back")
        return counts
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"PostgreSQL refused the copy: {exc}") from None
    finally:
        await conn.close()
