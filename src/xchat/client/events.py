"""Events the :class:`~xchat.client.Client` emits (docs/protocol/client.md §6).

Frozen dataclasses, delivered in order to every subscriber (an async iterator from
``Client.events()`` or a callback registered with ``Client.on_event``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    #: for a file message: the manifest object (docs/protocol/files.md); else None
    file: dict[str, Any] | None = None


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
class ConnectionChanged:
    """The receive socket connected (``connected=True``) or was lost."""

    connected: bool


@dataclass(frozen=True)
class Drained:
    """The server has delivered the backlog that was queued when the socket opened."""


Event = (
    MessageReceived
    | ReceiptReceived
    | IdentityChangedEvent
    | DecryptionFailed
    | ConnectionChanged
    | Drained
)
