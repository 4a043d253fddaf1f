"""The async XChat client: one device, one profile directory (PROTOCOL.md Part IV).

The only place in the SDK that does I/O and retries; the pure parts live in
``xchat.crypto`` (sessions, sealed sender, padding), ``xchat.protocol`` (frames) and
:mod:`xchat.client.content`. Apps (the ``xchat`` command, the web app) are thin layers
over this class and its events.

The class is assembled from one layer per concept, each importing only the ones below
it: :mod:`~xchat.client.account` (profile, identity, auth, prekeys, events) ->
:mod:`~xchat.client.contacts` -> :mod:`~xchat.client.sending` ->
:mod:`~xchat.client.receiving` (receive loop, receipts); groups are a component
(:class:`~xchat.client.groups.Groups`) that sees the sending layer only; rich messaging
is another (:class:`~xchat.client.rich_send.Messaging`), which sees this class through
the interface :class:`~xchat.client.rich_send.MessagingHost` and which the layers below
see through :class:`~xchat.client.sending.RichMessaging` (no cycle, even in type hints).

Typical use::

    async with Client("~/.xchat") as c:          # existing profile
        await c.send_text("@bob", "hi")
        for ev in await c.receive(wait=1.0):
            ...
"""

from __future__ import annotations

import contextlib
import os

from xchat.client.devices import DeviceMethods, Devices
from xchat.client.groups import GroupMethods, Groups
from xchat.client.model import (
    AccountInfo,
    HistoryItem,
    RetryResult,
    now_ms,
    profile_path,
)
from xchat.client.receiving import ReceivingClient
from xchat.client.rich_send import Messaging
from xchat.client.transport import BACKOFF_CAP


class Client(ReceivingClient, GroupMethods, DeviceMethods):
    """One device's client. Opening takes the profile lock (ProfileLocked if taken).
    Group methods (``create_group``, ``send_group``, ...) come from
    :class:`~xchat.client.groups.GroupMethods`, device methods (``link_device``,
    ``devices``, ...) from :class:`~xchat.client.devices.DeviceMethods`."""

    #: rich messaging (PROTOCOL Part VIII): the layers below see it as the interface
    #: :class:`~xchat.client.sending.RichMessaging`, the app as this class
    messaging: Messaging

    def __init__(
        self,
        profile_dir: str | os.PathLike[str] | None = None,
        *,
        passphrase: str | None = None,
        reconnect_cap: float = BACKOFF_CAP,
    ) -> None:
        self._groups = Groups(self)
        self.messaging = Messaging(self)  # PROTOCOL Part VIII
        self._devices = Devices(self)
        super().__init__(profile_dir, passphrase=passphrase, reconnect_cap=reconnect_cap)
        self.on_event(self.messaging.on_event)
        self.messaging.opened()  # expired disappearing messages go before anything reads

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop background work, close sockets, the store, and release the lock."""
        await self.stop()
        for t in list(self._bg):
            t.cancel()
        for t in list(self._bg):
            with contextlib.suppress(BaseException):
                await t
        if self._sender is not None:
            await self._sender.aclose()
            self._sender = None
        if self._api is not None:
            await self._api.aclose()
            self._api = None
        await self.messaging.stop()
        self.messaging.close()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.profile.close()


__all__ = ["AccountInfo", "Client", "HistoryItem", "RetryResult", "now_ms", "profile_path"]
