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
store under ``meta`` key ``backup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from xchat.client import archive
from xchat.client import realms as rl
from xchat.client.api import Api
from xchat.client.files import BlobClient, FileManifest, downloads_dir, receive_file, send_file
from xchat.client.realms import RealmInfo
from xchat.client.rich_store import RichStore
from xchat.client.store import GroupRow, Store
from xchat.clock import now_ms
from xchat.crypto import pow as xpow
from xchat.crypto.attachment import encrypt_attachment
from xchat.crypto.keys import IdentityKeyPair, is_address, mnemonic_from_seed, normalize_address
from xchat.crypto.pin import check_pin
from xchat.crypto.recovery import DEFAULT_GUESS_LIMIT, LOCATOR_LEN, MAX_REALMS
from xchat.errors import (
    ApiError,
    BackupUnavailable,
    ClientError,
    DecodeError,
    DecryptionError,
    UnknownContact,
)

META_KEY: Final = "backup"
PENDING_META: Final = "backup_pending"
PENDING_FILE: Final = "backup-pending.bin"
APP_STATE_FILE: Final = "app-state.json"  # the web app's settings (unread marks, ...)
BACKUP_INTERVAL_MS: Final = 86_400_000  # "daily"
REFRESH_MARGIN_MS: Final = 10 * 86_400_000  # full backup this long before blobs expire
FALLBACK_LIFETIME_MS: Final = 30 * 86_400_000  # relay blob TTL when it cannot pin (Part VI §7)
MAX_MESSAGES_PER_SEGMENT: Final = 1_000_000
MAX_SETTINGS_BYTES: Final = 1024 * 1024
LABEL_LOCATE: Final = b"XChat-v1-backup-locate|"  # PoW resource prefix of a handle lookup
# Rich-messaging state kept in the clear beside ``messages`` (PROTOCOL Part VIII §9): which
# conversations are accepted, requests or blocked, timers, read/edited/deleted marks.
RICH_CONVERSATION_COLS: Final = ("conv", "state", "timer_s", "timer_ts", "updated_ms")
RICH_MESSAGE_COLS: Final = (
    "peer",
    "id",
    "conv",
    "author",
    "origin_ms",
    "timer_s",
    "expires_at",
    "read_ms",
    "edited",
    "deleted",
    "quote",
)


@dataclass
class BackupStatus:
    """What ``xchat backup status --json`` prints."""

    enabled: bool
    realms: list[RealmInfo] = field(default_factory=list)
    threshold: int = 0
    guess_limit: int = DEFAULT_GUESS_LIMIT
    last_backup_ms: int | None = None
    last_backup_size: int | None = None
    segments: int = 0
    messages: int = 0
    pending_upload: bool = False
    attachments: bool = False
    files: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "realms": [{"url": r.url, "name": r.name} for r in self.realms],
            "threshold": self.threshold,
            "guess_limit": self.guess_limit,
            "last_backup_ms": self.last_backup_ms,
            "last_backup_size": self.last_backup_size,
            "segments": self.segments,
            "messages": self.messages,
            "pending_upload": self.pending_upload,
            "attachments": self.attachments,
            "files": self.files,
        }


@dataclass(frozen=True)
class HistoryRestored:
    messages: int
    contacts: int
    groups: int
    files: int = 0


# --- local configuration ---------------------------------------------------------------------


def _load(store: Store) -> dict[str, Any]:
    raw = store.get_meta(META_KEY)
    if raw is None:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _save(store: Store, cfg: dict[str, Any]) -> None:
    store.put_meta(META_KEY, json.dumps(cfg, separators=(",", ":")).encode())


def status(client: Any) -> BackupStatus:
    """The backup settings and the last backup of this profile (no network)."""
    cfg = _load(client.store)
    hist = cfg.get("history", {})
    return BackupStatus(
        enabled=bool(cfg.get("enabled")),
        realms=[RealmInfo.from_json(r) for r in cfg.get("realms", [])],
        threshold=int(cfg.get("threshold", 0)),
        guess_limit=int(cfg.get("guess_limit", DEFAULT_GUESS_LIMIT)),
        last_backup_ms=hist.get("last_ms"),
        last_backup_size=hist.get("size"),
        segments=len(hist.get("segments", [])),
        messages=int(hist.get("messages", 0)),
        pending_upload=_get_pending(client) is not None,
        attachments=bool(cfg.get("attachments")),
        files=len(hist.get("files", [])),
    )


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
    old = _load(client.store)
    locator = await _locator(client, old)
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
    _save(client.store, cfg)
    await backup_now(client, blobs=blobs)
    return status(client)


