"""Linked devices on the relay (PROTOCOL.md Part VII §2–§3): the signed device list, adding
and removing devices, and the link slots that carry the provisioning channel.

The relay is not trusted with the device list: it stores the account's signed list and
checks it (a courtesy: an honest relay refuses a bad list early), but senders verify the
list themselves. Link slots hold only ciphertext under keys derived from a code the relay
never sees (it knows a hash of it); they are open for 10 minutes and single use, in this
process's memory or, when relay nodes share Redis, in Redis (``link_slots``).
"""

from __future__ import annotations

import struct

from fastapi import APIRouter, Request
from pydantic import Field

from xchat.clock import now_ms
from xchat.crypto.devicelist import MAX_DEVICES, DeviceList
from xchat.crypto.keys import IdentityPublicKey
from xchat.errors import ApiError, XChatError
from xchat.server import models as m
from xchat.server.directory import (
    CURRENT_DEVICE,
    _lookup_address,
    _verify,
    check_one_time_stock,
    parse_keys,
    relay_of,
)
from xchat.server.link_slots import LinkSlots, make_link_slots
from xchat.server.paths import Address, SlotId
from xchat.server.relay import Relay
from xchat.server.tokens import REDEEM
from xchat.storage.base import DeviceRecord

router = APIRouter(prefix="/api/v1")

LABEL_LINK_DEVICE = b"XChat-v1-link-device"
MAX_OFFER = 4096
MAX_ANSWER = 64 * 1024
MAX_WAIT_S = 30.0


class OfferIn(m._Model):
    offer: str = Field(max_length=MAX_OFFER * 2)


class AnswerIn(m._Model):
    answer: str = Field(max_length=MAX_ANSWER * 2)


class ListIn(m._Model):
    list: str = Field(max_length=8192)


class AddDeviceIn(m._Model):
    address: str
    device_id: int = Field(ge=2, le=2**31 - 1)
    challenge: str
    signature: str
    keys: m.PreKeyUpload
    list: str = Field(max_length=8192)


def slots_of(request: Request) -> LinkSlots:
    """The relay's link slots: in Redis when the nodes share it, else in this process."""
    state = request.app.state
    slots: LinkSlots | None = getattr(state, "link_slots", None)
    if slots is None:
        slots = state.link_slots = make_link_slots(relay_of(request).fanout)
    return slots


@router.put("/links/{sid}", status_code=201, responses=m.errors(400, 409, 413, 503))
async def put_offer(sid: SlotId, body: OfferIn, request: Request) -> dict[str, int]:
    offer = m.b64(body.offer, "offer")
    if len(offer) > MAX_OFFER:
        raise ApiError(413, "offer too large")
    return {"expires_ms": await slots_of(request).put(sid, offer, now_ms())}


@router.get("/links/{sid}", responses=m.errors(400, 404, 410, 503))
async def get_offer(sid: SlotId, request: Request) -> dict[str, object]:
    offer, expires = await slots_of(request).offer(sid, now_ms())
    return {"offer": m.enc(offer), "expires_ms": expires}


