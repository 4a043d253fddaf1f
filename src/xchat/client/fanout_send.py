"""Sending one 1:1 message to every device of the recipient and to our own other devices
in ONE upload (PROTOCOL.md Part VII §4; format in :mod:`xchat.client.fanout`).

The layer between the device lists and the sending layer: the sending layer calls
:meth:`FanoutClient._use_fanout` and, when an account has more than one device on either
side, :meth:`FanoutClient._send_fanout` instead of its one-device SEND path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets

from xchat.client import content as ct
from xchat.client import e2e
from xchat.client import fanout as fo
from xchat.client.api import b64d
from xchat.client.device_lists import DeviceListClient
from xchat.client.model import _int, now_ms
from xchat.client.store import ContactRecord
from xchat.client.transport import Backoff, SendChannel, ws_url
from xchat.crypto import pow as xpow
from xchat.crypto import sealed
from xchat.crypto.keys import IdentityPublicKey, decode_address
from xchat.errors import (
    ApiError,
    ProtocolError,
    ServerUnreachable,
    UnknownContact,
    UntrustedDevice,
    UntrustedIdentity,
)
from xchat.protocol import frames as fr

FANOUT_ATTEMPTS = 3  # a stale list is refreshed at most twice per send (409 device mismatch)
SEND_MULTI_ATTEMPTS = 4
INLINE_SEAL = 32  # recipients sealed on the event loop itself

#: (address, identity, device ids, own account?) of one side of a fan-out
Target = tuple[str, IdentityPublicKey, list[int], bool]


class FanoutClient(DeviceListClient):
    """1:1 fan-out to several devices (one SEND_MULTI)."""

    #: bytes of the last fan-out SEND_MULTI frame (bench and tests read it)
    last_fanout_bytes = 0

    #: (address, device) -> (stored bytes, parsed session set): parsing a session set is
    #: most of a fan-out's CPU. Reused only when the store holds exactly those bytes, so a
    #: session the receive path changed meanwhile is parsed again.
    _fanout_cache: dict[tuple[str, int], tuple[bytes, e2e.SessionSet]] | None = None

    @property
    def _session_cache(self) -> dict[tuple[str, int], tuple[bytes, e2e.SessionSet]]:
        if self._fanout_cache is None:
            self._fanout_cache = {}
        return self._fanout_cache

    def _parsed_session(self, address: str, device_id: int, state: bytes) -> e2e.SessionSet:
        cache = self._session_cache
        hit = cache.get((address, device_id))
        if hit is not None and hit[0] == state:
            return hit[1]
        if len(cache) > 4096:
            cache.clear()
        return e2e.load_session(state)

    async def _use_fanout(self, c: ContactRecord) -> bool:
        """Fan out when either account has more than its single device 1. A first contact
        learns the peer's list first (one extra request, then cached)."""
        if self.own_other_devices():
            return True
        if self.cached_list(c.address) is None and not self.store.session_devices(c.address):
            assert c.identity_key is not None
            await self.fetch_device_list(c.address, IdentityPublicKey.decode(c.identity_key))
        return self.device_ids(c.address) != [1]

    async def _learn_devices(
        self, address: str, identity: IdentityPublicKey, exc: ApiError
    ) -> bool:
        """A 409 ``device list mismatch``: refresh the signed list of the account the relay
        named and check the relay's set against it (UntrustedDevice on any difference).
        True: the list changed, send again."""
        if exc.status != 409:
            return False
        try:
            detail = json.loads(exc.message)
        except ValueError:
            return False
        if not isinstance(detail, dict) or not isinstance(detail.get("devices"), list):
            return False
        named = detail.get("address", address)
        relay_ids = {d for d in detail["devices"] if isinstance(d, int)}
        if named == self.address:
            identity = self.identity.public
        elif named != address:
            return False
        await self.fetch_device_list(named, identity)
        self.check_relay_devices(named, relay_ids)
        return True

    async def _targets(self, c: ContactRecord) -> list[Target]:
        if c.address == self.address:  # a sync message: our own other devices only
            return [(self.address, self.identity.public, self.own_other_devices(), True)]
        assert c.identity_key is not None
        out: list[Target] = [
            (c.address, IdentityPublicKey.decode(c.identity_key), self.device_ids(c.address), False)
        ]
        own = self.own_other_devices()
        if own:
            out.append((self.address, self.identity.public, own, True))
        return out

    async def _ensure_sessions(
        self, address: str, identity: IdentityPublicKey, ids: list[int]
    ) -> None:
        """Start sessions with the listed devices that have none (devices the relay hands
        out beyond the list are ignored)."""
        have = set(self.store.session_devices(address))  # one query, nothing unsealed
        missing = [d for d in ids if d not in have]
        if not missing:
            return
        try:
            resp = await self.api.bundles(address)
        except ApiError as exc:
            if exc.status == 404:
                raise UnknownContact(f"unknown account {address}") from None
            raise
        bundles = e2e.parse_bundles(resp)
        if bundles and bundles[0].identity_key != identity:
            raise UntrustedIdentity("server handed out prekeys of a different identity")
        got = {b.device_id: b for b in bundles}
        absent = [d for d in missing if d not in got]
        if absent:
            raise UntrustedDevice(
                f"the relay has no prekeys for listed device(s) {absent} of {address}"
            )
        t = now_ms()
        with self.store.transaction():
            for d in missing:
                if self.store.get_session(address, d) is not None:
                    continue  # created by the peer's PreKey message meanwhile (see sending.py)
                session = e2e.initiate(self.identity, got[d])
                self.store.put_session(address, d, e2e.session_bytes(session), t)

    async def _send_fanout(
        self, c: ContactRecord, msg: ct.Content, cert: bytes, *, store_as_message: bool
    ) -> None:
        plaintext = msg.encode()
        for attempt in range(FANOUT_ATTEMPTS):
            targets = await self._targets(c)
            for address, identity, ids, _ in targets:
                await self._ensure_sessions(address, identity, ids)
            key = secrets.token_bytes(fo.KEY_LEN)
            entries: list[fo.FanoutEntry] = []
            recipients: list[tuple[IdentityPublicKey, int]] = []
            t = now_ms()
            # Ratchet states are persisted BEFORE anything leaves (PROTOCOL Part IV §3.4).
            with self.store.transaction():
                for address, identity, ids, own in targets:
                    for d in ids:
                        state = self.store.get_session(address, d)
                        assert state is not None
                        sset = self._parsed_session(address, d, state)
                        entries.append(fo.FanoutEntry(own, d, e2e.encrypt(sset, key, raw=True)))
                        new_state = e2e.session_bytes(sset)
                        self.store.put_session(address, d, new_state, t)
                        self._session_cache[(address, d)] = (new_state, sset)
                        recipients.append((identity, d))
                if store_as_message and attempt == 0:
                    self.store.add_message(
                        msg.id, c.address, "out", msg.ts, "sending", plaintext, t
                    )
            content = fo.encode(c.address, entries, fo.seal_body(key, c.address, plaintext))

            # ~2 X25519 per device: inline for a few devices (a thread hop costs more than
            # the work), in a thread for many so the event loop keeps serving sockets.
            seal = functools.partial(
                sealed.seal_multi, self.identity, cert, recipients, fo.FANOUT_CONTENT_TYPE, content
            )

            if len(recipients) <= INLINE_SEAL:
                shared, headers = seal()
            else:
                shared, headers = await asyncio.to_thread(seal)
            try:
                await self._deliver_fanout(c, targets, shared, headers)
                return
            except ApiError as exc:
                if attempt == FANOUT_ATTEMPTS - 1:
                    raise
                if not await self._learn_devices(c.address, targets[0][1], exc):
                    raise

    async def _deliver_fanout(
        self,
        c: ContactRecord,
        targets: list[Target],
        shared: bytes,
        headers: dict[tuple[IdentityPublicKey, int], bytes],
    ) -> None:
        use_token = c.delivery_token is not None
        for _ in range(2):
            dests = []
            for address, identity, ids, own in targets:
                access: fr.Access
                if own:
                    token = self.store.get_meta("delivery_token")
                    access = fr.TokenAccess(token) if token else await self._pow_access(address)
                elif use_token and c.delivery_token is not None:
                    access = fr.TokenAccess(c.delivery_token)
                else:
                    access = await self._pow_access(address)
                envs = tuple(
                    fr.MultiEnvelope(d, secrets.token_bytes(16), headers[(identity, d)])
                    for d in ids
                )
                if own:  # the relay checks the whole device set; ours is not stored
                    envs += (fr.MultiEnvelope(self.device_id, secrets.token_bytes(16), b""),)
                dests.append(fr.MultiDestination(decode_address(address), access, envs))
            try:
                self.last_fanout_bytes = await self._send_multi_frame(shared, tuple(dests))
                return
            except ApiError as exc:
                if exc.status not in (401, 403) or not use_token:
                    raise
                # The contact rotated its delivery token (e.g. restored): once with PoW.
                self.store.update_contact(c.address, token_shared=False)
                use_token = False

    async def _send_multi_frame(self, shared: bytes, dests: tuple[fr.MultiDestination, ...]) -> int:
        """One SEND_MULTI, retried on a lost connection with the same envelope ids (stored
        once by the relay, PROTOCOL Part III §5)."""
        backoff = Backoff(base=0.1, cap=2.0)
        for attempt in range(SEND_MULTI_ATTEMPTS):
            if self._sender is None:
                self._sender = SendChannel(ws_url(self.whoami().server))
            try:
                return await self._sender.send_multi(shared, dests)
            except ServerUnreachable:
                await self._sender.aclose()
                self._sender = None
                if attempt == SEND_MULTI_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff.next_delay())
        raise ProtocolError("unreachable")  # pragma: no cover

    async def _pow_access(self, address: str) -> fr.PowAccess:
        chal = await self.api.challenge()
        challenge = b64d(chal.get("challenge"), "challenge")
        bits = _int(chal.get("pow_bits", 0), "pow_bits")
        nonce = await asyncio.to_thread(xpow.solve, challenge, address.encode("ascii"), bits)
        return fr.PowAccess(challenge, nonce)
