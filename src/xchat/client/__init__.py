"""xchat.client: the async client SDK (PROTOCOL.md Part IV).

``from xchat.client import Client, MessageReceived`` — names are loaded lazily so that
importing a light submodule (e.g. ``xchat.client.content``) does not pull in the
network stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xchat.client.client import AccountInfo, Client, HistoryItem
    from xchat.client.events import (
        ConnectionChanged,
        DecryptionFailed,
        Drained,
        Event,
        IdentityChangedEvent,
        MessageReceived,
        ReceiptReceived,
    )

_CLIENT = {"AccountInfo", "Client", "HistoryItem"}
_EVENTS = {
    "ConnectionChanged",
    "DecryptionFailed",
    "Drained",
    "Event",
    "IdentityChangedEvent",
    "MessageReceived",
    "ReceiptReceived",
}

__all__ = [
    "AccountInfo",
    "Client",
    "ConnectionChanged",
    "DecryptionFailed",
    "Drained",
    "Event",
    "HistoryItem",
    "IdentityChangedEvent",
    "MessageReceived",
    "ReceiptReceived",
]


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from xchat.client import client

        return getattr(client, name)
    if name in _EVENTS:
        from xchat.client import events

        return getattr(events, name)
    raise AttributeError(f"module 'xchat.client' has no attribute {name!r}")
