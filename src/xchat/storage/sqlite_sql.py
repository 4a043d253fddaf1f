"""The SQL of the SQLite store (:mod:`xchat.storage.sqlite`): multi-row mailbox statements
and the directory's row helpers. Each function runs on the writer thread's connection inside
the current group commit; none commits or touches the event loop, so the store's module keeps
only the writer (queue, group commit, futures) and this one only what the rows look like."""

from __future__ import annotations

import sqlite3
from typing import Any

from xchat.storage.base import BundleDevice, DeviceRecord, PreKeySet, SignedKey

#: Multi-row statement templates (``{}`` = the VALUES rows). One statement per chunk
#: instead of ``executemany``'s one sqlite3_step per row: each step releases and re-takes
#: the GIL, and every such hand-off to and from the event-loop thread costs both threads a
#: futex wake-up and, on a busy machine, a wait for a core (issue #20 measured 4-16
#: voluntary context switches per group commit). A run of rows is padded up to a power of
#: two with copies of its last row (harmless: the copy of an INSERT OR IGNORE row collides
#: with itself and is skipped, a repeated key matches the same mailbox row once), so a
#: run of up to 256 rows is ONE statement and the nine sizes stay in the statement cache.
_INSERT_SQL = (
    "INSERT OR IGNORE INTO mailbox (seq, device_ref, envelope_id, ts_ms, expires_ms, content)"
    " VALUES {}",
    "(?,?,?,?,?,?)",
)
# The join form uses the (device_ref, envelope_id) index; "(a, b) IN (VALUES ...)" scans.
_MATCHED = (
    "SELECT m.seq FROM (VALUES {}) AS v"
    " JOIN mailbox AS m ON m.device_ref = v.column1 AND m.envelope_id = v.column2"
)
#: What a delete will remove, per device, as ONE row (the mailbox quota's accounting):
#: ``DELETE ... RETURNING`` would hand back one row per envelope, one GIL hand-off each.
_GONE_SQL = (
    "SELECT group_concat(device_ref || ',' || n || ',' || size, ';') FROM"
    " (SELECT device_ref, COUNT(*) AS n, SUM(LENGTH(content)) AS size FROM mailbox"
    f" WHERE seq IN ({_MATCHED}) GROUP BY device_ref)",
    "(?,?)",
)
_DELETE_SQL = (f"DELETE FROM mailbox WHERE seq IN ({_MATCHED})", "(?,?)")
_MAX_ROWS = 256
_sql_cache: dict[tuple[str, int], str] = {}


def _chunks(rows: list[tuple[Any, ...]]) -> list[tuple[int, list[Any]]]:
    """``(size, parameters)`` per statement: chunks of up to _MAX_ROWS rows, each padded to
    a power of two with copies of its last row (see above)."""
    out = []
    for i in range(0, len(rows), _MAX_ROWS):
        part = rows[i : i + _MAX_ROWS]
        size = 1 << (len(part) - 1).bit_length()
        if size > len(part):
            part = part + [part[-1]] * (size - len(part))
        out.append((size, [v for row in part for v in row]))
    return out


def _sql(template: tuple[str, str], size: int) -> str:
    sql = _sql_cache.get((template[0], size))
    if sql is None:
        sql = template[0].format(",".join([template[1]] * size))
        _sql_cache[(template[0], size)] = sql
    return sql


def insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for size, params in _chunks(rows):
        conn.execute(_sql(_INSERT_SQL, size), params)


def delete_rows(
    conn: sqlite3.Connection, keys: list[tuple[int, bytes]]
) -> list[tuple[int, int, int]]:
    """Delete the mailbox rows with these ``(device_ref, envelope_id)`` keys; return
    ``(device_ref, envelopes, bytes)`` per device of what was deleted."""
    out: list[tuple[int, int, int]] = []
    for size, params in _chunks(keys):
        gone = conn.execute(_sql(_GONE_SQL, size), params).fetchone()[0]
        if not gone:
            continue
        conn.execute(_sql(_DELETE_SQL, size), params)
        for item in gone.split(";"):
            ref, n, nbytes = item.split(",")
            out.append((int(ref), int(n), int(nbytes)))
    return out


def put_list(
    conn: sqlite3.Connection, address: str, version: int, blob: bytes, device_id: int
) -> None:
    """Upsert the device list; ``max_device_id`` only grows (ids are never reused)."""
    conn.execute(
        "INSERT INTO device_lists (address, version, list, max_device_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (address) DO UPDATE SET version = excluded.version, list = excluded.list,"
        " max_device_id = MAX(device_lists.max_device_id, excluded.max_device_id)",
        (address, version, blob, device_id),
    )


def put_keys(conn: sqlite3.Connection, ref: int, keys: PreKeySet) -> None:
    if keys.signed_prekey is not None:
        k = keys.signed_prekey
        conn.execute(
            "UPDATE devices SET spk_id = ?, spk_key = ?, spk_sig = ? WHERE ref = ?",
            (k.id, k.key, k.signature, ref),
        )
    if keys.kem_last_resort is not None:
        k = keys.kem_last_resort
        conn.execute(
            "UPDATE devices SET lr_id = ?, lr_key = ?, lr_sig = ? WHERE ref = ?",
            (k.id, k.key, k.signature, ref),
        )
    conn.executemany(
        "INSERT OR IGNORE INTO otk_ec (device_ref, id, key) VALUES (?, ?, ?)",
        [(ref, k.id, k.key) for k in keys.one_time_ec],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO otk_kem (device_ref, id, key, sig) VALUES (?, ?, ?, ?)",
        [(ref, k.id, k.key, k.signature) for k in keys.one_time_kem],
    )


def count_prekeys(conn: sqlite3.Connection, ref: int) -> tuple[int, int]:
    ec = conn.execute("SELECT COUNT(*) FROM otk_ec WHERE device_ref = ?", (ref,)).fetchone()[0]
    kem = conn.execute("SELECT COUNT(*) FROM otk_kem WHERE device_ref = ?", (ref,)).fetchone()[0]
    return int(ec), int(kem)


def take_one(conn: sqlite3.Connection, dev: DeviceRecord, one_time: bool = True) -> BundleDevice:
    row = conn.execute(
        "SELECT spk_id, spk_key, spk_sig, lr_id, lr_key, lr_sig FROM devices WHERE ref = ?",
        (dev.ref,),
    ).fetchone()
    spk = SignedKey(row[0], row[1], row[2]) if row and row[1] is not None else None
    last_resort = SignedKey(row[3], row[4], row[5]) if row and row[4] is not None else None
    ec_row = kem_row = None
    if one_time:
        ec_row = conn.execute(
            "DELETE FROM otk_ec WHERE device_ref = ? AND id = "
            "(SELECT MIN(id) FROM otk_ec WHERE device_ref = ?) RETURNING id, key",
            (dev.ref, dev.ref),
        ).fetchone()
        kem_row = conn.execute(
            "DELETE FROM otk_kem WHERE device_ref = ? AND id = "
            "(SELECT MIN(id) FROM otk_kem WHERE device_ref = ?) RETURNING id, key, sig",
            (dev.ref, dev.ref),
        ).fetchone()
    ec_left, kem_left = count_prekeys(conn, dev.ref)
    return BundleDevice(
        device=dev,
        signed_prekey=spk,
        kem_prekey=SignedKey(*kem_row) if kem_row else last_resort,
        kem_last_resort=kem_row is None,
        one_time_ec=SignedKey(ec_row[0], ec_row[1]) if ec_row else None,
        ec_left=ec_left,
        kem_left=kem_left,
    )
