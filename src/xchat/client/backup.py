"""Backup and recovery for one profile (PROTOCOL.md Part X): the PIN backup of the account
secret at the realms, and the encrypted history backup at the relay.

* :func:`enable` checks the PIN policy, pins the realms' keys, registers one share at
  each (t-of-n, :mod:`xchat.client.realms`) and takes a first history backup.
* :func:`backup_now` uploads what changed since the last backup as one more encrypted,
  padded segment blob (the file upload path of Part VI, resumable), then replaces the
  account's backup record at the relay. Every :data:`~xchat.client.archive.MAX_SEGMENTS`
  segments (or before the relay would expire one) it takes a full backup instead and the
  relay deletes the old blobs. An upload cut off half-way (the process killed, the network
  gone) is resumed by the next call from the relay's confirmed offset: the ciphertext waits
  in ``<profile>/backup-pending.bin`` and its key in the sealed store.
* :func:`restore_with_pin` (a fresh profile): PIN → realms → account secret → the usual
  restore (same identity, same address) → :func:`restore_history`.
* :func:`disable` deletes the shares at every realm and the blobs at the relay.

Settings of the backup (realms with pinned keys, threshold, last backup) live in the sealed
store under ``meta`` key ``backup`` (:mod:`.backup_state`). This module is the backup API
the apps call; the parts live one per concept below it: :mod:`.backup_segments` (what a
segment holds, loading it back), :mod:`.backup_upload` (taking a backup, resumably) and
:mod:`.backup_locate` (finding the account to restore).
"""

from __future__ import annotations

from typing import Any

from xchat.client import archive
from xchat.client import realms as rl
from xchat.client.api import Api
from xchat.client.backup_locate import ensure_locator, resolve_target
from xchat.client.backup_segments import apply_segments
from xchat.client.backup_state import (
    BACKUP_INTERVAL_MS,
    BackupStatus,
    HistoryRestored,
    cfg_locator,
    forget_pending,
    get_pending,
    load_config,
    save_config,
    status,
)
from xchat.client.backup_upload import (
    backup_files,
    commit_segment,
    prepare_segment,
    put_manifest,
    upload_pending,
)
from xchat.client.files import BlobClient, FileManifest, downloads_dir, receive_file
from xchat.client.realms import RealmInfo
from xchat.clock import now_ms
from xchat.crypto.keys import IdentityKeyPair, mnemonic_from_seed
from xchat.crypto.pin import check_pin
from xchat.crypto.recovery import DEFAULT_GUESS_LIMIT, MAX_REALMS
from xchat.errors import ApiError, BackupUnavailable, ClientError, DecodeError, DecryptionError


def default_threshold(n: int) -> int:
    """A majority: any realm may be down (n >= 3) and no minority can collude."""
    return n // 2 + 1


# --- enable / disable --------------------------------------------------------------------------


async def enable(
    client: Any,
    pin: str,
    realm_urls: list[str] | None = None,
    threshold: int | None = None,
    *,
    guess_limit: int = DEFAULT_GUESS_LIMIT,
    attachments: bool | None = None,
    blobs: BlobClient | None = None,
) -> BackupStatus:
    """Enrol the PIN at the realms (default: the relay's recommended ones) and take the
    first history backup. Re-running it changes the PIN (and realms): the old records are
    overwritten (the owner key proves it is us)."""
    pin = check_pin(pin)  # WeakPin
    realms = await rl.resolve_realms(realm_urls or None, client.api)
    if len({r.public_key for r in realms}) != len(realms):
        raise ClientError("the same realm is listed twice")
    if not 1 <= len(realms) <= MAX_REALMS:
        raise ClientError(f"use 1 to {MAX_REALMS} realms")
    t = threshold if threshold is not None else default_threshold(len(realms))
    if not 1 <= t <= len(realms):
        raise ClientError(f"threshold must be between 1 and the number of realms ({len(realms)})")
    old = load_config(client.store)
    locator = await ensure_locator(client, old)
    await rl.enrol(
        client.identity.seed, pin, client.address, realms, t, guess_limit, locator=locator
    )
    dropped = [
        RealmInfo.from_json(r)
        for r in old.get("realms", [])
        if RealmInfo.from_json(r).public_key not in {x.public_key for x in realms}
    ]
    if dropped:  # realms no longer used must not keep a share (best effort)
        await rl.delete(client.identity.seed, client.address, dropped, locator=locator)
    cfg = {
        **old,
        "enabled": True,
        "realms": [r.to_json() for r in realms],
        "threshold": t,
        "guess_limit": guess_limit,
        "enrolled_ms": now_ms(),
        "attachments": bool(old.get("attachments")) if attachments is None else attachments,
        "locator": archive.b64(locator),
    }
    save_config(client.store, cfg)
    await backup_now(client, blobs=blobs)
    return status(client)