async def disable(client: Any) -> dict[str, Any]:
    """Delete the shares at every realm and the history backup at the relay. Realms that
    cannot be reached are listed in ``unreachable`` and kept in the settings, so that
    running it again deletes their shares too."""
    cfg = _load(client.store)
    realms = [RealmInfo.from_json(r) for r in cfg.get("realms", [])]
    locator = _cfg_locator(cfg)
    deleted_realms, unreachable = await rl.delete(
        client.identity.seed, client.address, realms, locator=locator
    )
    body = await client.api.request("DELETE", "/api/v1/backup", auth=True)
    blobs = int(body.get("deleted", 0)) if isinstance(body, dict) else 0
    _forget_pending(client)
    _save(
        client.store,
        {
            "enabled": False,
            "realms": [r.to_json() for r in unreachable],
            "locator": archive.b64(locator),
        },
    )
    return {"realms": deleted_realms, "blobs": blobs, "unreachable": [r.url for r in unreachable]}


# --- history backup ------------------------------------------------------------------------------


def _snapshot(client: Any) -> dict[str, Any]:
    """Contacts, groups, sender keys and settings: small, so every segment has them all."""
    store: Store = client.store
    contacts = [
        {
            "address": c.address,
            "handle": c.handle,
            "identity_key": archive.b64(c.identity_key) if c.identity_key else None,
            "delivery_token": archive.b64(c.delivery_token) if c.delivery_token else None,
            "verified": c.verified,
            "identity_changed": c.identity_changed,
        }
        for c in store.list_contacts()
    ]
    groups = []
    for gid in store.group_ids():
        row = store.get_group(gid)
        if row is not None:
            groups.append(
                {
                    "id": row.id,
                    "history": archive.b64(row.history),
                    "pending": archive.b64(row.pending),
                    "left": row.left,
                }
            )
    sender_keys = [
        {"group": g, "address": a, "device": d, "record": archive.b64(r)}
        for g, a, d, r in store.sender_key_rows()
    ]
    settings: dict[str, Any] = {"handle": client.profile.config.handle}
    app_state = Path(client.profile.path) / APP_STATE_FILE
    with contextlib.suppress(OSError):
        if app_state.stat().st_size <= MAX_SETTINGS_BYTES:
            settings["app_state"] = app_state.read_text("utf-8")
    return {
        "contacts": contacts,
        "groups": groups,
        "sender_keys": sender_keys,
        "settings": settings,
        "rich_conversations": _rows(store, "rich_conversations", RICH_CONVERSATION_COLS),
    }


def _rows(store: Store, table: str, cols: tuple[str, ...]) -> list[list[Any]]:
    """Every row of one of the rich-messaging tables (clear columns only), if it exists."""
    db = store._db  # the profile's one connection, as RichStore itself uses it
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if exists is None:
        return []
    return [list(r) for r in db.execute(f"SELECT {', '.join(cols)} FROM {table}")]


def _rich_rows_for(store: Store, messages: list[dict[str, Any]]) -> list[list[Any]]:
    """The rich-messaging rows of the messages in this segment."""
    keys = {(m["peer"], m["id"]) for m in messages}
    if not keys:
        return []
    return [r for r in _rows(store, "rich_messages", RICH_MESSAGE_COLS) if (r[0], r[1]) in keys]


def _messages_since(store: Store, seq: int) -> tuple[list[dict[str, Any]], int]:
    out = []
    last = seq
    for s, stored, m in store.messages_after(seq, MAX_MESSAGES_PER_SEGMENT):
        out.append(
            {
                "id": m.id,
                "peer": m.peer,
                "direction": m.direction,
                "ts_ms": m.ts_ms,
                "stored_ms": stored,
                "status": m.status,
                "body": archive.body_to_json(m.body),
            }
        )
        last = s
    return out, last


def _pending_path(client: Any) -> Path:
    return Path(client.profile.path) / PENDING_FILE


def _forget_pending(client: Any) -> None:
    with client.store.transaction():
        client.store.put_meta(PENDING_META, b"null")
    _pending_path(client).unlink(missing_ok=True)


def _get_pending(client: Any) -> dict[str, Any] | None:
    raw = client.store.get_meta(PENDING_META)
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not _pending_path(client).exists():
        return None
    return obj


