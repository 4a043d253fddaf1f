"""``xchat admin``: operator commands for a relay's data (docs/operations.md).

They work on the relay's storage directly — ``--data DIR`` (SQLite) or ``--database
postgresql://...`` — so they need the machine's access to it, not a network API:

- ``stats``: aggregate counts only (accounts, devices, handles, queued envelopes and bytes,
  one-time prekeys, blobs). Never content, never who talks to whom: the relay does not
  store the latter, and this command does not print a single address.
- ``pow BITS``: the proof-of-work difficulty, persisted; every node of a PostgreSQL
  deployment applies it at once (NOTIFY), a SQLite relay at its next start.
- ``release-handle HANDLE``: free a handle (abuse, impersonation) without touching the
  account; on PostgreSQL the nodes drop it from their caches at once.
- ``backup --out FILE`` / ``restore --from FILE``: a node's SQLite data as one tar file made
  with SQLite's online backup API (consistent while the relay runs), plus the server keys
  and blob files. PostgreSQL deployments use ``pg_dump`` / ``pg_restore`` (documented).
- ``migrate --to postgresql://...``: copy a single SQLite node into PostgreSQL, table by
  table, keeping every id, then check the row counts (the relay must be stopped).

Errors are one line on stderr with exit status 2 (bad input) or 1 (the operation failed).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import click

SECRET_FILES = ("server_mac.key", "server_signing.key")


class AdminError(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"xchat admin: {self.message}", err=True)


def _target(data: Path | None, database: str | None) -> tuple[Path | None, str | None]:
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            raise click.UsageError("--database must be a postgresql:// URL")
        return None, database
    data = data or Path(os.environ.get("XCHAT_DATA", "xchat-data"))
    if not (data / "xchat.db").exists():
        raise AdminError(f"no relay database at {data / 'xchat.db'}")
    return data, None


def _sqlite(data: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(data / "xchat.db", timeout=10, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _pg(dsn: str, coro: Any) -> Any:
    import asyncpg

    async def run() -> Any:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            raise AdminError(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            return await coro(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


STATS_SQL = {
    "accounts": "SELECT COUNT(*) FROM accounts",
    "devices": "SELECT COUNT(*) FROM devices",
    "handles": "SELECT COUNT(*) FROM accounts WHERE handle IS NOT NULL",
    "queued_envelopes": "SELECT COUNT(*) FROM mailbox",
    "queued_bytes": "SELECT COALESCE(SUM(length(content)), 0) FROM mailbox",
    "one_time_prekeys": "SELECT (SELECT COUNT(*) FROM otk_ec) + (SELECT COUNT(*) FROM otk_kem)",
}


@click.group("admin")
def admin_group() -> None:
    """Operator commands (stats, proof of work, handles, backup, migration)."""


_data_opt = click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Relay data directory (SQLite) [XCHAT_DATA, ./xchat-data].",
)  # fmt: skip
_db_opt = click.option("--database", default=None, help="postgresql://... (scaled out).")


@admin_group.command("stats")
@_data_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True)
def stats(data: Path | None, database: str | None, as_json: bool) -> None:
    """Aggregate counts: never content, never an address, never who talks to whom."""
    data, dsn = _target(data, database)
    out: dict[str, Any] = {}
    if dsn:

        async def q(conn: Any) -> None:
            for k, sql in STATS_SQL.items():
                out[k] = int(await conn.fetchval(sql))
            out["blobs"] = int(await conn.fetchval("SELECT COUNT(*) FROM blobs"))
            out["blob_bytes"] = int(await conn.fetchval("SELECT COALESCE(SUM(size),0) FROM blobs"))
            row = await conn.fetchrow("SELECT value FROM settings WHERE key = 'pow_bits'")
            out["pow_bits_setting"] = int(row[0]) if row else None

        _pg(dsn, q)
    else:
        assert data is not None
        conn = _sqlite(data)
        try:
            for k, sql in STATS_SQL.items():
                out[k] = int(conn.execute(sql).fetchone()[0])
            row = conn.execute("SELECT value FROM settings WHERE key = 'pow_bits'").fetchone()
            out["pow_bits_setting"] = int(row[0]) if row else None
        except sqlite3.OperationalError as exc:
            raise AdminError(f"cannot read {data / 'xchat.db'}: {exc}") from None
        finally:
            conn.close()
        index = data / "blobs" / "index.sqlite3"
        out["blobs"] = out["blob_bytes"] = 0
        if index.exists():
            b = sqlite3.connect(index)
            out["blobs"], out["blob_bytes"] = b.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs"
            ).fetchone()
            b.close()
    if as_json:
        click.echo(json.dumps(out))
    else:
        for k, v in out.items():
            click.echo(f"{k:18} {v}")


@admin_group.command("pow")
@click.argument("level", type=click.IntRange(0, 40), required=False)
@click.option("--bits", type=click.IntRange(0, 40), default=None, help="Same as LEVEL.")
@_data_opt
@_db_opt
def pow_level(level: int | None, bits: int | None, data: Path | None, database: str | None) -> None:
    """Set the proof-of-work difficulty (0-40 bits) for registration and first contact."""
    if level is None and bits is None:
        raise click.UsageError("give the level: xchat admin pow 22 (or --bits 22)")
    bits = level if level is not None else bits
    assert bits is not None
    data, dsn = _target(data, database)
    if dsn:

        async def q(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO settings (key, value) VALUES ('pow_bits', $1)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    str(bits),
                )
                await conn.execute("SELECT pg_notify('xchat_settings', $1)", f"pow_bits={bits}")

        _pg(dsn, q)
        click.echo(f"pow_bits = {bits} (applied by every running node)")
        return
    assert data is not None
    conn = _sqlite(data)
    try:
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('pow_bits', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(bits),),
        )
    except sqlite3.OperationalError as exc:
        raise AdminError(f"cannot write {data / 'xchat.db'}: {exc}") from None
    finally:
        conn.close()
    click.echo(f"pow_bits = {bits} (applied when the relay next starts)")


@admin_group.command("release-handle")
@click.argument("handle")
@_data_opt
@_db_opt
def release_handle(handle: str, data: Path | None, database: str | None) -> None:
    """Free HANDLE (the account keeps its address, keys and mail)."""
    h = handle.strip().lstrip("@").lower()
    data, dsn = _target(data, database)
    if dsn:

        async def q(conn: Any) -> str | None:
            async with conn.transaction():
                addr = await conn.fetchval(
                    "UPDATE accounts SET handle = NULL, skeleton = NULL WHERE handle = $1"
                    " RETURNING address",
                    h,
                )
                if addr is not None:
                    await conn.execute("SELECT pg_notify('xchat_directory', $1)", addr)
                return str(addr) if addr is not None else None

        found = _pg(dsn, q)
        note = "every running node drops it now"
    else:
        assert data is not None
        conn = _sqlite(data)
        try:
            cur = conn.execute(
                "UPDATE accounts SET handle = NULL, skeleton = NULL WHERE handle = ?", (h,)
            )
            found = "x" if cur.rowcount else None
        finally:
            conn.close()
        note = "restart the relay to drop it from its cache"
    if found is None:
        raise AdminError(f"no account holds the handle {h!r}")
    click.echo(f"released @{h} ({note})")


@admin_group.command("backup")
@_data_opt
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def backup(data: Path | None, out: Path) -> None:
    """Back up a SQLite node (safe while it runs): database, blob index and files, keys."""
    data, _ = _target(data, None)
    assert data is not None
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "xchat.db"
        _online_copy(data / "xchat.db", snap)
        index = data / "blobs" / "index.sqlite3"
        with tarfile.open(out, "w:gz") as tar:
            tar.add(snap, "xchat.db")
            for name in SECRET_FILES:
                if (data / name).exists():
                    tar.add(data / name, name)
            if index.exists():
                isnap = Path(tmp) / "index.sqlite3"
                _online_copy(index, isnap)
                tar.add(isnap, "blobs/index.sqlite3")
                for f in sorted((data / "blobs").glob("??/*")):
                    tar.add(f, f"blobs/{f.parent.name}/{f.name}")
            manifest = json.dumps({"format": "xchat-backup-1"}).encode()
            info = tarfile.TarInfo("MANIFEST.json")
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
    os.chmod(out, 0o600)
    click.echo(f"backup written to {out}")


def _online_copy(src: Path, dst: Path) -> None:
    """SQLite's online backup API: a consistent copy even while the relay writes."""
    s = sqlite3.connect(src, timeout=10)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


