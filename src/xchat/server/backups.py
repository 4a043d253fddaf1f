"""Relay side of backups (PROTOCOL.md Part X §5.5, §9): the recommended realms, and one
encrypted history-backup pointer per account.

* ``GET /api/v1/realms`` (no auth) → ``{"realms": [{"url", "name", "public_key"}]}``: the
  realms the operator configured (``xchat serve --realm URL``), with the name and key each
  realm publishes at ``GET /api/v1/realm`` (fetched on first use, cached 10 minutes; an
  unreachable realm is left out until it answers).
* ``PUT /api/v1/backup`` (auth) ``{"manifest": b64, "blobs": [id, ...]}`` → ``{"ok": true,
  "updated_ms", "expires_ms"}``: replaces the caller's backup record. The manifest is
  ciphertext only the account can open; the listed blobs must be the caller's complete
  blobs, and are kept alive (their expiry moves to ``updated_ms + BACKUP_RETENTION``) for
  as long as the record names them. Blobs the previous record named and this one does not
  are deleted.
* ``GET /api/v1/backup`` (auth) → ``{"manifest", "blobs", "updated_ms"}`` or 404.
* ``DELETE /api/v1/backup`` (auth) → ``{"deleted": n}`` (the record and its blobs).
* ``PUT/GET /api/v1/backup/locator`` (auth) ``{"locator": b64(16)}``: the random value
  mixed into the realms' record ids, so that no realm can tell which address a record
  belongs to without asking the relay.
* ``POST /api/v1/backup/locate`` (no auth) ``{"handle" | "address", "challenge",
  "pow_nonce"}`` → ``{"address", "locator"}``: the lookup a device with no account yet makes
  before restoring with the PIN, paid with a proof of work like a registration instead of an
  anonymous token (which only accounts can get, Part XI).

The relay learns what it learns from any upload: which account stored how many padded
bytes when. The records live in ``<data>/backups.sqlite3``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from typing import Annotated, Any, Final

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from xchat import encoding
from xchat.clock import now_ms
from xchat.crypto import pow as xpow
from xchat.crypto.keys import normalize_address
from xchat.errors import ApiError, DecodeError, XChatError
from xchat.server.blobs import _state as blob_state
from xchat.server.directory import BEARER, normalize_handle
from xchat.server.models import b64, errors
from xchat.storage.blobs import valid_blob_id

BACKUP_RETENTION_MS: Final = 400 * 86_400_000  # > a year: a lost phone is found late
MAX_MANIFEST: Final = 256 * 1024  # thousands of segments; the client compacts long before
MAX_BACKUP_BLOBS: Final = 1024
REALM_CACHE_MS: Final = 600_000
REALM_RETRY_MS: Final = 5_000  # an unreachable realm is asked again after this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    owner      TEXT PRIMARY KEY,   -- account address (the uploader, as for every blob)
    manifest   BLOB NOT NULL,      -- ciphertext (PROTOCOL Part X §9.3)
    blobs      TEXT NOT NULL,      -- JSON list of blob ids
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locators (
    owner      TEXT PRIMARY KEY,   -- account address
    locator    BLOB NOT NULL       -- 16 random bytes mixed into the realms' record ids
);
"""


LABEL_LOCATE: Final = b"XChat-v1-backup-locate|"


class Locate(BaseModel):
    handle: str | None = Field(default=None, max_length=64)
    address: str | None = Field(default=None, max_length=90)
    challenge: str
    pow_nonce: int = Field(ge=0, lt=2**64)


class LocatorPut(BaseModel):
    locator: str = Field(description="base64 of 16 random bytes")


class BackupPut(BaseModel):
    manifest: str = Field(description="base64 of the encrypted manifest")
    blobs: list[str] = Field(max_length=MAX_BACKUP_BLOBS)


class _Backups:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.lock = asyncio.Lock()

    def get(self, owner: str) -> tuple[bytes, list[str], int] | None:
        row = self.db.execute(
            "SELECT manifest, blobs, updated_ms FROM backups WHERE owner = ?", (owner,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), list(json.loads(row[1])), int(row[2]))


def _backups(request: Request) -> _Backups:
    st: _Backups | None = getattr(request.app.state, "backups", None)
    if st is None:
        relay = request.app.state.relay
        st = _Backups(os.path.join(relay.config.data, "backups.sqlite3"))
        request.app.state.backups = st
    return st


BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def _owner(request: Request, _doc: BearerDoc = None) -> str:
    relay: Any = request.app.state.relay
    device, _ = relay.tokens.from_header(
        request.headers.get("authorization"), relay.store, now_ms()
    )
    return str(device.address)


Owner = Annotated[str, Depends(_owner)]
router = APIRouter(tags=["backup"])


@router.get("/api/v1/realms", responses=errors())
async def list_realms(request: Request) -> dict[str, Any]:
    """The operator's recommended backup realms, with the keys they publish."""
    relay = request.app.state.relay
    urls = [u.strip().rstrip("/") for u in relay.config.realms.split(",") if u.strip()]
    cache: dict[str, tuple[int, dict[str, Any] | None]] = getattr(
        request.app.state, "realm_cache", {}
    )
    request.app.state.realm_cache = cache
    now = now_ms()
    stale = [u for u in urls if u not in cache or now - cache[u][0] > REALM_CACHE_MS]
    if stale:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            found = await asyncio.gather(*(_describe(http, u) for u in stale))
        for u, info in zip(stale, found, strict=True):
            if info is not None:
                cache[u] = (now, info)
            elif u not in cache or cache[u][1] is None:
                cache[u] = (now - REALM_CACHE_MS + REALM_RETRY_MS, None)  # ask again soon
    out = []
    for u in urls:
        info = cache.get(u, (0, None))[1]
        if info is not None:
            out.append({**info, "url": u})
    return {"realms": out}


