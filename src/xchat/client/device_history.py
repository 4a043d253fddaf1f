"""The history archive a device sends to a newly linked one (PROTOCOL.md Part VII §6).

Conversations, contacts (with pinned keys and verification marks), groups (state and the
sender keys of other members, so the new device reads their next messages) and settings,
as compressed JSON encrypted under a fresh key and uploaded once to the blob store; the key
and digest travel in the (encrypted) link answer. Sessions, prekeys and our own sender
keys are per device and never leave it. File messages carry their manifests, so attachments
stay downloadable from the blob store while the blobs live; the decrypted attachments this
device holds are copied into the archive too, newest first, up to a total the approving
user chooses (``attachments``, Part VII §6), so they open on the new device after the blobs
expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import zlib
from collections.abc import Callable
from pathlib import Path
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
#: the local paths of one message's decrypted attachment: ``files(peer, id)``
LocalFiles = Callable[[str, str], list[str]]
#: the new device keeps one copied attachment: ``save(peer, id, name, data)``
SaveFile = Callable[[str, str, str, bytes], None]
#: default total of attachment bytes copied into an archive (``--max-attachments`` MB)
DEFAULT_MAX_ATTACHMENTS = 25 * 1024 * 1024
#: the largest total a user may choose (the archive itself is bounded by MAX_ARCHIVE_BYTES)
MAX_ATTACHMENTS_LIMIT = 256 * 1024 * 1024


def _e(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _d(value: object) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else None


def _attachments(
    rows: list[dict[str, Any]], files: LocalFiles, budget: int
) -> list[dict[str, Any]]:
    """The decrypted attachments of ``rows`` this device holds, newest first, while their
    total stays within ``budget`` bytes (a file that does not fit is skipped, a smaller
    older one may still go)."""
    out: list[dict[str, Any]] = []
    for row in reversed(rows):
        if budget <= 0:
            break
        for path in files(row["peer"], row["id"]):
            p = Path(path)
            try:
                size = p.stat().st_size
                if size > budget or not p.is_file():
                    continue
                data = p.read_bytes()
            except OSError:
                continue  # deleted or moved by the user: the manifest still travels
            budget -= len(data)
            out.append({"peer": row["peer"], "id": row["id"], "name": p.name, "data": _e(data)})
            break
    return out


def export(
    store: Store,
    settings: dict[str, Any],
    *,
    messages: bool = True,
    files: LocalFiles | None = None,
    max_attachment_bytes: int = 0,
) -> bytes:
    """The plaintext archive (JSON, zlib-compressed), with up to ``max_attachment_bytes``
    of the attachments ``files`` finds."""
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
    attachments = (
        _attachments(rows, files, max_attachment_bytes)
        if files is not None and max_attachment_bytes > 0
        else []
    )
    doc = {
        "v": ARCHIVE_VERSION,
        "attachments": attachments,
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
    store: Store,
    doc: dict[str, Any],
    now_ms: int,
    progress: Progress | None = None,
    save_file: SaveFile | None = None,
) -> int:
    """Write an archive into a fresh store (one transaction); returns messages imported.
    Each copied attachment of an imported message goes to ``save_file``."""
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
        for a in doc.get("attachments") or [] if save_file is not None else []:
            peer, mid, name = a.get("peer"), a.get("id"), a.get("name")
            try:
                data = _d(a.get("data"))
            except (binascii.Error, ValueError):
                continue
            if not (isinstance(peer, str) and isinstance(mid, str) and data is not None):
                continue
            if store.get_message(peer, mid) is None:
                continue  # only attachments of messages the archive brought
            assert save_file is not None
            save_file(peer, mid, name if isinstance(name, str) else "attachment", data)
    if progress is not None and total == 0:
        progress(0, 0)
    return done
