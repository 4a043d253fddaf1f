"""Short-lived TURN credentials for calls (PROTOCOL.md Part IX §6).

The TURN REST API scheme that coturn implements with ``use-auth-secret``: the relay and
the TURN server share one secret; the relay hands an authenticated device

    username   = "<expiry unix seconds>:<16 random bytes, unpadded base64url>"
    credential = base64(HMAC-SHA1(secret, username))

and the TURN server recomputes the HMAC and refuses the username after its expiry. The
random part (instead of the account, as the draft suggests) keeps the TURN server's logs
free of who called: a credential names nobody, and the relay keeps no record of issuing it.

``xchat serve --turn-url turn:HOST:PORT --turn-secret-file F`` enables it; without it
``GET /api/v1/turn`` is 404 and calls use host candidates only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel

from xchat import encoding
from xchat.clock import now_ms
from xchat.errors import ApiError
from xchat.server import models as m
from xchat.server.directory import CURRENT_DEVICE
from xchat.storage.base import DeviceRecord

router = APIRouter(prefix="/api/v1")

MIN_SECRET_BYTES = 16  # coturn accepts any string; a short one is guessable offline


@dataclass(frozen=True)
class TurnIssuer:
    urls: tuple[str, ...]
    secret: bytes
    ttl_seconds: int

    def issue(self, now_s: float) -> tuple[str, str, int]:
        """(username, credential, expires unix seconds) valid for ``ttl_seconds``."""
        expires = int(now_s) + self.ttl_seconds
        username = f"{expires}:{encoding.b64url_encode(secrets.token_bytes(16))}"
        mac = hmac.new(self.secret, username.encode(), hashlib.sha1).digest()
        # Standard padded base64: what coturn compares against (the TURN REST API draft).
        return username, encoding.b64encode(mac), expires


def load_issuer(turn_url: str, secret_file: str, ttl_seconds: int) -> TurnIssuer | None:
    """The issuer for ``xchat serve`` flags; None when TURN is not configured. A missing
    or too short secret file stops the server at start-up (SystemExit), not at a call."""
    if not turn_url and not secret_file:
        return None
    if not turn_url or not secret_file:
        raise SystemExit("--turn-url and --turn-secret-file go together")
    urls = tuple(u.strip() for u in turn_url.split(",") if u.strip())
    if not all(u.startswith(("turn:", "turns:", "stun:")) for u in urls):
        raise SystemExit(f"--turn-url must be turn:HOST:PORT (got {turn_url!r})")
    try:
        secret = Path(secret_file).read_bytes().strip()
    except OSError as exc:
        raise SystemExit(f"cannot read --turn-secret-file {secret_file}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SystemExit(f"--turn-secret-file must hold at least {MIN_SECRET_BYTES} bytes")
    if not 60 <= ttl_seconds <= 86400:
        raise SystemExit("XCHAT_TURN_TTL_SECONDS must be between 60 and 86400")
    return TurnIssuer(urls, secret, ttl_seconds)


class TurnOut(BaseModel):
    urls: list[str]
    username: str
    credential: str
    ttl: int
    expires: int


@router.get("/turn", response_model=TurnOut, responses=m.errors(401, 404))
async def turn_credentials(request: Request, device: DeviceRecord = CURRENT_DEVICE) -> TurnOut:
    """Fresh TURN credentials for the authenticated device (PROTOCOL Part IX §6)."""
    issuer: TurnIssuer | None = getattr(request.app.state, "turn", None)
    if issuer is None:
        raise ApiError(404, "this relay has no TURN server configured")
    username, credential, expires = issuer.issue(now_ms() / 1000)
    return TurnOut(
        urls=list(issuer.urls),
        username=username,
        credential=credential,
        ttl=issuer.ttl_seconds,
        expires=expires,
    )
