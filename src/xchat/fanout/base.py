"""Routing of deliveries to the node that holds a device's socket (PROTOCOL Part III §8).

On one machine (``local.py``) that is a dict lookup. With several nodes a Redis backend
would publish to the node that registered the device; the interface stays the same.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Protocol


class DeviceSocket(Protocol):
    """What the fan-out needs from a live device connection (``server.realtime``)."""

    def push(self, seq: int, envelope_id: bytes, ts_ms: int, content: bytes) -> None:
        """Queue one envelope for delivery, in the order pushed."""

    def push_frame(self, frame: bytes) -> None:
        """Queue an already encoded server frame (KEYS_LOW, ...)."""

    def replaced(self) -> None:
        """A newer socket for the same device took over: close this one."""


class Fanout(abc.ABC):
    async def start(self) -> None:
        """Connect to whatever routes between nodes (after the store is open)."""
        return None

    async def stop(self) -> None:
        """Disconnect (before the store closes)."""
        return None

    @abc.abstractmethod
    def attach(self, device_ref: int, sock: DeviceSocket) -> None:
        """Route this device's deliveries to ``sock``; the previous socket is replaced."""

    @abc.abstractmethod
    def detach(self, device_ref: int, sock: DeviceSocket) -> None:
        """Stop routing to ``sock`` (no-op if another socket has replaced it)."""

    @abc.abstractmethod
    def deliver(
        self, device_ref: int, seq: int, envelope_id: bytes, ts_ms: int, content: bytes
    ) -> bool:
        """Push one committed envelope; False when the device has no socket (it stays
        queued for a later fetch)."""

    @abc.abstractmethod
    def notify(self, device_ref: int, frame: bytes) -> bool:
        """Push a control frame to the device if connected."""

    def gauges(self) -> dict[str, Callable[[], float]]:
        """Extra /metrics gauges of this fan-out (name → reader). Default: none."""
        return {}

    def backlog_pushed(
        self, device_ref: int, sock: DeviceSocket, envelope_ids: list[bytes]
    ) -> None:
        """The socket queued these stored envelopes while reading its backlog (a fan-out
        that re-pushes from the store must not push them again). Default: nothing."""
        return None

    @abc.abstractmethod
    def connected(self) -> int:
        """Number of attached device sockets (for metrics)."""