@admin_group.command("restore")
@click.option("--from", "src", type=click.Path(dir_okay=False, path_type=Path), required=True)
@_data_opt
def restore(src: Path, data: Path | None) -> None:
    """Restore a backup into an EMPTY data directory (the relay stopped)."""
    data = data or Path(os.environ.get("XCHAT_DATA", "xchat-data"))
    if data.exists() and any(data.iterdir()):
        raise AdminError(f"{data} is not empty: restore into a new directory")
    try:
        with tarfile.open(src, "r:gz") as tar:
            names = tar.getnames()
            if "MANIFEST.json" not in names or "xchat.db" not in names:
                raise AdminError(f"{src} is not an xchat backup")
            data.mkdir(parents=True, exist_ok=True)
            tar.extractall(data, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise AdminError(f"cannot read {src}: {exc}") from None
    (data / "MANIFEST.json").unlink()
    for name in SECRET_FILES:
        if (data / name).exists():
            os.chmod(data / name, 0o600)
    click.echo(f"restored into {data}; start the relay with --data {data}")


@admin_group.command("migrate")
@_data_opt
@click.option("--to", "dsn", required=True, help="postgresql://... (an empty database)")
def migrate(data: Path | None, dsn: str) -> None:
    """Copy a stopped SQLite node into PostgreSQL; nothing is left behind."""
    from xchat.ops.migrate import MigrationError, migrate_sqlite_to_postgres

    data, _ = _target(data, None)
    assert data is not None
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--to must be a postgresql:// URL")
    try:
        counts = asyncio.run(migrate_sqlite_to_postgres(data, dsn))
    except MigrationError as exc:
        raise AdminError(str(exc)) from None
    for table, n in counts.items():
        click.echo(f"{table:18} {n} rows")
    click.echo(
        f"migrated {data} to PostgreSQL; start the nodes with --data {data} --database <url>"
    )
