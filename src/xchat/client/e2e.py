"""Glue between the client and the sans-I/O crypto core (PROTOCOL.md Part IV §3–§5).

Keeps the client's view of sessions small: a :class:`SessionSet` per remote device (the
active session plus a few archived ones, as libsignal's ``SessionRecord`` keeps previous
states), prekey batches that generate/upload/save themselves, and seal/unseal wrappers
that pad the content (``xchat.crypto.padding``) before the ratchet encrypts it.

Why archived sessions: when both parties start a session at the same moment (each sends
a PreKey message before seeing the other's), each side ends up with two sessions. Keeping
the previous ones lets every in-flight message still decrypt; the session that last
decrypted successfully becomes the active one, so both sides converge.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xchat.client.store import Store
from xchat.crypto import padding, sealed
from xchat.crypto.constants import MAX_PREKEY_ID
from xchat.crypto.keys import IdentityKeyPair, IdentityPublicKey
from xchat.crypto.prekeys import (
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
    bundles_from_response,
    generate_kem_prekeys,
    generate_one_time_prekeys,
    prekey_upload,
    rotation_plan,
)
from xchat.crypto.session import PREKEY_HEADER_LEN, Session, message_kind
from xchat.crypto.session import MessageKind as _Kind
from xchat.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ExpiredCertificate,
    InvalidCertificate,
    UnsupportedVersion,
    UntrustedIdentity,
    XChatError,
)

SESSION_SET_VERSION = 0x01
MAX_ARCHIVED = 4  # previous sessions kept per device (libsignal keeps up to 40)
SESSION_CONTENT_TYPE = 0x01  # sealed inner content type: a session message
GROUP_CONTENT_TYPE = 0x02  # a sender-key (group) message (PROTOCOL Part V §2.1, §10)
FANOUT_CONTENT_TYPE = 0x03  # a 1:1 message to several devices (PROTOCOL Part VII §4)

# Prekey kinds in the local store.
KIND_SIGNED = "signed"
KIND_EC = "ec"
KIND_KEM = "kem"


# --- session sets ----------------------------------------------------------------------------


@dataclass
class SessionSet:
    """Sessions with one remote device; ``sessions[0]`` is the active one."""

    sessions: list[Session] = field(default_factory=list)

    @property
    def active(self) -> Session:
        return self.sessions[0]

    def promote(self, index: int) -> None:
        if index:
            self.sessions.insert(0, self.sessions.pop(index))

    def add(self, session: Session) -> None:
        self.sessions.insert(0, session)
        del self.sessions[1 + MAX_ARCHIVED :]

    def to_bytes(self) -> bytes:
        """``0x01 || count u8 || (len u32 || Session.to_bytes())*`` (active first)."""
        parts = [bytes([SESSION_SET_VERSION, len(self.sessions)])]
        for s in self.sessions:
            raw = s.to_bytes()
            parts.append(struct.pack(">I", len(raw)) + raw)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionSet:
        if len(data) < 2:
            raise DecodeError("truncated session set")
        if data[0] != SESSION_SET_VERSION:
            raise UnsupportedVersion(f"unknown session set version {data[0]}")
        pos, out = 2, []
        for _ in range(data[1]):
            if pos + 4 > len(data):
                raise DecodeError("truncated session set")
            (n,) = struct.unpack_from(">I", data, pos)
            pos += 4
            if pos + n > len(data):
                raise DecodeError("truncated session set")
            out.append(Session.from_bytes(data[pos : pos + n]))
            pos += n
        if pos != len(data):
            raise DecodeError("trailing bytes after session set")
        return cls(out)


def load_session(data: bytes) -> SessionSet:
    return SessionSet.from_bytes(data)


def session_bytes(s: SessionSet) -> bytes:
    return s.to_bytes()


def initiate(
    identity: IdentityKeyPair, bundle: PreKeyBundle, existing: SessionSet | None = None
) -> SessionSet:
    """Start a session with one device from its bundle (signatures checked by the core)."""
    s = existing if existing is not None else SessionSet()
    s.add(Session.initiate(identity, bundle))
    return s


def encrypt(s: SessionSet, plaintext: bytes, *, raw: bool = False) -> bytes:
    """Pad, then encrypt with the active session. ``raw``: no padding (a fixed-size
    payload such as the 32-byte key of a device fan-out, PROTOCOL Part VII §4)."""
    return s.active.encrypt(plaintext if raw else padding.pad(plaintext))


@dataclass(frozen=True)
class DecryptResult:
    session: SessionSet
    plaintext: bytes
    used_one_time: list[tuple[str, int]]
    new_session: bool
    prekey_digest: bytes | None = None  # of the PreKey message that created the session


def decrypt(
    identity: IdentityKeyPair,
    sender: IdentityPublicKey,
    state: bytes | None,
    message: bytes,
    prekeys: StorePreKeys,
    *,
    replayed: Callable[[bytes], bool] | None = None,
    raw: bool = False,
) -> DecryptResult:
    """Decrypt a session message from ``sender`` (already authenticated by sealed sender).

    Tries every stored session of that device (a PreKey message only with the session it
    created); if none fits and it is a PreKey message, responds with a new session —
    unless ``replayed(digest)`` says its PQXDH part was accepted before (then it is a
    replay of a session since archived away: DuplicateMessage, PROTOCOL Part IV §3.7).
    DuplicateMessage if any session reports the key as already used.
    """
    sset = SessionSet.from_bytes(state) if state is not None else SessionSet()
    kind = message_kind(message)
    duplicate = False
    for i, session in enumerate(sset.sessions):
        if kind == _Kind.PREKEY and not session.matches_prekey_message(message):
            continue
        try:
            padded = session.decrypt(message)
        except DuplicateMessage:
            duplicate = True
            continue
        except DecryptionError:
            continue
        sset.promote(i)
        return DecryptResult(sset, padded if raw else padding.unpad(padded), [], False)
    if duplicate:
        raise DuplicateMessage("message already decrypted")
    if kind != _Kind.PREKEY:
        raise DecryptionError("no session for this message")
    digest = hashlib.sha256(message[:PREKEY_HEADER_LEN]).digest()
    if replayed is not None and replayed(digest):
        raise DuplicateMessage("PreKey message already processed")
    session, padded, used = Session.respond(identity, prekeys, message)
    if session.remote_identity != sender:
        raise UntrustedIdentity("PreKey message identity does not match the sealed sender")
    sset.add(session)
    consumed: list[tuple[str, int]] = []
    if used.one_time_prekey_id is not None:
        consumed.append((KIND_EC, used.one_time_prekey_id))
    if not used.kem_last_resort:
        consumed.append((KIND_KEM, used.kem_prekey_id))
    plain = padded if raw else padding.unpad(padded)
    return DecryptResult(sset, plain, consumed, True, digest)


# --- sealed sender ---------------------------------------------------------------------------


def seal(
    identity: IdentityKeyPair,
    cert: bytes,
    recipient: IdentityPublicKey,
    ciphertext: bytes,
    device_id: int,
) -> bytes:
    return sealed.seal(
        identity, cert, recipient, SESSION_CONTENT_TYPE, ciphertext, recipient_device_id=device_id
    )


def unseal_any(
    identity: IdentityKeyPair, data: bytes, server_keys: list[bytes], now_ms: int, device_id: int
) -> sealed.UnsealedMessage:
    """:func:`unseal` with each accepted relay key in turn: the pinned one, then during a
    key rotation's overlap the previous one (PROTOCOL Part III §3.1). Nothing is changed
    by a failed attempt (the certificate is checked before any session state is used)."""
    for key in server_keys[:-1]:
        try:
            return unseal(identity, data, key, now_ms, device_id)
        except ExpiredCertificate:
            raise
        except InvalidCertificate:
            continue
    return unseal(identity, data, server_keys[-1], now_ms, device_id)


def unseal(
    identity: IdentityKeyPair, data: bytes, server_key: bytes, now_ms: int, device_id: int
) -> sealed.UnsealedMessage:
    msg = sealed.unseal(identity, data, server_key, now_ms, own_device_id=device_id)
    if msg.content_type not in (SESSION_CONTENT_TYPE, GROUP_CONTENT_TYPE, FANOUT_CONTENT_TYPE):
        raise DecodeError(f"unknown sealed content type {msg.content_type}")
    return msg


# --- prekeys ---------------------------------------------------------------------------------


class StorePreKeys:
    """:class:`xchat.crypto.prekeys.PreKeyStore` over the sealed local store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def signed_prekey(self, prekey_id: int) -> SignedPreKeyRecord | None:
        raw = self._store.get_prekey(KIND_SIGNED, prekey_id)
        return None if raw is None else SignedPreKeyRecord.from_bytes(raw)

    def one_time_prekey(self, prekey_id: int) -> OneTimePreKeyRecord | None:
        raw = self._store.get_prekey(KIND_EC, prekey_id)
        return None if raw is None else OneTimePreKeyRecord.from_bytes(raw)

    def kem_prekey(self, prekey_id: int) -> KemPreKeyRecord | None:
        raw = self._store.get_prekey(KIND_KEM, prekey_id)
        return None if raw is None else KemPreKeyRecord.from_bytes(raw)


