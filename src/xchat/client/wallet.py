"""The client's stock of anonymous access tokens (PROTOCOL.md Part XI §5).

Directory lookups and bundle fetches spend one token each, sent without the bearer token
on a connection of their own, so the relay cannot tell which account looks up whom. Tokens
are obtained in batches with the account's bearer token *ahead of need* (``top_up`` at
account creation and whenever the client starts), never right after a spend: an issuance
that follows a redemption within a moment would link the two by timing. Only when the
stock is empty is a batch fetched on demand (documented residual linkage).

Table ``anon_tokens`` in the profile store (created on open, no schema bump). A token is
a bearer credential for one lookup and says nothing about its owner, so it is stored in
the clear like the other routing columns; it is deleted *before* it is sent (a crash
between the two wastes a token, never spends one twice).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from xchat import clock
from xchat.client.api import b64d, b64e
from xchat.client.store import Store
from xchat.crypto import oprf
from xchat.crypto import tokens as tk
from xchat.errors import ApiError, InvalidToken, ProtocolError, XChatError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS anon_tokens (
    token        BLOB PRIMARY KEY,  -- the 134-byte token (PROTOCOL Part XI §3)
    epoch        INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL   -- the relay stops accepting it then
);
"""
BATCH = 32  # tokens per issuance request
LOW_WATER = 8  # top_up() fetches a batch below this stock

IssueCall = Callable[[int, list[bytes]], Awaitable[dict[str, Any]]]
KeysCall = Callable[[], Awaitable[dict[str, Any]]]


class Wallet:
    """Unspent tokens of one profile; ``take()`` hands out one header value."""

    def __init__(self, store: Store, keys: KeysCall, issue: IssueCall) -> None:
        self._db: sqlite3.Connection = store._db  # the profile's one connection
        for statement in _SCHEMA.split(";"):  # not executescript: it would COMMIT an open
            if statement.strip():  # transaction (this may be created inside one)
                self._db.execute(statement)
        self._keys = keys
        self._issue = issue
        self._lock = asyncio.Lock()

    def count(self, now_ms: int | None = None) -> int:
        now = clock.now_ms() if now_ms is None else now_ms
        row = self._db.execute(
            "SELECT COUNT(*) FROM anon_tokens WHERE not_after_ms > ?", (now,)
        ).fetchone()
        return int(row[0])

    def _pop(self, now: int) -> tk.Token | None:
        self._db.execute("DELETE FROM anon_tokens WHERE not_after_ms <= ?", (now,))
        # Oldest epoch first (it expires first); random within it (no order to correlate).
        row = self._db.execute(
            "SELECT token FROM anon_tokens ORDER BY epoch, RANDOM() LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM anon_tokens WHERE token = ?", (row[0],))
        return tk.Token.from_bytes(bytes(row[0]))

    async def take(self) -> str:
        """The ``Authorization`` value for one anonymous request."""
        token = self._pop(clock.now_ms())
        if token is None:
            await self.refill()
            token = self._pop(clock.now_ms())
            if token is None:  # pragma: no cover - refill stores at least one or raises
                raise ProtocolError("relay issued no access tokens")
        return f'PrivateToken token="{tk.encode_token(token)}"'

    async def top_up(self) -> int:
        """Fetch a batch if the stock is low (call at start, not after a spend). Errors
        other than a refused allowance propagate; returns how many were added."""
        if self.count() >= LOW_WATER:
            return 0
        try:
            return await self.refill()
        except ApiError as exc:
            if exc.status == 429:  # the day's allowance is used: keep what we have
                return 0
            raise

    async def refill(self, count: int = BATCH) -> int:
        """One issuance round trip: blind, ask, verify the DLEQ proof, store."""
        async with self._lock:
            info = await self._keys()
            keys = info.get("keys")
            if not isinstance(keys, list) or not keys or not isinstance(keys[0], dict):
                raise ProtocolError("relay sent no token keys")
            current = keys[0]
            epoch, pk, not_after = _key_fields(current)
            count = max(1, min(count, int(info.get("max_batch", tk.MAX_BATCH) or 1), tk.MAX_BATCH))
            pending = tk.begin_batch(epoch, pk, count)
            resp = await self._issue(epoch, list(pending.blinded))
            evaluated = _b64_list(resp.get("evaluated"), "evaluated")
            proof = b64d(resp.get("proof"), "proof")
            try:
                tokens = tk.finish_batch(pending, evaluated, proof)
            except InvalidToken as exc:
                raise ProtocolError(f"relay's token response is malformed: {exc}") from None
            # InvalidProof (the relay did not use the published key) propagates: a
            # relay that tags one account's tokens must not be used silently.
            with self._store_tx():
                self._db.executemany(
                    "INSERT OR IGNORE INTO anon_tokens (token, epoch, not_after_ms) "
                    "VALUES (?, ?, ?)",
                    [(t.to_bytes(), epoch, not_after) for t in tokens],
                )
            return len(tokens)

    def _store_tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._own = not db.in_transaction

    def __enter__(self) -> None:
        if self._own:
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._own:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _b64_list(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise ProtocolError(f"relay sent no {what} list")
    return [b64d(v, what) for v in value]


def _key_fields(entry: dict[str, Any]) -> tuple[int, bytes, int]:
    epoch, not_after = entry.get("epoch"), entry.get("not_after_ms")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(not_after, int):
        raise ProtocolError("relay sent a malformed token key")
    pk = b64d(entry.get("public_key"), "public_key")
    try:
        oprf.deserialize_element(pk)
    except XChatError:
        raise ProtocolError("relay's token key is not a ristretto255 element") from None
    return epoch, pk, not_after


async def probe_account(api: Any, identity: Any) -> dict[str, Any]:
    """Restore (PROTOCOL Part IV §1.2): prove the phrase's identity to the relay
    (``POST /auth``; 404 = no such account), then look the account up with a token issued
    on the spot — for our own address, so there is nothing to hide from the relay."""
    chal = await api.challenge()
    challenge = b64d(chal.get("challenge"), "challenge")
    resp = await api.auth(
        {
            "address": identity.public.address(),
            "device_id": 1,
            "challenge": b64e(challenge),
            "signature": b64e(identity.sign(b"XChat-v1-auth" + challenge)),
        }
    )
    token = resp.get("token")
    if not isinstance(token, str):
        raise ProtocolError("server sent no token")
    api.token = token

    async def one_token() -> str:
        info = await api.token_keys()
        keys = info.get("keys")
        if not isinstance(keys, list) or not keys or not isinstance(keys[0], dict):
            raise ProtocolError("relay sent no token keys")
        epoch, pk, _ = _key_fields(keys[0])
        pending = tk.begin_batch(epoch, pk, 1)
        r = await api.issue_tokens(epoch, list(pending.blinded))
        (t,) = tk.finish_batch(
            pending, _b64_list(r.get("evaluated"), "evaluated"), b64d(r.get("proof"), "proof")
        )
        return f'PrivateToken token="{tk.encode_token(t)}"'

    api.anon = one_token
    result: dict[str, Any] = await api.lookup_address(identity.public.address())
    return result