async def backup_now(
    client: Any, *, full: bool = False, blobs: BlobClient | None = None
) -> BackupStatus:
    """Take a backup now (incremental unless ``full`` or due for compaction); resume an
    interrupted upload first. ``blobs`` overrides the blob client (tests route it through
    a proxy that cuts the connection)."""
    cfg = _load(client.store)
    if not cfg.get("enabled"):
        raise BackupUnavailable("backup is not enabled (run `xchat backup enable`)")
    owned = blobs is None
    bc = blobs if blobs is not None else BlobClient.from_api(client.api)
    try:
        pending = _get_pending(client)
        if pending is None:
            pending = await _prepare_segment(client, cfg, full)
        if pending is not None:
            await _upload_pending(client, bc, pending)
            cfg = _commit_segment(client, cfg, pending)
        if cfg.get("attachments"):
            cfg = await _backup_files(client, cfg, bc)
        await _put_manifest(client, cfg)
    finally:
        if owned:
            await bc.aclose()
    return status(client)


async def _prepare_segment(client: Any, cfg: dict[str, Any], full: bool) -> dict[str, Any] | None:
    hist = cfg.get("history", {})
    segments = hist.get("segments", [])
    t = now_ms()
    refresh = hist.get("refresh_before")
    full = (
        full
        or not segments
        or len(segments) >= archive.MAX_SEGMENTS
        or (isinstance(refresh, int) and t >= refresh)
    )
    since = 0 if full else int(hist.get("seq", 0))
    messages, last = _messages_since(client.store, since)
    snapshot = _snapshot(client)
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()
    if not full and not messages and digest == hist.get("snapshot_digest"):
        return None  # nothing changed: only the record is refreshed
    segment = {
        "v": archive.ARCHIVE_VERSION,
        "address": client.address,
        "kind": "full" if full else "incremental",
        "created_ms": t,
        "seq_from": since,
        "seq_to": last,
        "messages": messages,
        "rich_messages": _rich_rows_for(client.store, messages),
        **snapshot,
    }
    enc = encrypt_attachment(archive.encode_segment(segment))
    path = _pending_path(client)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(enc.ciphertext)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    pending = {
        "blob": None,
        "key": archive.b64(enc.key),
        "digest": archive.b64(enc.digest),
        "size": enc.size,
        "blob_size": len(enc.ciphertext),
        "chunk_size": enc.chunk_size,
        "kind": segment["kind"],
        "created_ms": t,
        "seq_to": last,
        "messages": len(messages),
        "snapshot_digest": digest,
    }
    client.store.put_meta(PENDING_META, json.dumps(pending).encode())
    return pending


async def _upload_pending(client: Any, bc: BlobClient, pending: dict[str, Any]) -> None:
    total = int(pending["blob_size"])
    path = _pending_path(client)
    if pending.get("blob") is None:
        pending["blob"] = await bc.create(total)
        client.store.put_meta(PENDING_META, json.dumps(pending).encode())
        offset: int | None = 0
    else:
        try:
            offset = None  # ask the relay (HEAD) where the last attempt stopped
            await bc.offset(pending["blob"])
        except ApiError as exc:
            if exc.status != 404:
                raise
            pending["blob"] = await bc.create(total)  # expired meanwhile: start over
            client.store.put_meta(PENDING_META, json.dumps(pending).encode())
            offset = 0

    async def pieces(skip: int) -> AsyncIterator[bytes]:
        with open(path, "rb") as fh:
            fh.seek(skip)
            while piece := fh.read(1024 * 1024):
                yield piece

    await bc.upload(pending["blob"], total, pieces, offset=offset)


