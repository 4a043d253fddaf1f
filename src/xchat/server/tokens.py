"""Anonymous access tokens on the relay (PROTOCOL.md Part XI): issuance to authenticated
accounts, redemption without identity.

- ``GET /api/v1/tokens/keys`` (no auth): the epoch keys clients verify issuance against.
- ``POST /api/v1/tokens`` (bearer): evaluate a batch of blinded token inputs with the
  current epoch key and one DLEQ proof. Limited per account per UTC day; the only state
  kept is that per-day count (account → number), never a blinded element, an evaluated
  element or anything derived from them, so nothing links an issuance to a redemption.
- :func:`redeem` (a FastAPI dependency of ``GET /bundles/{address}``, ``GET
  /handles/{handle}``, ``GET /accounts/{address}``): ``Authorization: PrivateToken
  token="<b64url>"``, verified with the epoch key; its spent key goes into the relay's
  single-use set (the ``used_challenges`` table, shared with challenges: persisted through
  the group commit, reloaded at start, propagated between nodes), so a second spend is
  refused on any node and after a restart.

The epoch keys derive from one seed file, ``server_token.key`` (32 bytes, 0600), so key
rotation is automatic and needs no table.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from xchat.clock import now_ms
from xchat.crypto import tokens as tk
from xchat.errors import ApiError, XChatError
from xchat.server import models as m
from xchat.server.auth import _load_or_create
from xchat.server.relay import Relay
from xchat.storage.base import DeviceRecord

router = APIRouter(prefix="/api/v1")

_SCHEME = re.compile(r'^PrivateToken\s+token="?([A-Za-z0-9_\-]+={0,2})"?\s*$')
DAY_MS = 86_400_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TokenKeyOut(_Model):
    epoch: int
    public_key: str
    key_id: str
    not_after_ms: int


class TokenKeysOut(_Model):
    token_type: int
    epoch_seconds: int
    max_batch: int
    daily_limit: int
    keys: list[TokenKeyOut]


class TokenRequestIn(_Model):
    epoch: StrictInt
    blinded: Annotated[list[str], Field(min_length=1, max_length=tk.MAX_BATCH)]


class TokenResponseOut(_Model):
    epoch: int
    evaluated: list[str]
    proof: str


class Issuer:
    """Epoch keys, the per-account daily issuance count, and redemption checks."""

    def __init__(self, relay: Relay) -> None:
        cfg = relay.config
        self.relay = relay
        self.seed = _load_or_create(cfg.data / "server_token.key", 32)
        self.epoch_seconds = max(60, int(cfg.anon_token_epoch_seconds))
        self.daily_limit = int(cfg.anon_token_daily_limit)
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._issued: dict[tuple[str, int], int] = {}  # (address, utc day) -> tokens issued

    def key(self, epoch: int) -> tuple[bytes, bytes]:
        pair = self._keys.get(epoch)
        if pair is None:
            if len(self._keys) > 8:
                self._keys.clear()
            pair = self._keys[epoch] = tk.epoch_key(self.seed, epoch)
        return pair

    def current_epoch(self, now: int) -> int:
        return tk.epoch_of(now, self.epoch_seconds)

    def charge(self, address: str, count: int, now: int) -> None:
        """Spend ``count`` of the account's daily allowance or answer 429."""
        day = now // DAY_MS
        used = self._issued.get((address, day), 0)
        if used + count > self.daily_limit:
            retry = ((day + 1) * DAY_MS - now) / 1000
            raise ApiError(429, f"token allowance of {self.daily_limit} per day used", retry)
        if len(self._issued) > 100_000:
            self._issued = {k: v for k, v in self._issued.items() if k[1] >= day}
        self._issued[(address, day)] = used + count

    def redeem(self, header: str | None, now: int) -> None:
        """Verify and spend one token; ApiError 401 with a reason otherwise."""
        match = _SCHEME.match(header or "")
        if match is None:
            raise ApiError(
                401,
                'anonymous access token required: Authorization: PrivateToken token="<b64url>" '
                "(POST /api/v1/tokens; PROTOCOL Part XI)",
            )
        try:
            token = tk.decode_token(match.group(1))
        except XChatError:
            raise ApiError(401, "invalid access token") from None
        current = self.current_epoch(now)
        if not current - tk.VALID_EPOCHS < token.epoch <= current:
            raise ApiError(401, "access token expired (or from a future epoch)")
        sk, pk = self.key(token.epoch)
        try:
            tk.verify(sk, pk, token)
        except XChatError:
            raise ApiError(401, "invalid access token") from None
        expires = tk.epoch_expires_ms(token.epoch, self.epoch_seconds)
        if not self.relay.challenges.spend_once(tk.spent_key(token), expires, now):
            raise ApiError(401, "access token already spent")


