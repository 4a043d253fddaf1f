"""The history archive a device sends to a newly linked one (PROTOCOL.md Part VII §6).

Conversations, contacts (with pinned keys and verification marks), groups (state and the
sender keys of other members, so the new device reads their next messages) and settings,
as compressed JSON encrypted under a fresh key and uploaded once to the blob store; the key
and digest travel in the (encrypted) link answer. Sessions, prekeys and our own sender
keys are per device and never leave it. File messages carry their manifests, so attachments
stay downloadable from the blob store while the blobs live.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import zlib
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.client.store import GroupRow, Store
from xchat.errors import DecodeError, DecryptionError

ARCHIVE_VERSION = 1
LABEL_ARCHIVE = b"XChat-v1-history-archive"
#: Bound on what a new device accepts (decompressed), against a decompression bomb.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MESSAGE_PAGE = 5000

Progress = Callable[[int, int], None]


def _e(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _d(value: object) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else None


def export(store: Store, settings: dict[str, Any], *, messages: bool = True) -> bytes:
    """The plaintext archive (JSON, zlib-compressed)."""
    contacts = [
        {
            "address": c.address,
            "handle": c.handle,
            "identity_key": _e(c.identity_key),
            "delivery_token": _e(c.delivery_token),
            "verified": c.verified,
            "identity_changed": c.identity_changed,
            "token_shared": c.token_shared,
        }
        for c in store.list_contacts()
    ]
    rows: list[dict[str, Any]] = []
    seq = 0
    while messages:
        page = store.messages_after(seq, MESSAGE_PAGE)
        if not page:
            break
        for s, _, m in page:
            seq = s
            rows.append(
                {
                    "peer": m.peer,
                    "id": m.id,
                    "dir": m.direction,
                    "ts": m.ts_ms,
                    "status": m.status,
                    "body": _e(m.body),
                }
            )
    groups = []
    for gid in store.group_ids():
        g = store.get_group(gid)
        if g is not None:  # our own sender key stays here: the new device makes its own
            groups.append({"id": g.id, "history": _e(g.history), "left": g.left})
    sender_keys = [
        {"group": g, "address": a, "device": d, "record": _e(r)}
        for g, a, d, r in store.sender_key_rows()
    ]
    doc = {
        "v": ARCHIVE_VERSION,
        "contacts": contacts,
        "messages": rows,
        "groups": groups,
        "sender_keys": sender_keys,
        "settings": settings,
    }
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def seal(plain: bytes) -> tuple[bytes, bytes, bytes]:
    """``(key, blob, sha256(blob))``: AES-256-GCM under a fresh key (so a zero nonce)."""
    key = secrets.token_bytes(32)
    blob = AESGCM(key).encrypt(b"\0" * 12, plain, LABEL_ARCHIVE)
    return key, blob, hashlib.sha256(blob).digest()


def open_sealed(key: bytes, blob: bytes, digest: bytes) -> bytes:
    if hashlib.sha256(blob).digest() != digest:
        raise DecryptionError("history archive digest does not match")
    try:
        return AESGCM(key).decrypt(b"\0" * 12, blob, LABEL_ARCHIVE)
    except InvalidTag:
        raise DecryptionError("history archive does not decrypt") from None


def load(plain: bytes) -> dict[str, Any]:
    d = zlib.decompressobj()
    raw = d.decompress(plain, MAX_ARCHIVE_BYTES)
    if d.unconsumed_tail:
        raise DecodeError("history archive too large")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise DecodeError("history archive is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != ARCHIVE_VERSION:
        raise DecodeError("unsupported history archive")
    return doc


def import_into(
    store: Store, doc: dict[str, Any], now_ms: int, progress: Progress | None = None
) -> int:
    """Write an archive into a fresh store (one transaction); returns messages imported."""
    messages = doc.get("messages") or []
    total = len(messages)
    done = 0
    with store.transaction():
        for c in doc.get("contacts") or []:
            address = c.get("address")
            if not isinstance(address, str):
                continue
            store.ensure_contact(address, now_ms)
            store.update_contact(
                address,
                handle=c.get("handle") if isinstance(c.get("handle"), str) else None,
                identity_key=_d(c.get("identity_key")),
                delivery_token=_d(c.get("delivery_token")),
                verified=bool(c.get("verified")),
                identity_changed=bool(c.get("identity_changed")),
                token_shared=False,  # this device has not told the contact anything yet
            )
        for m in messages:
            body = _d(m.get("body"))
            if body is not None and isinstance(m.get("peer"), str) and isinstance(m.get("id"), str):
                status = m.get("status") if m.get("status") != "sending" else "failed"
                store.add_message(
                    m["id"], m["peer"], str(m.get("dir")), int(m.get("ts") or 0),
                    str(status), body, now_ms, unseen=False,
                )  # fmt: skip
            done += 1
            if progress is not None and (done % 500 == 0 or done == total):
                progress(done, total)
        for g in doc.get("groups") or []:
            history = _d(g.get("history"))
            if isinstance(g.get("id"), str) and history is not None:
                store.put_group(
                    GroupRow(g["id"], history, None, b"[]", bool(g.get("left"))), now_ms
                )
        for k in doc.get("sender_keys") or []:
            record = _d(k.get("record"))
            if record is not None:
                store.put_sender_key(str(k["group"]), str(k["address"]), int(k["device"]), record)
    if progress is not None and total == 0:
        progress(0, 0)
    return done