def _commit_segment(client: Any, cfg: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    hist = dict(cfg.get("history", {}))
    entry = {
        k: pending[k]
        for k in ("blob", "key", "digest", "size", "blob_size", "chunk_size", "kind", "created_ms")
    }
    entry["messages"] = pending["messages"]
    old = [] if pending["kind"] == "full" else list(hist.get("segments", []))
    hist["segments"] = [*old, entry]
    hist["seq"] = pending["seq_to"]
    hist["snapshot_digest"] = pending["snapshot_digest"]
    hist["messages"] = sum(int(s.get("messages", 0)) for s in hist["segments"])
    cfg = {**cfg, "history": hist}
    with client.store.transaction():
        _save(client.store, cfg)
        client.store.put_meta(PENDING_META, b"null")
    _pending_path(client).unlink(missing_ok=True)
    return cfg


async def _put_manifest(client: Any, cfg: dict[str, Any]) -> None:
    hist = dict(cfg.get("history", {}))
    segments = hist.get("segments", [])
    files = hist.get("files", [])
    manifest = {
        "v": archive.ARCHIVE_VERSION,
        "address": client.address,
        "created_ms": now_ms(),
        "segments": segments,
        "files": [f["manifest"] for f in files],
    }
    sealed = archive.seal_manifest(client.identity.seed, client.address, manifest)
    blob_ids = [s["blob"] for s in segments] + [f["manifest"]["blob"] for f in files]
    body = await client.api.request(
        "PUT",
        "/api/v1/backup",
        auth=True,
        json={"manifest": archive.b64(sealed), "blobs": blob_ids},
    )
    t = now_ms()
    expires = body.get("expires_ms") if isinstance(body, dict) else None
    if not isinstance(expires, int):
        oldest = min((int(s["created_ms"]) for s in segments), default=t)
        expires = oldest + FALLBACK_LIFETIME_MS
    hist["refresh_before"] = expires - REFRESH_MARGIN_MS
    hist["last_ms"] = t
    file_bytes = sum(FileManifest.from_json(f["manifest"]).blob_size for f in files)
    hist["size"] = sum(int(s["blob_size"]) for s in segments) + file_bytes + len(sealed)
    _save(client.store, {**cfg, "history": hist})


async def _backup_files(client: Any, cfg: dict[str, Any], bc: BlobClient) -> dict[str, Any]:
    """Optional attachments (§9.8): every file in ``<profile>/downloads`` not backed up yet
    goes up through the ordinary file path (Part VI: its own key, padded, resumable within
    the call); files deleted locally leave the backup at the next record update."""
    hist = dict(cfg.get("history", {}))
    known = {(f["name"], f["size"], f["mtime_ns"]): f for f in hist.get("files", [])}
    folder = downloads_dir(client.profile.path)
    current: list[dict[str, Any]] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file() or path.name.startswith("."):
            continue
        st = path.stat()
        ident = (path.name, st.st_size, st.st_mtime_ns)
        if ident in known:
            current.append(known[ident])
            continue
        m = await send_file(bc, path, keep_metadata=True)
        current.append(
            {
                "name": path.name,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "manifest": m.to_json(),
            }
        )
        hist["files"] = current + [f for f in hist.get("files", []) if f not in current]
        cfg = {**cfg, "history": hist}
        _save(client.store, cfg)  # a file uploaded is not uploaded again after a crash
    hist["files"] = current
    cfg = {**cfg, "history": hist}
    _save(client.store, cfg)
    return cfg


async def maybe_backup(client: Any) -> bool:
    """The daily backup: take one if enabled and the last is a day old (the web app calls
    this periodically; ``xchat backup now`` does it on demand)."""
    cfg = _load(client.store)
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
        result = _apply(client, segments)
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
    cfg = _load(client.store)
    hist = {
        "segments": manifest["segments"],
        "seq": client.store.last_seq(),
        "messages": sum(int(s.get("messages", 0)) for s in manifest["segments"]),
        "last_ms": rec.get("updated_ms"),
        "files": files,
    }
    if files:
        cfg["attachments"] = True
    _save(client.store, {**cfg, "history": hist})
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


def _apply(client: Any, segments: list[dict[str, Any]]) -> HistoryRestored:
    store: Store = client.store
    t = now_ms()
    n_messages = 0
    last = segments[-1] if segments else {}
    with store.transaction():
        for seg in segments:
            for m in seg.get("messages", []):
                if store.add_message(
                    str(m["id"]),
                    str(m["peer"]),
                    str(m["direction"]),
                    int(m["ts_ms"]),
                    str(m["status"]),
                    archive.body_from_json(m["body"]),
                    int(m.get("stored_ms", t)),
                    unseen=False,
                ):
                    n_messages += 1
        for c in last.get("contacts", []):
            address = str(c["address"])
            if address == client.address:
                continue
            store.ensure_contact(address, t)
            store.update_contact(
                address,
                handle=c.get("handle") or None,
                identity_key=archive.unb64(c["identity_key"], "key")
                if c.get("identity_key")
                else None,
                delivery_token=(
                    archive.unb64(c["delivery_token"], "token") if c.get("delivery_token") else None
                ),
                verified=bool(c.get("verified")),
                identity_changed=bool(c.get("identity_changed")),
                token_shared=False,  # our delivery token is new after a restore: share it again
            )
        for g in last.get("groups", []):
            # own_key None: the next group send draws a fresh sender key and sends it to all
            row = GroupRow(
                str(g["id"]),
                archive.unb64(g["history"], "group"),
                None,
                archive.unb64(g["pending"], "group"),
                bool(g.get("left")),
            )
            store.put_group(row, t)
        for k in last.get("sender_keys", []):
            store.put_sender_key(
                str(k["group"]),
                str(k["address"]),
                int(k["device"]),
                archive.unb64(k["record"], "key"),
            )
    _apply_rich(store, segments, last)
    settings = last.get("settings", {})
    app_state = Path(client.profile.path) / APP_STATE_FILE
    if isinstance(settings.get("app_state"), str) and not app_state.exists():
        app_state.write_text(settings["app_state"], "utf-8")
    return HistoryRestored(n_messages, len(last.get("contacts", [])), len(last.get("groups", [])))


def _apply_rich(store: Store, segments: list[dict[str, Any]], last: dict[str, Any]) -> None:
    """Rich-messaging state: the tables are created (and, on a fresh profile, every restored
    1:1 conversation marked accepted) by opening the rich store; the backed-up rows win."""
    RichStore(store)
    db = store._db
    conv_sql = (
        f"INSERT OR REPLACE INTO rich_conversations ({', '.join(RICH_CONVERSATION_COLS)}) "
        f"VALUES ({', '.join('?' * len(RICH_CONVERSATION_COLS))})"
    )
    msg_sql = (
        f"INSERT OR REPLACE INTO rich_messages ({', '.join(RICH_MESSAGE_COLS)}) "
        f"VALUES ({', '.join('?' * len(RICH_MESSAGE_COLS))})"
    )
    with store.transaction():
        for row in last.get("rich_conversations", []):
            if isinstance(row, list) and len(row) == len(RICH_CONVERSATION_COLS):
                db.execute(conv_sql, row)
        for seg in segments:
            for row in seg.get("rich_messages", []):
                if isinstance(row, list) and len(row) == len(RICH_MESSAGE_COLS):
                    db.execute(msg_sql, row)


async def resolve_target(server: str, target: str) -> tuple[str, bytes]:
    """``@handle`` or address → (address, backup locator) of the account to restore. A
    device without an account has no anonymous tokens (Part XI), so the lookup is paid with
    a proof of work at ``POST /api/v1/backup/locate`` (Part X §9.6)."""
    t = target.strip()
    if is_address(t):
        field, key = "address", normalize_address(t)
    else:
        field, key = "handle", t.lstrip("@").lower()
    api = Api(server)
    try:
        chal = await api.challenge()
        challenge = archive.unb64(chal.get("challenge"), "challenge")
        bits = chal.get("pow_bits")
        if not isinstance(bits, int):
            raise DecodeError("relay sent no pow_bits")
        resource = LABEL_LOCATE + key.encode()
        nonce = await asyncio.to_thread(xpow.solve, challenge, resource, bits)
        found = await api.request(
            "POST",
            "/api/v1/backup/locate",
            json={field: key, "challenge": archive.b64(challenge), "pow_nonce": nonce},
        )
    except ApiError as exc:
        if exc.status in (400, 404, 422):
            raise UnknownContact(f"no account {target} on {server}") from None
        raise
    finally:
        await api.aclose()
    address = found.get("address") if isinstance(found, dict) else None
    if not isinstance(address, str) or not is_address(address):
        raise UnknownContact(f"no account {target} on {server}")
    raw = found.get("locator")
    locator = archive.unb64(raw, "locator") if isinstance(raw, str) else b""
    if len(locator) not in (0, LOCATOR_LEN):
        raise DecodeError("relay sent a bad backup locator")
    return normalize_address(address), locator


def _cfg_locator(cfg: dict[str, Any]) -> bytes:
    raw = cfg.get("locator")
    return archive.unb64(raw, "locator") if isinstance(raw, str) else b""


async def _locator(client: Any, cfg: dict[str, Any]) -> bytes:
    """This account's backup locator: the one in the settings, else the relay's (a device
    restored with the phrase), else a new random one registered at the relay."""
    if cfg.get("locator"):
        return _cfg_locator(cfg)
    try:
        body = await client.api.request("GET", "/api/v1/backup/locator", auth=True)
        return archive.unb64(body.get("locator") if isinstance(body, dict) else None, "locator")
    except ApiError as exc:
        if exc.status != 404:
            raise
    locator = os.urandom(LOCATOR_LEN)
    await client.api.request(
        "PUT", "/api/v1/backup/locator", auth=True, json={"locator": archive.b64(locator)}
    )
    return locator


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
    _save(
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