@dataclass
class PreKeyBatch:
    """Prekeys generated together: uploaded first, saved locally once the server took them."""

    signed: SignedPreKeyRecord | None = None
    last_resort: KemPreKeyRecord | None = None
    ec: list[OneTimePreKeyRecord] = field(default_factory=list)
    kem: list[KemPreKeyRecord] = field(default_factory=list)
    created_ms: int = 0

    @classmethod
    def generate(cls, identity: IdentityKeyPair, *, now_ms: int, count: int) -> PreKeyBatch:
        """A full set for registration: 1 signed EC, 1 last-resort KEM, ``count`` of each
        one-time kind. Ids start at a random 24-bit offset so a restored account's new
        keys never collide with ids an old session might still name."""
        base = secrets.randbelow(1 << 24) + 1
        return cls(
            signed=SignedPreKeyRecord.generate(identity, base, created_ms=now_ms),
            last_resort=KemPreKeyRecord.generate(
                identity, base, last_resort=True, created_ms=now_ms
            ),
            ec=generate_one_time_prekeys(base, count),
            kem=generate_kem_prekeys(identity, base + 1, count),
            created_ms=now_ms,
        )

    @classmethod
    def one_time(
        cls, identity: IdentityKeyPair, store: Store, *, now_ms: int, count: int
    ) -> PreKeyBatch:
        """``count`` more one-time keys of each kind, ids continuing after the highest."""
        ec_start = store.max_prekey_id(KIND_EC) + 1
        kem_start = store.max_prekey_id(KIND_KEM) + 1
        return cls(
            ec=generate_one_time_prekeys(ec_start, count),
            kem=generate_kem_prekeys(identity, kem_start, count),
            created_ms=now_ms,
        )

    def upload(self) -> dict[str, Any]:
        return prekey_upload(
            signed_prekey=self.signed,
            kem_last_resort=self.last_resort,
            one_time_ec=self.ec,
            one_time_kem=self.kem,
        )

    def save(self, store: Store) -> None:
        t = self.created_ms
        if self.signed is not None:
            store.put_prekey(KIND_SIGNED, self.signed.id, self.signed.to_bytes(), t)
        if self.last_resort is not None:
            store.put_prekey(KIND_KEM, self.last_resort.id, self.last_resort.to_bytes(), t)
        for k in self.ec:
            store.put_prekey(KIND_EC, k.id, k.to_bytes(), t)
        for q in self.kem:
            store.put_prekey(KIND_KEM, q.id, q.to_bytes(), t)


