"""The backup locator of an account (PROTOCOL.md Part X §9.6): finding the account to
restore by handle or address (paid with a proof of work, a fresh device has no tokens),
and registering this account's locator at its relay.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

from xchat.client import archive
from xchat.client.api import Api
from xchat.client.backup_state import cfg_locator
from xchat.crypto import pow as xpow
from xchat.crypto.keys import is_address, normalize_address
from xchat.crypto.recovery import LOCATOR_LEN
from xchat.errors import ApiError, DecodeError, UnknownContact

LABEL_LOCATE: Final = b"XChat-v1-backup-locate|"  # PoW resource prefix of a handle lookup


async def resolve_target(server: str, target: str) -> tuple[str, bytes]:
    """``@handle`` or address → (address, backup locator) of the account to restore. A
    device without an account has no anonymous tokens (Part XI), so the lookup is paid with
    a proof of work at ``POST /api/v1/backup/locate`` (Part X §9.6)."""
    t = target.strip()
    if is_address(t):
        field, key = "address", normalize_address(t)
    else:
        field, key = "handle", t.lstrip("@").lower()
    api = Api(server)
    try:
        chal = await api.challenge()
        challenge = archive.unb64(chal.get("challenge"), "challenge")
        bits = chal.get("pow_bits")
        if not isinstance(bits, int):
            raise DecodeError("relay sent no pow_bits")
        resource = LABEL_LOCATE + key.encode()
        nonce = await asyncio.to_thread(xpow.solve, challenge, resource, bits)
        found = await api.request(
            "POST",
            "/api/v1/backup/locate",
            json={field: key, "challenge": archive.b64(challenge), "pow_nonce": nonce},
        )
    except ApiError as exc:
        if exc.status in (400, 404, 422):
            raise UnknownContact(f"no account {target} on {server}") from None
        raise
    finally:
        await api.aclose()
    address = found.get("address") if isinstance(found, dict) else None
    if not isinstance(address, str) or not is_address(address):
        raise UnknownContact(f"no account {target} on {server}")
    raw = found.get("locator")
    locator = archive.unb64(raw, "locator") if isinstance(raw, str) else b""
    if len(locator) not in (0, LOCATOR_LEN):
        raise DecodeError("relay sent a bad backup locator")
    return normalize_address(address), locator


async def ensure_locator(client: Any, cfg: dict[str, Any]) -> bytes:
    """This account's backup locator: the one in the settings, else the relay's (a device
    restored with the phrase), else a new random one registered at the relay."""
    if cfg.get("locator"):
        return cfg_locator(cfg)
    try:
        body = await client.api.request("GET", "/api/v1/backup/locator", auth=True)
        return archive.unb64(body.get("locator") if isinstance(body, dict) else None, "locator")
    except ApiError as exc:
        if exc.status != 404:
            raise
    locator = os.urandom(LOCATOR_LEN)
    await client.api.request(
        "PUT", "/api/v1/backup/locator", auth=True, json={"locator": archive.b64(locator)}
    )
    return locator
