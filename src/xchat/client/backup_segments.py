"""What a history backup segment holds, and loading segments back into a profile's store
(PROTOCOL.md Part X §9.4): the store side of a segment, no network.

A segment carries the messages since the last one plus a snapshot of the small state
(contacts, groups, sender keys, settings, rich-messaging rows), so the last segment alone
restores all of it; :mod:`xchat.client.archive` encodes and seals it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Final

from xchat.client import archive
from xchat.client.backup_state import HistoryRestored
from xchat.client.rich_store import RichStore
from xchat.client.store import GroupRow, Store
from xchat.clock import now_ms

APP_STATE_FILE: Final = "app-state.json"  # the web app's settings (unread marks, ...)
MAX_MESSAGES_PER_SEGMENT: Final = 1_000_000
MAX_SETTINGS_BYTES: Final = 1024 * 1024
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


def store_snapshot(client: Any) -> dict[str, Any]:
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
        "rich_conversations": table_rows(store, "rich_conversations", RICH_CONVERSATION_COLS),
    }


def table_rows(store: Store, table: str, cols: tuple[str, ...]) -> list[list[Any]]:
    """Every row of one of the rich-messaging tables (clear columns only), if it exists."""
    db = store._db  # the profile's one connection, as RichStore itself uses it
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if exists is None:
        return []
    return [list(r) for r in db.execute(f"SELECT {', '.join(cols)} FROM {table}")]


def rich_rows_for(store: Store, messages: list[dict[str, Any]]) -> list[list[Any]]:
    """The rich-messaging rows of the messages in this segment."""
    keys = {(m["peer"], m["id"]) for m in messages}
    if not keys:
        return []
    return [
        r for r in table_rows(store, "rich_messages", RICH_MESSAGE_COLS) if (r[0], r[1]) in keys
    ]


def messages_since(store: Store, seq: int) -> tuple[list[dict[str, Any]], int]:
    """The stored messages after store sequence ``seq`` (at most one segment's worth), and
    the sequence number of the last one."""
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


def apply_segments(client: Any, segments: list[dict[str, Any]]) -> HistoryRestored:
    """Load decoded segments into the store in one transaction: every message (kept
    once), then the small state of the last segment; our own contact row is skipped."""
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
