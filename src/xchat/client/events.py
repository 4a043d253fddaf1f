"""Events the :class:`~xchat.client.Client` emits (PROTOCOL.md Part IV §6).

Frozen dataclasses, delivered in order to every subscriber (an async iterator from
``Client.events()`` or a callback registered with ``Client.on_event``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xchat.client.device_events import DeviceEvent
from xchat.client.rich_events import RichEvent


@dataclass(frozen=True)
class MessageReceived:
    """A new text message, already stored locally (and acknowledged to the server)."""

    id: str
    sender: str  # address
    handle: str | None
    text: str
    ts_ms: int
    reply_to: str | None = None
    device_id: int = 1
    #: for a file message: the manifest object (PROTOCOL.md Part VI); else None
    file: dict[str, Any] | None = None
    #: for a group message: ``{"id": group id hex, "name": group name}``; else None
    group: dict[str, str] | None = None
    #: for a file message whose file was saved (``Client.receive(..., download=True)``
    #: or the CLI): ``{"name", "size", "sha256", "path"}``; else None
    saved_file: dict[str, Any] | None = None


@dataclass(frozen=True)
class GroupChanged:
    """A group's state moved on (created, joined, members added/removed, renamed), after
    every update we hold was checked and folded (PROTOCOL Part V §5)."""

    group_id: str  # hex
    name: str
    version: int
    by: str | None  # address of the update's pairwise sender (None: we did it)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    left: bool = False  # we are no longer a member


@dataclass(frozen=True)
class GroupUpdateRejected:
    """A group update that every member's client refuses (e.g. by a non-admin)."""

    group_id: str
    sender: str
    reason: str


@dataclass(frozen=True)
class ReceiptReceived:
    """The peer's device decrypted and stored these messages of ours."""

    sender: str
    message_ids: tuple[str, ...]
    ts_ms: int


@dataclass(frozen=True)
class IdentityChangedEvent:
    """A contact's identity key is not the one we had recorded."""

    address: str
    handle: str | None
    old_identity_key: bytes | None
    new_identity_key: bytes
    was_verified: bool


@dataclass(frozen=True)
class DecryptionFailed:
    """An envelope that could not be opened; it was acknowledged and dropped."""

    envelope_id: str
    reason: str
    sender: str | None = None


@dataclass(frozen=True)
class CallSignalReceived:
    """A call signal (content type ``call_*``, PROTOCOL.md Part IX §2) from a contact; not
    stored as a message. :class:`xchat.client.calls.CallManager` consumes these."""

    sender: str  # address
    device_id: int
    type: str
    call: dict[str, Any]
    ts_ms: int  # the sender's timestamp


@dataclass(frozen=True)
class ConnectionChanged:
    """The receive socket connected (``connected=True``) or was lost."""

    connected: bool


@dataclass(frozen=True)
class Drained:
    """The server has delivered the backlog that was queued when the socket opened."""


Event = (
    MessageReceived
    | GroupChanged
    | GroupUpdateRejected
    | ReceiptReceived
    | IdentityChangedEvent
    | DecryptionFailed
    | CallSignalReceived
    | ConnectionChanged
    | Drained
    | RichEvent  # PROTOCOL Part VIII (xchat.client.rich_events)
    | DeviceEvent  # PROTOCOL Part VII (xchat.client.device_events)
)