# --- rotation of the signed and last-resort prekeys (PROTOCOL Part II §1.5) -------------------

META_GENERATIONS = (
    "prekey_generations"  # JSON {"signed": [[id, created_ms]...], "last_resort": ...}
)


@dataclass
class Rotation:
    """One step of the rotation schedule: a new current pair to publish (or None) and the
    replaced keys whose grace period is over (their private halves are deleted)."""

    batch: PreKeyBatch | None
    retire: list[tuple[str, int]]
    generations: dict[str, list[list[int]]]


def _generations(store: Store) -> dict[str, list[list[int]]]:
    raw = store.get_meta(META_GENERATIONS)
    if raw is not None:
        gens: dict[str, list[list[int]]] = json.loads(raw)
        return gens
    # A profile from before rotation existed: its keys are the registration's.
    signed = [
        [int(i), int(c)]
        for i, c in store._db.execute(
            "SELECT id, created_ms FROM prekeys WHERE kind = ? ORDER BY created_ms, id",
            (KIND_SIGNED,),
        )
    ]
    last_resort = []
    for (i,) in store._db.execute("SELECT id FROM prekeys WHERE kind = ? ORDER BY id", (KIND_KEM,)):
        raw_rec = store.get_prekey(KIND_KEM, int(i))
        if raw_rec is not None:
            rec = KemPreKeyRecord.from_bytes(raw_rec)
            if rec.last_resort:
                last_resort.append([rec.id, rec.created_ms])
    return {"signed": signed, "last_resort": last_resort}


