"""Taking a history backup: one more encrypted, padded segment blob, uploaded resumably
through the file path of Part VI, then the account's sealed backup record replaced at the
relay (PROTOCOL.md Part X §9.5), and the optional attachments (§9.8).

Each step persists before the next, so a process killed at any point resumes from the
relay's confirmed offset at the next :func:`xchat.client.backup.backup_now`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any, Final

from xchat.client import archive
from xchat.client.backup_segments import messages_since, rich_rows_for, store_snapshot
from xchat.client.backup_state import PENDING_META, pending_path, save_config
from xchat.client.files import BlobClient, FileManifest, downloads_dir, send_file
from xchat.clock import now_ms
from xchat.crypto.attachment import encrypt_attachment
from xchat.errors import ApiError

REFRESH_MARGIN_MS: Final = 10 * 86_400_000  # full backup this long before blobs expire
FALLBACK_LIFETIME_MS: Final = 30 * 86_400_000  # relay blob TTL when it cannot pin (Part VI §7)


async def prepare_segment(client: Any, cfg: dict[str, Any], full: bool) -> dict[str, Any] | None:
    """Encrypt the next segment into the pending file and note its key (None if nothing
    changed since the last one); full when asked, the first, or due for compaction."""
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
    messages, last = messages_since(client.store, since)
    snapshot = store_snapshot(client)
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
        "rich_messages": rich_rows_for(client.store, messages),
        **snapshot,
    }
    enc = encrypt_attachment(archive.encode_segment(segment))
    path = pending_path(client)
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


async def upload_pending(client: Any, bc: BlobClient, pending: dict[str, Any]) -> None:
    """Upload the pending segment, from the relay's confirmed offset if it was started."""
    total = int(pending["blob_size"])
    path = pending_path(client)
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


def commit_segment(client: Any, cfg: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    """Record an uploaded segment in the settings (a full one replaces the others)."""
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
        save_config(client.store, cfg)
        client.store.put_meta(PENDING_META, b"null")
    pending_path(client).unlink(missing_ok=True)
    return cfg


async def put_manifest(client: Any, cfg: dict[str, Any]) -> None:
    """Seal the manifest of every segment and file and replace the account's backup
    record at the relay; note when a full backup is due before its blobs expire."""
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
    save_config(client.store, {**cfg, "history": hist})


async def backup_files(client: Any, cfg: dict[str, Any], bc: BlobClient) -> dict[str, Any]:
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
        save_config(client.store, cfg)  # a file uploaded is not uploaded again after a crash
    hist["files"] = current
    cfg = {**cfg, "history": hist}
    save_config(client.store, cfg)
    return cfg
