"""Events about linked devices (PROTOCOL.md Part VII), part of the client's event union."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MessageSynced:
    """A message our own other device sent (its copy came in the same upload), stored here
    as outgoing: sent messages appear on every device."""

    id: str
    to: str  # address of the conversation's peer
    text: str
    ts_ms: int
    device_id: int  # which of our devices sent it
    file: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeviceSynced:
    """Our other device changed shared state: ``kind`` is one of ``contact``, ``read``,
    ``settings``, ``device_list``, ``delete`` (PROTOCOL Part VII §5)."""

    kind: str
    data: dict[str, Any]


DeviceEvent = MessageSynced | DeviceSynced
