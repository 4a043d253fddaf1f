"""HTTP mailbox: sealed-sender send, fetch for offline devices, ack/delete
(PROTOCOL Part III §4.4–4.5). The WebSocket path (``realtime.py``) shares
:meth:`Relay.check_send` / :meth:`Relay.submit`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from xchat.clock import now_ms
from xchat.crypto.keys import is_address, normalize_address
from xchat.errors import ApiError
from xchat.protocol.frames import PowAccess, TokenAccess
from xchat.server import models as m
from xchat.server.directory import CURRENT_DEVICE, relay_of
from xchat.server.limits import ip_bucket
from xchat.server.paths import EnvelopeId
from xchat.server.relay import Access, SendDest
from xchat.storage.base import DeviceRecord

router = APIRouter(prefix="/api/v1")


def _access(d: m.DestinationIn | m.MultiDestinationIn) -> tuple[str, Access]:
    if not is_address(d.address):
        raise ApiError(400, "not a valid address")
    access: Access = None
    if d.delivery_token is not None:
        access = TokenAccess(m.b64(d.delivery_token, "delivery_token", 16))
    elif d.pow is not None:
        access = PowAccess(m.b64(d.pow.challenge, "pow.challenge"), d.pow.nonce)
    return normalize_address(d.address), access


def _dest(d: m.DestinationIn) -> SendDest:
    address, access = _access(d)
    envelopes = [
        (e.device_id, m.b64(e.id, "envelope id", 16), m.b64(e.content, "content"))
        for e in d.envelopes
    ]
    return SendDest(address, access, envelopes)


def _multi_dest(d: m.MultiDestinationIn, shared: bytes) -> SendDest:
    address, access = _access(d)
    envelopes = []
    for e in d.envelopes:
        header = m.b64(e.header, "header")
        if len(header) > 255:
            raise ApiError(400, "header: at most 255 bytes")
        content = header + shared if header else b""  # empty: the sender's own device
        envelopes.append((e.device_id, m.b64(e.id, "envelope id", 16), content))
    return SendDest(address, access, envelopes)


async def _send(request: Request, dests: list[SendDest]) -> m.Ok:
    relay = relay_of(request)
    n = sum(len(d.envelopes) for d in dests)
    bucket = ip_bucket(request.client.host if request.client else None)
    wait = relay.send_limiter.take(bucket, n)
    if wait:
        raise ApiError(429, "rate limited", retry_after=wait)
    rows = relay.check_send(dests, now_ms(), bucket)
    await relay.submit(rows)
    return m.Ok()


_SEND_ERRORS = m.errors(400, 401, 404, 409, 413, 503)


@router.post("/messages", response_model=m.Ok, responses=_SEND_ERRORS)
async def send(body: m.SendIn, request: Request) -> m.Ok:
    """Sealed-sender send: no Authorization; access per destination (PROTOCOL Part III §4.4)."""
    return await _send(request, [_dest(d) for d in body.destinations])


@router.post("/messages/multi", response_model=m.Ok, responses=_SEND_ERRORS)
async def send_multi(body: m.SendMultiIn, request: Request) -> m.Ok:
    """HTTP form of SEND_MULTI (PROTOCOL Part III §4.4a, §5.2): device ``i`` of destination ``j``
    gets ``header || shared``; otherwise exactly ``POST /messages``."""
    shared = m.b64(body.shared, "shared")
    return await _send(request, [_multi_dest(d, shared) for d in body.destinations])


@router.get("/messages", response_model=m.FetchOut, responses=m.errors(401))
async def fetch(
    request: Request,
    limit: int = Query(default=100, ge=1, le=10_000),
    device: DeviceRecord = CURRENT_DEVICE,
) -> m.FetchOut:
    relay = relay_of(request)
    limit = min(limit, relay.config.max_fetch)
    rows = await relay.store.fetch(device.ref, 0, limit + 1, now_ms())
    return m.FetchOut(
        envelopes=[
            m.EnvelopeOut(id=m.enc(r.envelope_id), ts_ms=r.ts_ms, content=m.enc(r.content))
            for r in rows[:limit]
        ],
        more=len(rows) > limit,
    )


@router.delete("/messages/{envelope_id}", response_model=m.AckOut, responses=m.errors(400, 401))
async def delete_one(
    envelope_id: EnvelopeId, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.AckOut:
    eid = m.b64url(envelope_id, "envelope id", 16)
    deleted = await relay_of(request).store.ack(device.ref, [eid])
    return m.AckOut(deleted=deleted)


@router.post("/messages/ack", response_model=m.AckOut, responses=m.errors(400, 401, 413))
async def ack(body: m.AckIn, request: Request, device: DeviceRecord = CURRENT_DEVICE) -> m.AckOut:
    ids = [m.b64(i, "envelope id", 16) for i in body.ids]
    deleted = await relay_of(request).store.ack(device.ref, ids) if ids else 0
    return m.AckOut(deleted=deleted)
