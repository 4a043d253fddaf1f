"""The backup settings of one profile and the state of an interrupted upload (PROTOCOL.md
Part X §9): the one place that reads and writes them, below every other backup module.

Settings (realms with pinned keys, threshold, locator, the last backup's segments) live in
the sealed store under ``meta`` key :data:`META_KEY`; an upload cut off half-way leaves its
ciphertext in ``<profile>/backup-pending.bin`` and its key under :data:`PENDING_META`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from xchat.client import archive
from xchat.client.realms import RealmInfo
from xchat.client.store import Store
from xchat.crypto.recovery import DEFAULT_GUESS_LIMIT

META_KEY: Final = "backup"
PENDING_META: Final = "backup_pending"
PENDING_FILE: Final = "backup-pending.bin"
BACKUP_INTERVAL_MS: Final = 86_400_000  # "daily"


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


def load_config(store: Store) -> dict[str, Any]:
    """The backup settings (empty if none or unreadable)."""
    raw = store.get_meta(META_KEY)
    if raw is None:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def save_config(store: Store, cfg: dict[str, Any]) -> None:
    """Replace the backup settings."""
    store.put_meta(META_KEY, json.dumps(cfg, separators=(",", ":")).encode())


def status(client: Any) -> BackupStatus:
    """The backup settings and the last backup of this profile (no network)."""
    cfg = load_config(client.store)
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
        pending_upload=get_pending(client) is not None,
        attachments=bool(cfg.get("attachments")),
        files=len(hist.get("files", [])),
    )


def pending_path(client: Any) -> Path:
    """Where the ciphertext of an upload not yet confirmed waits."""
    return Path(client.profile.path) / PENDING_FILE


def forget_pending(client: Any) -> None:
    """Drop an interrupted upload (its key, then its file)."""
    with client.store.transaction():
        client.store.put_meta(PENDING_META, b"null")
    pending_path(client).unlink(missing_ok=True)


def get_pending(client: Any) -> dict[str, Any] | None:
    """The interrupted upload to resume, if its key and its file are both there."""
    raw = client.store.get_meta(PENDING_META)
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not pending_path(client).exists():
        return None
    return obj


def cfg_locator(cfg: dict[str, Any]) -> bytes:
    """The backup locator recorded in the settings (empty if none)."""
    raw = cfg.get("locator")
    return archive.unb64(raw, "locator") if isinstance(raw, str) else b""