def issuer_of(request: Request) -> Issuer:
    issuer: Issuer = request.app.state.anon_tokens
    return issuer


#: /openapi.json: the anonymous scheme of redeeming routes, and the bearer scheme of issuance
#: (same name and text as ``directory.BEARER``, so the document declares it once).
PRIVATE_TOKEN = APIKeyHeader(
    name="Authorization",
    scheme_name="privateToken",
    auto_error=False,
    description='Anonymous single-use token: PrivateToken token="<b64url>" (PROTOCOL Part XI)',
)
_PRIVATE_TOKEN_DOC = Depends(PRIVATE_TOKEN)
_BEARER_DOC = Depends(
    HTTPBearer(auto_error=False, scheme_name="bearer", description="Token from /auth")
)


def redeem(request: Request, _doc: str | None = _PRIVATE_TOKEN_DOC) -> None:
    """Dependency: one anonymous token per request (PROTOCOL Part XI §4)."""
    issuer_of(request).redeem(request.headers.get("authorization"), now_ms())


REDEEM = Depends(redeem)


def _device(
    request: Request, _doc: HTTPAuthorizationCredentials | None = _BEARER_DOC
) -> DeviceRecord:
    """Bearer auth for issuance (as ``directory.current_device``; kept here so that
    ``directory`` can import this module and not the other way round)."""
    relay: Relay = request.app.state.relay
    device, _ = relay.tokens.from_header(
        request.headers.get("authorization"), relay.store, now_ms()
    )
    wait = relay.device_limiter.take(device.ref)
    if wait:
        raise ApiError(429, "rate limited", retry_after=wait)
    return device


BEARER_DEVICE = Depends(_device)


@router.get("/tokens/keys", response_model=TokenKeysOut, responses=m.errors())
async def token_keys(request: Request) -> TokenKeysOut:
    issuer = issuer_of(request)
    now = now_ms()
    current = issuer.current_epoch(now)
    keys = []
    for epoch in (current, current - 1):
        if epoch < 0:
            continue
        _, pk = issuer.key(epoch)
        keys.append(
            TokenKeyOut(
                epoch=epoch,
                public_key=m.enc(pk),
                key_id=m.enc(tk.key_id(pk)),
                not_after_ms=tk.epoch_expires_ms(epoch, issuer.epoch_seconds),
            )
        )
    return TokenKeysOut(
        token_type=tk.TOKEN_TYPE,
        epoch_seconds=issuer.epoch_seconds,
        max_batch=tk.MAX_BATCH,
        daily_limit=issuer.daily_limit,
        keys=keys,
    )


@router.post("/tokens", response_model=TokenResponseOut, responses=m.errors(400, 401, 409, 413))
async def issue_tokens(
    body: TokenRequestIn, request: Request, device: DeviceRecord = BEARER_DEVICE
) -> TokenResponseOut:
    issuer = issuer_of(request)
    now = now_ms()
    current = issuer.current_epoch(now)
    if body.epoch != current:
        raise ApiError(409, f"tokens are issued for the current epoch only ({current})")
    blinded = [m.b64(b, "blinded", 32) for b in body.blinded]
    sk, pk = issuer.key(current)
    try:
        evaluated, proof = tk.issue(sk, pk, blinded)
    except XChatError:
        raise ApiError(400, "blinded: not a valid ristretto255 element") from None
    issuer.charge(device.address, len(blinded), now)
    issuer.relay.metrics.inc("anon_tokens_issued_total", len(blinded))
    return TokenResponseOut(
        epoch=current, evaluated=[m.enc(e) for e in evaluated], proof=m.enc(proof)
    )


__all__ = ["REDEEM", "Issuer", "issuer_of", "redeem", "router"]