@router.post("/links/{sid}/answer", responses=m.errors(400, 401, 404, 410, 413, 503))
async def post_answer(
    sid: SlotId, body: AnswerIn, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> dict[str, bool]:
    """Only an authenticated device may answer (no anonymous spam of pending links)."""
    answer = m.b64(body.answer, "answer")
    if len(answer) > MAX_ANSWER:
        raise ApiError(413, "answer too large")
    await slots_of(request).answer(sid, answer, now_ms())
    return {"ok": True}


@router.get("/links/{sid}/answer", responses=m.errors(400, 404, 410, 503))
async def get_answer(sid: SlotId, request: Request, wait: float = 0.0) -> dict[str, object]:
    """The new device polls (long-poll up to 30 s); the answer is handed out once."""
    slots = slots_of(request)
    answer, expires = await slots.take_answer(sid, now_ms())
    if answer is None and wait > 0:
        left = max(0.0, (expires - now_ms()) / 1000)  # never past the expiry
        await slots.wait(sid, min(wait, MAX_WAIT_S, left))
        answer, expires = await slots.take_answer(sid, now_ms())
    return {"answer": m.enc(answer) if answer is not None else None, "expires_ms": expires}


# --- the device list -------------------------------------------------------------------------


def _checked_list(raw: bytes, identity_key: bytes) -> DeviceList:
    try:
        dl = DeviceList.decode(raw)
        dl.verify(IdentityPublicKey.decode(identity_key))
    except XChatError as exc:
        raise ApiError(400, f"list: {exc}") from None
    return dl


async def _stored(relay: Relay, address: str) -> tuple[int, int]:
    """(version, highest device id used) of the account's stored list (0, max id) if none."""
    acct = relay.store.get_account(address)
    assert acct is not None
    got = await relay.store.get_device_list(address)
    top = max((d.device_id for d in acct.devices), default=1)
    return (got[0], max(got[2], top)) if got else (0, top)


@router.get("/devices/{address}", responses=m.errors(400, 401, 404), dependencies=[REDEEM])
async def get_devices(address: Address, request: Request) -> dict[str, object]:
    relay = relay_of(request)
    acct = _lookup_address(relay, address)
    got = await relay.store.get_device_list(acct.address)
    _, top = await _stored(relay, acct.address)
    return {
        "list": m.enc(got[1]) if got else None,
        "devices": [d.device_id for d in acct.devices],
        "next_device_id": top + 1,
    }


@router.post("/devices", responses=m.errors(400, 401, 404, 409, 413))
async def add_device(body: AddDeviceIn, request: Request) -> dict[str, object]:
    """A newly linked device registers itself: it holds the identity key (provisioned by an
    existing device), signs the challenge and brings the list that names it."""
    relay = relay_of(request)
    acct = _lookup_address(relay, body.address)
    identity = IdentityPublicKey.decode(acct.identity_key)
    ch = m.b64(body.challenge, "challenge")
    sig = m.b64(body.signature, "signature", 64)
    keys = parse_keys(body.keys, identity)
    if keys.signed_prekey is None or keys.kem_last_resort is None:
        raise ApiError(400, "keys: signed_prekey and kem_last_resort are required")
    check_one_time_stock(relay.config.max_one_time_keys, keys)
    dl = _checked_list(m.b64(body.list, "list"), acct.identity_key)
    _verify(identity, sig, LABEL_LINK_DEVICE + ch + struct.pack(">I", body.device_id), "signature")
    t = now_ms()
    relay.challenges.consume(ch, t)
    version, top = await _stored(relay, acct.address)
    current = {d.device_id for d in acct.devices}
    if body.device_id <= top:
        raise ApiError(409, f"device id {body.device_id} was already used (next: {top + 1})")
    if dl.version != version + 1:
        raise ApiError(409, f"device list version must be {version + 1}")
    if set(dl.device_ids) != current | {body.device_id}:
        raise ApiError(409, "device list must name the current devices plus the new one")
    if len(dl.device_ids) > MAX_DEVICES:
        raise ApiError(400, f"at most {MAX_DEVICES} devices per account")
    device = await relay.store.add_device(
        acct.address, body.device_id, keys, dl.encode(), dl.version, t
    )
    relay.metrics.inc("devices_linked_total")
    token, expires = relay.tokens.issue(device, t)
    return {"device_id": device.device_id, "token": token, "expires_ms": expires}


@router.put("/devices", responses=m.errors(400, 401, 409, 413))
async def put_devices(
    body: ListIn, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> dict[str, object]:
    """A new list from one of the account's devices: a rename (same ids), a removal
    (fewer ids; those devices, their keys and mail are deleted, their sockets cut 4401),
    or the first list of an account that had none."""
    relay = relay_of(request)
    acct = relay.store.get_account(device.address)
    assert acct is not None
    dl = _checked_list(m.b64(body.list, "list"), acct.identity_key)
    version, _ = await _stored(relay, acct.address)
    if dl.version != version + 1:
        raise ApiError(409, f"device list version must be {version + 1}")
    current = {d.device_id for d in acct.devices}
    if not set(dl.device_ids) <= current:
        raise ApiError(409, "a device is added only by linking it (POST /devices)")
    remove = tuple(sorted(current - set(dl.device_ids)))
    await relay.store.set_device_list(acct.address, dl.encode(), dl.version, remove)
    if remove:
        relay.metrics.inc("devices_removed_total", len(remove))
    return {"devices": list(dl.device_ids), "removed": list(remove)}