async def _describe(http: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        body = (await http.get(url + "/api/v1/realm")).json()
        encoding.b64decode(body["public_key"], "public_key", 32)
        name = body["name"]
        if not isinstance(name, str):
            return None
        return {"name": name[:64], "public_key": body["public_key"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError, DecodeError):
        return None


@router.put("/api/v1/backup", responses=errors(400, 401, 404, 409))
async def put_backup(body: BackupPut, owner: Owner, request: Request) -> dict[str, Any]:
    """Replace the caller's backup record and keep its blobs alive (§9.4)."""
    manifest = b64(body.manifest, "manifest")
    if not 0 < len(manifest) <= MAX_MANIFEST:
        raise ApiError(400, f"manifest must be 1..{MAX_MANIFEST} bytes")
    ids = list(dict.fromkeys(body.blobs))
    if not all(valid_blob_id(b) for b in ids):
        raise ApiError(400, "invalid blob id")
    blobs = blob_state(request).store
    backups = _backups(request)
    now = now_ms()
    async with backups.lock:
        for blob_id in ids:
            info = await blobs.info(blob_id, now)  # 404 if unknown or expired
            if info.owner != owner:
                raise ApiError(404, "no such blob")
            if not info.complete:
                raise ApiError(409, "blob upload is not complete")
        expires = [await blobs.set_expiry(b, owner, now + BACKUP_RETENTION_MS, now) for b in ids]
        previous = backups.get(owner)
        backups.db.execute(
            "INSERT OR REPLACE INTO backups (owner, manifest, blobs, updated_ms) "
            "VALUES (?, ?, ?, ?)",
            (owner, manifest, json.dumps(ids), now),
        )
        if previous is not None:
            for old in set(previous[1]) - set(ids):
                await blobs.delete(old)
    known = [e for e in expires if e is not None]
    return {"ok": True, "updated_ms": now, "expires_ms": min(known) if known else None}


@router.get("/api/v1/backup", responses=errors(401, 404))
async def get_backup(owner: Owner, request: Request) -> dict[str, Any]:
    """The caller's backup record (ciphertext)."""
    rec = _backups(request).get(owner)
    if rec is None:
        raise ApiError(404, "no backup for this account")
    return {
        "manifest": encoding.b64encode(rec[0]),
        "blobs": rec[1],
        "updated_ms": rec[2],
    }


@router.delete("/api/v1/backup", responses=errors(401))
async def delete_backup(owner: Owner, request: Request) -> dict[str, int]:
    """Delete the caller's backup record and every blob it names."""
    backups = _backups(request)
    blobs = blob_state(request).store
    async with backups.lock:
        rec = backups.get(owner)
        if rec is None:
            return {"deleted": 0}
        n = 0
        for blob_id in rec[1]:
            n += int(await blobs.delete(blob_id))
        backups.db.execute("DELETE FROM backups WHERE owner = ?", (owner,))
    return {"deleted": n}


@router.post("/api/v1/backup/locate", responses=errors(400, 401, 404))
async def locate(body: Locate, request: Request) -> dict[str, str | None]:
    """``@handle`` or address → address and backup locator, for a restoring device that
    has no account (hence no anonymous tokens) yet: one proof of work per lookup (§9.6)."""
    relay = request.app.state.relay
    if (body.handle is None) == (body.address is None):
        raise ApiError(400, "give exactly one of handle and address")
    if body.handle is not None:
        key = normalize_handle(body.handle)
    else:
        try:
            key = normalize_address(body.address or "")
        except XChatError:
            raise ApiError(400, "invalid address") from None
    challenge = b64(body.challenge, "challenge")
    if not xpow.stamp_ok(
        challenge, LABEL_LOCATE + key.encode(), body.pow_nonce, relay.config.pow_bits
    ):
        raise ApiError(401, f"proof of work does not meet {relay.config.pow_bits} bits")
    relay.challenges.consume(challenge, now_ms())
    if body.handle is not None:
        acct = relay.store.get_account_by_handle(key)
    else:
        acct = relay.store.get_account(key)
    if acct is None:
        raise ApiError(404, "unknown account")
    row = (
        _backups(request)
        .db.execute("SELECT locator FROM locators WHERE owner = ?", (str(acct.address),))
        .fetchone()
    )
    return {
        "address": str(acct.address),
        "locator": encoding.b64encode(bytes(row[0])) if row else None,
    }


@router.put("/api/v1/backup/locator", responses=errors(400, 401))
async def put_locator(body: LocatorPut, owner: Owner, request: Request) -> dict[str, bool]:
    """Set the caller's backup locator (the client draws it once, at its first enrolment)."""
    locator = b64(body.locator, "locator", 16)
    _backups(request).db.execute(
        "INSERT OR REPLACE INTO locators (owner, locator) VALUES (?, ?)", (owner, locator)
    )
    return {"ok": True}


@router.get("/api/v1/backup/locator", responses=errors(401, 404))
async def get_locator(owner: Owner, request: Request) -> dict[str, str]:
    """The caller's backup locator (a device restored with the phrase re-enrols under it)."""
    row = (
        _backups(request)
        .db.execute("SELECT locator FROM locators WHERE owner = ?", (owner,))
        .fetchone()
    )
    if row is None:
        raise ApiError(404, "no backup locator for this account")
    return {"locator": encoding.b64encode(bytes(row[0]))}
