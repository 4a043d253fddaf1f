"""Linked devices: linking (both sides), listing, renaming, removal, own-device sync
(PROTOCOL.md Part VII).

Linking. The NEW device picks a 120-bit code and an ephemeral X25519 key, puts an offer
(the key, sealed under the code) in a relay link slot named by a hash of the code, and
shows the code and a QR (relay URL, code, key). An EXISTING device that is given the code
opens the offer, and answers with the provisioning data (the identity seed, the account's
current signed device list, the id the new device takes, the delivery token and the
history archive's blob reference and key), encrypted to the ephemeral key with the code
mixed into the key derivation. The relay carries only ciphertext. The new device then
registers itself (``POST /devices``) with its own prekeys and the list that adds it,
signed with the identity key it now holds. Slots expire after 10 minutes and are single
use; a wrong, used or expired code is a :class:`~xchat.errors.LinkError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xchat.client import content as ct
from xchat.client import device_history as dh
from xchat.client import device_sync, e2e
from xchat.client import files as xf
from xchat.client.account import ONE_TIME_BATCH
from xchat.client.api import Api, b64d, b64e
from xchat.client.files import BlobClient
from xchat.client.model import now_ms
from xchat.client.store import ContactRecord, Store
from xchat.crypto import devicelist as dl
from xchat.crypto.keys import IdentityKeyPair, address_matches
from xchat.errors import (
    ApiError,
    ClientError,
    DecodeError,
    DecryptionError,
    LinkError,
    ProfileError,
    ProtocolError,
    ServerUnreachable,
    XChatError,
)

if TYPE_CHECKING:
    from xchat.client.sending import SendingClient

log = logging.getLogger(__name__)

API = "/api/v1"
LABEL_LINK_DEVICE = b"XChat-v1-link-device"
POLL_S = 25.0
UPLOAD_CHUNK = 256 * 1024

#: progress(phase, done, total): phase "upload" (approving side) or "download"/"import"
LinkProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DeviceInfo:
    """One row of ``xchat devices`` (also the web app's JSON shape)."""

    id: int
    name: str
    current: bool
    linked_at: int  # ms


@dataclass(frozen=True)
class LinkResult:
    """What the new device got: its id, and how much history it imported."""

    address: str
    device_id: int
    name: str
    messages: int
    history_bytes: int


@dataclass(frozen=True)
class Approval:
    """What the approving device sent."""

    device_id: int
    name: str
    history_bytes: int


def _link_error(exc: ApiError) -> LinkError:
    if exc.status == 404:
        return LinkError("unknown link code (mistyped, or made for another server?)")
    if exc.status == 410:
        return LinkError(exc.message)
    return LinkError(f"the relay refused the link: {exc.message} (HTTP {exc.status})")


class Devices:
    """Device operations of one client (use through the client's methods)."""

    def __init__(self, client: SendingClient) -> None:
        self.c = client

    # --- the list -------------------------------------------------------------------------

    async def all(self) -> list[DeviceInfo]:
        own = await self.c.own_list(refresh=True)
        names = self.c.device_names(own)
        me = self.c.device_id
        return [
            DeviceInfo(e.device_id, names[e.device_id], e.device_id == me, e.linked_ms)
            for e in own.entries
        ]

    async def remove(self, device_id: int) -> list[DeviceInfo]:
        """Sign a list without ``device_id``: the relay deletes it (its keys, queued mail,
        socket), every sender stops encrypting to it on its next send."""
        own = await self.c.own_list(refresh=True)
        if device_id not in own.device_ids:
            raise ClientError(f"no device {device_id} on this account")
        if len(own.device_ids) == 1:
            raise ClientError("cannot remove the account's only device")
        entries = tuple(e for e in own.entries if e.device_id != device_id)
        new = await self.c.publish_own_list(entries, own.version + 1)
        await self.sync_own("device_list", {"list": b64e(new.encode())})
        return await self.all()

    async def rename(self, device_id: int, name: str) -> list[DeviceInfo]:
        name = name.strip()
        if not name or len(name.encode()) > dl.MAX_NAME_LEN:
            raise ClientError(f"a device name is 1-{dl.MAX_NAME_LEN} bytes")
        own = await self.c.own_list(refresh=True)
        if device_id not in own.device_ids:
            raise ClientError(f"no device {device_id} on this account")
        entries = tuple(
            self.c.new_entry(e.device_id, name, e.linked_ms) if e.device_id == device_id else e
            for e in own.entries
        )
        new = await self.c.publish_own_list(entries, own.version + 1)
        await self.sync_own("device_list", {"list": b64e(new.encode())})
        return await self.all()

    async def sync_own(self, kind: str, data: dict[str, Any]) -> bool:
        """Tell our other devices (content type ``sync``, PROTOCOL Part VII §5); False if
        there are none."""
        if not self.c.own_other_devices():
            return False
        me = ContactRecord(
            self.c.address, None, self.c.identity.public.encode(), None, False, False, True
        )
        msg = ct.Content(
            id=ct.new_message_id(), type="sync", ts=now_ms(), sync={"kind": kind, **data}
        )
        await self.c._send_content(me, msg, store_as_message=False)
        return True

    async def sync_read(self, conv: str, ts_ms: int) -> bool:
        """``conv`` was read up to ``ts_ms`` here: remember it and tell our other devices
        (sync kind ``read``), once per new position (an older or equal one sends nothing).
        A failed sync is logged: the position stands here, the next one carries it."""
        if not device_sync.set_read_mark(self.c, conv, ts_ms):
            return False
        try:
            return await self.sync_own("read", {"peer": conv, "ts": ts_ms})
        except XChatError as exc:
            log.info("read position not synced: %s", exc)
            return False

    async def sync_settings(self, fields: dict[str, Any]) -> bool:
        """Every account setting with its timestamp (sync kind ``settings``); a failed
        sync is logged (the change stands here)."""
        try:
            return await self.sync_own("settings", fields)
        except XChatError as exc:
            log.info("settings not synced: %s", exc)
            return False

    async def sync_conversation(self, conv: str, action: str) -> bool:
        """The user accepted, blocked, unblocked or deleted a request (sync kind
        ``conversation``); a failed sync is logged (the change stands here)."""
        try:
            return await self.sync_own("conversation", {"conv": conv, "action": action})
        except XChatError as exc:
            log.info("conversation change not synced: %s", exc)
            return False

    # --- approving (an existing device) ----------------------------------------------------

    async def approve(
        self,
        code_text: str,
        *,
        history: bool = True,
        progress: LinkProgress | None = None,
        max_attachments: int = dh.DEFAULT_MAX_ATTACHMENTS,
    ) -> Approval:
        if not 0 <= max_attachments <= dh.MAX_ATTACHMENTS_LIMIT:
            raise ClientError(
                f"attachments in the history: 0 to {dh.MAX_ATTACHMENTS_LIMIT // 2**20} MB"
            )
        try:
            code = dl.parse_code(code_text)
        except DecodeError as exc:
            raise LinkError(str(exc)) from None
        sid = dl.slot_id(code)
        api = await self.c._authed()
        try:
            resp = await api.request("GET", f"{API}/links/{sid}")
        except ApiError as exc:
            raise _link_error(exc) from None
        try:
            offer_key, raw = dl.open_offer(code, b64d(resp.get("offer"), "offer"))
            offer = json.loads(raw)
        except (DecryptionError, DecodeError, ValueError):
            raise LinkError("the link offer does not match this code") from None
        name = str(offer.get("name") or "new device")[: dl.MAX_NAME_LEN]
        own = await self.c.own_list(refresh=True)
        if len(own.device_ids) >= dl.MAX_DEVICES:
            raise LinkError(f"this account already has {dl.MAX_DEVICES} devices")
        info = await api.anonymous("GET", f"{API}/devices/{self.c.address}")
        next_id = info.get("next_device_id") if isinstance(info, dict) else None
        if not isinstance(next_id, int) or next_id <= max(own.device_ids):
            next_id = max(own.device_ids) + 1
        archive = None
        size = 0
        if history and offer.get("history", True):
            archive, size = await self._upload_history(api, progress, max_attachments)
        cfg = self.c.profile.config
        token = self.c.store.get_meta("delivery_token")
        payload = {
            "v": 1,
            "seed": b64e(self.c.identity.seed),
            "address": self.c.address,
            "handle": cfg.handle,
            "server_signing_key": b64e(self.c._server_signing_key()),
            "list": b64e(own.encode()),
            "device_id": next_id,
            "delivery_token": b64e(token) if token else None,
            "history": archive,
        }
        answer = dl.seal_answer(code, offer_key, json.dumps(payload).encode())
        try:
            await api.request(
                "POST", f"{API}/links/{sid}/answer", auth=True, json={"answer": b64e(answer)}
            )
        except ApiError as exc:
            raise _link_error(exc) from None
        await self._await_registration(next_id)
        return Approval(next_id, name, size)

    async def _await_registration(self, device_id: int, timeout: float = 60.0) -> None:
        """Adopt the list that adds the new device as soon as it registered, so this
        device's next sends already copy to it. A timeout is not an error: the new device
        may be slow, and we learn its list on our next send anyway (a 409)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            got = await self.c.fetch_device_list(self.c.address, self.c.identity.public)
            if got is not None and device_id in got.device_ids:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _upload_history(
        self, api: Api, progress: LinkProgress | None, max_attachments: int = 0
    ) -> tuple[dict[str, Any], int]:
        """Upload the attachments (each its own file blob, streamed from disk), then the
        archive that names them; returns the archive's reference and the bytes uploaded."""
        settings: dict[str, Any] = {"handle": self.c.profile.config.handle}
        messaging = getattr(self.c, "messaging", None)  # the full client's (Part VIII)
        if messaging is not None:  # the same fields as a ``settings`` sync (§5)
            settings.update(messaging.state.settings_state())
        doc = dh.export(self.c.store, settings)
        picks = (
            dh.pick_attachments(doc["messages"], messaging.state.rs.files, max_attachments)
            if messaging is not None and max_attachments > 0
            else []
        )
        bc = BlobClient.from_api(api)
        try:
            sent = await self._upload_attachments(bc, picks, progress)
            doc["files"] = [ref.to_json() for ref in sent]
            key, blob, digest = dh.seal(dh.encode(doc))
            del doc

            async def pieces(skip: int) -> AsyncIterator[bytes]:
                for i in range(skip, len(blob), UPLOAD_CHUNK):
                    yield blob[i : i + UPLOAD_CHUNK]

            def report(done: int, total: int) -> None:
                if progress is not None:
                    progress("upload", done, total)

            blob_id = await bc.create(len(blob))
            await bc.upload(blob_id, len(blob), pieces, report, offset=0)
        finally:
            await bc.aclose()
        ref = {"blob": blob_id, "size": len(blob), "key": b64e(key), "digest": b64e(digest)}
        return ref, len(blob) + sum(r.manifest.blob_size for r in sent)

    async def _upload_attachments(
        self, bc: BlobClient, picks: list[tuple[str, str, Path]], progress: LinkProgress | None
    ) -> list[dh.AttachmentRef]:
        """Each picked attachment as its own encrypted blob (Part VI), progress over all of
        them; one that vanished or fails to upload is left out (its message's own manifest
        still travels)."""
        sizes = []
        for _, _, path in picks:
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(0)
        total = sum(sizes)
        base = 0
        out: list[dh.AttachmentRef] = []
        for (peer, msg_id, path), size in zip(picks, sizes, strict=True):

            def report(done: int, blob_total: int, base: int = base, size: int = size) -> None:
                if progress is not None:
                    progress("files", base + min(size, done * size // max(blob_total, 1)), total)

            try:
                manifest = await xf.send_file(bc, path, keep_metadata=True, progress=report)
            except ServerUnreachable:
                raise
            except (XChatError, OSError) as exc:  # vanished, too large, over quota
                log.info("attachment left out of the history: %s", type(exc).__name__)
            else:
                out.append(dh.AttachmentRef(peer, msg_id, manifest))
            base += size
        if progress is not None and picks:
            progress("files", total, total)
        return out

    # --- linking (the new device) -------------------------------------------------------

    async def link(
        self,
        server: str,
        name: str,
        *,
        history: bool = True,
        wait: float = 600.0,
        on_code: Callable[[str, str], None] | None = None,
        progress: LinkProgress | None = None,
        use_keyring: bool = True,
    ) -> LinkResult:
        c = self.c
        if c.profile.initialised:
            raise ProfileError(f"profile {c.profile.path} already has an account")
        server = server.rstrip("/")
        code = dl.new_code()
        ephemeral = X25519PrivateKey.generate()
        e_pub = ephemeral.public_key().public_bytes_raw()
        sid = dl.slot_id(code)
        offer = dl.seal_offer(code, e_pub, json.dumps({"name": name, "history": history}).encode())
        api = Api(server)
        try:
            await api.request("PUT", f"{API}/links/{sid}", json={"offer": b64e(offer)})
            if on_code is not None:
                on_code(dl.format_code(code), dl.link_uri(server, code, e_pub))
            deadline = time.monotonic() + min(wait, dl.LINK_TTL_MS / 1000)
            answer: bytes | None = None
            while answer is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LinkError(
                        f"not approved within {wait:g} s (run `xchat device add CODE` on a "
                        "device of the account)"
                    )
                try:
                    resp = await api.request(
                        "GET", f"{API}/links/{sid}/answer", params={"wait": min(POLL_S, remaining)}
                    )
                except ApiError as exc:
                    raise _link_error(exc) from None
                if isinstance(resp, dict) and isinstance(resp.get("answer"), str):
                    answer = b64d(resp["answer"], "answer")
            try:
                payload = json.loads(dl.open_answer(code, ephemeral, answer))
            except (DecryptionError, DecodeError, ValueError):
                raise LinkError("the link answer does not decrypt (tampered?)") from None
            return await self._provision(api, server, name, payload, progress, use_keyring)
        finally:
            await api.aclose()

    async def _provision(
        self,
        api: Api,
        server: str,
        name: str,
        payload: dict[str, Any],
        progress: LinkProgress | None,
        use_keyring: bool,
    ) -> LinkResult:
        c = self.c
        try:
            seed = b64d(payload.get("seed"), "seed")
            identity = IdentityKeyPair.from_seed(seed)
            address = payload.get("address")
            if not isinstance(address, str) or not address_matches(address, identity.public):
                raise ProtocolError("link answer: address does not match the identity")
            current = dl.DeviceList.decode(b64d(payload.get("list"), "list"))
            current.verify(identity.public)
            device_id = payload.get("device_id")
            if not isinstance(device_id, int) or device_id in current.device_ids:
                raise ProtocolError("link answer: bad device id")
            signing_key = b64d(payload.get("server_signing_key"), "server_signing_key")
            info = await api.server_info()
            if b64d(info.get("signing_key"), "signing_key") != signing_key:
                raise ProtocolError("this relay is not the account's relay (signing key differs)")
        except XChatError as exc:
            if isinstance(exc, ProtocolError):
                raise LinkError(str(exc)) from None
            raise LinkError(f"link answer malformed: {exc}") from None
        t = now_ms()
        entry = dl.DeviceEntry(device_id, t, dl.seal_name(seed, device_id, name))
        new_list = dl.DeviceList.sign(identity, current.version + 1, t, (*current.entries, entry))
        keys = e2e.PreKeyBatch.generate(identity, now_ms=t, count=ONE_TIME_BATCH)
        chal = await api.challenge()
        challenge = b64d(chal.get("challenge"), "challenge")
        body = {
            "address": address,
            "device_id": device_id,
            "challenge": b64e(challenge),
            "signature": b64e(
                identity.sign(LABEL_LINK_DEVICE + challenge + struct.pack(">I", device_id))
            ),
            "keys": keys.upload(),
            "list": b64e(new_list.encode()),
        }
        try:
            reg = await api.request("POST", f"{API}/devices", json=body)
        except ApiError as exc:
            raise LinkError(f"the relay refused the new device: {exc.message}") from None
        # Persist as account creation does (PROTOCOL Part IV §1): key, store, then config.
        for suffix in ("", "-wal", "-shm"):
            Path(str(c.profile.store_path) + suffix).unlink(missing_ok=True)
        pkey = c.profile.create_key(c._passphrase, use_keyring=use_keyring)
        store = Store(c.profile.store_path, pkey)
        token = payload.get("delivery_token")
        with store.transaction():
            store.put_meta("identity_seed", seed)
            store.put_meta("server_signing_key", signing_key)
            if isinstance(token, str):
                store.put_meta("delivery_token", b64d(token, "delivery_token"))
            keys.save(store)
        c._store = store
        c._identity = identity
        c._save_list(address, new_list)
        cfg = c.profile.config
        cfg.server, cfg.address, cfg.device_id = server, address, device_id
        handle = payload.get("handle")
        cfg.handle = handle if isinstance(handle, str) else None
        c.profile.save_config()
        if isinstance(reg, dict) and isinstance(reg.get("token"), str):
            expires = reg.get("expires_ms")
            c._token = (reg["token"], expires if isinstance(expires, int) else t + 3600_000)
        imported, size = 0, 0
        ref = payload.get("history")
        if isinstance(ref, dict):
            imported, size = await self._download_history(server, ref, progress)
        try:
            await self.sync_own("device_list", {"list": b64e(new_list.encode())})
        except XChatError as exc:  # they learn it on their next send anyway (a 409)
            log.info("could not tell the other devices: %s", exc)
        return LinkResult(address, device_id, name, imported, size)

    async def _download_history(
        self, server: str, ref: dict[str, Any], progress: LinkProgress | None
    ) -> tuple[int, int]:
        size = ref.get("size")
        blob_id = ref.get("blob")
        if not isinstance(size, int) or not isinstance(blob_id, str):
            raise LinkError("link answer: malformed history reference")
        if size > dh.MAX_ARCHIVE_BYTES:
            raise LinkError("history archive refused: too large")
        buf = bytearray()

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress("download", done, total)

        def imported(done: int, total: int) -> None:
            if progress is not None:
                progress("import", done, total)

        async with BlobClient(server) as bc:
            await bc.download(blob_id, size, buf.extend, report)
            try:
                plain = dh.open_sealed(
                    b64d(ref.get("key"), "key"), bytes(buf), b64d(ref.get("digest"), "digest")
                )
                del buf
                doc = dh.load(plain)
                n, files = dh.import_into(self.c.store, doc, now_ms(), imported)
            except XChatError as exc:
                raise LinkError(f"history archive refused: {exc}") from None
            settings = doc.get("settings")
            if isinstance(settings, dict):
                if isinstance(settings.get("handle"), str):
                    self.c.profile.config.handle = settings["handle"]
                    self.c.profile.save_config()
                messaging = getattr(self.c, "messaging", None)
                if messaging is not None:
                    with contextlib.suppress(DecodeError):  # an older or newer archive
                        messaging.state.settings_synced(settings)
            del doc
            got = await self._download_attachments(bc, files, progress)
        return n, size + got

    async def _download_attachments(
        self, bc: BlobClient, files: list[dh.AttachmentRef], progress: LinkProgress | None
    ) -> int:
        """Each attachment of the history into ``<profile>/downloads`` (streamed, verified,
        never over an existing file), recorded for its message (deleted with it, Part VIII).
        One that fails (expired, tampered) is skipped: its message stays, with its own
        manifest. Returns the blob bytes downloaded."""
        total = sum(f.manifest.blob_size for f in files)
        base = 0
        directory = xf.downloads_dir(self.c.profile.path)
        messaging = getattr(self.c, "messaging", None)
        for f in files:

            def report(done: int, _total: int, base: int = base) -> None:
                if progress is not None:
                    progress("files", base + done, total)

            try:
                path = await xf.receive_file(bc, f.manifest, directory, progress=report)
            except XChatError as exc:
                log.info("history attachment not copied: %s", exc)
            else:
                if messaging is not None:
                    messaging.record_file(f.peer, f.id, str(path))
            base += f.manifest.blob_size
        if progress is not None and files:
            progress("files", total, total)
        return base


class DeviceMethods:
    """The device API of :class:`~xchat.client.client.Client` (mixed in; Part VII)."""

    _devices: Devices

    async def link_device(
        self,
        server: str,
        *,
        name: str = "new device",
        history: bool = True,
        wait: float = 600.0,
        on_code: Callable[[str, str], None] | None = None,
        progress: LinkProgress | None = None,
        use_keyring: bool = True,
    ) -> LinkResult:
        """On a NEW (empty) profile: show a link code (``on_code(code, qr_uri)``), wait for
        an existing device to approve it, become a device of that account, import the
        history. LinkError on a timeout or a refused code."""
        return await self._devices.link(
            server,
            name,
            history=history,
            wait=wait,
            on_code=on_code,
            progress=progress,
            use_keyring=use_keyring,
        )

    async def approve_device(
        self,
        code: str,
        *,
        history: bool = True,
        progress: LinkProgress | None = None,
        max_attachments: int = dh.DEFAULT_MAX_ATTACHMENTS,
    ) -> Approval:
        """On an existing device: approve the device showing ``code`` (and send it the
        history unless ``history`` is False, with up to ``max_attachments`` bytes of the
        attachments this device holds)."""
        return await self._devices.approve(
            code, history=history, progress=progress, max_attachments=max_attachments
        )

    async def devices(self) -> list[DeviceInfo]:
        """The account's devices, from its signed list."""
        return await self._devices.all()

    async def remove_device(self, device_id: int) -> list[DeviceInfo]:
        return await self._devices.remove(device_id)

    async def rename_device(self, device_id: int, name: str) -> list[DeviceInfo]:
        return await self._devices.rename(device_id, name)

    async def mark_verified_everywhere(self, c: ContactRecord, verified: bool = True) -> None:
        """``mark_verified`` here, then the same mark on our other devices (sync kind
        ``contact``, PROTOCOL Part VII §5). A failed sync is logged: the mark stands here."""
        self._devices.c.mark_verified(c, verified)
        data = {
            "address": c.address,
            "handle": c.handle,
            "identity_key": b64e(c.identity_key) if c.identity_key else None,
            "verified": verified,
        }
        try:
            await self._devices.sync_own("contact", data)
        except XChatError as exc:
            log.info("verification mark not synced: %s", exc)

    async def sync_read_position(self, conv: str, ts_ms: int) -> bool:
        """``conv`` (an address or ``group:<gid>``) was read up to ``ts_ms`` on this device:
        our other devices mark the same messages read (sync kind ``read``, Part VII §5)."""
        return await self._devices.sync_read(conv, ts_ms)
