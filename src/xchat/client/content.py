"""The end-to-end message content format (PROTOCOL.md Part IV §2).

This is the plaintext inside the Double Ratchet: a UTF-8 JSON object, so later content
types (groups, files, calls) can be added without a new wire format. The server never
sees it.

    {"v": 1, "id": "<32 hex>", "type": "text" | "receipt" | "profile" | "reset", "ts": <ms>,
     "text": str?, "reply_to": "<32 hex>"?, "receipt_for": ["<32 hex>", ...]?,
     "sender": {"handle": str | null, "delivery_token": "<b64 16 bytes>"}?}

Group content (PROTOCOL.md Part V §10) adds the types ``group_update`` and
``sender_key`` (sent pairwise) and a ``"group"`` object (an opaque JSON object validated by
:mod:`xchat.client.groups`, like ``"file"`` by :mod:`xchat.client.files`).

Unknown keys are ignored (forward compatibility); an unknown ``v`` is
:class:`UnsupportedVersion`; an unknown ``type`` is kept as-is so the caller can skip it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from xchat import encoding
from xchat.errors import DecodeError, TooLarge, UnsupportedVersion

CONTENT_VERSION = 1
#: Plaintext JSON limit: below padding's 128 KiB top bucket, and room for a group welcome
#: (a 1,000-member snapshot is 66 KB, 88 KB in base64).
MAX_CONTENT_BYTES = 120 * 1024
MAX_TEXT_CHARS = 16 * 1024
MAX_RECEIPT_IDS = 256
TYPES: tuple[str, ...] = (
    "text",
    "file",
    "receipt",
    "profile",
    "reset",
    "group_update",
    "sender_key",
)
#: call signalling (PROTOCOL Part IX §2), each with a "call" object (``client.call_state``)
CALL_TYPES = (
    "call_offer",
    "call_answer",
    "call_ice",
    "call_ringing",
    "call_busy",
    "call_decline",
    "call_hangup",
)
TYPES = TYPES + CALL_TYPES
#: rich messaging (PROTOCOL Part VIII): each carries its fields in ``Content.rich``
RICH_TYPES = ("reaction", "edit", "delete", "typing", "disappear")
TYPES = TYPES + RICH_TYPES
#: between one account's own devices (PROTOCOL Part VII §5), with a ``Content.sync`` object
TYPES = (*TYPES, "sync")
#: top-level JSON keys of Part VIII, each an object validated by ``client.rich_content``
RICH_KEYS = ("reaction", "edit", "delete", "typing", "disappear", "receipt", "quote", "expires")

_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_message_id() -> str:
    """A fresh 128-bit content id (hex), chosen by the sender."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class SenderInfo:
    """What a sender tells a contact about itself, inside E2EE content (§3)."""

    handle: str | None
    delivery_token: bytes | None
    #: The relay's signature that ``handle`` is this sender's (PROTOCOL Part IV §3.2): lets
    #: the recipient adopt the handle without a lookup that would name the sender.
    handle_cert: bytes | None = None


