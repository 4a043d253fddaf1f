"""SQL of the PostgreSQL store (``postgres.py``): statements and the helpers that run them.

Split from the store so that the store module holds the concurrency logic (group commit,
directory cache, LISTEN/NOTIFY) and this one the queries, each usable on any asyncpg
connection inside the writer's transaction.
"""

from __future__ import annotations

from typing import Any

from xchat.storage.base import BundleDevice, DeviceRecord, NewEnvelope, PreKeySet, SignedKey

Conn = Any  # asyncpg.Connection (untyped library)

INSERT_SQL = (
    "INSERT INTO mailbox (device_ref, envelope_id, ts_ms, expires_ms, content)"
    " SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bytea[])"
    " ON CONFLICT (device_ref, envelope_id) DO NOTHING"
    " RETURNING seq, device_ref, envelope_id, length(content)"
)
DELETE_SQL = (
    "DELETE FROM mailbox AS m USING unnest($1::int[], $2::bigint[], $3::bytea[]) AS v(i, r, e)"
    " WHERE m.device_ref = v.r AND m.envelope_id = v.e RETURNING v.i, v.r, length(m.content)"
)
#: Both in one statement (the hot path): kind 0 = inserted, 1 = deleted.
COMBINED_SQL = (
    "WITH ins AS (INSERT INTO mailbox (device_ref, envelope_id, ts_ms, expires_ms, content)"
    " SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bytea[])"
    " ON CONFLICT (device_ref, envelope_id) DO NOTHING"
    " RETURNING seq, device_ref, envelope_id, length(content) AS n),"
    " del AS (DELETE FROM mailbox AS m USING unnest($6::int[], $7::bigint[], $8::bytea[])"
    " AS v(i, r, e) WHERE m.device_ref = v.r AND m.envelope_id = v.e"
    " RETURNING v.i, v.r, length(m.content) AS n)"
    " SELECT 0, seq, device_ref, envelope_id, n FROM ins"
    " UNION ALL SELECT 1, i::bigint, r, NULL::bytea, n FROM del"
)


def enqueue_args(
    batches: list[list[NewEnvelope]],
) -> tuple[list[int], list[bytes], list[int], list[int], list[bytes]]:
    """The column arrays of INSERT_SQL / COMBINED_SQL ($1..$5) for these envelopes."""
    refs: list[int] = []
    eids: list[bytes] = []
    ts: list[int] = []
    exp: list[int] = []
    content: list[bytes] = []
    for envelopes in batches:
        for env in envelopes:
            refs.append(env.device_ref)
            eids.append(env.envelope_id)
            ts.append(env.ts_ms)
            exp.append(env.expires_ms)
            content.append(env.content)
    return refs, eids, ts, exp, content


def ack_args(acks: list[tuple[int, list[bytes]]]) -> tuple[list[int], list[int], list[bytes]]:
    """The arrays of DELETE_SQL ($1..$3, or $6..$8 of COMBINED_SQL): op index, ref, id."""
    idx: list[int] = []
    refs: list[int] = []
    eids: list[bytes] = []
    for i, (ref, ids) in enumerate(acks):
        for eid in ids:
            idx.append(i)
            refs.append(ref)
            eids.append(eid)
    return idx, refs, eids


async def mailbox_usage(conn: Conn) -> dict[int, tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT device_ref, COUNT(*), SUM(length(content)) FROM mailbox GROUP BY device_ref"
    )
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


async def notify(conn: Conn, channel: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


async def put_keys(conn: Conn, ref: int, keys: PreKeySet) -> None:
    if keys.signed_prekey is not None:
        k = keys.signed_prekey
        await conn.execute(
            "UPDATE devices SET spk_id = $1, spk_key = $2, spk_sig = $3 WHERE ref = $4",
            k.id,
            k.key,
            k.signature,
            ref,
        )
    if keys.kem_last_resort is not None:
        k = keys.kem_last_resort
        await conn.execute(
            "UPDATE devices SET lr_id = $1, lr_key = $2, lr_sig = $3 WHERE ref = $4",
            k.id,
            k.key,
            k.signature,
            ref,
        )
    if keys.one_time_ec:
        await conn.execute(
            "INSERT INTO otk_ec (device_ref, id, key)"
            " SELECT $1, * FROM unnest($2::bigint[], $3::bytea[]) ON CONFLICT DO NOTHING",
            ref,
            [k.id for k in keys.one_time_ec],
            [k.key for k in keys.one_time_ec],
        )
    if keys.one_time_kem:
        await conn.execute(
            "INSERT INTO otk_kem (device_ref, id, key, sig)"
            " SELECT $1, * FROM unnest($2::bigint[], $3::bytea[], $4::bytea[])"
            " ON CONFLICT DO NOTHING",
            ref,
            [k.id for k in keys.one_time_kem],
            [k.key for k in keys.one_time_kem],
            [k.signature for k in keys.one_time_kem],
        )


async def count_prekeys(conn: Conn, ref: int) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT COUNT(*) FROM otk_ec WHERE device_ref = $1),"
        " (SELECT COUNT(*) FROM otk_kem WHERE device_ref = $1)",
        ref,
    )
    return int(row[0]), int(row[1])


async def take_one(conn: Conn, dev: DeviceRecord, one_time: bool = True) -> BundleDevice:
    """One bundle; the one-time keys are taken with ``FOR UPDATE SKIP LOCKED`` so two nodes
    handing out bundles of the same device at once never hand out the same key."""
    row = await conn.fetchrow(
        "SELECT spk_id, spk_key, spk_sig, lr_id, lr_key, lr_sig FROM devices WHERE ref = $1",
        dev.ref,
    )
    spk = SignedKey(row[0], bytes(row[1]), bytes(row[2])) if row and row[1] is not None else None
    last_resort = (
        SignedKey(row[3], bytes(row[4]), bytes(row[5])) if row and row[4] is not None else None
    )
    ec_row = kem_row = None
    if one_time:  # False: the per-target drain limit (PROTOCOL Part III §4.3)
        ec_row = await conn.fetchrow(
            "DELETE FROM otk_ec WHERE device_ref = $1 AND id = (SELECT id FROM otk_ec WHERE"
            " device_ref = $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, key",
            dev.ref,
        )
        kem_row = await conn.fetchrow(
            "DELETE FROM otk_kem WHERE device_ref = $1 AND id = (SELECT id FROM otk_kem"
            " WHERE device_ref = $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, key, sig",
            dev.ref,
        )
    ec_left, kem_left = await count_prekeys(conn, dev.ref)
    return BundleDevice(
        device=dev,
        signed_prekey=spk,
        kem_prekey=SignedKey(kem_row[0], bytes(kem_row[1]), bytes(kem_row[2]))
        if kem_row
        else last_resort,
        kem_last_resort=kem_row is None,
        one_time_ec=SignedKey(ec_row[0], bytes(ec_row[1])) if ec_row else None,
        ec_left=ec_left,
        kem_left=kem_left,
    )
