"""The async XChat client: one device, one profile directory (PROTOCOL.md Part IV).

The only place in the SDK that does I/O and retries; the pure parts live in
``xchat.crypto`` (sessions, sealed sender, padding), ``xchat.protocol`` (frames) and
:mod:`xchat.client.content`. Apps (the ``xchat`` command, the web app) are thin layers
over this class and its events.

Typical use::

    async with Client("~/.xchat") as c:          # existing profile
        await c.send_text("@bob", "hi")
        for ev in await c.receive(wait=1.0):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xchat.client import content as ct
from xchat.client import e2e
from xchat.client import events as ev
from xchat.client.api import Api, b64d, b64e
from xchat.client.groups import (
    GROUP_CONTENT_TYPE,
    GROUP_PEER_PREFIX,
    PAIRWISE_TYPES,
    GroupMethods,
    Groups,
)
from xchat.client.profile import Profile, default_home
from xchat.client.store import ContactRecord, MessageRecord, Store
from xchat.client.transport import BACKOFF_CAP, Backoff, ReceiveLoop, SendChannel, ws_url
from xchat.crypto import pow as xpow
from xchat.crypto.certificate import SenderCertificate
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey, address_matches, is_address
from xchat.crypto.keys import normalize_address as _normalize_address
from xchat.errors import (
    ApiError,
    ClientError,
    CryptoError,
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    IdentityChanged,
    InvalidAddress,
    ProfileError,
    ProtocolError,
    ServerUnreachable,
    UnknownContact,
    UnknownPreKey,
    UntrustedIdentity,
    XChatError,
)
from xchat.protocol import frames as fr

log = logging.getLogger(__name__)

# Prekey stock (PROTOCOL.md Part IV §4).
ONE_TIME_BATCH = 100
PREKEY_LOW_WATER = 20
# Refresh the sender certificate when less than this remains (server issues 24 h).
CERT_REFRESH_MARGIN_MS = 3600 * 1000
TOKEN_REFRESH_MARGIN_MS = 60 * 1000
DRAIN_TIMEOUT = 30.0
SEND_ATTEMPTS = 4
MAX_RATE_WAIT = 2.0  # seconds of Retry-After the SDK waits out by itself
RECEIPT_DELAY = 0.05  # seconds receipts for one sender are collected before sending
RESEND_LIMIT = 50  # undelivered messages re-sent after a peer's session reset
PENDING_LIMIT = 1000  # unconfirmed outgoing rows re-sent per retry_pending() pass
UNSEEN_LIMIT = 10_000  # stored-but-never-shown rows replayed per receive()/start()
RECEIPT_RETRY_CAP = 1.0  # seconds: longest pause between receipt retries (start() mode)
RECEIPT_RETRY_WINDOW = 60.0  # seconds of fast receipt retries; then only on reconnect
MAX_HANDLE_LEN = 32  # server handle rule (PROTOCOL Part III): longer "xc1..." is an address
_BECH32_CHARS = frozenset("qpzry9x8gf2tvdw0s3jn54khce6mua7l")
STORED_TYPES = ("text", "file")  # kept in history and acknowledged by receipt

ProgressCallback = Callable[[int], None]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class AccountInfo:
    address: str
    handle: str | None
    server: str
    device_id: int
    recovery_phrase: str | None = None


@dataclass(frozen=True)
class HistoryItem:
    id: str
    direction: str  # "in" | "out"
    peer: str
    text: str | None
    ts_ms: int
    status: str
    reply_to: str | None
    file: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryResult:
    """What :meth:`Client.retry_pending` did (PROTOCOL Part IV §3.8)."""

    #: re-sent with their original content ids and now confirmed by the relay
    sent: tuple[HistoryItem, ...] = ()
    #: still unconfirmed (state 'failed'), with the one-line reason
    failed: tuple[tuple[HistoryItem, str], ...] = ()


class Client(GroupMethods):
    """One device's client. Opening takes the profile lock (ProfileLocked if taken).
    Group methods (``create_group``, ``send_group``, ...) come from
    :class:`~xchat.client.groups.GroupMethods`."""

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
        self._groups = Groups(self)
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
        if self._store is not None:
            self._store.close()
            self._store = None
        self.profile.close()

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
        return self._api

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
        api = Api(server)
        try:
            existing = await api.lookup_address(identity.public.address())
        except ApiError as exc:
            if exc.status == 404:
                raise UnknownContact(
                    "no account for this recovery phrase on this server (wrong phrase?)"
                ) from None
            raise
        finally:
            await api.aclose()
        handle = existing.get("handle") if isinstance(existing.get("handle"), str) else None
        return await self._register(server, identity, None, progress, use_keyring, handle)

    async def _register(
        self,
        server: str,
        identity: IdentityKeyPair,
        handle: str | None,
        progress: ProgressCallback | None,
        use_keyring: bool,
        known_handle: str | None = None,
    ) -> AccountInfo:
        server = server.rstrip("/")
        api = Api(server)
        try:
            info = await api.server_info()
            signing_key = b64d(info.get("signing_key"), "signing_key")
            if len(signing_key) != 32:
                raise ProtocolError("server signing key must be 32 bytes")
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
        return self.whoami()

    async def set_handle(self, handle: str) -> None:
        await self.api.set_handle(handle)
        self.profile.config.handle = handle.lower()
        self.profile.save_config()

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
            resp = await api.auth(
                {
                    "address": self.address,
                    "device_id": self.profile.config.device_id or 1,
                    "challenge": b64e(challenge),
                    "signature": b64e(self.identity.sign(b"XChat-v1-auth" + challenge)),
                }
            )
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
        return ct.SenderInfo(
            handle=self.profile.config.handle, delivery_token=self.store.get_meta("delivery_token")
        )

    async def _sender_certificate(self) -> bytes:
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
            cert.verify(self._server_signing_key(), now_ms())
        except (DecodeError, CryptoError) as exc:
            raise ProtocolError(f"server issued an invalid sender certificate: {exc}") from None
        if cert.identity != self.identity.public:
            raise ProtocolError("server issued a sender certificate for another identity")
        self.store.put_meta("sender_cert", raw)
        return raw

    def _server_signing_key(self) -> bytes:
        key = self.store.get_meta("server_signing_key")
        if key is None:
            raise ProfileError("profile has no pinned server signing key")
        return key

    # --- prekeys (PROTOCOL Part IV §4) ---------------------------------------------------------

    async def replenish_prekeys(self, *, force: bool = False) -> int:
        """Upload a batch of one-time prekeys if the server's stock is low; returns how
        many keys were uploaded."""
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

    # --- contacts -----------------------------------------------------------------------

    async def resolve(self, to: str) -> ContactRecord:
        """``@handle`` or address -> contact, checking the identity the server reports.

        Raises UnknownContact; records an identity change (IdentityChangedEvent) if the key
        differs from the recorded one.
        """
        to = to.strip()
        if not to.startswith("@") and not is_address(to):
            _check_not_an_address(to)
        api = self.api
        try:
            if to.startswith("@") or not is_address(to):
                wanted = to.removeprefix("@").lower()
                if not wanted:
                    raise UnknownContact("empty handle")
                data = await api.lookup_handle(wanted)
            else:
                data = await api.lookup_address(_normalize_address(to))
        except ApiError as exc:
            if exc.status in (400, 404):
                raise UnknownContact(f"unknown contact {to!r}") from None
            raise
        address = data.get("address")
        try:
            identity = IdentityPublicKey.decode(b64d(data.get("identity_key"), "identity_key"))
        except DecodeError as exc:
            raise ProtocolError(f"server sent a malformed identity key: {exc}") from None
        if not isinstance(address, str) or not address_matches(address, identity):
            raise UntrustedIdentity("server paired this address with someone else's key")
        if address == self.address:
            raise ClientError("that is your own address")
        raw_handle = data.get("handle")
        handle = raw_handle if isinstance(raw_handle, str) else None
        changed = await self._check_identity(address, identity, handle)
        if handle is not None and not changed:
            await self._check_handle(handle, address, identity)
        self.store.update_contact(address, handle=handle)
        c = self.store.get_contact(address)
        assert c is not None
        return c

    async def _check_identity(
        self, address: str, identity: IdentityPublicKey, handle: str | None = None
    ) -> bool:
        """Record ``identity`` for ``address``; True (and an event) if it changed."""
        c = self.store.ensure_contact(address, now_ms())
        new = identity.encode()
        if c.identity_key is None:
            self.store.update_contact(address, identity_key=new)
            return False
        if c.identity_key == new:
            return False
        # The address is a hash of the identity key, so a different key for the same
        # address means a second preimage of a 160-bit hash, i.e. a lying server. (A
        # *restored* account keeps its key and address; it only starts a new session.)
        with self.store.transaction():
            self.store.update_contact(address, identity_key=new, identity_changed=True)
            self.store.delete_sessions(address)
        await self._emit(
            ev.IdentityChangedEvent(address, handle or c.handle, c.identity_key, new, c.verified)
        )
        return True

    async def _check_handle(self, handle: str, address: str, identity: IdentityPublicKey) -> None:
        """A handle we knew now names a different account: an identity change for the
        person behind the handle (PROTOCOL Part IV §8). A verified handle stays blocked."""
        old = self.store.contact_by_handle(handle)
        if old is None or old.address == address:
            return
        with self.store.transaction():
            self.store.clear_handle(old.address)
            if old.verified:
                self.store.update_contact(address, verified=True, identity_changed=True)
        await self._emit(
            ev.IdentityChangedEvent(
                address, handle, old.identity_key, identity.encode(), old.verified
            )
        )

    def contacts(self) -> list[ContactRecord]:
        return self.store.list_contacts()

    def find_contact(self, to: str) -> ContactRecord | None:
        """Local lookup by ``@handle`` or address (no network)."""
        to = to.strip()
        if is_address(to):
            return self.store.get_contact(_normalize_address(to))
        return self.store.contact_by_handle(to.removeprefix("@"))

    async def contact(self, to: str) -> ContactRecord:
        """The contact for ``to``, checked against the server once per Client lifetime
        (so a changed key or a re-pointed handle is noticed before we send)."""
        key = to.strip().lower()
        address = self._resolved.get(key)
        if address is not None:
            c = self.store.get_contact(address)
            if c is not None and c.identity_key is not None:
                return c
        c = await self.resolve(to)
        self._resolved[key] = c.address
        return c

    def safety_number(self, c: ContactRecord) -> tuple[str, bytes]:
        """(60 digits in 12 groups of 5, QR payload) for us and ``c``."""
        from xchat.crypto.fingerprint import safety_number

        if c.identity_key is None:
            raise UnknownContact("no identity key recorded for this contact")
        sn = safety_number(self.identity.public, IdentityPublicKey.decode(c.identity_key))
        return sn.format(), sn.qr_payload

    def mark_verified(self, c: ContactRecord, verified: bool = True) -> None:
        """The user compared safety numbers: trust the current key (clears a change)."""
        self.store.update_contact(c.address, verified=verified, identity_changed=False)

    def history(self, c: ContactRecord, limit: int = 100) -> list[HistoryItem]:
        return [_history_item(m) for m in self.store.history(c.address, limit)]

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

    def keep_unseen(self, event: ev.MessageReceived) -> None:
        """Called by an event callback that will show ``event`` only later (e.g. after a
        download): the message is flagged unseen again, so the next process replays it
        if this one dies first, until :meth:`mark_shown` (PROTOCOL Part IV §5.3)."""
        key = _row_key(event)
        self._held_unseen.add(key)
        self.store.mark_unseen(*key)

    def mark_shown(self, event: ev.MessageReceived) -> None:
        """The app has shown ``event`` (after :meth:`keep_unseen`)."""
        key = _row_key(event)
        self._held_unseen.discard(key)
        self.store.clear_unseen(*key)

    async def _replay_unseen(self) -> int:
        """Emit ``MessageReceived`` for every stored message the app was never shown:
        the process died between the store commit and the event (PROTOCOL Part IV §5.3).
        The relay's redelivery of those envelopes is a ratchet DuplicateMessage, so
        without this they would only ever appear in the history."""
        rows = self.store.unseen_messages(UNSEEN_LIMIT)
        for m in rows:
            if (m.peer, m.id) in self._held_unseen:
                continue  # this process holds it for later display (keep_unseen)
            event = self._stored_event(m)
            if event is None:
                self.store.clear_unseen(m.peer, m.id)
            else:
                await self._emit(event)
        return len(rows)

    def _stored_event(self, m: MessageRecord) -> ev.MessageReceived | None:
        try:
            body = ct.Content.decode(m.body)
        except XChatError:
            return None
        group: dict[str, str] | None = None
        sender = m.peer
        if m.peer.startswith(GROUP_PEER_PREFIX):
            gid, _, sender = m.peer[len(GROUP_PEER_PREFIX) :].partition(":")
            try:
                name = self.group_info(gid).name
            except XChatError:
                name = "?"
            group = {"id": gid, "name": name}
        c = self.store.get_contact(sender)
        return ev.MessageReceived(
            m.id,
            sender,
            c.handle if c is not None else None,
            body.text or "",
            body.ts,
            body.reply_to,
            1,  # the device is not stored; one device per account (PROTOCOL Part IV §10)
            body.file,
            group,
        )

    # --- sending (PROTOCOL Part IV §3) ---------------------------------------------------------

    async def send_text(
        self, to: str, text: str, *, reply_to: str | None = None, resume: bool = False
    ) -> str:
        """Encrypt, seal and send a text; returns the message id once the server acked.

        With ``resume``, a text identical (recipient, text, reply_to) to one whose send
        was never confirmed (or that :meth:`retry_pending` re-sent during this client's
        lifetime) is that message: it is (re-)sent with its ORIGINAL id and that id is
        returned, so running a crashed ``xchat send`` again shows the text once
        (PROTOCOL Part IV §3.8)."""
        c = await self._sendable_contact(to)
        if resume:
            resumed = await self._resume_text(c, text, reply_to)
            if resumed is not None:
                return resumed
        sender = None if c.token_shared else self._own_sender_info()
        msg = ct.text_message(text, now_ms(), reply_to=reply_to, sender=sender)
        await self._send_content(c, msg, store_as_message=True)
        return msg.id

    async def send_file_manifest(
        self, to: str, manifest: dict[str, Any], *, text: str | None = None
    ) -> str:
        """Send a file message (content type "file", PROTOCOL Part VI) carrying ``manifest``."""
        c = await self._sendable_contact(to)
        sender = None if c.token_shared else self._own_sender_info()
        msg = ct.Content(
            id=ct.new_message_id(),
            type="file",
            ts=now_ms(),
            text=text,
            sender=sender,
            file=manifest,
        )
        await self._send_content(c, msg, store_as_message=True)
        return msg.id

    async def _resume_text(self, c: ContactRecord, text: str, reply_to: str | None) -> str | None:
        done = self._resent.get(c.address, [])
        for i, h in enumerate(done):
            if h.text == text and h.reply_to == reply_to and h.file is None:
                del done[i]  # one resumed send per re-sent row
                return h.id
        for m in self.store.pending_outgoing(PENDING_LIMIT):
            if m.peer != c.address:
                continue
            h = _history_item(m)
            if h.text == text and h.reply_to == reply_to and h.file is None:
                await self._resend_row(c, m.id)
                return m.id
        return None

    async def retry_pending(self) -> RetryResult:
        """Re-send every message whose send was never confirmed by the relay — state
        'sending' (the process died mid-send) or 'failed' (the send gave up) — with its
        stored content and ORIGINAL content id, oldest first (PROTOCOL Part IV §3.8). The
        recipient keeps one message per (sender, content id), so a copy the relay had
        already committed is shown once.

        Rows to a blocked contact (verified, identity changed) wait until it is
        re-verified. A row that fails for its own reason stays 'failed' and is listed in
        the result; ServerUnreachable and long rate limits stop the pass and are raised
        (the remaining rows stay pending for the next pass). ``start()`` runs this on
        every (re)connection."""
        sent: list[HistoryItem] = []
        failed: list[tuple[HistoryItem, str]] = []
        for m in self.store.pending_outgoing(PENDING_LIMIT):
            c = self.store.get_contact(m.peer)  # None for group rows (PROTOCOL Part V: gap)
            if c is None or c.identity_key is None or (c.verified and c.identity_changed):
                continue
            item = _history_item(m)
            try:
                done = await self._resend_row(c, m.id)
            except ServerUnreachable:
                raise
            except ApiError as exc:
                if exc.status == 429 or exc.status >= 500:
                    raise
                failed.append((item, str(exc)))
                continue
            except XChatError as exc:
                failed.append((item, str(exc) or type(exc).__name__))
                continue
            if done:
                sent.append(item)
                self._resent.setdefault(m.peer, []).append(item)
        return RetryResult(tuple(sent), tuple(failed))

    async def _resend_row(self, c: ContactRecord, msg_id: str) -> bool:
        """Re-send one stored outgoing row with its id; False if it got confirmed in the
        meantime. The status is checked under the send lock, so a send in flight in this
        process is never doubled."""
        async with self._send_lock:
            m = self.store.get_message(c.address, msg_id)
            if m is None or m.direction != "out" or m.status not in ("sending", "failed"):
                return False
            msg = ct.Content.decode(m.body)
            try:
                await self._send_locked(c, msg, store_as_message=False)
            except BaseException:
                self.store.mark_failed(c.address, msg_id)
                raise
            self.store.mark_sent(c.address, msg_id)
            return True

    async def _sendable_contact(self, to: str) -> ContactRecord:
        c = await self.contact(to)
        if c.verified and c.identity_changed:
            raise IdentityChanged(
                f"the identity of verified contact {c.handle or c.address} changed; "
                "compare safety numbers and run `xchat verify --mark-verified` to continue"
            )
        return c

    async def _send_content(
        self, c: ContactRecord, msg: ct.Content, *, store_as_message: bool
    ) -> None:
        async with self._send_lock:
            await self._send_locked(c, msg, store_as_message=store_as_message)

    async def _send_locked(
        self, c: ContactRecord, msg: ct.Content, *, store_as_message: bool
    ) -> None:
        cert = await self._sender_certificate()
        envelopes = await self._encrypt_for(c, msg, cert, store_as_message)
        try:
            await self._deliver(c, envelopes)
        except BaseException:
            if store_as_message:
                self.store.mark_failed(c.address, msg.id)
            raise
        if store_as_message:
            # never downgrade: a receipt processed before the ack set "delivered"
            self.store.mark_sent(c.address, msg.id)

    async def _encrypt_for(
        self, c: ContactRecord, msg: ct.Content, cert: bytes, store_as_message: bool
    ) -> list[fr.OutEnvelope]:
        assert c.identity_key is not None
        peer = IdentityPublicKey.decode(c.identity_key)
        devices = self.store.session_devices(c.address)
        if not devices:
            devices = await self._start_sessions(c, peer)
        plaintext = msg.encode()
        t = now_ms()
        out: list[fr.OutEnvelope] = []
        # Ratchet state is persisted BEFORE the envelope leaves (PROTOCOL Part IV §3.4): a crash
        # after sending must never make us reuse a message key.
        with self.store.transaction():
            for device_id in devices:
                state = self.store.get_session(c.address, device_id)
                assert state is not None
                session = e2e.load_session(state)
                ciphertext = e2e.encrypt(session, plaintext)
                self.store.put_session(c.address, device_id, e2e.session_bytes(session), t)
                sealed = e2e.seal(self.identity, cert, peer, ciphertext, device_id)
                out.append(fr.OutEnvelope(device_id, secrets.token_bytes(16), sealed))
            if store_as_message:
                self.store.add_message(msg.id, c.address, "out", msg.ts, "sending", plaintext, t)
        return out

    async def _start_sessions(self, c: ContactRecord, peer: IdentityPublicKey) -> list[int]:
        api = await self._authed()
        try:
            resp = await api.bundles(c.address)
        except ApiError as exc:
            if exc.status == 404:
                raise UnknownContact(f"unknown contact {c.handle or c.address}") from None
            raise
        bundles = e2e.parse_bundles(resp)
        if not bundles:
            raise ProtocolError("server returned no devices for this contact")
        if bundles[0].identity_key != peer:
            await self._check_identity(c.address, bundles[0].identity_key, c.handle)
            raise UntrustedIdentity("server handed out prekeys of a different identity")
        t = now_ms()
        with self.store.transaction():
            for b in bundles:
                session = e2e.initiate(self.identity, b)
                self.store.put_session(c.address, b.device_id, e2e.session_bytes(session), t)
        return [b.device_id for b in bundles]

    async def _deliver(self, c: ContactRecord, envelopes: list[fr.OutEnvelope]) -> None:
        token = c.delivery_token
        if token is not None:
            try:
                await self._send_frame(c.address, fr.TokenAccess(token), envelopes)
                return
            except ApiError as exc:
                if exc.status not in (401, 403):
                    raise
                # The contact rotated its token (e.g. restored): fall back to PoW.
                self.store.update_contact(c.address, token_shared=False)
        await self._send_frame(c.address, await self._pow_access(c.address), envelopes)

    async def _pow_access(self, address: str) -> fr.PowAccess:
        chal = await self.api.challenge()
        challenge = b64d(chal.get("challenge"), "challenge")
        bits = _int(chal.get("pow_bits", 0), "pow_bits")
        nonce = await asyncio.to_thread(xpow.solve, challenge, address.encode("ascii"), bits)
        return fr.PowAccess(challenge, nonce)

    async def _send_frame(
        self, address: str, access: fr.Access, envelopes: list[fr.OutEnvelope]
    ) -> None:
        """One SEND; retried on a lost connection with the SAME envelope ids, which the
        server stores once (PROTOCOL Part III §5), so a retry can never duplicate a message."""
        dest = (fr.Destination(address, access, tuple(envelopes)),)
        backoff = Backoff(base=0.1, cap=2.0)
        for attempt in range(SEND_ATTEMPTS):
            if self._sender is None:
                self._sender = SendChannel(ws_url(self.whoami().server))
            try:
                await self._sender.send(dest)
                return
            except ServerUnreachable:
                await self._sender.aclose()
                self._sender = None
                if attempt == SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff.next_delay())
            except ApiError as exc:
                # A short rate-limit pause is waited out; a long one is the caller's call.
                wait = exc.retry_after
                if exc.status != 429 or wait is None or wait > MAX_RATE_WAIT:
                    raise
                if attempt == SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(wait)

    # --- receiving (PROTOCOL Part IV §5) -------------------------------------------------------

    async def start(self) -> ReceiveLoop:
        """Start the background receive loop (reconnects forever until :meth:`stop`).

        First emits the messages stored but never shown (PROTOCOL Part IV §5.3), so register
        listeners before calling this. On every (re)connection it sends the delivery
        receipts still owed (§3.6) and re-sends unconfirmed messages
        (:meth:`retry_pending`, §3.8) in the background."""
        if self._recv is None:
            self._started = True
            await self._replay_unseen()
            self._recv = ReceiveLoop(
                ws_url(self.whoami().server),
                self._ws_token,
                self._on_frame,
                backoff=Backoff(cap=self._reconnect_cap),
                on_connection=self._on_connection,
            )
            self._recv_task = asyncio.create_task(self._recv.run())
        return self._recv

    async def stop(self) -> None:
        self._started = False
        retry, self._receipt_retry = self._receipt_retry, None
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(BaseException):
                await retry
        if self._recv is not None:
            await self._recv.stop()
        if self._recv_task is not None:
            self._recv_task.cancel()
            with contextlib.suppress(BaseException):
                await self._recv_task
        self._recv = None
        self._recv_task = None

    async def receive(self, wait: float = 0.0) -> list[ev.Event]:
        """Connect, process everything queued (until DRAINED), keep receiving for ``wait``
        seconds, then disconnect. Returns the events seen. Errors on the first connection
        (unreachable, unauthorised) are raised."""
        if self._recv is not None:
            raise ClientError("this client is already receiving (start() is running)")
        seen: list[ev.Event] = []
        self.on_event(seen.append)
        try:
            await self._replay_unseen()
            loop = ReceiveLoop(
                ws_url(self.whoami().server),
                self._ws_token,
                self._on_frame,
                backoff=Backoff(cap=self._reconnect_cap),
            )
            self._recv = loop
            task = asyncio.create_task(loop.run(fail_fast=True))
            self._recv_task = task
            drained = asyncio.create_task(loop.drained.wait())
            done, _ = await asyncio.wait(
                {task, drained}, timeout=DRAIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            drained.cancel()
            if task in done:
                task.result()  # raises the connection error
            if self.store.receipt_peers():  # owed by an earlier run (PROTOCOL Part IV §3.6)
                self._background(self._flush_all_receipts())
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flush_background()
        finally:
            self._listeners.remove(seen.append)
            await self.stop()
        return seen

    async def _flush_background(self) -> None:
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    async def _on_connection(self, connected: bool) -> None:
        await self._emit(ev.ConnectionChanged(connected))
        if connected:
            self._background(self.replenish_prekeys())
            self._background(self._flush_all_receipts())
            self._background(self.retry_pending())

    async def _ws_token(self, force: bool) -> str:
        return await self._auth_token(force=force)

    async def _on_frame(self, frame: fr.Frame, loop: ReceiveLoop) -> None:
        if isinstance(frame, fr.Deliver):
            await self._on_deliver(frame, loop)
        elif isinstance(frame, fr.Drained):
            await self._emit(ev.Drained())
        elif isinstance(frame, fr.KeysLow):
            self._background(self.replenish_prekeys(force=True))

    def _background(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except XChatError as exc:
                log.warning("background task failed: %s", exc)

        task = asyncio.create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _on_deliver(self, frame: fr.Deliver, loop: ReceiveLoop) -> None:
        """Unseal -> decrypt -> dedupe -> store (one transaction) -> emit -> ACK -> receipts."""
        batch = _Batch()
        events, receipts, followups = batch.events, batch.receipts, batch.followups
        t = now_ms()
        with self.store.transaction():
            for item in frame.envelopes:
                self._process_envelope(item, t, batch)
        # Stored durably: only now may the server delete the envelopes.
        await loop.send_ack([d.envelope_id for d in frame.envelopes])
        if batch.claims:
            for sender, claimed in batch.claims.items():
                await self._verify_handle_claim(sender, claimed)
            events = [_with_handle(e, self.store) for e in events]
        for e in events:
            await self._emit(e)
        for address in receipts:
            if address not in self._receipt_scheduled:
                self._receipt_scheduled.add(address)
                self._background(self._flush_receipts(address))
        for action, address in dict.fromkeys(followups):
            if action == "reset" and address not in self._reset_sent:
                self._reset_sent.add(address)
                self._background(self._reset_session(address))
            elif action == "resend":
                self._background(self._resend_undelivered(address))

    def _process_envelope(
        self,
        item: fr.Delivered,
        t: int,
        batch: _Batch,
    ) -> None:
        events, followups = batch.events, batch.followups
        env_id = item.envelope_id.hex()
        sender: str | None = None
        try:
            # The certificate must have been valid when the server ACCEPTED the envelope
            # (its DELIVER timestamp), not now: mail may wait in the queue for days while
            # certificates live 24 h (as Signal checks against the server timestamp).
            unsealed = e2e.unseal(
                self.identity,
                item.content,
                self._server_signing_key(),
                item.ts_ms or t,
                self.profile.config.device_id or 1,
            )
            peer = unsealed.sender
            sender = self._address_of(peer)
            c = self.store.ensure_contact(sender, t)
            if c.identity_key is not None and c.identity_key != peer.encode():
                # Unreachable for an honest server (address = hash of key); treat as change.
                self.store.update_contact(sender, identity_key=peer.encode(), identity_changed=True)
                self.store.delete_sessions(sender)
                events.append(
                    ev.IdentityChangedEvent(
                        sender, c.handle, c.identity_key, peer.encode(), c.verified
                    )
                )
            elif c.identity_key is None:
                self.store.update_contact(sender, identity_key=peer.encode())
            if unsealed.content_type == GROUP_CONTENT_TYPE:  # one upload for the group
                self._groups.receive_message(unsealed, sender, env_id, t, batch)
                return
            state = self.store.get_session(sender, unsealed.device_id)
            result = e2e.decrypt(
                self.identity, peer, state, unsealed.content, e2e.StorePreKeys(self.store)
            )
            self.store.put_session(sender, unsealed.device_id, e2e.session_bytes(result.session), t)
            for kind, key_id in result.used_one_time:
                self.store.delete_prekey(kind, key_id)
            msg = ct.Content.decode(result.plaintext)
        except DuplicateMessage:
            return  # a redelivery of something already processed: just ack it
        except (DecryptionError, UnknownPreKey) as exc:
            # Authenticated sender, but no usable session (e.g. we restored from the
            # recovery phrase and lost our sessions): ask for a fresh one (PROTOCOL Part IV §3.7).
            events.append(ev.DecryptionFailed(env_id, f"{type(exc).__name__}: {exc}", sender))
            if sender is not None:
                followups.append(("reset", sender))
            return
        except XChatError as exc:
            events.append(ev.DecryptionFailed(env_id, f"{type(exc).__name__}: {exc}", sender))
            return
        assert sender is not None
        self._apply_content(sender, msg, result.plaintext, unsealed.device_id, t, batch)
        if msg.type == "reset" and self.store.mark_seen(sender, msg.id, t):
            # The peer lost its session (and our delivery token): share the token again
            # and re-send what it never confirmed; content ids make this idempotent.
            self.store.update_contact(sender, token_shared=False)
            followups.append(("resend", sender))

    def _apply_content(
        self,
        sender: str,
        msg: ct.Content,
        plaintext: bytes,
        device_id: int,
        t: int,
        batch: _Batch,
    ) -> None:
        events, receipts = batch.events, batch.receipts
        c = self.store.get_contact(sender)
        handle = c.handle if c is not None else None
        if msg.sender is not None:
            # The token is the sender's own business; a claimed handle is NOT trusted
            # until the server confirms it names this address (PROTOCOL Part IV §3.2).
            self.store.update_contact(sender, delivery_token=msg.sender.delivery_token)
            claimed = (msg.sender.handle or "").lower()
            if claimed and claimed != handle:
                batch.claims[sender] = claimed
        if msg.type in STORED_TYPES:
            if not self.store.add_message(msg.id, sender, "in", msg.ts, "received", plaintext, t):
                return  # duplicate content id (e.g. re-sent after a crash)
            # Owed receipt persisted with the message: a relay outage or a crash before
            # it leaves does not lose it (PROTOCOL Part IV §3.6).
            self.store.add_pending_receipt(sender, msg.id, t)
            receipts.setdefault(sender, []).append(msg.id)
            events.append(
                ev.MessageReceived(
                    msg.id,
                    sender,
                    handle,
                    msg.text or "",
                    msg.ts,
                    msg.reply_to,
                    device_id,
                    msg.file,
                )
            )
        elif msg.type == "receipt":
            if not self.store.mark_seen(sender, msg.id, t):
                return
            ids = tuple(
                i for i in msg.receipt_for if self.store.set_message_status(sender, i, "delivered")
            )
            # A receipt proves the contact decrypted a message carrying our sender info.
            self.store.update_contact(sender, token_shared=True)
            if ids:
                events.append(ev.ReceiptReceived(sender, ids, msg.ts))
        elif msg.type in PAIRWISE_TYPES:  # group updates and sender keys (PROTOCOL Part V §10)
            self._groups.receive_pairwise(sender, msg, device_id, t, batch)
        # "profile" and unknown types: sender info above is all we use for now.

    async def _reset_session(self, address: str) -> None:
        """Start a fresh session to ``address`` and tell it so (content type "reset")."""
        c = await self.resolve(address)
        if c.verified and c.identity_changed:
            return
        self.store.delete_sessions(address)
        msg = ct.Content(
            id=ct.new_message_id(), type="reset", ts=now_ms(), sender=self._own_sender_info()
        )
        await self._send_content(c, msg, store_as_message=False)

    async def _resend_undelivered(self, address: str) -> None:
        c = self.store.get_contact(address)
        if c is None or (c.verified and c.identity_changed):
            return
        for m in self.store.undelivered(address, RESEND_LIMIT):
            try:
                msg = ct.Content.decode(m.body)
            except XChatError:
                continue
            await self._send_content(c, msg, store_as_message=False)
            self.store.mark_sent(address, m.id)

    def _address_of(self, identity: IdentityPublicKey) -> str:
        """``identity.address()`` memoised: bech32m encoding is a measurable share of
        the per-message receive cost."""
        raw = identity.encode()
        address = self._addresses.get(raw)
        if address is None:
            if len(self._addresses) > 4096:
                self._addresses.clear()
            address = self._addresses[raw] = identity.address()
        return address

    async def _verify_handle_claim(self, sender: str, claimed: str) -> None:
        """Adopt a handle a contact claims only if the server's directory agrees."""
        if (sender, claimed) in self._rejected_claims:
            return
        try:
            data = await self.api.lookup_handle(claimed)
        except XChatError as exc:
            log.info("cannot check handle claim %r: %s", claimed, exc)
            return
        c = self.store.get_contact(sender)
        if data.get("address") != sender or c is None or c.identity_key is None:
            self._rejected_claims.add((sender, claimed))
            return
        await self._check_handle(claimed, sender, IdentityPublicKey.decode(c.identity_key))
        self.store.update_contact(sender, handle=claimed)

    async def _flush_receipts(self, address: str) -> None:
        """Coalesce receipts: ids that arrive within RECEIPT_DELAY share one receipt."""
        await asyncio.sleep(RECEIPT_DELAY)
        self._receipt_scheduled.discard(address)
        await self._send_pending_receipts(address)

    async def _flush_all_receipts(self) -> None:
        """Send every receipt still owed (after a reconnect, or owed by an earlier run)."""
        for address in self.store.receipt_peers():
            await self._send_pending_receipts(address)

    async def _send_pending_receipts(self, address: str) -> None:
        """Send the receipts owed to ``address`` from the store; each id is deleted only
        after the relay acknowledged the receipt carrying it. A transient failure keeps
        them (and, under start(), schedules a retry); a permanent one drops them."""
        async with self._receipt_lock:
            while ids := self.store.pending_receipts(address, ct.MAX_RECEIPT_IDS):
                c = self.store.get_contact(address)
                if (
                    c is None
                    or c.identity_key is None
                    or c.delivery_token is None  # never pay PoW for a receipt (§3.6)
                    or (c.verified and c.identity_changed)  # blocked (§8)
                ):
                    self.store.delete_pending_receipts(address)
                    return
                sender = None if c.token_shared else self._own_sender_info()
                r = ct.receipt(ids, now_ms(), sender=sender)
                try:
                    await self._send_content(c, r, store_as_message=False)
                except XChatError as exc:
                    if _transient(exc):
                        self._schedule_receipt_retry()
                        raise
                    log.info("dropping %d receipts for %s: %s", len(ids), address, exc)
                self.store.delete_pending_receipts(address, ids)

    def _schedule_receipt_retry(self) -> None:
        if self._started and (self._receipt_retry is None or self._receipt_retry.done()):
            self._receipt_retry = asyncio.create_task(self._receipt_retry_loop())

    async def _receipt_retry_loop(self) -> None:
        """Retry owed receipts with a short backoff for RECEIPT_RETRY_WINDOW seconds (a
        relay restart takes about a second, and the receive socket may take far longer
        to notice); after that only a reconnection flushes them."""
        backoff = Backoff(base=0.2, cap=RECEIPT_RETRY_CAP)
        deadline = time.monotonic() + RECEIPT_RETRY_WINDOW
        while self._started and time.monotonic() < deadline:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._flush_all_receipts()
                return
            except XChatError as exc:
                log.info("receipt retry failed: %s", exc)


