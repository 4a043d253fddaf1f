"""The account layer of the client: profile, identity, auth, certificates, prekeys,
events (PROTOCOL.md Part IV §1, §4).

The bottom of the client's layers (account -> contacts -> sending -> receiving ->
:class:`~xchat.client.client.Client`); it imports none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from xchat.client import content as ct
from xchat.client import e2e
from xchat.client import events as ev
from xchat.client.api import Api, b64d, b64e
from xchat.client.model import AccountInfo, HistoryItem, _int, _row_key, now_ms
from xchat.client.profile import Profile, default_home
from xchat.client.replay import ReplayGuard
from xchat.client.reports import SendReports
from xchat.client.store import Store
from xchat.client.transport import BACKOFF_CAP, ReceiveLoop, SendChannel
from xchat.client.wallet import Wallet, probe_account
from xchat.crypto import handle_cert, relaykey
from xchat.crypto import pow as xpow
from xchat.crypto.certificate import SenderCertificate
from xchat.crypto.keys import IdentityKeyPair, address_matches
from xchat.errors import (
    ApiError,
    CryptoError,
    DecodeError,
    DeviceRemoved,
    ProfileError,
    ProtocolError,
    RelayKeyMismatch,
    UnknownContact,
    XChatError,
)

log = logging.getLogger(__name__)

# Prekey stock (PROTOCOL.md Part IV §4).
ONE_TIME_BATCH = 100
PREKEY_LOW_WATER = 20
# Refresh the sender certificate when less than this remains (server issues 24 h).
CERT_REFRESH_MARGIN_MS = 3600 * 1000
TOKEN_REFRESH_MARGIN_MS = 60 * 1000

ProgressCallback = Callable[[int], None]


class AccountClient:
    """Profile, identity and the authenticated relay API of one device."""

    def __init__(
        self,
        profile_dir: str | os.PathLike[str] | None = None,
        *,
        passphrase: str | None = None,
        reconnect_cap: float = BACKOFF_CAP,
    ) -> None:
        self.profile = Profile.open(profile_dir if profile_dir is not None else default_home())
        self._passphrase = passphrase
        self._reconnect_cap = reconnect_cap  # longest pause between reconnect attempts
        self._store: Store | None = None
        self._identity: IdentityKeyPair | None = None
        self._api: Api | None = None
        self._wallet: Wallet | None = None  # anonymous access tokens (PROTOCOL Part XI)
        self._replay: ReplayGuard | None = None  # replay-safe resets (PROTOCOL Part IV §3.7)
        self._reports: SendReports | None = None  # sends not yet reported (Part IV §3.8)
        self._sender: SendChannel | None = None
        self._recv: ReceiveLoop | None = None
        self._recv_task: asyncio.Task[None] | None = None
        self._token: tuple[str, int] | None = None
        self._token_lock = asyncio.Lock()
        self._listeners: list[Callable[[ev.Event], Awaitable[None] | None]] = []
        self._queues: list[asyncio.Queue[ev.Event]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._send_lock = asyncio.Lock()
        self._resolved: dict[str, str] = {}
        self._reset_sent: set[str] = set()
        self._receipt_scheduled: set[str] = set()  # senders with a flush task waiting
        self._receipt_lock = asyncio.Lock()
        self._receipt_retry: asyncio.Task[None] | None = None
        self._started = False  # start() is running (background retries allowed)
        self._resent: dict[str, list[HistoryItem]] = {}  # retry_pending() this lifetime
        self._held_unseen: set[tuple[str, str]] = set()  # keep_unseen(), not yet shown
        self._rejected_claims: set[tuple[str, str]] = set()
        self._addresses: dict[bytes, str] = {}
        try:
            if self.profile.initialised:
                self._unlock()
        except BaseException:
            self.profile.close()
            raise

    # --- life cycle ---------------------------------------------------------------------

    def _unlock(self) -> None:
        key = self.profile.unlock(self._passphrase)
        self._store = Store(self.profile.store_path, key)
        seed = self._store.get_meta("identity_seed")
        if seed is None:
            raise ProfileError("profile store has no identity (incomplete account creation)")
        self._identity = IdentityKeyPair.from_seed(seed)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ProfileError(
                f"no account in profile {self.profile.path} (run `xchat account create`)"
            )
        return self._store

    @property
    def identity(self) -> IdentityKeyPair:
        if self._identity is None:
            raise ProfileError(
                f"no account in profile {self.profile.path} (run `xchat account create`)"
            )
        return self._identity

    @property
    def address(self) -> str:
        return self.identity.public.address()

    @property
    def api(self) -> Api:
        if self._api is None:
            server = self.profile.config.server
            if server is None:
                raise ProfileError("profile has no server configured")
            self._api = Api(server)
            self._api.reauth = self._fresh_token
            self._api.anon = self._anon_token
        return self._api

    @property
    def wallet(self) -> Wallet:
        """Anonymous tokens for lookups and bundle fetches (PROTOCOL Part XI §5)."""
        if self._wallet is None:
            self._wallet = Wallet(self.store, self.api.token_keys, self._issue_tokens)
        return self._wallet

    @property
    def send_reports(self) -> SendReports:
        if self._reports is None:
            self._reports = SendReports(self.store)
        return self._reports

    @property
    def replay_guard(self) -> ReplayGuard:
        if self._replay is None:
            self._replay = ReplayGuard(self.store)
        return self._replay

    async def _issue_tokens(self, epoch: int, blinded: list[bytes]) -> dict[str, Any]:
        api = await self._authed()
        return await api.issue_tokens(epoch, blinded)

    async def _anon_token(self) -> str:
        return await self.wallet.take()

    def whoami(self) -> AccountInfo:
        cfg = self.profile.config
        if not self.profile.initialised or cfg.server is None:
            raise ProfileError(
                f"no account in profile {self.profile.path} (run `xchat account create`)"
            )
        return AccountInfo(self.address, cfg.handle, cfg.server, cfg.device_id or 1)

    # --- account creation / restore (PROTOCOL Part IV §1) --------------------------------------

    async def create_account(
        self,
        server: str,
        handle: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        use_keyring: bool = True,
    ) -> AccountInfo:
        """Generate an identity, solve the registration PoW, register, upload prekeys."""
        if self.profile.initialised:
            raise ProfileError(f"profile {self.profile.path} already has an account")
        identity = IdentityKeyPair.generate()
        info = await self._register(server, identity, handle, progress, use_keyring)
        return AccountInfo(
            info.address, info.handle, info.server, info.device_id, identity.mnemonic()
        )

    async def restore_account(
        self,
        server: str,
        phrase: str,
        *,
        progress: ProgressCallback | None = None,
        use_keyring: bool = True,
    ) -> AccountInfo:
        """Re-register the identity of a recovery phrase: same keys, same address."""
        if self.profile.initialised:
            raise ProfileError(f"profile {self.profile.path} already has an account")
        identity = IdentityKeyPair.from_mnemonic(phrase)  # InvalidMnemonic
        api = Api(relaykey.split_address(server)[0])
        try:
            # Signed with the phrase's identity: a 404 means no such account. The lookup
            # that follows (for the handle) is paid with an anonymous token (Part XI).
            existing = await probe_account(api, identity)
        except ApiError as exc:
            if exc.status == 404:
                raise UnknownContact(
                    "no account for this recovery phrase on this server (wrong phrase?)"
                ) from None
            raise
        finally:
            await api.aclose()
        handle = existing.get("handle") if isinstance(existing.get("handle"), str) else None
        info = await self._register(server, identity, None, progress, use_keyring, handle)
        # Sessions were lost: the first new session to each contact announces it (§3.7).
        self.store.put_meta("restored_ms", str(now_ms()).encode())
        return info

    async def _register(
        self,
        server: str,
        identity: IdentityKeyPair,
        handle: str | None,
        progress: ProgressCallback | None,
        use_keyring: bool,
        known_handle: str | None = None,
    ) -> AccountInfo:
        # ``http://host:port#<fingerprint>`` pins the relay key from the start (Part III §3.1);
        # the fragment is never sent and not stored in the profile's server URL.
        server, expected_fp = relaykey.split_address(server)
        api = Api(server)
        try:
            info = await api.server_info()
            signing_key = b64d(info.get("signing_key"), "signing_key")
            if len(signing_key) != 32:
                raise ProtocolError("server signing key must be 32 bytes")
            if expected_fp is not None and not relaykey.matches(signing_key, expected_fp):
                raise RelayKeyMismatch(
                    "the relay's signing key does not match the fingerprint in its address "
                    f"(got {relaykey.fingerprint(signing_key)}): refusing to register"
                )
            chal = await api.challenge()
            challenge = b64d(chal.get("challenge"), "challenge")
            bits = _int(chal.get("pow_bits", info.get("pow_bits", 0)), "pow_bits")
            nonce = await asyncio.to_thread(
                xpow.solve, challenge, identity.public.encode(), bits, progress
            )
            t = now_ms()
            keys = e2e.PreKeyBatch.generate(identity, now_ms=t, count=ONE_TIME_BATCH)
            body = {
                "identity_key": b64e(identity.public.encode()),
                "challenge": b64e(challenge),
                "signature": b64e(identity.sign(b"XChat-v1-register" + challenge)),
                "pow_nonce": nonce,
                "handle": handle.lower() if handle else None,
                "keys": keys.upload(),
            }
            reg = await api.register(body)
        finally:
            await api.aclose()
        address = reg.get("address")
        if not isinstance(address, str) or not address_matches(address, identity.public):
            raise ProtocolError("server returned an address that does not match our identity")
        # Persist: key first, then the store, then the config that marks us initialised.
        # Leftovers of an earlier, interrupted creation are sealed under a lost key.
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.profile.store_path) + suffix).unlink(missing_ok=True)
        key = self.profile.create_key(self._passphrase, use_keyring=use_keyring)
        store = Store(self.profile.store_path, key)
        with store.transaction():
            store.put_meta("identity_seed", identity.seed)
            store.put_meta("server_signing_key", signing_key)
            keys.save(store)
        self._store = store
        self._identity = identity
        cfg = self.profile.config
        cfg.server = server
        cfg.address = address
        cfg.device_id = _int(reg.get("device_id", 1), "device_id")
        chosen = handle or known_handle
        cfg.handle = chosen.lower() if chosen else None
        self.profile.save_config()
        token = reg.get("token")
        if isinstance(token, str):
            self._token = (token, _int(reg.get("expires_ms", now_ms() + 3600_000), "expires_ms"))
        await self._rotate_delivery_token()
        await self._refresh_handle_certificate()  # for the first message's sender block
        # Tokens ahead of need: the first lookup then does not follow an issuance (Part XI §5).
        await self.wallet.top_up()
        return self.whoami()

    async def set_handle(self, handle: str) -> None:
        await self.api.set_handle(handle)
        self.profile.config.handle = handle.lower()
        self.profile.save_config()
        await self._refresh_handle_certificate()

    # --- auth token ---------------------------------------------------------------------

    async def _fresh_token(self) -> str:
        return await self._auth_token(force=True)

    async def _auth_token(self, force: bool = False) -> str:
        async with self._token_lock:
            if (
                not force
                and self._token is not None
                and self._token[1] - TOKEN_REFRESH_MARGIN_MS > now_ms()
            ):
                return self._token[0]
            api = self.api
            chal = await api.challenge()
            challenge = b64d(chal.get("challenge"), "challenge")
            try:
                resp = await api.auth(
                    {
                        "address": self.address,
                        "device_id": self.profile.config.device_id or 1,
                        "challenge": b64e(challenge),
                        "signature": b64e(self.identity.sign(b"XChat-v1-auth" + challenge)),
                    }
                )
            except ApiError as exc:
                if exc.status == 404 and (self.profile.config.device_id or 1) != 1:
                    raise DeviceRemoved(
                        f"this device ({self.profile.config.device_id}) was removed from its "
                        "account; link it again with `xchat device link`"
                    ) from None
                raise
            token = resp.get("token")
            if not isinstance(token, str):
                raise ProtocolError("server sent no token")
            self._token = (token, _int(resp.get("expires_ms", now_ms() + 3600_000), "expires_ms"))
            api.token = token
            return token

    async def _authed(self) -> Api:
        api = self.api
        api.token = await self._auth_token()
        return api

    # --- delivery token, sender certificate ---------------------------------------------

    async def _rotate_delivery_token(self) -> bytes:
        """New random 16-byte delivery token; the server stores only SHA-256 of it."""
        token = secrets.token_bytes(16)
        api = await self._authed()
        await api.put_delivery_token_hash(hashlib.sha256(token).digest())
        self.store.put_meta("delivery_token", token)
        return token

    def _own_sender_info(self) -> ct.SenderInfo:
        handle = self.profile.config.handle
        cert = self.store.get_meta("handle_cert") if handle else None
        return ct.SenderInfo(
            handle=handle,
            delivery_token=self.store.get_meta("delivery_token"),
            handle_cert=cert or None,
        )

    async def _refresh_handle_certificate(self) -> None:
        """Keep a fresh relay handle certificate for our sender block (Part IV §3.2)."""
        handle = self.profile.config.handle
        raw = self.store.get_meta("handle_cert")
        if not handle:
            return
        if raw:
            with contextlib.suppress(XChatError):
                _, held, expires = handle_cert.parse(raw)
                if held == handle and expires - CERT_REFRESH_MARGIN_MS > now_ms():
                    return
        api = await self._authed()
        try:
            resp = await api.handle_certificate()
            raw = b64d(resp.get("certificate"), "certificate")
            addr, got = handle_cert.verify([self._server_signing_key()], raw, now_ms())
        except XChatError as exc:  # an older relay, or no handle: claims stay unproven
            log.info("no handle certificate: %s", exc)
            return
        if addr == self.address and got == handle:
            self.store.put_meta("handle_cert", raw)

    async def _sender_certificate(self) -> bytes:
        await self._refresh_handle_certificate()
        raw = self.store.get_meta("sender_cert")
        if raw is not None:
            with contextlib.suppress(DecodeError, CryptoError):
                cert = SenderCertificate.decode(raw)
                if cert.expires_ms - CERT_REFRESH_MARGIN_MS > now_ms():
                    return raw
        api = await self._authed()
        resp = await api.sender_certificate()
        raw = b64d(resp.get("certificate"), "certificate")
        try:
            cert = SenderCertificate.decode(raw)
            try:
                cert.verify(self._server_signing_key(), now_ms())
            except CryptoError:
                if not await self._check_relay_rotation():  # a signed rotation (III §3.1)?
                    raise
                cert.verify(self._server_signing_key(), now_ms())
        except (DecodeError, CryptoError) as exc:
            raise ProtocolError(f"server issued an invalid sender certificate: {exc}") from None
        if cert.identity != self.identity.public:
            raise ProtocolError("server issued a sender certificate for another identity")
        self.store.put_meta("sender_cert", raw)
        return raw

    def _server_keys(self, ts_ms: int) -> list[bytes]:
        """Relay keys whose certificates are accepted for mail the relay took at ``ts_ms``:
        the pinned key, and the previous one until its rotation overlap ends (III §3.1)."""
        keys = [self._server_signing_key()]
        prev = self.store.get_meta("server_signing_prev")
        if prev is not None and len(prev) == 40 and ts_ms <= int.from_bytes(prev[32:], "big"):
            keys.append(prev[:32])
        return keys

    async def _check_relay_rotation(self) -> bool:
        """The relay may present a new signing key only with a rotation statement signed
        by the pinned key (PROTOCOL Part III §3.1). True if the pin moved to a new key;
        RelayKeyMismatch if the key changed without a valid statement."""
        info = await self.api.server_info()
        key = b64d(info.get("signing_key"), "signing_key")
        pinned = self._server_signing_key()
        if key == pinned:
            return False
        raw = info.get("key_rotation")
        try:
            if not isinstance(raw, str):
                raise DecodeError("no key_rotation")
            rotation = relaykey.verify_rotation(pinned, b64d(raw, "key_rotation"))
        except (DecodeError, CryptoError, ProtocolError):
            raise RelayKeyMismatch(
                "the relay's signing key changed without a rotation signed by the pinned key"
            ) from None
        if rotation.new_key != key:
            raise RelayKeyMismatch("the relay's key rotation names another key")
        with self.store.transaction():
            self.store.put_meta("server_signing_key", key)
            prev = pinned + rotation.old_valid_until_ms.to_bytes(8, "big")
            self.store.put_meta("server_signing_prev", prev)
        return True

    def _server_signing_key(self) -> bytes:
        key = self.store.get_meta("server_signing_key")
        if key is None:
            raise ProfileError("profile has no pinned server signing key")
        return key

    def relay_signing_key(self) -> bytes:
        """The relay's Ed25519 key pinned in this profile (32 bytes; ProfileError if none):
        what sender and handle certificates must be signed by (PROTOCOL Part III §3.1)."""
        return self._server_signing_key()

    def relay_keys(self, ts_ms: int) -> list[bytes]:
        """The relay keys whose certificates are accepted for mail the relay took at
        ``ts_ms``: the pinned key, plus the previous one during a rotation's overlap."""
        return self._server_keys(ts_ms)

    async def check_relay_rotation(self) -> bool:
        """Ask the relay for its key now and follow a rotation signed by the pinned key
        (True if the pin moved); RelayKeyMismatch if the key changed without one. The SDK
        does this by itself when a certificate fails to verify."""
        return await self._check_relay_rotation()

    async def authed_api(self) -> Api:
        """The relay API with a valid bearer token, for a relay endpoint the SDK has no
        method for (e.g. ``key_count()``, ``bundles()``)."""
        return await self._authed()

    def forget_resolved(self) -> None:
        """Drop the cache of resolved handles and addresses, so the next send to a
        contact looks it up again (after its key changed out of band)."""
        self._resolved.clear()

    # --- prekeys (PROTOCOL Part IV §4) ---------------------------------------------------------

    async def rotate_prekeys(self, *, now: int | None = None) -> bool:
        """Replace the signed and last-resort prekeys when a week old, and delete replaced
        ones after the grace period (PROTOCOL Part II §1.5). True if a new pair went up."""
        t = now_ms() if now is None else now
        rotation = e2e.plan_rotation(self.identity, self.store, now_ms=t)
        if rotation.batch is not None:
            # Private halves first: a crash before the upload leaves an unused row, never
            # a published key we cannot open.
            with self.store.transaction():
                rotation.batch.save(self.store)
            api = await self._authed()
            await api.put_keys(rotation.batch.upload())
        if rotation.batch or rotation.retire or self.store.get_meta(e2e.META_GENERATIONS) is None:
            with self.store.transaction():
                e2e.finish_rotation(self.store, rotation, self.replay_guard.record_used, t)
        return rotation.batch is not None

    async def replenish_prekeys(self, *, force: bool = False) -> int:
        """Rotate the medium-term prekeys when due, then upload a batch of one-time
        prekeys if the server's stock is low; returns how many one-time keys went up."""
        await self.rotate_prekeys()
        api = await self._authed()
        if not force:
            counts = await api.key_count()
            ec = _int(counts.get("ec", 0), "ec")
            kem = _int(counts.get("kem", 0), "kem")
            if ec >= PREKEY_LOW_WATER and kem >= PREKEY_LOW_WATER:
                return 0
        batch = e2e.PreKeyBatch.one_time(
            self.identity, self.store, now_ms=now_ms(), count=ONE_TIME_BATCH
        )
        await api.put_keys(batch.upload())
        with self.store.transaction():
            batch.save(self.store)
        return 2 * ONE_TIME_BATCH

    # --- events -------------------------------------------------------------------------

    def on_event(self, callback: Callable[[ev.Event], Awaitable[None] | None]) -> None:
        """Call ``callback(event)`` (sync or async) for every event, in order."""
        self._listeners.append(callback)

    async def events(self) -> AsyncIterator[ev.Event]:
        """Async iterator over events from now on (run :meth:`start` to receive)."""
        q: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._queues.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.remove(q)

    async def _emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageReceived) and self._store is not None:
            # Handed to the app now: no replay by the next receive()/start() (PROTOCOL Part IV
            # §5.3). Cleared BEFORE the callbacks run (at most once): a SIGKILL between a
            # print and this UPDATE would otherwise show the message twice. A callback
            # that shows it only later opts into at-least-once with keep_unseen().
            self._store.clear_unseen(*_row_key(event))
        for q in self._queues:
            q.put_nowait(event)
        for cb in list(self._listeners):
            # A failing app callback must not stop the receive loop (the data is
            # already stored and acknowledged): log it and go on.
            try:
                r = cb(event)
                if r is not None:
                    await r
            except Exception:
                log.exception("event callback failed for %s", type(event).__name__)
