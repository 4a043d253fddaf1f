"""The device-list layer of the client: which devices an account has, as its identity key
signed it (PROTOCOL.md Part VII §2).

Sits between the contacts and the sending layer: a sender asks it for the device ids to
encrypt to, and it answers only from a list whose signature it checked and whose version
never went backwards. The relay's own idea of the device set is used only to notice that
our copy is stale (its 409 ``device list mismatch``); a device the relay names that the
newest signed list does not contain is refused (:class:`~xchat.errors.UntrustedDevice`).
"""

from __future__ import annotations

import logging

from xchat.client.api import b64d, b64e
from xchat.client.contacts import ContactsClient
from xchat.client.model import now_ms
from xchat.crypto.devicelist import (
    MAX_DEVICES,
    DeviceEntry,
    DeviceList,
    check_successor,
    open_name,
    seal_name,
)
from xchat.crypto.keys import IdentityPublicKey
from xchat.errors import ApiError, ClientError, DecodeError, UntrustedDevice

log = logging.getLogger(__name__)

API = "/api/v1"


def _meta_key(address: str) -> str:
    return f"device_list:{address}"


class DeviceListClient(ContactsClient):
    """Verified device lists: our own and every contact's."""

    @property
    def device_id(self) -> int:
        return self.profile.config.device_id or 1

    def cached_list(self, address: str) -> DeviceList | None:
        """The newest list of ``address`` this device verified (None: never saw one)."""
        raw = self.store.get_meta(_meta_key(address))
        return DeviceList.decode(raw) if raw is not None else None

    def _save_list(self, address: str, dl: DeviceList) -> None:
        # No transaction of its own: it also runs inside the receive path's. The list is
        # what decides where we encrypt, so a crash between the two leaves only a stale,
        # unused session.
        old = self.cached_list(address)
        self.store.put_meta(_meta_key(address), dl.encode())
        if old is not None:
            for gone in set(old.device_ids) - set(dl.device_ids):
                # A removed device loses its session here: nothing is encrypted to it.
                self.store.delete_session(address, gone)

    def adopt_list(self, address: str, identity: IdentityPublicKey, raw: bytes) -> DeviceList:
        """Verify ``raw`` as ``address``'s list (signature, no rollback) and keep it if newer."""
        try:
            dl = DeviceList.decode(raw)
        except DecodeError as exc:
            raise UntrustedDevice(f"malformed device list for {address}: {exc}") from None
        dl.verify(identity)
        old = self.cached_list(address)
        check_successor(old, dl)
        if old is None or dl.version > old.version:
            self._save_list(address, dl)
        return dl

    async def fetch_device_list(
        self, address: str, identity: IdentityPublicKey
    ) -> DeviceList | None:
        """Ask the relay for ``address``'s list and verify it; None for an account that
        never had one (a single device, id 1)."""
        resp = await self.api.anonymous("GET", f"{API}/devices/{address}")
        raw = resp.get("list") if isinstance(resp, dict) else None
        if raw is None:
            old = self.cached_list(address)
            if old is not None:
                raise UntrustedDevice(
                    f"the relay withholds the device list of {address} "
                    f"(version {old.version} was verified)"
                )
            return None
        return self.adopt_list(address, identity, b64d(raw, "list"))

    def device_ids(self, address: str) -> list[int]:
        """Devices to encrypt to: the verified list, else the single device 1."""
        dl = self.cached_list(address)
        return list(dl.device_ids) if dl is not None else [1]

    def own_other_devices(self) -> list[int]:
        dl = self.cached_list(self.address)
        return [d for d in dl.device_ids if d != self.device_id] if dl is not None else []

    def check_relay_devices(self, address: str, relay_ids: set[int]) -> None:
        """After refreshing: the relay's device set must be exactly the signed list's."""
        listed = set(self.device_ids(address))
        extra, missing = relay_ids - listed, listed - relay_ids
        if extra:
            raise UntrustedDevice(
                f"the relay lists device(s) {sorted(extra)} of {address} that its signed "
                "device list does not contain: refusing to encrypt to them"
            )
        if missing:
            raise UntrustedDevice(
                f"the relay dropped device(s) {sorted(missing)} of {address} that its signed "
                "device list names"
            )

    # --- our own list ---------------------------------------------------------------------

    def device_names(self, dl: DeviceList) -> dict[int, str]:
        seed = self.identity.seed
        return {e.device_id: open_name(seed, e.device_id, e.name_sealed) for e in dl.entries}

    def new_entry(self, device_id: int, name: str, linked_ms: int | None = None) -> DeviceEntry:
        t = now_ms() if linked_ms is None else linked_ms
        return DeviceEntry(device_id, t, seal_name(self.identity.seed, device_id, name))

    async def own_list(self, *, refresh: bool = False) -> DeviceList:
        """Our account's list; the first call on a never-linked account publishes
        version 1 naming only this device."""
        dl = self.cached_list(self.address)
        if dl is None or refresh:
            dl = await self.fetch_device_list(self.address, self.identity.public) or dl
        if dl is None:
            entry = self.new_entry(self.device_id, "this device")
            dl = await self.publish_own_list((entry,), 1)
        return dl

    async def publish_own_list(self, entries: tuple[DeviceEntry, ...], version: int) -> DeviceList:
        """Sign and upload a new list (rename or removal; adding is done by linking)."""
        if len(entries) > MAX_DEVICES:
            raise ClientError(f"at most {MAX_DEVICES} devices per account")
        dl = DeviceList.sign(self.identity, version, now_ms(), entries)
        api = await self._authed()
        try:
            await api.request("PUT", f"{API}/devices", auth=True, json={"list": b64e(dl.encode())})
        except ApiError as exc:
            if exc.status == 409:
                raise ClientError(
                    f"the device list changed meanwhile, try again ({exc.message})"
                ) from None
            raise
        self._save_list(self.address, dl)
        return dl
