"""Accounts, auth, handles, the prekey directory, delivery tokens and sender certificates
(PROTOCOL Part III §4.1–4.3).

The only crypto here: Ed25519 verification of registration/auth signatures and of every
uploaded prekey signature, proof-of-work checks, and signing sender certificates.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from xchat import PROTOCOL_VERSION
from xchat.clock import now_ms
from xchat.crypto import handle_cert
from xchat.crypto.certificate import issue_sender_certificate
from xchat.crypto.keys import IdentityPublicKey, is_address, normalize_address
from xchat.crypto.pow import stamp_ok
from xchat.crypto.prekeys import mlkem_public_from_bytes
from xchat.errors import ApiError, XChatError
from xchat.protocol.frames import KeysLow, encode_frame
from xchat.server import models as m
from xchat.server.auth import LABEL_AUTH, LABEL_REGISTER
from xchat.server.limits import RateLimiter
from xchat.server.paths import Address, Handle
from xchat.server.relay import Relay
from xchat.server.tokens import REDEEM
from xchat.storage.base import AccountRecord, DeviceRecord, HandleTaken, PreKeySet, SignedKey

router = APIRouter(prefix="/api/v1")

LABEL_PREKEY = b"XChat-v1-prekey"
X25519_PREFIX, X25519_LEN = 0x05, 33
MLKEM_PREFIX, MLKEM_LEN = 0x08, 1569
HANDLE_RE = re.compile(r"^[a-z][a-z0-9_]{2,31}$")
# Confusable folding (PROTOCOL Part III §4.2): two handles with the same skeleton cannot coexist.
_SKELETON_PAIRS = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"))


def relay_of(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


#: Declares the bearer scheme in /openapi.json (security of every authenticated route); the
#: token itself is checked by :func:`current_device` (401 JSON, never FastAPI's 403).
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="Token from /auth")
BEARER_DOC = Depends(BEARER)


def current_device(
    request: Request, _doc: HTTPAuthorizationCredentials | None = BEARER_DOC
) -> DeviceRecord:
    """Bearer-token auth + the per-device rate limit (429 with Retry-After)."""
    relay = relay_of(request)
    device, _ = relay.tokens.from_header(
        request.headers.get("authorization"), relay.store, now_ms()
    )
    wait = relay.device_limiter.take(device.ref)
    if wait:
        raise ApiError(429, "rate limited", retry_after=wait)
    return device


CURRENT_DEVICE = Depends(current_device)


def normalize_handle(handle: str) -> str:
    h = handle.strip().lstrip("@").lower()
    if not HANDLE_RE.match(h):
        raise ApiError(400, "handle must be 3-32 chars of a-z, 0-9, _ and start with a letter")
    return h


def handle_skeleton(handle: str) -> str:
    """Fold look-alike characters so ``paypa1`` and ``paypal`` collide (PROTOCOL Part III §4.2)."""
    s = handle.replace("_", "")
    for a, b in _SKELETON_PAIRS:
        s = s.replace(a, b)
    return s


def _identity(raw: bytes) -> IdentityPublicKey:
    try:
        return IdentityPublicKey.decode(raw)
    except XChatError:
        raise ApiError(400, "identity_key: not a valid identity key") from None


def _verify(identity: IdentityPublicKey, signature: bytes, message: bytes, what: str) -> None:
    try:
        identity.verify(signature, message)
    except XChatError:
        raise ApiError(401, f"{what}: bad signature") from None


def _signed(
    k: m.SignedKeyModel, identity: IdentityPublicKey, prefix: int, n: int, what: str
) -> SignedKey:
    key = m.b64(k.key, f"{what}.key", n)
    if key[0] != prefix:
        raise ApiError(400, f"{what}.key: wrong key type byte")
    if prefix == MLKEM_PREFIX:  # FIPS 203 §7.2 modulus check, as every sender will do
        try:
            mlkem_public_from_bytes(key[1:])
        except XChatError:
            raise ApiError(400, f"{what}.key: not a valid ML-KEM-1024 public key") from None
    sig = m.b64(k.signature, f"{what}.signature", 64)
    try:
        identity.verify(sig, LABEL_PREKEY + key)
    except XChatError:
        raise ApiError(400, f"{what}: prekey signature does not verify") from None
    return SignedKey(k.id, key, sig)


def parse_keys(upload: m.PreKeyUpload, identity: IdentityPublicKey) -> PreKeySet:
    """Decode and verify every key of a PreKeyUpload (400 on any bad key or signature)."""
    spk = lr = None
    if upload.signed_prekey is not None:
        spk = _signed(upload.signed_prekey, identity, X25519_PREFIX, X25519_LEN, "signed_prekey")
    if upload.kem_last_resort is not None:
        lr = _signed(upload.kem_last_resort, identity, MLKEM_PREFIX, MLKEM_LEN, "kem_last_resort")
    ec = []
    for k in upload.one_time_ec:
        key = m.b64(k.key, "one_time_ec.key", X25519_LEN)
        if key[0] != X25519_PREFIX:
            raise ApiError(400, "one_time_ec.key: wrong key type byte")
        ec.append(SignedKey(k.id, key))
    kem = [
        _signed(k, identity, MLKEM_PREFIX, MLKEM_LEN, "one_time_kem") for k in upload.one_time_kem
    ]
    return PreKeySet(spk, lr, tuple(ec), tuple(kem))


def check_one_time_stock(limit: int, keys: PreKeySet, held: tuple[int, int] = (0, 0)) -> None:
    """``max_one_time_keys`` bounds the unused one-time keys a device holds on the relay,
    EC and KEM each (PROTOCOL Part III ``PUT /keys``): an upload that would take either
    stock past it is refused whole (413), before anything is stored."""
    for kind, have, new in (
        ("one_time_ec", held[0], len(keys.one_time_ec)),
        ("one_time_kem", held[1], len(keys.one_time_kem)),
    ):
        if new and have + new > limit:
            raise ApiError(
                413,
                f"{kind}: too many one-time keys: this device would hold {have + new} "
                f"(it holds {have}, the relay keeps at most {limit})",
            )


def _account_out(acct: AccountRecord) -> m.AccountOut:
    return m.AccountOut(
        address=acct.address,
        identity_key=m.enc(acct.identity_key),
        handle=acct.handle,
        devices=[d.device_id for d in acct.devices],
    )


@router.get("/server", response_model=m.ServerInfo, responses=m.errors())
async def server_info(request: Request) -> m.ServerInfo:
    relay = relay_of(request)
    return m.ServerInfo(
        protocol=PROTOCOL_VERSION,
        signing_key=m.enc(relay.secrets.signing_public),
        pow_bits=relay.config.pow_bits,
        limits=relay.config.limits(),
        key_rotation=m.enc(relay.secrets.rotation) if relay.secrets.rotation else None,
    )


@router.post("/challenge", response_model=m.ChallengeOut, responses=m.errors())
async def challenge(request: Request) -> m.ChallengeOut:
    relay = relay_of(request)
    ch, expires = relay.challenges.issue(now_ms())
    return m.ChallengeOut(challenge=m.enc(ch), expires_ms=expires, pow_bits=relay.config.pow_bits)


@router.post("/accounts", response_model=m.RegisterOut, responses=m.errors(400, 401, 409, 413))
async def register(body: m.RegisterIn, request: Request) -> m.RegisterOut:
    relay = relay_of(request)
    ik = m.b64(body.identity_key, "identity_key", 65)
    identity = _identity(ik)
    ch = m.b64(body.challenge, "challenge")
    sig = m.b64(body.signature, "signature", 64)
    handle = normalize_handle(body.handle) if body.handle else None
    keys = parse_keys(body.keys, identity)
    if keys.signed_prekey is None or keys.kem_last_resort is None:
        raise ApiError(400, "keys: signed_prekey and kem_last_resort are required")
    check_one_time_stock(relay.config.max_one_time_keys, keys)
    _verify(identity, sig, LABEL_REGISTER + ch, "signature")
    if not stamp_ok(ch, ik, body.pow_nonce, relay.config.pow_bits):
        raise ApiError(401, f"proof of work does not meet {relay.config.pow_bits} bits")
    now = now_ms()
    relay.challenges.consume(ch, now)
    address = identity.address()
    device = await relay.store.register(address, ik, keys, now)
    relay.metrics.inc("accounts_registered_total")
    if handle is not None:
        await _set_handle(relay, address, handle)
    token, expires = relay.tokens.issue(device, now)
    return m.RegisterOut(
        address=address, device_id=device.device_id, token=token, expires_ms=expires
    )


@router.post("/auth", response_model=m.TokenOut, responses=m.errors(400, 401, 404, 413))
async def auth(body: m.AuthIn, request: Request) -> m.TokenOut:
    relay = relay_of(request)
    ch = m.b64(body.challenge, "challenge")
    sig = m.b64(body.signature, "signature", 64)
    acct = _lookup_address(relay, body.address)
    device = next((d for d in acct.devices if d.device_id == body.device_id), None)
    if device is None:
        raise ApiError(404, "unknown device")
    _verify(_identity(acct.identity_key), sig, LABEL_AUTH + ch, "signature")
    now = now_ms()
    relay.challenges.consume(ch, now)
    token, expires = relay.tokens.issue(device, now)
    return m.TokenOut(token=token, expires_ms=expires)


async def _set_handle(relay: Relay, address: str, handle: str | None) -> None:
    try:
        await relay.store.set_handle(
            address, handle, handle_skeleton(handle) if handle is not None else None
        )
    except HandleTaken:
        raise ApiError(409, "handle is taken (or too similar to a taken one)") from None


@router.put("/handle", response_model=m.AccountOut, responses=m.errors(400, 401, 409, 413))
async def put_handle(
    body: m.HandleIn, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.AccountOut:
    relay = relay_of(request)
    handle = normalize_handle(body.handle) if body.handle else None
    await _set_handle(relay, device.address, handle)
    acct = relay.store.get_account(device.address)
    assert acct is not None
    return _account_out(acct)


def _lookup_address(relay: Relay, address: str) -> AccountRecord:
    if not is_address(address):
        raise ApiError(400, "not a valid address")
    acct = relay.store.get_account(normalize_address(address))
    if acct is None:
        raise ApiError(404, "unknown address")
    return acct


@router.get(
    "/handles/{handle}",
    response_model=m.AccountOut,
    responses=m.errors(400, 401, 404),
    dependencies=[REDEEM],
)
async def get_handle(handle: Handle, request: Request) -> m.AccountOut:
    acct = relay_of(request).store.get_account_by_handle(normalize_handle(handle))
    if acct is None:
        raise ApiError(404, "unknown handle")
    return _account_out(acct)


@router.get(
    "/accounts/{address}",
    response_model=m.AccountOut,
    responses=m.errors(400, 401, 404),
    dependencies=[REDEEM],
)
async def get_account(address: Address, request: Request) -> m.AccountOut:
    return _account_out(_lookup_address(relay_of(request), address))


@router.put("/keys", response_model=m.KeyCount, responses=m.errors(400, 401, 413))
async def put_keys(
    body: m.PreKeyUpload, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.KeyCount:
    relay = relay_of(request)
    acct = relay.store.get_account(device.address)
    assert acct is not None
    keys = parse_keys(body, _identity(acct.identity_key))
    if keys.one_time_ec or keys.one_time_kem:
        held = await relay.store.count_prekeys(device.ref)
        check_one_time_stock(relay.config.max_one_time_keys, keys, held)
    ec, kem = await relay.store.put_prekeys(device.ref, keys)
    return m.KeyCount(ec=ec, kem=kem)


@router.get("/keys/count", response_model=m.KeyCount, responses=m.errors(401))
async def key_count(request: Request, device: DeviceRecord = CURRENT_DEVICE) -> m.KeyCount:
    ec, kem = await relay_of(request).store.count_prekeys(device.ref)
    return m.KeyCount(ec=ec, kem=kem)


class BundleLimits:
    """Per-target limits of ``GET /bundles`` (PROTOCOL Part III §4.3, attack "prekey drain"):
    fetches of one account (429 beyond), and one-time keys handed out for it: beyond that
    bucket a bundle carries only the signed and last-resort keys, so a stranger with many
    tokens cannot empty an account's one-time stock. Keyed by the *target*: the fetcher is
    anonymous (its budget is its token allowance, Part XI)."""

    def __init__(self, relay: Relay) -> None:
        cfg = relay.config
        on = cfg.rate_limits
        self.fetches = RateLimiter(cfg.rate_bundle_per_s, cfg.rate_bundle_burst, on)
        self.one_time = RateLimiter(cfg.otk_per_hour / 3600, cfg.otk_burst, on)


@router.get(
    "/bundles/{address}",
    response_model=m.BundleOut,
    responses=m.errors(400, 401, 404),
    dependencies=[REDEEM],
)
async def get_bundle(address: Address, request: Request) -> m.BundleOut:
    relay = relay_of(request)
    acct = _lookup_address(relay, address)
    limits: BundleLimits = request.app.state.bundle_limits
    wait = limits.fetches.take(acct.address)
    if wait:
        raise ApiError(429, "too many bundle fetches for this account", retry_after=wait)
    one_time = not limits.one_time.take(acct.address)
    bundles = await relay.store.take_bundle(acct.address, one_time=one_time)
    relay.metrics.inc("bundles_served_total" if one_time else "bundles_served_drain_limited_total")
    out = []
    low = relay.config.keys_low
    for b in bundles:
        if b.ec_left < low or b.kem_left < low:
            relay.fanout.notify(b.device.ref, encode_frame(KeysLow(b.ec_left, b.kem_left)))
        spk = b.signed_prekey
        kem = b.kem_prekey
        ec = b.one_time_ec
        out.append(
            m.BundleDeviceOut(
                device_id=b.device.device_id,
                signed_prekey=m.SignedKeyModel(
                    id=spk.id, key=m.enc(spk.key), signature=m.enc(spk.signature)
                )
                if spk
                else None,
                kem_prekey=m.KemPreKeyOut(
                    id=kem.id,
                    key=m.enc(kem.key),
                    signature=m.enc(kem.signature),
                    last_resort=b.kem_last_resort,
                )
                if kem
                else None,
                one_time_ec=m.OneTimeKeyModel(id=ec.id, key=m.enc(ec.key)) if ec else None,
            )
        )
    return m.BundleOut(address=acct.address, identity_key=m.enc(acct.identity_key), devices=out)


@router.put("/delivery-token", response_model=m.Ok, responses=m.errors(400, 401, 413))
async def put_delivery_token(
    body: m.DeliveryTokenIn, request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.Ok:
    token_hash = m.b64(body.token_hash, "token_hash", 32)
    await relay_of(request).store.set_token_hash(device.address, token_hash)
    return m.Ok()


@router.get("/handle-certificate", response_model=m.CertificateOut, responses=m.errors(401, 404))
async def handle_certificate(
    request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.CertificateOut:
    """The relay's signature that the caller's account holds its handle, for the sender
    block of its messages (PROTOCOL Part IV §3.2): recipients check it locally instead of
    looking the handle up right after the message arrived (which would name the sender)."""
    relay = relay_of(request)
    acct = relay.store.get_account(device.address)
    if acct is None or acct.handle is None:
        raise ApiError(404, "this account has no handle")
    expires = now_ms() + relay.config.cert_ttl_seconds * 1000
    cert = handle_cert.issue(relay.secrets.signing_key, acct.address, acct.handle, expires)
    return m.CertificateOut(certificate=m.enc(cert), expires_ms=expires)


@router.get("/sender-certificate", response_model=m.CertificateOut, responses=m.errors(401))
async def sender_certificate(
    request: Request, device: DeviceRecord = CURRENT_DEVICE
) -> m.CertificateOut:
    relay = relay_of(request)
    acct = relay.store.get_account(device.address)
    assert acct is not None
    expires = now_ms() + relay.config.cert_ttl_seconds * 1000
    cert = issue_sender_certificate(
        relay.secrets.signing_key, _identity(acct.identity_key), device.device_id, expires
    )
    return m.CertificateOut(certificate=m.enc(cert), expires_ms=expires)
