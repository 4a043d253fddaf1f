"""Server secrets, stateless challenges and bearer tokens (PROTOCOL Part III §3).

Both challenges and tokens are HMAC-SHA256-authenticated byte strings, so the server keeps
no session table. Challenges are single-use: a used one is remembered in memory until it
expires and persisted through the store's group commit (table ``used_challenges``), so a
restart does not make it usable again.
Tokens carry the device's ``epoch``; re-registering or revoking a device bumps the epoch so
every older token of that device is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xchat import encoding
from xchat.crypto import relaykey
from xchat.errors import ApiError, DecodeError
from xchat.storage.base import DeviceRecord, Store

LABEL_CHALLENGE = b"XChat-v1-challenge"
LABEL_TOKEN = b"XChat-v1-token"
LABEL_REGISTER = b"XChat-v1-register"
#: Close reason / 401 message for a device removed from its account (Part VII §2).
DEVICE_REMOVED = "device removed from its account"
LABEL_AUTH = b"XChat-v1-auth"
MAC_LEN = 16

_CHALLENGE = struct.Struct(">BQ16s")  # version, expires_ms, random
CHALLENGE_LEN = _CHALLENGE.size + MAC_LEN  # 41
_TOKEN = struct.Struct(">BQIQ")  # version, device ref, epoch, expires_ms
TOKEN_LEN = _TOKEN.size + MAC_LEN  # 37


ROTATION_FILE = "server_signing.rotation"


def rotate_signing_key(data_dir: Path, now_ms: int, overlap_ms: int) -> bytes:
    """Replace the relay's signing key by a new one signed by the old (PROTOCOL Part III
    §3.1): clients that pinned the old key accept the new one through the statement, and
    keep accepting certificates of the old key for ``overlap_ms``. Run while the relay is
    stopped; returns the new public key. The old seed is kept as ``server_signing.key.<ms>``."""
    path = data_dir / "server_signing.key"
    old = Ed25519PrivateKey.from_private_bytes(_load_or_create(path, 32))
    new_seed = os.urandom(32)
    new = Ed25519PrivateKey.from_private_bytes(new_seed)
    new_pub = new.public_key().public_bytes_raw()
    statement = relaykey.sign_rotation(old, new_pub, now_ms, now_ms + overlap_ms)
    os.replace(path, data_dir / f"server_signing.key.{now_ms}")
    for name, data in (("server_signing.key", new_seed), (ROTATION_FILE, statement)):
        tmp = data_dir / (name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, data_dir / name)
    return new_pub


def _load_or_create(path: Path, make: int) -> bytes:
    """Read a 32-byte secret file, creating it (mode 0600) on first start."""
    if path.exists():
        data = path.read_bytes()
        if len(data) != make:
            raise SystemExit(f"{path} is corrupt (expected {make} bytes)")
        return data
    data = os.urandom(make)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


class ServerSecrets:
    """The HMAC key (challenges, tokens) and the Ed25519 certificate signing key."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.mac_key = _load_or_create(data_dir / "server_mac.key", 32)
        seed = _load_or_create(data_dir / "server_signing.key", 32)
        self.signing_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.signing_public = self.signing_key.public_key().public_bytes_raw()
        #: The previous key's signature over this one (PROTOCOL Part III §3.1), if rotated.
        rotation = data_dir / ROTATION_FILE
        self.rotation = rotation.read_bytes() if rotation.exists() else None

    def mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self.mac_key, label + data, hashlib.sha256).digest()[:MAC_LEN]


class Challenges:
    """``POST /challenge`` values: ``0x01 || expires_ms u64 || random 16 || mac 16``."""

    def __init__(self, secrets: ServerSecrets, ttl_ms: int, store: Store | None = None) -> None:
        self.secrets = secrets
        self.ttl_ms = ttl_ms
        self.store = store
        self._used: dict[bytes, int] = {}

    def load(self, used: dict[bytes, int]) -> None:
        """Used challenges persisted by an earlier run (after the store opened)."""
        self._used.update(used)

    def issue(self, now_ms: int) -> tuple[bytes, int]:
        expires = now_ms + self.ttl_ms
        body = _CHALLENGE.pack(1, expires, os.urandom(16))
        return body + self.secrets.mac(LABEL_CHALLENGE, body), expires

    def consume(self, challenge: bytes, now_ms: int) -> None:
        """Accept a challenge once; ApiError 401 if forged, expired or already used."""
        if len(challenge) != CHALLENGE_LEN:
            raise ApiError(401, "invalid challenge")
        body, mac = challenge[: _CHALLENGE.size], challenge[_CHALLENGE.size :]
        if not hmac.compare_digest(mac, self.secrets.mac(LABEL_CHALLENGE, body)):
            raise ApiError(401, "invalid challenge")
        _, expires, _ = _CHALLENGE.unpack(body)
        if expires <= now_ms:
            raise ApiError(401, "challenge expired")
        if challenge in self._used:
            raise ApiError(401, "challenge already used")
        if len(self._used) > 100_000:
            self._used = {c: e for c, e in self._used.items() if e > now_ms}
        self._used[challenge] = expires
        if self.store is not None:
            self.store.challenge_used_nowait(challenge, expires)

    def spend_once(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record another single-use value (a spent anonymous token's 32-byte key, PROTOCOL
        Part XI) in the same set and table as challenges (41 bytes: never equal); False if
        it was already spent."""
        if key in self._used:
            return False
        if len(self._used) > 100_000:
            self._used = {c: e for c, e in self._used.items() if e > now_ms}
        self._used[key] = expires_ms
        if self.store is not None:
            self.store.challenge_used_nowait(key, expires_ms)
        return True


class Tokens:
    """Bearer tokens: base64url(``0x01 || device ref u64 || epoch u32 || expires_ms u64 ||
    mac 16``) without padding."""

    def __init__(self, secrets: ServerSecrets, ttl_ms: int) -> None:
        self.secrets = secrets
        self.ttl_ms = ttl_ms

    def issue(self, device: DeviceRecord, now_ms: int) -> tuple[str, int]:
        expires = now_ms + self.ttl_ms
        body = _TOKEN.pack(1, device.ref, device.epoch, expires)
        raw = body + self.secrets.mac(LABEL_TOKEN, body)
        return encoding.b64url_encode(raw), expires

    def verify(self, token: str, store: Store, now_ms: int) -> tuple[DeviceRecord, int]:
        """Return the device and the token's expiry; ApiError 401 otherwise (also for a
        token with junk characters or non-canonical trailing bits: one token, one
        spelling, ``xchat.encoding``)."""
        try:
            raw = encoding.b64url_decode(token, "token", TOKEN_LEN)
        except DecodeError:
            raise ApiError(401, "invalid token") from None
        body, mac = raw[: _TOKEN.size], raw[_TOKEN.size :]
        if not hmac.compare_digest(mac, self.secrets.mac(LABEL_TOKEN, body)):
            raise ApiError(401, "invalid token")
        version, ref, epoch, expires = _TOKEN.unpack(body)
        if version != 1:
            raise ApiError(401, "invalid token")
        if expires <= now_ms:
            raise ApiError(401, "token expired")
        device = store.get_device(ref)
        if device is None:  # removed from its account's device list (PROTOCOL Part VII §2)
            raise ApiError(401, DEVICE_REMOVED)
        if device.epoch != epoch:
            raise ApiError(401, "device revoked or re-registered")
        return device, expires

    def from_header(
        self, header: str | None, store: Store, now_ms: int
    ) -> tuple[DeviceRecord, int]:
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "missing bearer token")
        return self.verify(header[7:].strip(), store, now_ms)
