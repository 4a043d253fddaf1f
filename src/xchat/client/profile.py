"""The profile directory: one device's home (PROTOCOL.md Part IV §7).

A profile directory holds ``profile.json`` (non-secret settings: server URL, address,
device id, how the profile key is kept), ``store.sqlite`` (the local store, secret columns
sealed under the profile key) and ``profile.lock`` (held with ``fcntl.flock`` while a
process uses the profile, so two processes never interleave ratchet state).

The 32-byte profile key is kept, in order of preference:

* ``passphrase`` (opt-in): derived with Argon2id from a passphrase and a stored salt;
* ``keyring``: the OS keyring, when a real backend is available;
* ``file``: a 0600 ``profile.key`` file inside the profile (headless machines).

A key check value (AES-GCM of a fixed label under the key) is stored in ``profile.json``,
so a wrong passphrase or a swapped key is reported as :class:`ProfileLocked` up front.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.errors import ProfileError, ProfileLocked

PROFILE_FILE = "profile.json"
LOCK_FILE = "profile.lock"
KEY_FILE = "profile.key"
STORE_FILE = "store.sqlite"
KEYRING_SERVICE = "xchat-profile-key"
KEY_CHECK_AAD = b"XChat-v1-profile-key-check"

# Argon2id parameters for passphrase-derived profile keys (RFC 9106 §4 "second
# recommended option", memory lowered to 64 MiB so it stays usable on small machines).
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_PARALLELISM = 1


def default_home() -> Path:
    """``$XCHAT_HOME`` or ``~/.xchat``."""
    env = os.environ.get("XCHAT_HOME")
    return Path(env).expanduser() if env else Path("~/.xchat").expanduser()


@dataclass
class ProfileConfig:
    """The non-secret settings in ``profile.json``."""

    server: str | None = None
    address: str | None = None
    device_id: int | None = None
    handle: str | None = None
    key_source: str | None = None  # "passphrase" | "keyring" | "file"
    keyring_user: str | None = None
    argon2: dict[str, Any] | None = None  # {"salt": hex, "t": int, "m": int, "p": int}
    key_check: str | None = None  # hex(nonce || AES-GCM(key, label))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProfileConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Profile:
    """An opened, locked profile directory. Use :meth:`open` and :meth:`close`."""

    def __init__(self, path: Path, lock_fh: IO[str], config: ProfileConfig) -> None:
        self.path = path
        self._lock_fh: IO[str] | None = lock_fh
        self.config = config
        self.key: bytes | None = None

    # --- life cycle ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Profile:
        """Create the directory if needed (0700) and take the exclusive lock.

        Raises :class:`ProfileLocked` if another process holds it.
        """
        p = Path(path).expanduser()
        try:
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            fh = open(p / LOCK_FILE, "a+")  # noqa: SIM115 - held for the profile's lifetime
        except OSError as exc:
            raise ProfileError(f"cannot use profile directory {p}: {exc.strerror}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ProfileLocked(f"profile {p} is in use by another process") from None
        try:
            config = _read_config(p)
        except BaseException:
            fh.close()
            raise
        return cls(p, fh, config)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> Profile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def initialised(self) -> bool:
        return self.config.key_source is not None and self.config.address is not None

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    def save_config(self) -> None:
        """Write ``profile.json`` atomically (write to a temp file, then rename)."""
        tmp = self.path / (PROFILE_FILE + ".tmp")
        data = json.dumps(self.config.to_json(), indent=2, sort_keys=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / PROFILE_FILE)

    # --- the profile key ----------------------------------------------------------------

    def create_key(self, passphrase: str | None = None, *, use_keyring: bool = True) -> bytes:
        """Make a new profile key, record how it is kept, and return it."""
        if passphrase is not None:
            salt = secrets.token_bytes(16)
            params = {
                "salt": salt.hex(),
                "t": ARGON2_TIME_COST,
                "m": ARGON2_MEMORY_KIB,
                "p": ARGON2_PARALLELISM,
            }
            key = _argon2(passphrase, params)
            self.config.key_source = "passphrase"
            self.config.argon2 = params
        else:
            key = secrets.token_bytes(32)
            user = secrets.token_hex(16)
            if use_keyring and _keyring_set(user, key):
                self.config.key_source = "keyring"
                self.config.keyring_user = user
            else:
                _write_key_file(self.path / KEY_FILE, key)
                self.config.key_source = "file"
        self.config.key_check = _key_check(key)
        self.key = key
        return key

    def unlock(self, passphrase: str | None = None) -> bytes:
        """Load the profile key; :class:`ProfileLocked` if unavailable or wrong."""
        source = self.config.key_source
        if source == "passphrase":
            if passphrase is None:
                raise ProfileLocked("this profile needs its passphrase (use --passphrase)")
            key = _argon2(passphrase, self.config.argon2 or {})
        elif source == "keyring":
            got = _keyring_get(self.config.keyring_user or "")
            if got is None:
                raise ProfileLocked("the profile key is not available from the OS keyring")
            key = got
        elif source == "file":
            try:
                key = (self.path / KEY_FILE).read_bytes()
            except OSError:
                raise ProfileLocked("the profile key file is missing") from None
        else:
            raise ProfileError(f"no account in profile {self.path} (run `xchat account create`)")
        if self.config.key_check is None or not _check_key(key, self.config.key_check):
            if source == "passphrase":
                raise ProfileLocked("wrong passphrase for this profile")
            raise ProfileLocked("the profile key does not match this profile")
        self.key = key
        return key


# --- helpers ---------------------------------------------------------------------------------


def _read_config(p: Path) -> ProfileConfig:
    f = p / PROFILE_FILE
    if not f.exists():
        return ProfileConfig()
    try:
        data = json.loads(f.read_text())
        if not isinstance(data, dict):
            raise ValueError
        return ProfileConfig.from_json(data)
    except (OSError, ValueError, TypeError):
        raise ProfileError(f"profile file {f} is corrupt") from None


def _argon2(passphrase: str, params: dict[str, Any]) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    try:
        return hash_secret_raw(
            secret=passphrase.encode("utf-8"),
            salt=bytes.fromhex(params["salt"]),
            time_cost=int(params["t"]),
            memory_cost=int(params["m"]),
            parallelism=int(params["p"]),
            hash_len=32,
            type=Type.ID,
        )
    except (KeyError, ValueError, TypeError):
        raise ProfileError("profile passphrase parameters are corrupt") from None


def _key_check(key: bytes) -> str:
    nonce = secrets.token_bytes(12)
    return (nonce + AESGCM(key).encrypt(nonce, KEY_CHECK_AAD, KEY_CHECK_AAD)).hex()


def _check_key(key: bytes, check_hex: str) -> bool:
    try:
        blob = bytes.fromhex(check_hex)
        return AESGCM(key).decrypt(blob[:12], blob[12:], KEY_CHECK_AAD) == KEY_CHECK_AAD
    except (InvalidTag, ValueError):
        return False


def _write_key_file(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())


def _real_keyring() -> Any | None:
    """The OS keyring backend, or None when only a fail/null backend is available.

    ``XCHAT_NO_KEYRING=1`` forces the key-file fallback (tests, CI).
    """
    if os.environ.get("XCHAT_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import fail

        kr = keyring.get_keyring()
        if isinstance(kr, fail.Keyring) or getattr(kr, "priority", 0) <= 0:
            return None
        chained = getattr(kr, "backends", None)
        if chained is not None and not chained:
            return None
        return kr
    except Exception:
        return None


def _keyring_set(user: str, key: bytes) -> bool:
    kr = _real_keyring()
    if kr is None:
        return False
    try:
        kr.set_password(KEYRING_SERVICE, user, key.hex())
        return bool(kr.get_password(KEYRING_SERVICE, user) == key.hex())
    except Exception:
        return False


def _keyring_get(user: str) -> bytes | None:
    kr = _real_keyring()
    if kr is None:
        return None
    try:
        value = kr.get_password(KEYRING_SERVICE, user)
        return bytes.fromhex(value) if value else None
    except Exception:
        return None
