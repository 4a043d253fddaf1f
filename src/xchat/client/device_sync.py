"""Applying what our own other devices tell us (content type ``sync``, PROTOCOL.md Part VII §5).

Sync messages travel only between one account's devices (a fan-out to our own address), so
every kind here is trusted exactly as much as the device that sent it: one of ours. Each
kind is idempotent (a redelivered sync changes nothing twice).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from xchat import encoding
from xchat.client import device_events as dev_ev
from xchat.errors import DecodeError, XChatError

if TYPE_CHECKING:
    from xchat.client.device_lists import DeviceListClient

#: ``conversation`` actions: what the user did to a 1:1 chat or a group (Part VIII §7)
CONVERSATION_ACTIONS = ("accept", "block", "unblock", "delete_request")


def _b64(value: object, what: str) -> bytes:
    """A base64 field of a sync message from our own device (``xchat.encoding``)."""
    return encoding.b64decode(value, f"sync {what}")


def read_mark(client: DeviceListClient, peer: str) -> int:
    """The newest read position of a conversation, as synced between our devices."""
    raw = client.store.get_meta(f"read:{peer}")
    return struct.unpack(">Q", raw)[0] if raw is not None and len(raw) == 8 else 0


def set_read_mark(client: DeviceListClient, peer: str, ts_ms: int) -> bool:
    if ts_ms <= read_mark(client, peer):
        return False
    client.store.put_meta(f"read:{peer}", struct.pack(">Q", ts_ms))
    return True


def apply(client: DeviceListClient, sync: dict[str, Any], t: int) -> list[dev_ev.DeviceSynced]:
    """Apply one sync object inside the caller's store transaction; returns its events.
    A malformed object is ignored (it came from our own device: a newer version)."""
    kind = sync.get("kind")
    try:
        if kind == "device_list":
            client.adopt_list(
                client.address, client.identity.public, _b64(sync.get("list"), "list")
            )
        elif kind == "contact":
            address = sync.get("address")
            if not isinstance(address, str) or address == client.address:
                raise DecodeError("sync contact address")
            c = client.store.ensure_contact(address, t)
            ik = sync.get("identity_key")
            key = _b64(ik, "identity_key") if ik is not None else None
            if key is not None and c.identity_key not in (None, key):
                raise DecodeError("synced identity key differs from the pinned one")
            handle = sync.get("handle")
            verified = sync.get("verified")
            client.store.update_contact(
                address,
                handle=handle if isinstance(handle, str) else None,
                identity_key=key if c.identity_key is None else None,
                verified=verified if isinstance(verified, bool) else None,
                identity_changed=False if verified is True else None,
            )
        elif kind == "settings":  # last writer wins per setting (Part VII §5)
            messaging = getattr(client, "messaging", None)  # the full client's (Part VIII)
            changed = messaging is not None and messaging.state.settings_synced(sync)
            handle = sync.get("handle")
            if "handle" in sync and (isinstance(handle, str) or handle is None):
                changed = changed or handle != client.profile.config.handle
                client.profile.config.handle = handle
                client.profile.save_config()
            if not changed:
                return []
        elif kind == "read":
            peer, ts = sync.get("peer"), sync.get("ts")
            if not isinstance(peer, str) or not isinstance(ts, int) or isinstance(ts, bool):
                raise DecodeError("sync read")
            set_read_mark(client, peer, ts)
            messaging = getattr(client, "messaging", None)  # the full client's (Part VIII)
            if messaging is not None:
                messaging.state.read_synced(peer, ts, t)
        elif kind == "conversation":
            conv, action = sync.get("conv"), sync.get("action")
            if not isinstance(conv, str) or action not in CONVERSATION_ACTIONS:
                raise DecodeError("sync conversation")
            if conv == client.address:
                raise DecodeError("sync conversation: our own address")
            messaging = getattr(client, "messaging", None)
            if messaging is None or not messaging.state.conversation_synced(conv, action, t):
                return []
        elif kind == "delete":  # a delete-for-me on our other device: here too
            conv, msg_id = sync.get("conv"), sync.get("id")
            if not isinstance(conv, str) or not isinstance(msg_id, str):
                raise DecodeError("sync delete")
            messaging = getattr(client, "messaging", None)  # the full client's (Part VIII)
            if messaging is None or not messaging.state.delete_synced(conv, msg_id):
                return []
        else:
            return []
    except XChatError:
        return []
    return [dev_ev.DeviceSynced(str(kind), dict(sync))]
