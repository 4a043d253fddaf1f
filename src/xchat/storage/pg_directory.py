"""The account directory of the PostgreSQL store: its in-memory cache and its writes.

Split from ``postgres.py`` by concept: that module holds the concurrency machinery (the
group-commit writer, LISTEN/NOTIFY, the mailbox); this one what the directory *is* —
accounts, handles, devices, prekeys and device lists — and how a committed change is
installed into this node's cache (the cache answers ``get_account`` without I/O on the hot
path). :class:`PgDirectory` is the part of :class:`~xchat.storage.postgres.PostgresStore`
that does this; it runs every statement through the store's writer (:meth:`_call`), so
directory writes join the same group commit as sends.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg

from xchat.storage import pg_sql as q
from xchat.storage.base import (
    AccountRecord,
    BundleDevice,
    DeviceRecord,
    HandleTaken,
    PreKeySet,
    Store,
)
from xchat.storage.pg_sql import Conn

#: NOTIFY channel of directory changes; the payload is the account's address.
DIRECTORY_CHANNEL = "xchat_directory"

_AccountRows = tuple[AccountRecord, list[DeviceRecord]] | None


class PgDirectory(Store):
    """Directory cache and directory writes of :class:`PostgresStore` (which sets the
    attributes below in its ``__init__`` and provides the writer)."""

    _accounts: dict[str, AccountRecord]
    _handles: dict[str, str]
    _devices: dict[int, DeviceRecord]
    #: Bumped on every change of the directory cache (see ``PostgresStore.sync``).
    generation: int

    @abc.abstractmethod
    async def _call(
        self,
        fn: Callable[[Conn], Awaitable[Any]],
        after_commit: Callable[[Any], object] | None = None,
    ) -> Any:
        """Run ``fn`` in the writer's next transaction; ``after_commit`` gets its result
        once COMMIT returned (the store's group commit)."""

    # --- directory cache ---

    async def _load_directory(self, conn: Conn) -> None:
        accounts = await conn.fetch(
            "SELECT address, identity_key, handle, token_hash FROM accounts"
        )
        devices = await conn.fetch(
            "SELECT ref, address, device_id, epoch FROM devices ORDER BY address, device_id"
        )
        by_address: dict[str, list[DeviceRecord]] = {}
        for r in devices:
            by_address.setdefault(r[1], []).append(DeviceRecord(r[0], r[1], r[2], r[3]))
        seen = set()
        for r in accounts:
            seen.add(r[0])
            acct = AccountRecord(
                r[0], bytes(r[1]), r[2], bytes(r[3]) if r[3] is not None else None, ()
            )
            self._apply(acct, by_address.get(r[0], []))
        for address in [a for a in self._accounts if a not in seen]:
            self._apply_gone(address)

    def _apply(self, acct: AccountRecord, devices: list[DeviceRecord]) -> bool:
        """Install a fresh copy of one account; fire epoch hooks; True if anything changed."""
        devices = sorted(devices, key=lambda d: d.device_id)
        new = replace(acct, devices=tuple(devices))
        old = self._accounts.get(acct.address)
        if old == new:
            return False
        self.generation += 1
        if old is not None and old.handle and self._handles.get(old.handle) == acct.address:
            del self._handles[old.handle]
        if new.handle:
            self._handles[new.handle] = acct.address
        self._accounts[acct.address] = new
        hook = self.on_epoch_change
        current = {d.ref for d in devices}
        for dev in devices:
            prev = self._devices.get(dev.ref)
            self._devices[dev.ref] = dev
            if prev is not None and prev.epoch != dev.epoch and hook is not None:
                hook(dev)
        for prev in old.devices if old else ():
            if prev.ref not in current:
                self._devices.pop(prev.ref, None)
                if hook is not None:
                    hook(replace(prev, epoch=-1))
        return True

    def _apply_gone(self, address: str) -> None:
        old = self._accounts.pop(address, None)
        if old is None:
            return
        self.generation += 1
        if old.handle and self._handles.get(old.handle) == address:
            del self._handles[old.handle]
        for dev in old.devices:
            self._devices.pop(dev.ref, None)
            if self.on_epoch_change is not None:
                self.on_epoch_change(replace(dev, epoch=-1))

    @staticmethod
    async def _fetch_account(conn: Conn, address: str) -> _AccountRows:
        """One account as stored, or None; installed by :meth:`_install` after COMMIT."""
        row = await conn.fetchrow(
            "SELECT address, identity_key, handle, token_hash FROM accounts WHERE address = $1",
            address,
        )
        if row is None:
            return None
        devs = await conn.fetch(
            "SELECT ref, address, device_id, epoch FROM devices WHERE address = $1", address
        )
        acct = AccountRecord(
            row[0], bytes(row[1]), row[2], bytes(row[3]) if row[3] is not None else None, ()
        )
        return acct, [DeviceRecord(r[0], r[1], r[2], r[3]) for r in devs]

    def _install(self, address: str, rows: _AccountRows) -> bool:
        if rows is None:
            if address in self._accounts:
                self._apply_gone(address)
                return True
            return False
        return self._apply(*rows)

    async def _directory_write(
        self, address: str, change: Callable[[Conn], Awaitable[None]]
    ) -> None:
        """Run ``change``, NOTIFY the other nodes in the same transaction, and install the
        account as committed into this node's cache."""

        async def op(conn: Conn) -> _AccountRows:
            await change(conn)
            await q.notify(conn, DIRECTORY_CHANNEL, address)
            return await self._fetch_account(conn, address)

        await self._call(op, lambda rows: self._install(address, rows))

    async def _refresh_address(self, address: str) -> bool:
        changed = False

        def install(rows: _AccountRows) -> None:
            nonlocal changed
            changed = self._install(address, rows)

        await self._call(lambda conn: self._fetch_account(conn, address), install)
        return changed

    def get_account(self, address: str) -> AccountRecord | None:
        return self._accounts.get(address)

    def get_account_by_handle(self, handle: str) -> AccountRecord | None:
        address = self._handles.get(handle)
        return self._accounts.get(address) if address else None

    def get_device(self, ref: int) -> DeviceRecord | None:
        return self._devices.get(ref)

    # --- directory ---

    async def register(
        self, address: str, identity_key: bytes, keys: PreKeySet, now_ms: int
    ) -> DeviceRecord:
        async def change(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO accounts (address, identity_key, created_ms) VALUES ($1, $2, $3)"
                " ON CONFLICT (address) DO NOTHING",
                address,
                identity_key,
                now_ms,
            )
            row = await conn.fetchrow(
                "INSERT INTO devices (address, device_id, epoch, created_ms)"
                " VALUES ($1, 1, 1, $2) ON CONFLICT (address, device_id)"
                " DO UPDATE SET epoch = devices.epoch + 1 RETURNING ref, epoch",
                address,
                now_ms,
            )
            if row[1] > 1:  # restore: the old one-time keys are gone with the old device
                await conn.execute("DELETE FROM otk_ec WHERE device_ref = $1", row[0])
                await conn.execute("DELETE FROM otk_kem WHERE device_ref = $1", row[0])
            await q.put_keys(conn, row[0], keys)

        await self._directory_write(address, change)
        acct = self._accounts[address]
        return next(d for d in acct.devices if d.device_id == 1)

    async def set_handle(self, address: str, handle: str | None, skeleton: str | None) -> None:
        async def change(conn: Conn) -> None:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE accounts SET handle = $1, skeleton = $2 WHERE address = $3",
                        handle,
                        skeleton,
                        address,
                    )
            except asyncpg.UniqueViolationError:
                raise HandleTaken(handle) from None

        await self._directory_write(address, change)

    async def set_token_hash(self, address: str, token_hash: bytes) -> None:
        async def change(conn: Conn) -> None:
            await conn.execute(
                "UPDATE accounts SET token_hash = $1 WHERE address = $2", token_hash, address
            )

        await self._directory_write(address, change)

    async def put_prekeys(self, device_ref: int, keys: PreKeySet) -> tuple[int, int]:
        async def op(conn: Conn) -> tuple[int, int]:
            await q.put_keys(conn, device_ref, keys)
            return await q.count_prekeys(conn, device_ref)

        result: tuple[int, int] = await self._call(op)
        return result

    # --- linked devices (PROTOCOL Part VII §2) ---

    async def add_device(
        self,
        address: str,
        device_id: int,
        keys: PreKeySet,
        device_list: bytes,
        list_version: int,
        now_ms: int,
    ) -> DeviceRecord:
        async def change(conn: Conn) -> None:
            ref = await conn.fetchval(
                "INSERT INTO devices (address, device_id, epoch, created_ms)"
                " VALUES ($1, $2, 1, $3) RETURNING ref",
                address,
                device_id,
                now_ms,
            )
            await q.put_keys(conn, ref, keys)
            await _put_list(conn, address, list_version, device_list, device_id)

        await self._directory_write(address, change)
        acct = self._accounts[address]
        return next(d for d in acct.devices if d.device_id == device_id)

    async def set_device_list(
        self, address: str, device_list: bytes, list_version: int, remove: tuple[int, ...]
    ) -> None:
        async def change(conn: Conn) -> None:
            for device_id in remove:
                ref = await conn.fetchval(
                    "DELETE FROM devices WHERE address = $1 AND device_id = $2 RETURNING ref",
                    address,
                    device_id,
                )
                if ref is not None:
                    for table in ("otk_ec", "otk_kem", "mailbox"):
                        await conn.execute(f"DELETE FROM {table} WHERE device_ref = $1", ref)
            top = await conn.fetchval(
                "SELECT COALESCE(MAX(device_id), 1) FROM devices WHERE address = $1", address
            )
            await _put_list(conn, address, list_version, device_list, int(top))

        await self._directory_write(address, change)

    async def get_device_list(self, address: str) -> tuple[int, bytes, int] | None:
        async def op(conn: Conn) -> tuple[int, bytes, int] | None:
            row = await conn.fetchrow(
                "SELECT version, list, max_device_id FROM device_lists WHERE address = $1",
                address,
            )
            return (int(row[0]), bytes(row[1]), int(row[2])) if row else None

        result: tuple[int, bytes, int] | None = await self._call(op)
        return result

    async def account_created_ms(self, address: str) -> int | None:
        async def op(conn: Conn) -> int | None:
            value = await conn.fetchval(
                "SELECT created_ms FROM accounts WHERE address = $1", address
            )
            return None if value is None else int(value)

        result: int | None = await self._call(op)
        return result

    async def count_prekeys(self, device_ref: int) -> tuple[int, int]:
        result: tuple[int, int] = await self._call(lambda conn: q.count_prekeys(conn, device_ref))
        return result

    async def take_bundle(self, address: str, *, one_time: bool = True) -> list[BundleDevice]:
        acct = self._accounts.get(address)
        if acct is None:
            return []
        devices = acct.devices

        async def op(conn: Conn) -> list[BundleDevice]:
            return [await q.take_one(conn, dev, one_time) for dev in devices]

        result: list[BundleDevice] = await self._call(op)
        return result


async def _put_list(conn: Conn, address: str, version: int, blob: bytes, device_id: int) -> None:
    """Upsert the device list; ``max_device_id`` only grows (ids are never reused)."""
    await conn.execute(
        "INSERT INTO device_lists (address, version, list, max_device_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (address) DO UPDATE SET version = EXCLUDED.version, list = EXCLUDED.list,"
        " max_device_id = GREATEST(device_lists.max_device_id, EXCLUDED.max_device_id)",
        address,
        version,
        blob,
        device_id,
    )