async def disable(client: Any) -> dict[str, Any]:
    """Delete the shares at every realm and the history backup at the relay. Realms that
    cannot be reached are listed in ``unreachable`` and kept in the settings, so that
    running it again deletes their shares too."""
    cfg = load_config(client.store)
    realms = [RealmInfo.from_json(r) for r in cfg.get("realms", [])]
    locator = cfg_locator(cfg)
    deleted_realms, unreachable = await rl.delete(
        client.identity.seed, client.address, realms, locator=locator
    )
    body = await client.api.request("DELETE", "/api/v1/backup", auth=True)
    blobs = int(body.get("deleted", 0)) if isinstance(body, dict) else 0
    forget_pending(client)
    save_config(
        client.store,
        {
            "enabled": False,
            "realms": [r.to_json() for r in unreachable],
            "locator": archive.b64(locator),
        },
    )
    return {"realms": deleted_realms, "blobs": blobs, "unreachable": [r.url for r in unreachable]}


# --- history backup ------------------------------------------------------------------------------


async def backup_now(
    client: Any, *, full: bool = False, blobs: BlobClient | None = None
) -> BackupStatus:
    """Take a backup now (incremental unless ``full`` or due for compaction); resume an
    interrupted upload first. ``blobs`` overrides the blob client (tests route it through
    a proxy that cuts the connection)."""
    cfg = load_config(client.store)
    if not cfg.get("enabled"):
        raise BackupUnavailable("backup is not enabled (run `xchat backup enable`)")
    owned = blobs is None
    bc = blobs if blobs is not None else BlobClient.from_api(client.api)
    try:
        pending = get_pending(client)
        if pending is None:
            pending = await prepare_segment(client, cfg, full)
        if pending is not None:
            await upload_pending(client, bc, pending)
            cfg = commit_segment(client, cfg, pending)
        if cfg.get("attachments"):
            cfg = await backup_files(client, cfg, bc)
        await put_manifest(client, cfg)
    finally:
        if owned:
            await bc.aclose()
    return status(client)


async def maybe_backup(client: Any) -> bool:
    """The daily backup: take one if enabled and the last is a day old (the web app calls
    this periodically; ``xchat backup now`` does it on demand)."""
    cfg = load_config(client.store)
    last = cfg.get("history", {}).get("last_ms")
    if not cfg.get("enabled") or (isinstance(last, int) and now_ms() - last < BACKUP_INTERVAL_MS):
        return False
    await backup_now(client)
    return True


# --- restore -------------------------------------------------------------------------------------


