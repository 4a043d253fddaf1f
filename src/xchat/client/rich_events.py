"""Events of rich messaging (PROTOCOL.md Part VIII), emitted after the data is stored.

``conv`` names the conversation: the contact's address for a 1:1 chat, ``group:<gid>``
for a group (then ``group`` is the group id). Apps show them; nothing here is I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReactionChanged:
    """``sender`` set (``emoji``) or removed (``emoji is None``) its one reaction."""

    conv: str
    group: str | None
    sender: str
    target_id: str
    target_author: str
    emoji: str | None
    ts_ms: int


@dataclass(frozen=True)
class MessageEdited:
    conv: str
    group: str | None
    sender: str
    target_id: str
    text: str
    version: int  # 1 = first edit
    ts_ms: int


@dataclass(frozen=True)
class MessageDeleted:
    """The author deleted its message for everyone: a tombstone is left."""

    conv: str
    group: str | None
    sender: str
    target_id: str
    ts_ms: int


@dataclass(frozen=True)
class RichReceipt:
    """A read receipt (1:1 or group) or a group delivery receipt from ``sender``."""

    conv: str
    group: str | None
    sender: str
    kind: str  # "delivered" | "read"
    message_ids: tuple[str, ...]
    ts_ms: int


@dataclass(frozen=True)
class TypingChanged:
    """Never stored: show for at most ``rich_content.TYPING_TTL_MS``."""

    conv: str
    group: str | None
    sender: str
    started: bool
    ts_ms: int


@dataclass(frozen=True)
class TimerChanged:
    """The disappearing-messages timer of ``conv`` is now ``seconds`` (None: off)."""

    conv: str
    group: str | None
    sender: str  # our own address when we set it
    seconds: int | None
    ts_ms: int


@dataclass(frozen=True)
class GroupNotice:
    """A group change, as a line in the conversation ("@ann added @ben")."""

    group: str
    kind: str  # "added" | "removed" | "left" | "renamed" | "joined"
    by: str | None  # address (None: we did it)
    targets: tuple[str, ...]
    name: str
    text: str
    ts_ms: int


@dataclass(frozen=True)
class MessageRequest:
    """A first message from someone who is not a contact: it waits in Requests and
    nothing (receipt, typing) goes back until :meth:`Messaging.accept`."""

    address: str
    message_id: str


@dataclass(frozen=True)
class MessagesExpired:
    """Disappearing messages whose timer ran out; already deleted from the store."""

    conv: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class RichRejected:
    """A reaction/edit/delete that every client refuses (e.g. a non-author's edit)."""

    conv: str
    sender: str
    kind: str
    target_id: str | None
    reason: str


RichEvent = (
    ReactionChanged
    | MessageEdited
    | MessageDeleted
    | RichReceipt
    | TypingChanged
    | TimerChanged
    | GroupNotice
    | MessageRequest
    | MessagesExpired
    | RichRejected
)