@dataclass
class _Batch:
    """What processing one DELIVER frame produced, acted on after the commit."""

    events: list[ev.Event] = field(default_factory=list)
    receipts: dict[str, list[str]] = field(default_factory=dict)
    followups: list[tuple[str, str]] = field(default_factory=list)  # (action, address)
    claims: dict[str, str] = field(default_factory=dict)  # address -> claimed handle


def _transient(exc: XChatError) -> bool:
    """Worth retrying later: the relay is down, overloaded or rate limiting."""
    if isinstance(exc, ServerUnreachable):
        return True
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


def _row_key(e: ev.MessageReceived) -> tuple[str, str]:
    """The ``messages`` primary key (peer, id) of a received message."""
    if e.group is not None:
        return f"{GROUP_PEER_PREFIX}{e.group.get('id', '')}:{e.sender}", e.id
    return e.sender, e.id


def _check_not_an_address(to: str) -> None:
    """``to`` is neither an @handle nor a valid address: if it can only have been meant
    as an address (longer than any handle, ``xc1`` prefix), say why it is invalid
    instead of "unknown contact"."""
    low = to.lower()
    if not (low.startswith("xc1") and len(to) > MAX_HANDLE_LEN):
        return
    if to != low and to != to.upper():
        raise InvalidAddress("invalid address: mixed upper and lower case")
    if set(low[3:]) <= _BECH32_CHARS:
        raise InvalidAddress("invalid address: bad checksum (typo?)")
    raise InvalidAddress("invalid address: characters that no address contains (typo?)")


def _with_handle(e: ev.Event, store: Store) -> ev.Event:
    if isinstance(e, ev.MessageReceived):
        c = store.get_contact(e.sender)
        if c is not None and c.handle != e.handle:
            return replace(e, handle=c.handle)
    return e


def _history_item(m: MessageRecord) -> HistoryItem:
    try:
        c = ct.Content.decode(m.body)
        text, reply_to, file = c.text, c.reply_to, c.file
    except XChatError:
        text, reply_to, file = None, None, None
    return HistoryItem(m.id, m.direction, m.peer, text, m.ts_ms, m.status, reply_to, file)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"server sent a non-integer {what}")
    return value


def profile_path(path: str | None) -> Path:
    return Path(path).expanduser() if path else default_home()
