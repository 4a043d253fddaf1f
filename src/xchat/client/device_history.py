"""The history archive a device sends to a newly linked one (PROTOCOL.md Part VII §6).

Conversations, contacts (with pinned keys and verification marks), groups (state and the
sender keys of other members, so the new device reads their next messages) and settings,
as compressed JSON encrypted under a fresh key and uploaded once to the blob store; the key
and digest travel in the (encrypted) link answer. Sessions, prekeys and our own sender
keys are per device and never leave it.

Attachments do not travel inside the archive: each decrypted attachment this device holds
(newest first, up to a total the approving user chooses) is uploaded as its own encrypted
blob through the ordinary file pipeline (Part VI, :func:`xchat.client.files.send_file`,
streamed from disk), and the archive carries only its manifest (blob id, key, digest). So
the archive stays small whatever the attachments weigh, neither side holds an attachment
in memory, and the new device downloads each one like a received file, with progress.

Every base64 field is decoded strictly (:mod:`xchat.encoding`): a junk field refuses the
whole archive with a :class:`~xchat.errors.DecodeError` naming it, before anything is
written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat import encoding
from xchat.client.files import FileManifest
from xchat.client.store import GroupRow, Store
from xchat.errors import DecodeError, DecryptionError

ARCHIVE_VERSION = 1
LABEL_ARCHIVE = b"XChat-v1-history-archive"
#: Bound on what a new device accepts (decompressed), against a decompression bomb. The
#: archive holds message bodies and manifests only (attachments are separate blobs).
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MESSAGE_PAGE = 5000

Progress = Callable[[int, int], None]
#: the local paths of one message's decrypted attachment: ``files(peer, id)``
LocalFiles = Callable[[str, str], list[str]]
#: default total of attachment bytes sent with a history (``--max-attachments`` MB)
DEFAULT_MAX_ATTACHMENTS = 25 * 1024 * 1024
#: the largest total a user may choose
MAX_ATTACHMENTS_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class AttachmentRef:
    """One attachment of the history: the message it belongs to and its blob manifest."""

    peer: str
    id: str
    manifest: FileManifest

    def to_json(self) -> dict[str, Any]:
        return {"peer": self.peer, "id": self.id, "file": self.manifest.to_json()}


def _e(data: bytes | None) -> str | None:
    return encoding.b64encode(data) if data is not None else None


def _b(value: object, what: str) -> bytes:
    """A required base64 field of the archive (strict; DecodeError names the field)."""
    return encoding.b64decode(value, f"history archive {what}")


def _opt_b(value: object, what: str) -> bytes | None:
    return None if value is None else _b(value, what)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"history archive {what}: not a string")
    return value


def _list(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DecodeError(f"history archive {key}: not a list of objects")
    return value


def pick_attachments(
    messages: list[dict[str, Any]], files: LocalFiles, budget: int
) -> list[tuple[str, str, Path]]:
    """``(peer, id, path)`` of the decrypted attachments of ``messages`` this device holds,
    newest first, while their total stays within ``budget`` bytes (a file that does not fit
    is skipped, a smaller older one may still go)."""
    out: list[tuple[str, str, Path]] = []
    for row in reversed(messages):
        if budget <= 0:
            break
        for path in files(row["peer"], row["id"]):
            p = Path(path)
            try:
                size = p.stat().st_size
                if size > budget or not p.is_file():
                    continue
            except OSError:
                continue  # deleted or moved by the user: the manifest still travels
            budget -= size
            out.append((row["peer"], row["id"], p))
            break
    return out


def export(store: Store, settings: dict[str, Any], *, messages: bool = True) -> dict[str, Any]:
    """The archive document without attachments (:func:`encode` makes the bytes)."""
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
    return {
        "v": ARCHIVE_VERSION,
        "contacts": contacts,
        "messages": rows,
        "groups": groups,
        "sender_keys": sender_keys,
        "settings": settings,
        "files": [],
    }


def encode(doc: dict[str, Any]) -> bytes:
    """The plaintext archive: JSON, zlib-compressed (level 6)."""
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
    try:
        raw = d.decompress(plain, MAX_ARCHIVE_BYTES)
    except zlib.error:
        raise DecodeError("history archive is not valid zlib") from None
    if d.unconsumed_tail:
        raise DecodeError("history archive too large")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise DecodeError("history archive is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != ARCHIVE_VERSION:
        raise DecodeError("unsupported history archive")
    return doc


@dataclass(frozen=True)
class _Parsed:
    contacts: list[tuple[str, dict[str, Any], bytes | None, bytes | None]]
    messages: list[tuple[str, str, str, int, str, bytes]]
    groups: list[tuple[str, bytes, bool]]
    sender_keys: list[tuple[str, str, int, bytes]]
    files: list[AttachmentRef]


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"history archive {what}: not an integer")
    return value


def _parse(doc: dict[str, Any]) -> _Parsed:
    """Check every field of the archive before anything is written (DecodeError)."""
    contacts = []
    for i, c in enumerate(_list(doc, "contacts")):
        where = f"contacts[{i}]"
        contacts.append(
            (
                _str(c.get("address"), f"{where}.address"),
                c,
                _opt_b(c.get("identity_key"), f"{where}.identity_key"),
                _opt_b(c.get("delivery_token"), f"{where}.delivery_token"),
            )
        )
    messages = []
    for i, m in enumerate(_list(doc, "messages")):
        where = f"messages[{i}]"
        status = _str(m.get("status"), f"{where}.status")
        messages.append(
            (
                _str(m.get("id"), f"{where}.id"),
                _str(m.get("peer"), f"{where}.peer"),
                _str(m.get("dir"), f"{where}.dir"),
                _int(m.get("ts"), f"{where}.ts"),
                "failed" if status == "sending" else status,
                _b(m.get("body"), f"{where}.body"),
            )
        )
    groups = [
        (
            _str(g.get("id"), f"groups[{i}].id"),
            _b(g.get("history"), f"groups[{i}].history"),
            bool(g.get("left")),
        )
        for i, g in enumerate(_list(doc, "groups"))
    ]
    sender_keys = [
        (
            _str(k.get("group"), f"sender_keys[{i}].group"),
            _str(k.get("address"), f"sender_keys[{i}].address"),
            _int(k.get("device"), f"sender_keys[{i}].device"),
            _b(k.get("record"), f"sender_keys[{i}].record"),
        )
        for i, k in enumerate(_list(doc, "sender_keys"))
    ]
    files = []
    for i, a in enumerate(_list(doc, "files")):
        try:
            manifest = FileManifest.from_json(a.get("file"))
        except DecodeError as exc:
            raise DecodeError(f"history archive files[{i}]: {exc}") from None
        files.append(
            AttachmentRef(
                _str(a.get("peer"), f"files[{i}].peer"), _str(a.get("id"), f"files[{i}].id"),
                manifest,
            )
        )  # fmt: skip
    return _Parsed(contacts, messages, groups, sender_keys, files)


def import_into(
    store: Store, doc: dict[str, Any], now_ms: int, progress: Progress | None = None
) -> tuple[int, list[AttachmentRef]]:
    """Write an archive into a fresh store (one transaction; a malformed field refuses it
    all, DecodeError). Returns the messages imported and the attachments to download (only
    those of messages the archive brought)."""
    parsed = _parse(doc)
    total = len(parsed.messages)
    done = 0
    with store.transaction():
        for address, c, identity_key, token in parsed.contacts:
            store.ensure_contact(address, now_ms)
            store.update_contact(
                address,
                handle=c.get("handle") if isinstance(c.get("handle"), str) else None,
                identity_key=identity_key,
                delivery_token=token,
                verified=bool(c.get("verified")),
                identity_changed=bool(c.get("identity_changed")),
                token_shared=False,  # this device has not told the contact anything yet
            )
        for msg_id, peer, direction, ts, status, body in parsed.messages:
            store.add_message(msg_id, peer, direction, ts, status, body, now_ms, unseen=False)
            done += 1
            if progress is not None and (done % 500 == 0 or done == total):
                progress(done, total)
        for gid, history, left in parsed.groups:
            store.put_group(GroupRow(gid, history, None, b"[]", left), now_ms)
        for gid, address, device, record in parsed.sender_keys:
            store.put_sender_key(gid, address, device, record)
    if progress is not None and total == 0:
        progress(0, 0)
    files = [f for f in parsed.files if store.get_message(f.peer, f.id) is not None]
    return done, files
