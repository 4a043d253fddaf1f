"""The relay's storage interface (PROTOCOL.md Part III §8).

Handlers talk only to :class:`Store`; ``sqlite.py`` is the one-machine backend, a
PostgreSQL backend can implement the same methods later. Every write method returns only
after its transaction is durably committed (group commit: many callers share one commit).

What is stored, deliberately: accounts (address, identity key, optional handle, the hash of
the delivery token), devices, prekeys, and per-device mailbox rows of
``(device, seq, envelope_id, ts_ms, expires_ms, content)``. A mailbox row never names a
sender: the relay keeps no social graph.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device of an account. ``ref`` is the store-wide device key; ``epoch`` changes
    when the device is re-registered or revoked, which invalidates its old tokens."""

    ref: int
    address: str
    device_id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class AccountRecord:
    address: str
    identity_key: bytes
    handle: str | None
    token_hash: bytes | None
    devices: tuple[DeviceRecord, ...]


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A prekey as uploaded: id, encoded public key, signature (empty for one-time EC)."""

    id: int
    key: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PreKeySet:
    """A PreKeyUpload after validation (PROTOCOL Part III ``PUT /keys``); ``None`` = unchanged."""

    signed_prekey: SignedKey | None = None
    kem_last_resort: SignedKey | None = None
    one_time_ec: tuple[SignedKey, ...] = ()
    one_time_kem: tuple[SignedKey, ...] = ()


@dataclass(frozen=True, slots=True)
class BundleDevice:
    """One device's bundle as handed out by :meth:`Store.take_bundle`; the one-time keys in
    it have been removed from the store in the same transaction."""

    device: DeviceRecord
    signed_prekey: SignedKey | None
    kem_prekey: SignedKey | None
    kem_last_resort: bool
    one_time_ec: SignedKey | None
    ec_left: int
    kem_left: int


class NewEnvelope(NamedTuple):
    """A mailbox row to store (a NamedTuple: built once per envelope on the hot path)."""

    device_ref: int
    envelope_id: bytes
    ts_ms: int
    expires_ms: int
    content: bytes


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    seq: int
    envelope_id: bytes
    ts_ms: int
    content: bytes


class HandleTaken(Exception):
    """Internal signal from a store: the handle (or a confusable of it) is in use."""


class EarlyDelivery(Protocol):
    """What the relay needs to deliver before the commit (``Store.early_delivery``)."""

    def reserve_seqs(self, n: int) -> list[int]:
        """Queue seqs for ``n`` envelopes about to be enqueued (event-loop thread)."""
        ...

    def enqueue_reserved(
        self,
        envelopes: list[NewEnvelope],
        seqs: list[int],
        callback: Callable[[Any, BaseException | None], None],
        hold: bool = False,
    ) -> None:
        """Enqueue under reserved seqs; ``hold``: already delivered, wait for the ACK."""
        ...


class Store(abc.ABC):
    """Durable state of the relay. Async methods; implementations batch internally."""

    #: Called on the event loop right after the commit that changed a device's epoch
    #: (re-registration / restore / revocation) and before the results of any operation
    #: committed after it are handed out, so the server can cut the device's open sockets
    #: before a later delivery could reach them (PROTOCOL Part III §5, revocation).
    on_epoch_change: Callable[[DeviceRecord], None] | None = None

    #: Called with ``(challenge, expires_ms)`` when another node of a shared store used a
    #: challenge, so every node refuses it (PROTOCOL Part III §3). Single-node stores: never.
    on_challenge_used: Callable[[bytes, int], None] | None = None

    #: Called with ``(key, value)`` when an operator changed a setting while the relay runs
    #: (``xchat admin pow`` on a shared store). Single-node stores read settings at start.
    on_setting: Callable[[str, str], None] | None = None

    def settings(self) -> dict[str, str]:
        """Operator settings persisted by ``xchat admin`` (e.g. ``pow_bits``). Default: none."""
        return {}

    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and load caches."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # --- directory ---

    @abc.abstractmethod
    def get_account(self, address: str) -> AccountRecord | None:
        """Cached lookup (no I/O)."""

    @abc.abstractmethod
    def get_account_by_handle(self, handle: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    def get_device(self, ref: int) -> DeviceRecord | None: ...

    @abc.abstractmethod
    async def register(
        self, address: str, identity_key: bytes, keys: PreKeySet, now_ms: int
    ) -> DeviceRecord:
        """Create the account with device 1, or (restore) keep it, bump device 1's epoch
        and replace its prekeys. Mail stays queued."""

    @abc.abstractmethod
    async def set_handle(self, address: str, handle: str | None, skeleton: str | None) -> None:
        """Raises :class:`HandleTaken` if another account holds the handle or skeleton."""

    @abc.abstractmethod
    async def set_token_hash(self, address: str, token_hash: bytes) -> None: ...

    @abc.abstractmethod
    async def put_prekeys(self, device_ref: int, keys: PreKeySet) -> tuple[int, int]:
        """Store keys (one-time lists appended, duplicates by id ignored); return the
        one-time counts ``(ec, kem)`` after the upload."""

    @abc.abstractmethod
    async def count_prekeys(self, device_ref: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    async def take_bundle(self, address: str, *, one_time: bool = True) -> list[BundleDevice]:
        """Hand out one prekey bundle per device, consuming one-time keys exactly once.
        ``one_time=False`` (the per-target drain limit, PROTOCOL Part III §4.3) hands out
        the signed and last-resort keys only and consumes nothing."""

    # --- linked devices (PROTOCOL Part VII §2) ---

    async def add_device(
        self,
        address: str,
        device_id: int,
        keys: PreKeySet,
        device_list: bytes,
        list_version: int,
        now_ms: int,
    ) -> DeviceRecord:
        """Create device ``device_id`` (epoch 1) with its prekeys and store the account's
        new signed device list, in one transaction."""
        raise NotImplementedError

    async def set_device_list(
        self, address: str, device_list: bytes, list_version: int, remove: tuple[int, ...]
    ) -> None:
        """Store a new signed device list and delete the devices in ``remove`` (their
        prekeys and queued mail too); their open sockets are cut via ``on_epoch_change``
        with epoch -1."""
        raise NotImplementedError

    async def get_device_list(self, address: str) -> tuple[int, bytes, int] | None:
        """``(version, list, highest device id ever used)``, or None before the first list."""
        raise NotImplementedError

    # --- mailbox ---

    @abc.abstractmethod
    async def enqueue(self, envelopes: list[NewEnvelope]) -> list[int | None]:
        """Durably store envelopes; return each one's queue seq, or ``None`` when
        ``(device, envelope_id)`` was already queued (idempotent retry)."""

    def early_delivery(self) -> EarlyDelivery | None:
        """The store's delivery-before-commit interface if a send accepted now may be
        delivered before its commit (PROTOCOL Part III §7), else None: the store then holds
        what was delivered for its ACK and writes it only if the ACK does not come in time.
        Only the single-node SQLite store does; never while a change of the directory or a
        commit-first send is unresolved."""
        return None

    def acked_unwritten(self) -> int:
        """Envelopes ACKed while held, so never written (a /metrics gauge)."""
        return 0

    @abc.abstractmethod
    async def fetch(
        self, device_ref: int, after_seq: int, limit: int, now_ms: int
    ) -> list[StoredEnvelope]:
        """Unexpired envelopes of one device with seq > ``after_seq``, in queue order."""

    @abc.abstractmethod
    async def ack(self, device_ref: int, envelope_ids: list[bytes]) -> int:
        """Delete these envelopes of this device (others' ids are simply not found)."""

    @abc.abstractmethod
    def ack_nowait(self, device_ref: int, envelope_ids: list[bytes]) -> None:
        """Queue a delete for the next group commit without waiting for it (hot path)."""

    @abc.abstractmethod
    async def sweep_expired(self, now_ms: int) -> int:
        """Delete expired envelopes; return how many."""

    async def account_created_ms(self, address: str) -> int | None:
        """When the account registered (the blob quota grows with account age, PROTOCOL
        Part VI §6); None: unknown to this store (the quota of a new account applies)."""
        return None

    def mailbox_usage(self, device_ref: int) -> tuple[int, int] | None:
        """(envelopes, bytes) queued for one device, from memory (hot path), for the
        mailbox quota (PROTOCOL Part III §6); None: this store does not track it (no quota)."""
        return None

    # --- used challenges (PROTOCOL Part III §3) ---

    def used_challenges(self) -> dict[bytes, int]:
        """Used challenges still unexpired when the store was opened (challenge →
        expires_ms), so a restart does not make them usable again. Default: none."""
        return {}

    def challenge_used_nowait(self, challenge: bytes, expires_ms: int) -> None:
        """Persist a used challenge in the next group commit, without waiting (the caller
        keeps the authoritative in-memory set). Default: not persisted."""
        return None