async def restore_history(client: Any, *, blobs: BlobClient | None = None) -> HistoryRestored:
    """Fetch this account's backup record from the relay, open it with the account secret
    and load every segment into the store. BackupUnavailable if there is none; a record
    of another account raises DecryptionError and changes nothing."""
    try:
        rec = await client.api.request("GET", "/api/v1/backup", auth=True)
    except ApiError as exc:
        if exc.status == 404:
            raise BackupUnavailable("this account has no history backup on its relay") from None
        raise
    if not isinstance(rec, dict):
        raise DecodeError("bad backup record")
    seed, address = client.identity.seed, client.address
    manifest = archive.open_manifest(seed, address, archive.unb64(rec.get("manifest"), "manifest"))
    owned = blobs is None
    bc = blobs if blobs is not None else BlobClient(client.api.base_url)  # downloads: no token
    try:
        segments = [await _fetch_segment(bc, s, address) for s in manifest["segments"]]
        result = apply_segments(client, segments)
        files: list[dict[str, Any]] = []
        for f in manifest.get("files", []) if isinstance(manifest.get("files"), list) else []:
            fm = FileManifest.from_json(f)
            path = await receive_file(bc, fm, downloads_dir(client.profile.path))
            st = path.stat()
            entry = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            files.append({**entry, "manifest": fm.to_json()})  # not uploaded again
    finally:
        if owned:
            await bc.aclose()
    result = HistoryRestored(result.messages, result.contacts, result.groups, len(files))
    cfg = load_config(client.store)
    hist = {
        "segments": manifest["segments"],
        "seq": client.store.last_seq(),
        "messages": sum(int(s.get("messages", 0)) for s in manifest["segments"]),
        "last_ms": rec.get("updated_ms"),
        "files": files,
    }
    if files:
        cfg["attachments"] = True
    save_config(client.store, {**cfg, "history": hist})
    return result


async def _fetch_segment(bc: BlobClient, entry: object, address: str) -> dict[str, Any]:
    from xchat.crypto.attachment import decrypt_attachment

    if not isinstance(entry, dict) or not isinstance(entry.get("blob"), str):
        raise DecodeError("bad segment entry in the backup manifest")
    size = int(entry["blob_size"])
    buf = bytearray()
    await bc.download(entry["blob"], size, buf.extend, None)
    plain = decrypt_attachment(
        archive.unb64(entry.get("key"), "segment key"),
        bytes(buf),
        size=int(entry["size"]),
        digest=archive.unb64(entry.get("digest"), "segment digest"),
        chunk_size=int(entry["chunk_size"]),
    )
    return archive.decode_segment(plain, address)


async def restore_with_pin(
    client: Any,
    server: str,
    target: str,
    pin: str,
    realm_urls: list[str] | None = None,
    *,
    blobs: BlobClient | None = None,
    realm_transport: Any = None,
) -> tuple[Any, HistoryRestored | None]:
    """Restore the account ``target`` into the (empty) profile of ``client`` with the PIN:
    same identity and address, then its history. WrongPin says how many guesses are left.
    ``realm_transport`` (tests) carries the realm requests, e.g. through an attacker."""
    server = server.rstrip("/")
    address, locator = await resolve_target(server, target)
    relay = Api(server)
    try:
        realms = await rl.resolve_realms(realm_urls or None, relay)
    finally:
        await relay.aclose()
    secret, threshold = await rl.recover(pin, address, realms, realm_transport, locator=locator)
    identity = IdentityKeyPair.from_seed(secret)
    if identity.public.address() != address:
        raise DecryptionError("the realms released a secret of another account")
    info = await client.restore_account(server, mnemonic_from_seed(secret))
    save_config(
        client.store,
        {
            "enabled": True,
            "realms": [r.to_json() for r in realms],
            "threshold": threshold,
            "guess_limit": DEFAULT_GUESS_LIMIT,
            "locator": archive.b64(locator),
        },
    )
    try:
        restored: HistoryRestored | None = await restore_history(client, blobs=blobs)
    except BackupUnavailable:
        restored = None
    return info, restored


__all__ = [
    "BackupStatus",
    "HistoryRestored",
    "backup_now",
    "default_threshold",
    "disable",
    "enable",
    "maybe_backup",
    "restore_history",
    "restore_with_pin",
    "status",
]
