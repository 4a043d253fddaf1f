"""Talking to backup realms (PROTOCOL.md Part X §5–§6): the I/O shell around
:mod:`xchat.crypto.recovery`.

Each request carries a fresh 16-byte nonce; each answer must be signed by the realm key
the client pinned (at enrolment, or from the relay's list / the realm itself on a fresh
device) over that nonce, so a tampered or replayed answer raises and is never used.
Guess-costing requests pay the realm's proof of work first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from xchat.client.api import Api
from xchat.crypto import pow as xpow
from xchat.crypto import recovery as rc
from xchat.crypto.recovery import b64d, b64e
from xchat.errors import (
    ApiError,
    BackupUnavailable,
    CryptoError,
    DecodeError,
    ProtocolError,
    ServerUnreachable,
    WrongPin,
    XChatError,
)

REALM_API = "/api/v1/realm"
REALM_TIMEOUT = 15.0


@dataclass(frozen=True)
class RealmInfo:
    """A realm as the client pins it: URL, name, Ed25519 public key."""

    url: str
    name: str
    public_key: bytes

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "name": self.name, "public_key": b64e(self.public_key)}

    @classmethod
    def from_json(cls, obj: object) -> RealmInfo:
        if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
            raise DecodeError("realm entry must have a url")
        name = obj.get("name")
        return cls(
            str(obj["url"]).rstrip("/"),
            name if isinstance(name, str) else "realm",
            b64d(obj.get("public_key"), "realm public_key", 32),
        )


class RealmClient:
    """One realm over HTTP; every answer is checked against ``info.public_key``."""

    def __init__(self, info: RealmInfo, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.info = info
        self.api = Api(info.url, timeout=REALM_TIMEOUT, transport=transport)

    async def aclose(self) -> None:
        await self.api.aclose()

    async def call(
        self, op: str, record: bytes, body: dict[str, Any], pow_resource: bytes | None = None
    ) -> dict[str, Any]:
        nonce = os.urandom(rc.NONCE_LEN)
        req = {**body, "record": record.hex(), "nonce": b64e(nonce)}
        if "owner_signature" in req and callable(req["owner_signature"]):
            req["owner_signature"] = b64e(req["owner_signature"](nonce))
        if pow_resource is not None:
            chal = await self.api.request("POST", f"{REALM_API}/challenge")
            if not isinstance(chal, dict):
                raise ProtocolError("realm sent a bad challenge")
            challenge = b64d(chal.get("challenge"), "challenge")
            bits = chal.get("pow_bits")
            if not isinstance(bits, int) or not 0 <= bits <= xpow.MAX_BITS:
                raise ProtocolError("realm asks for an impossible proof of work")
            req["challenge"] = b64e(challenge)
            req["pow_nonce"] = await asyncio.to_thread(xpow.solve, challenge, pow_resource, bits)
        answer = await self.api.request("POST", f"{REALM_API}/{op}", json=req)
        return rc.open_response(self.info.public_key, op, record, nonce, answer)


async def describe(url: str) -> RealmInfo:
    """Ask a realm for its name and key (trust on first use, for a realm the relay does not
    list)."""
    api = Api(url.rstrip("/"), timeout=REALM_TIMEOUT)
    try:
        body = await api.request("GET", REALM_API)
    finally:
        await api.aclose()
    if not isinstance(body, dict) or body.get("protocol") != rc.PROTOCOL_VERSION:
        raise ProtocolError(f"{url} is not an XChat realm (protocol 1)")
    return RealmInfo.from_json({**body, "url": url})


async def resolve_realms(urls: Sequence[str] | None, relay: Api) -> list[RealmInfo]:
    """Realms by URL (keys from the relay's list when it names them, else from the realm),
    or the relay's whole recommended list when ``urls`` is empty."""
    listed: dict[str, RealmInfo] = {}
    try:
        body = await relay.request("GET", "/api/v1/realms")
        for entry in body.get("realms", []) if isinstance(body, dict) else []:
            try:
                info = RealmInfo.from_json(entry)
            except DecodeError:
                continue
            listed[info.url] = info
    except ApiError as exc:
        if exc.status != 404:
            raise
    if not urls:
        if not listed:
            raise BackupUnavailable("the relay recommends no realms; name them with --realm URL")
        return list(listed.values())
    out = []
    for url in urls:
        u = url.rstrip("/")
        out.append(listed[u] if u in listed else await describe(u))
    return out


# --- enrolment and deletion --------------------------------------------------------------------


async def enrol(
    secret: bytes,
    pin: str,
    address: str,
    realms: Sequence[RealmInfo],
    threshold: int,
    guess_limit: int = rc.DEFAULT_GUESS_LIMIT,
    *,
    locator: bytes = b"",
) -> None:
    """Register one share at every realm (all must accept: a backup that starts short of
    realms would silently lower its own fault tolerance). ``locator``: the account's backup
    locator (Part X §9.6), mixed into every record id."""
    keys = [r.public_key for r in realms]
    regs = await asyncio.to_thread(
        rc.enrol, secret, pin, address, keys, threshold, guess_limit=guess_limit
    )

    # Every realm must answer before any record changes: a half-done re-enrolment would
    # leave realms with two different versions of the backup.
    current = await asyncio.gather(*(_info(r, address, locator) for r in realms))

    async def one(info: RealmInfo, reg: rc.Registration, now: dict[str, Any]) -> None:
        client = RealmClient(info)
        try:
            record = rc.record_id(info.public_key, address, locator)
            body: dict[str, Any] = {"registration": reg.to_json()}
            if now.get("status") == "registered":
                version = b64d(now.get("version"), "version", rc.VERSION_LEN)
                body["owner_signature"] = _owner_signer(secret, info, "register", record, version)
            answer = await client.call(
                "register", record, body, pow_resource=rc.register_pow_resource(record)
            )
            if answer.get("status") != "registered":
                raise BackupUnavailable(
                    f"realm {info.name} ({info.url}) refused the registration: "
                    f"{answer.get('status')}"
                )
        finally:
            await client.aclose()

    await asyncio.gather(*(one(r, g, c) for r, g, c in zip(realms, regs, current, strict=True)))


async def _info(info: RealmInfo, address: str, locator: bytes) -> dict[str, Any]:
    client = RealmClient(info)
    try:
        return await client.call("info", rc.record_id(info.public_key, address, locator), {})
    finally:
        await client.aclose()


def _owner_signer(secret: bytes, info: RealmInfo, op: str, record: bytes, version: bytes) -> Any:
    key = rc.owner_key(secret, info.public_key)
    return lambda nonce: key.sign(rc.owner_message(op, record, version, nonce))


async def delete(
    secret: bytes, address: str, realms: Sequence[RealmInfo], *, locator: bytes = b""
) -> tuple[int, list[RealmInfo]]:
    """Delete this account's record at every realm: (how many were deleted, the realms that
    could not be reached — their record stays until a later attempt)."""

    async def one(info: RealmInfo) -> bool | None:
        client = RealmClient(info)
        try:
            record = rc.record_id(info.public_key, address, locator)
            current = await client.call("info", record, {})
            if current.get("status") != "registered":
                return False
            version = b64d(current.get("version"), "version", rc.VERSION_LEN)
            signer = _owner_signer(secret, info, "delete", record, version)
            answer = await client.call("delete", record, {"owner_signature": signer})
            return answer.get("status") == "deleted"
        except (ServerUnreachable, ApiError):
            return None
        finally:
            await client.aclose()

    results = await asyncio.gather(*(one(r) for r in realms))
    return sum(1 for x in results if x), [
        r for r, x in zip(realms, results, strict=True) if x is None
    ]


# --- recovery ------------------------------------------------------------------------------------


async def recover(
    pin: str,
    address: str,
    realms: Sequence[RealmInfo],
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    locator: bytes = b"",
) -> tuple[bytes, int]:
    """Phases 1–3 of Part X §6 against every reachable realm; the account secret and the
    backup's threshold.

    WrongPin (with the guesses left) for a wrong PIN; BackupUnavailable when fewer than the
    threshold of realms hold the backup or answer; InvalidSignature / ProtocolError (the
    realm is then ignored) for a forged or replayed answer."""
    clients = {r.public_key: RealmClient(r, transport) for r in realms}
    records = {k: rc.record_id(k, address, locator) for k in clients}
    try:
        infos = await _each(clients, lambda k, c: c.call("info", records[k], {}))
        registered = {k: v for k, v in infos.items() if v.get("status") == "registered"}
        attempt = rc.Recovery(pin, address)
        indices = attempt.choose(registered)
        blinded = await asyncio.to_thread(attempt.blinded)
        body = {"blinded": b64e(blinded), "version": b64e(attempt.version)}
        answers = await _each(
            {k: clients[k] for k in indices},
            lambda k, c: c.call(
                "evaluate",
                records[k],
                body,
                pow_resource=rc.guess_pow_resource(records[k], blinded),
            ),
        )
        evaluations: dict[int, tuple[bytes, bytes, bytes]] = {}
        remaining: list[int] = []
        for k, a in answers.items():
            if a.get("status") == "ok":
                try:
                    evaluations[indices[k]] = (
                        b64d(a.get("evaluated"), "evaluated", 32),
                        b64d(a.get("proof"), "proof", 64),
                        b64d(a.get("unlock_commitment"), "unlock_commitment", 32),
                    )
                except DecodeError:
                    continue
                remaining.append(_remaining(a))
            elif a.get("status") == "no_guesses":
                remaining.append(0)
        if len(evaluations) < attempt.threshold and remaining and max(remaining) == 0:
            raise rc.wrong_pin(0)
        correct = attempt.check_evaluations(evaluations)
        tag_body = {"version": b64e(attempt.version)}
        released_answers = await _each(
            {k: clients[k] for k in answers if indices[k] in evaluations},
            lambda k, c: c.call(
                "recover", records[k], {**tag_body, "unlock_tag": b64e(attempt.tag(k))}
            ),
        )
        released: dict[int, tuple[bytes, bytes]] = {}
        left: list[int] = []
        for k, a in released_answers.items():
            if a.get("status") == "ok":
                released[indices[k]] = (
                    b64d(a.get("key_share"), "key_share", 32),
                    b64d(a.get("encrypted_secret"), "encrypted_secret"),
                )
            elif a.get("status") in ("wrong_pin", "no_guesses"):
                left.append(_remaining(a))
        if not correct:
            raise rc.wrong_pin(min(left or remaining or [0]))
        return attempt.open_secret(released), attempt.threshold
    finally:
        for c in clients.values():
            await c.aclose()


def _remaining(answer: dict[str, Any]) -> int:
    v = answer.get("guesses_remaining")
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


async def _each(clients: dict[bytes, RealmClient], op: Any) -> dict[bytes, dict[str, Any]]:
    """Run ``op(key, client)`` on every realm at once; realms that are down, refuse, or
    answer with a bad signature are left out (they count as unavailable)."""

    async def one(k: bytes, c: RealmClient) -> tuple[bytes, dict[str, Any] | None]:
        try:
            return k, await op(k, c)
        except WrongPin:
            raise
        except (ServerUnreachable, ApiError, CryptoError, ProtocolError, DecodeError):
            return k, None
        except XChatError:
            return k, None

    results = await asyncio.gather(*(one(k, c) for k, c in clients.items()))
    return {k: v for k, v in results if v is not None}
