"""The contacts layer of the client: resolve, pin identity keys, safety numbers
(PROTOCOL.md Part IV §8)."""

from __future__ import annotations

from xchat.client import events as ev
from xchat.client.account import AccountClient
from xchat.client.api import b64d
from xchat.client.model import HistoryItem, _history_item, now_ms
from xchat.client.store import ContactRecord
from xchat.crypto.keys import IdentityPublicKey, address_matches, is_address
from xchat.crypto.keys import normalize_address as _normalize_address
from xchat.errors import (
    ApiError,
    ClientError,
    DecodeError,
    InvalidAddress,
    ProtocolError,
    UnknownContact,
    UntrustedIdentity,
)

MAX_HANDLE_LEN = 32  # server handle rule (PROTOCOL Part III): longer "xc1..." is an address
_BECH32_CHARS = frozenset("qpzry9x8gf2tvdw0s3jn54khce6mua7l")


class ContactsClient(AccountClient):
    """Contacts: who an @handle or address is, and whether its key changed."""

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