@dataclass(frozen=True)
class Content:
    id: str
    type: str
    ts: int
    text: str | None = None
    reply_to: str | None = None
    receipt_for: tuple[str, ...] = field(default_factory=tuple)
    sender: SenderInfo | None = None
    #: type "file": the attachment manifest (PROTOCOL.md Part VI), validated by
    #: ``xchat.client.files``; carried here as an opaque JSON object.
    file: dict[str, Any] | None = None
    #: group content: ``{"id": hex, ...}`` (PROTOCOL Part V §10), validated by ``client.groups``.
    group: dict[str, Any] | None = None
    #: call signals: ``{"id": call id hex, ...}`` (PROTOCOL Part IX §2), validated by
    #: ``client.call_state.parse_signal``.
    call: dict[str, Any] | None = None
    #: Part VIII objects by key (RICH_KEYS), validated by ``client.rich_content``.
    rich: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: type "sync" (own devices only): ``{"kind": ..., ...}`` (PROTOCOL Part VII §5),
    #: validated by ``client.device_sync``.
    sync: dict[str, Any] | None = None

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": CONTENT_VERSION,
            "id": self.id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.text is not None:
            obj["text"] = self.text
        if self.reply_to is not None:
            obj["reply_to"] = self.reply_to
        if self.receipt_for:
            obj["receipt_for"] = list(self.receipt_for)
        if self.file is not None:
            obj["file"] = self.file
        if self.group is not None:
            obj["group"] = self.group
        if self.call is not None:
            obj["call"] = self.call
        for key, value in self.rich.items():
            obj[key] = value
        if self.sync is not None:
            obj["sync"] = self.sync
        if self.sender is not None:
            obj["sender"] = {
                "handle": self.sender.handle,
                "delivery_token": (
                    encoding.b64encode(self.sender.delivery_token)
                    if self.sender.delivery_token is not None
                    else None
                ),
            }
            if self.sender.handle_cert is not None:
                obj["sender"]["handle_cert"] = encoding.b64encode(self.sender.handle_cert)
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(data) > MAX_CONTENT_BYTES:
            raise TooLarge(f"message content is larger than {MAX_CONTENT_BYTES} bytes")
        return data

    @classmethod
    def decode(cls, data: bytes) -> Content:
        if len(data) > MAX_CONTENT_BYTES:
            raise TooLarge("message content too large")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DecodeError("message content is not UTF-8 JSON") from None
        except RecursionError:
            # A peer can nest arrays thousands deep inside a valid encrypted message.
            raise DecodeError("message content is nested too deeply") from None
        if not isinstance(obj, dict):
            raise DecodeError("message content is not a JSON object")
        if obj.get("v") != CONTENT_VERSION:
            raise UnsupportedVersion(f"unsupported content version {obj.get('v')!r}")
        msg_id = obj.get("id")
        ctype = obj.get("type")
        ts = obj.get("ts")
        if not isinstance(msg_id, str) or not _ID_RE.match(msg_id):
            raise DecodeError("content id must be 32 lower-case hex digits")
        if not isinstance(ctype, str) or not isinstance(ts, int) or isinstance(ts, bool):
            raise DecodeError("content type/ts missing")
        text = obj.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
            raise DecodeError("content text invalid")
        reply_to = obj.get("reply_to")
        if reply_to is not None and (not isinstance(reply_to, str) or not _ID_RE.match(reply_to)):
            raise DecodeError("content reply_to invalid")
        rf = obj.get("receipt_for", [])
        if (
            not isinstance(rf, list)
            or len(rf) > MAX_RECEIPT_IDS
            or not all(isinstance(i, str) and _ID_RE.match(i) for i in rf)
        ):
            raise DecodeError("content receipt_for invalid")
        file = obj.get("file")
        if file is not None and not isinstance(file, dict):
            raise DecodeError("content file must be a JSON object")
        group = obj.get("group")
        if group is not None and not isinstance(group, dict):
            raise DecodeError("content group must be a JSON object")
        call = obj.get("call")
        if call is not None and not isinstance(call, dict):
            raise DecodeError("content call must be a JSON object")
        sync = obj.get("sync")
        if sync is not None and not isinstance(sync, dict):
            raise DecodeError("content sync must be a JSON object")
        rich = {k: obj[k] for k in RICH_KEYS if k in obj}
        if not all(isinstance(v, dict) for v in rich.values()):
            raise DecodeError("content rich field must be a JSON object")
        return cls(
            id=msg_id,
            type=ctype,
            ts=ts,
            text=text,
            reply_to=reply_to,
            receipt_for=tuple(rf),
            sender=_decode_sender(obj.get("sender")),
            file=file,
            group=group,
            call=call,
            rich=rich,
            sync=sync,
        )


def _decode_sender(s: object) -> SenderInfo | None:
    if s is None:
        return None
    if not isinstance(s, dict):
        raise DecodeError("content sender invalid")
    handle = s.get("handle")
    if handle is not None and (not isinstance(handle, str) or len(handle) > 64):
        raise DecodeError("content sender handle invalid")
    tok = s.get("delivery_token")
    token: bytes | None = None
    if tok is not None:
        token = encoding.b64decode(tok, "content delivery token", 16)
    cert: bytes | None = None
    raw_cert = s.get("handle_cert")
    if raw_cert is not None:
        if not isinstance(raw_cert, str) or len(raw_cert) > 1024:
            raise DecodeError("content handle certificate invalid")
        cert = encoding.b64decode(raw_cert, "content handle certificate")
    return SenderInfo(handle=handle, delivery_token=token, handle_cert=cert)


def text_message(
    text: str, now_ms: int, *, reply_to: str | None = None, sender: SenderInfo | None = None
) -> Content:
    if len(text) > MAX_TEXT_CHARS:
        raise TooLarge(f"text is longer than {MAX_TEXT_CHARS} characters")
    return Content(
        id=new_message_id(), type="text", ts=now_ms, text=text, reply_to=reply_to, sender=sender
    )


def receipt(ids: list[str], now_ms: int, *, sender: SenderInfo | None = None) -> Content:
    return Content(
        id=new_message_id(), type="receipt", ts=now_ms, receipt_for=tuple(ids), sender=sender
    )