def plan_rotation(identity: IdentityKeyPair, store: Store, *, now_ms: int) -> Rotation:
    """Rotate both medium-term keys together, weekly; forget replaced ones after the grace
    period (``xchat.crypto.prekeys.rotation_plan``)."""
    gens = _generations(store)
    plans = {k: rotation_plan([(g[0], g[1]) for g in gens.get(k, [])], now_ms) for k in gens}
    plans.setdefault("signed", rotation_plan([], now_ms))
    plans.setdefault("last_resort", rotation_plan([], now_ms))
    retire = [(KIND_SIGNED, i) for i in plans["signed"].delete]
    retire += [(KIND_KEM, i) for i in plans["last_resort"].delete]
    batch = None
    if plans["signed"].rotate or plans["last_resort"].rotate:
        spk_id = (store.max_prekey_id(KIND_SIGNED) + 1) & MAX_PREKEY_ID
        kem_id = (store.max_prekey_id(KIND_KEM) + 1) & MAX_PREKEY_ID
        batch = PreKeyBatch(
            signed=SignedPreKeyRecord.generate(identity, spk_id, created_ms=now_ms),
            last_resort=KemPreKeyRecord.generate(
                identity, kem_id, last_resort=True, created_ms=now_ms
            ),
            created_ms=now_ms,
        )
    return Rotation(batch, retire, gens)


def finish_rotation(
    store: Store, rotation: Rotation, retired: Callable[[str, int, int], None], now_ms: int
) -> None:
    """After the relay took the new pair: record the generations and delete what retired
    (each id also goes to ``retired(kind, id, now)``, the replay log: a PreKey message that
    names it can only be an old one, PROTOCOL Part IV §3.7)."""
    gens = rotation.generations
    gens.setdefault("signed", [])
    gens.setdefault("last_resort", [])
    if rotation.batch is not None:
        assert rotation.batch.signed is not None and rotation.batch.last_resort is not None
        gens["signed"].append([rotation.batch.signed.id, now_ms])
        gens["last_resort"].append([rotation.batch.last_resort.id, now_ms])
    for kind, key_id in rotation.retire:
        store.delete_prekey(kind, key_id)
        retired("signed" if kind == KIND_SIGNED else "kem", key_id, now_ms)
        name = "signed" if kind == KIND_SIGNED else "last_resort"
        gens[name] = [g for g in gens[name] if g[0] != key_id]
    store.put_meta(META_GENERATIONS, json.dumps(gens).encode())


def parse_bundles(response: Mapping[str, Any]) -> list[PreKeyBundle]:
    """Parse (and check address/identity of) a bundles response; ProtocolError-free:
    DecodeError / UntrustedIdentity propagate as typed XChat errors."""
    try:
        return bundles_from_response(response)
    except XChatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # pragma: no cover - defensive
        raise DecodeError(f"malformed bundle response: {exc}") from None


__all__ = [
    "DecryptResult",
    "PreKeyBatch",
    "Rotation",
    "SessionSet",
    "StorePreKeys",
    "decrypt",
    "encrypt",
    "finish_rotation",
    "initiate",
    "load_session",
    "parse_bundles",
    "plan_rotation",
    "seal",
    "session_bytes",
    "unseal",
    "unseal_any",
]
