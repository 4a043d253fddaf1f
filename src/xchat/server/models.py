"""Pydantic bodies of the HTTP control plane (PROTOCOL.md Part III §4) and b64 helpers.

Models validate shape only (types, list lengths); byte fields stay base64 strings and are
decoded by :func:`b64` in the handlers, which turns bad encodings into 400s.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xchat import encoding
from xchat.errors import ApiError, DecodeError

MAX_LIST = 1000


class _Model(BaseModel):
    """Strict types (issue #18): JSON ``true`` is not an integer and ``"1"`` is not a number
    here (Part III §1: every integer field is a JSON integer); an int still fills a float."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Error(BaseModel):
    """Every error body (PROTOCOL Part III §1): ``{"error": str}``; some add fields (409's
    ``address`` and ``devices``), hence ``extra="allow"``. The one error schema of
    ``/openapi.json`` (``server/openapi.py`` points the 422s at it too)."""

    model_config = ConfigDict(extra="allow")
    error: str


_ERRORS = {
    400: "Bad value (base64, key length/type, handle syntax, signature of a prekey)",
    401: "Missing, invalid or expired token / signature / challenge / access proof",
    403: "Authenticated but not allowed (not the owner)",
    404: "Unknown address, handle, device or blob",
    409: "Conflict (handle taken, device list mismatch, blob state)",
    410: "Gone (a single-use code already used or expired)",
    413: "Body, envelope or blob too large",
    429: "Rate limited (see Retry-After) or too many connections from the network",
    503: "Storage unavailable (retry)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error statuses it can answer (PROTOCOL Part III §1, §6).
    Every route can answer 429 (per-IP-bucket limit, before any handler)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 429}):
        entry: dict[str, Any] = {"model": Error, "description": _ERRORS[code]}
        if code == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait (integer >= 1)",
                    "schema": {"type": "integer"},
                }
            }
        out[code] = entry
    return out


def b64(value: str, what: str, length: int | None = None) -> bytes:
    """Strict standard base64 (``xchat.encoding``) → bytes; ApiError 400 otherwise."""
    try:
        return encoding.b64decode(value, what, length)
    except DecodeError as exc:
        raise ApiError(400, str(exc)) from None


def b64url(value: str, what: str, length: int | None = None) -> bytes:
    """Strict base64url, padding optional (URL paths); ApiError 400 otherwise."""
    try:
        return encoding.b64url_decode(value, what, length)
    except DecodeError as exc:
        raise ApiError(400, str(exc)) from None


enc = encoding.b64encode


# --- keys ---


class SignedKeyModel(_Model):
    id: int = Field(ge=0, le=0xFFFFFFFF)
    key: str
    signature: str


class OneTimeKeyModel(_Model):
    id: int = Field(ge=0, le=0xFFFFFFFF)
    key: str


class PreKeyUpload(_Model):
    signed_prekey: SignedKeyModel | None = None
    kem_last_resort: SignedKeyModel | None = None
    one_time_ec: list[OneTimeKeyModel] = Field(default_factory=list, max_length=MAX_LIST)
    one_time_kem: list[SignedKeyModel] = Field(default_factory=list, max_length=MAX_LIST)


class KeyCount(_Model):
    ec: int
    kem: int


class KemPreKeyOut(_Model):
    id: int
    key: str
    signature: str
    last_resort: bool


class BundleDeviceOut(_Model):
    device_id: int
    signed_prekey: SignedKeyModel | None
    kem_prekey: KemPreKeyOut | None
    one_time_ec: OneTimeKeyModel | None


class BundleOut(_Model):
    address: str
    identity_key: str
    devices: list[BundleDeviceOut]


# --- accounts and auth ---


class ServerInfo(_Model):
    protocol: int
    signing_key: str
    pow_bits: int
    limits: dict[str, int | bool]
    key_rotation: str | None = None  # b64(121): the old key's signature over this one (III §3.1)


class ChallengeOut(_Model):
    challenge: str
    expires_ms: int
    pow_bits: int


class RegisterIn(_Model):
    identity_key: str
    challenge: str
    signature: str
    pow_nonce: int = Field(default=0, ge=0, le=2**64 - 1)
    handle: str | None = None
    keys: PreKeyUpload


class RegisterOut(_Model):
    address: str
    device_id: int
    token: str
    expires_ms: int


class AuthIn(_Model):
    address: str
    device_id: int = Field(ge=0, le=0xFFFFFFFF)
    challenge: str
    signature: str


class TokenOut(_Model):
    token: str
    expires_ms: int


class HandleIn(_Model):
    handle: str | None


class AccountOut(_Model):
    address: str
    identity_key: str
    handle: str | None
    devices: list[int]


class DeliveryTokenIn(_Model):
    token_hash: str


class CertificateOut(_Model):
    certificate: str
    expires_ms: int


class Ok(_Model):
    ok: bool = True


# --- messages ---


class EnvelopeIn(_Model):
    device_id: int = Field(ge=0, le=0xFFFFFFFF)
    id: str
    content: str


class PowIn(_Model):
    challenge: str
    nonce: int = Field(ge=0, le=2**64 - 1)


class DestinationIn(_Model):
    address: str
    delivery_token: str | None = None
    pow: PowIn | None = None
    envelopes: list[EnvelopeIn] = Field(max_length=MAX_LIST)


class SendIn(_Model):
    destinations: list[DestinationIn] = Field(min_length=1, max_length=MAX_LIST)


class MultiEnvelopeIn(_Model):
    device_id: int = Field(ge=0, le=0xFFFFFFFF)
    id: str
    header: str  # b64, at most 255 bytes (as SEND_MULTI's header_len u8)


class MultiDestinationIn(_Model):
    address: str
    delivery_token: str | None = None
    pow: PowIn | None = None
    envelopes: list[MultiEnvelopeIn] = Field(max_length=255)


class SendMultiIn(_Model):
    """``POST /messages/multi``: the JSON form of the SEND_MULTI frame (PROTOCOL Part III §4.4a)."""

    shared: str
    destinations: list[MultiDestinationIn] = Field(min_length=1, max_length=MAX_LIST)


class EnvelopeOut(_Model):
    id: str
    ts_ms: int
    content: str


class FetchOut(_Model):
    envelopes: list[EnvelopeOut]
    more: bool


class AckIn(_Model):
    ids: list[str] = Field(max_length=MAX_LIST)


class AckOut(_Model):
    deleted: int
