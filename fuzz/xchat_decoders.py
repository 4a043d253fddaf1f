"""Registry of every XChat decoder that reads attacker-controlled bytes, with valid seeds.

Shared by the Hypothesis property tests (``tests/reliability/test_fuzz_decoders.py``) and the
atheris targets (``fuzz/fuzz_<name>.py``), so both fuzz exactly the same entry points.

The property every decoder must satisfy (RELIABILITY.md §1): for *any* input it either
returns a value or raises a subclass of :class:`xchat.errors.XChatError` -- never a library
exception (``struct.error``, ``ValueError``, ``IndexError``, ``RecursionError``, ...).

Each :class:`Decoder` takes one input of its ``kind``:

* ``"bytes"`` -- raw bytes (wire data, stored records);
* ``"text"`` -- a ``str`` (addresses, recovery phrases, bearer tokens);
* ``"json"`` -- an already-parsed JSON value (bundles, file manifests), as a client gets it
  from ``json.loads``/``httpx``.

Seeds are deterministic (fixed RNG seeds), built once on first use.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

NOW_MS = 1_800_000_000_000
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Decoder:
    """One fuzzable entry point: ``run(input)`` and valid ``seeds()`` of the same kind."""

    name: str
    kind: str  # "bytes" | "text" | "json"
    run: Callable[[Any], object]
    seeds: Callable[[], list[Any]]


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


# --- the world the seeds come from ---------------------------------------------------------


@dataclass
class World:
    """Identities, keys, sessions and encoded structures every decoder's seeds come from."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


@cache
def world() -> World:
    from xchat.crypto import group as G
    from xchat.crypto import sender_keys as SK
    from xchat.crypto.attachment import encrypt_attachment
    from xchat.crypto.certificate import issue_sender_certificate
    from xchat.crypto.keys import IdentityKeyPair
    from xchat.crypto.padding import pad
    from xchat.crypto.prekeys import (
        InMemoryPreKeyStore,
        KemPreKeyRecord,
        OneTimePreKeyRecord,
        PreKeyBundle,
        SignedPreKeyRecord,
    )
    from xchat.crypto.sealed import seal, seal_multi
    from xchat.crypto.session import Session
    from xchat.protocol import frames as F

    rng = _rng(1234)
    v: dict[str, Any] = {}
    alice = IdentityKeyPair.generate(rng)
    bob = IdentityKeyPair.generate(rng)
    carol = IdentityKeyPair.generate(rng)
    server_key = Ed25519PrivateKey.from_private_bytes(rng(32))
    server_pub = server_key.public_key().public_bytes_raw()
    v.update(alice=alice, bob=bob, carol=carol, server_key=server_key, server_pub=server_pub)
    cert_a = issue_sender_certificate(server_key, alice.public, 1, NOW_MS + DAY_MS)
    v["cert_alice"] = cert_a
    v["cert_expired"] = issue_sender_certificate(server_key, alice.public, 1, NOW_MS - 1)

    # Bob's prekeys and bundle
    spk = SignedPreKeyRecord.generate(bob, 1, rng, created_ms=NOW_MS)
    kem = KemPreKeyRecord.generate(bob, 2, last_resort=False, rng=rng, created_ms=NOW_MS)
    last = KemPreKeyRecord.generate(bob, 100, last_resort=True, rng=rng)
    otk = OneTimePreKeyRecord.generate(10, rng)
    store = InMemoryPreKeyStore([spk], [otk], [kem, last])
    bundle = PreKeyBundle.from_records(bob.public, 1, spk, kem, otk)
    v.update(spk=spk, kem=kem, last=last, otk=otk, bob_store=store, bundle=bundle)

    # A pairwise session: Alice's PreKey message, Bob's reply, Alice's next normal message
    a_sess = Session.initiate(alice, bundle, rng)
    v["alice_session_pending"] = a_sess.to_bytes()
    m1 = a_sess.encrypt(b"hello bob")
    b_sess, _, _ = Session.respond(bob, store, m1, rng)
    v["bob_session_fresh"] = b_sess.to_bytes()
    reply = b_sess.encrypt(b"hello alice")
    a_sess.decrypt(reply, rng)
    m2 = a_sess.encrypt(b"second")
    m3 = a_sess.encrypt(b"third")
    v.update(prekey_message=m1, reply=reply, normal_message=m2, normal_message_3=m3)
    v["alice_session"] = a_sess.to_bytes()
    v["bob_session"] = b_sess.to_bytes()
    v["alice_ratchet"] = a_sess._ratchet.to_bytes()
    v["alice_ad"] = alice.public.encode() + bob.public.encode()

    # Sealed sender
    v["sealed"] = seal(alice, cert_a, bob.public, 1, m2, rng)
    v["sealed_prekey"] = seal(alice, cert_a, bob.public, 1, m1, rng)
    shared, headers = seal_multi(alice, cert_a, [(bob.public, 1), (carol.public, 1)], 1, m2, rng)
    v["sealed_multi"] = headers[(bob.public, 1)] + shared
    v["sealed_expired_cert"] = seal(alice, v["cert_expired"], bob.public, 1, m2, rng)

    # Sender keys (PROTOCOL Part V §2)
    gid = rng(16)
    own = SK.SenderKeyState.generate(gid, rng)
    dist = own.distribution_message()
    member = SK.SenderKeyState.from_distribution(dist)
    g1 = own.encrypt(b"group hello")
    g2 = own.encrypt(b"group again")
    v.update(sk_own=own.to_bytes(), sk_member=member.to_bytes(), sk_dist=dist)
    v.update(sk_msg1=g1, sk_msg2=g2)
    v["sk_record"] = SK.SenderKeyRecord([member]).to_bytes()

    # Group state machine (PROTOCOL Part V §3-§5)
    state, genesis = G.create_group(alice, "friends", [bob.public], rng)
    state2, rename = G.propose(alice, state, [G.GroupOp.rename("best friends")])
    _, add = G.propose(alice, state2, [G.GroupOp.add(carol.public)])
    history = G.GroupHistory.from_genesis(genesis)
    history.add(rename)
    history.add(add)
    v.update(group_state=state.encode(), group_state2=state2.encode())
    v.update(group_genesis=genesis.encode(), group_rename=rename.encode(), group_add=add.encode())
    v["group_history"] = history.to_bytes()

    # Attachments (PROTOCOL Part I §9)
    att = encrypt_attachment(b"attachment payload " * 20, chunk_size=64, rng=rng)
    v["attachment"] = att

    # Padding
    v["padded"] = [pad(b""), pad(b"hello"), pad(b"x" * 200), pad(b"y" * 1000)]

    # Data-plane frames (PROTOCOL Part III §5)
    dest = F.Destination(
        alice.public.address(),
        F.TokenAccess(bytes(16)),
        (F.OutEnvelope(1, bytes(range(16)), b"sealed bytes"),),
    )
    pow_dest = F.Destination(bob.public.address(), F.PowAccess(b"c" * 41, 77), ())
    v["send_frames"] = [
        F.encode_frame(F.Send(7, (dest, pow_dest))),
        F.encode_frame(F.Send(8, (F.Destination(alice.public.address(), None, ()),))),
    ]
    v["frames"] = [
        F.encode_frame(F.Send(7, (dest, pow_dest))),
        F.encode_frame(F.Send(8, (F.Destination(alice.public.address(), None, ()),))),
        F.encode_frame(F.Ack((bytes(16), bytes(range(16))))),
        F.encode_frame(F.SendResult(7, 429, 1500, "rate limited")),
        F.encode_frame(F.Deliver((F.Delivered(bytes(16), NOW_MS, b"xyz"),))),
        F.encode_frame(F.Drained()),
        F.encode_frame(F.KeysLow(3, 4)),
    ]

    # Client content and file manifests (PROTOCOL Part IV §2, PROTOCOL Part VI §2)
    v["content"] = [
        json.dumps(
            {
                "v": 1,
                "id": "ab" * 16,
                "type": "text",
                "ts": NOW_MS,
                "text": "hi",
                "reply_to": "cd" * 16,
                "sender": {"handle": "alice", "delivery_token": "AAAAAAAAAAAAAAAAAAAAAA=="},
            }
        ).encode(),
        json.dumps(
            {"v": 1, "id": "ef" * 16, "type": "receipt", "ts": 1, "receipt_for": ["ab" * 16]}
        ).encode(),
    ]
    v["manifest"] = {
        "blob": "0123456789abcdef" * 2,
        "key": base64.b64encode(att.key).decode(),
        "digest": base64.b64encode(att.digest).decode(),
        "name": "photo.jpg",
        "size": att.size,
        "content_type": "image/jpeg",
        "chunk_size": 64,
    }
    v["images"] = _images()
    return World(v)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _images() -> dict[str, bytes]:
    """Tiny hand-assembled JPEG / PNG / WebP files carrying metadata to strip."""

    def seg(code: int, body: bytes) -> bytes:
        return bytes((0xFF, code)) + struct.pack(">H", len(body) + 2) + body

    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"
    jpeg = (
        b"\xff\xd8"
        + seg(0xE0, jfif)
        + seg(0xE1, b"Exif\x00\x00" + b"M" * 20)
        + seg(0xFE, b"comment")
        + seg(0xDB, bytes(65))
        + seg(0xDA, sos)
        + b"\x12\x34\xff\x00\x56"
        + b"\xff\xd9"
    )
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"tEXt", b"Author\x00me")
        + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + _png_chunk(b"IEND", b"")
    )

    def riff_chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    vp8x = bytes([0x08 | 0x04, 0, 0, 0]) + (0).to_bytes(3, "little") * 2
    chunks = (
        riff_chunk(b"VP8X", vp8x)
        + riff_chunk(b"VP8 ", b"\x00" * 10)
        + riff_chunk(b"EXIF", b"exif data")
        + riff_chunk(b"XMP ", b"<x/>")
    )
    webp = b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks
    return {"jpeg": jpeg, "png": png, "webp": webp}


# --- runners -------------------------------------------------------------------------------


def _frames(data: bytes) -> object:
    from xchat.protocol.frames import decode_frame

    return decode_frame(data)


def _frames_send(data: bytes) -> object:
    """The server's SEND hot path (``decode_send``, used instead of ``decode_frame`` for
    frame type 0x01 when present)."""
    from xchat.protocol import frames as F

    fast = getattr(F, "decode_send", None)
    return F.decode_frame(data) if fast is None else fast(data)


def _unseal(data: bytes) -> object:
    from xchat.crypto.sealed import unseal

    w = world()
    return unseal(w.bob, data, w.server_pub, NOW_MS)


def _session_decrypt(data: bytes) -> object:
    from xchat.crypto.session import Session

    s = Session.from_bytes(world().bob_session)
    return s.decrypt(data, _rng(1))


def _session_respond(data: bytes) -> object:
    from xchat.crypto.session import Session

    w = world()
    return Session.respond(w.bob, w.bob_store, data, _rng(2))


def _prekey_parse(data: bytes) -> object:
    from xchat.crypto.session import PreKeyMessage, message_kind

    if len(data) >= 2:
        message_kind(data)
    return PreKeyMessage.parse(data)


def _ratchet_header(data: bytes) -> object:
    from xchat.crypto.ratchet import parse_header

    return parse_header(data)


def _bundle(obj: Any) -> object:
    from xchat.crypto.prekeys import PreKeyBundle

    b = PreKeyBundle.from_json(obj)
    b.verify()
    return b


def _bundle_response(obj: Any) -> object:
    from xchat.crypto.prekeys import bundles_from_response

    out = bundles_from_response(obj)
    for b in out:
        b.verify()
    return out


def _certificate(data: bytes) -> object:
    from xchat.crypto.certificate import SenderCertificate

    cert = SenderCertificate.decode(data)
    cert.verify(world().server_pub, NOW_MS)
    return cert


def _session_record(data: bytes) -> object:
    from xchat.crypto.session import Session

    return Session.from_bytes(data)


def _ratchet_state(data: bytes) -> object:
    from xchat.crypto.ratchet import RatchetState

    return RatchetState.from_bytes(data, world().alice_ad)


def _prekey_records(data: bytes) -> object:
    """All three private prekey record kinds (the first byte after the version picks)."""
    from xchat.crypto.prekeys import KemPreKeyRecord, OneTimePreKeyRecord, SignedPreKeyRecord
    from xchat.errors import XChatError

    out = []
    for cls in (SignedPreKeyRecord, OneTimePreKeyRecord, KemPreKeyRecord):
        try:
            rec = cls.from_bytes(data)
        except XChatError:
            continue
        rec.public  # noqa: B018 - derive the public key: a corrupt private half must not crash
        out.append(rec)
    return out


def _sk_state(data: bytes) -> object:
    from xchat.crypto.sender_keys import SenderKeyState

    return SenderKeyState.from_bytes(data)


def _sk_record(data: bytes) -> object:
    from xchat.crypto.sender_keys import SenderKeyRecord

    return SenderKeyRecord.from_bytes(data)


def _sk_distribution(data: bytes) -> object:
    from xchat.crypto.sender_keys import SenderKeyState

    return SenderKeyState.from_distribution(data)


def _sk_message(data: bytes) -> object:
    from xchat.crypto.sender_keys import SenderKeyRecord

    return SenderKeyRecord.from_bytes(world().sk_record).decrypt(data)


def _group_state(data: bytes) -> object:
    from xchat.crypto.group import GroupState

    return GroupState.decode(data)


def _group_update(data: bytes) -> object:
    from xchat.crypto import group as G

    update = G.GroupUpdate.decode(data)
    state = G.GroupState.decode(world().group_state)
    return G.apply(state, update)  # may refuse (ProtocolError): still a typed error


def _group_history(data: bytes) -> object:
    from xchat.crypto.group import GroupHistory

    return GroupHistory.from_bytes(data).state


def _group_welcome(data: bytes) -> object:
    from xchat.crypto import group as G

    w = world()
    add = G.GroupUpdate.decode(w.group_add)  # Alice adds Carol, signed over group_state2
    return G.accept_welcome(data, add, w.alice.public.address(), w.carol.public)


def _identity_key(data: bytes) -> object:
    from xchat.crypto.keys import IdentityPublicKey

    key = IdentityPublicKey.decode(data)
    key.address()
    return key


def _address(text: str) -> object:
    from xchat.crypto.keys import decode_address, is_address, normalize_address

    is_address(text)
    decode_address(text)
    return normalize_address(text)


def _mnemonic(text: str) -> object:
    from xchat.crypto.keys import IdentityKeyPair

    return IdentityKeyPair.from_mnemonic(text)


def _unpad(data: bytes) -> object:
    from xchat.crypto.padding import unpad

    return unpad(data)


def _attachment(data: bytes) -> object:
    """Whole-file decrypt with the manifest's digest recomputed over the input, so mutated
    ciphertexts reach the chunk layer instead of stopping at the digest check."""
    from xchat.crypto.attachment import decrypt_attachment

    att = world().attachment
    return decrypt_attachment(
        att.key, data, size=att.size, digest=hashlib.sha256(data).digest(), chunk_size=64
    )


def _attachment_stream(data: bytes) -> object:
    """Streaming decrypt fed in uneven pieces (as a download arrives)."""
    from xchat.crypto.attachment import AttachmentDecryptor

    att = world().attachment
    dec = AttachmentDecryptor(att.key, 64)
    out = b""
    step = 1 + (len(data) % 97)
    for i in range(0, len(data), step):
        out += dec.update(data[i : i + step])
    return out + dec.finish(att.digest)


def _content(data: bytes) -> object:
    from xchat.client.content import Content

    return Content.decode(data)


def _manifest(obj: Any) -> object:
    from xchat.client.files import FileManifest, manifest_from_content

    manifest_from_content({"type": "file", "file": obj})
    m = FileManifest.from_json(obj)
    return m.blob_size


def _image(data: bytes) -> object:
    from xchat.client.metadata import JPEG, PNG, WEBP, detect_image, strip_jpeg, strip_png
    from xchat.client.metadata import strip_webp as _strip_webp

    kind = detect_image(data[:12])
    fn = {JPEG: strip_jpeg, PNG: strip_png, WEBP: _strip_webp}.get(kind or "")
    if fn is None:  # still exercise all three parsers on arbitrary input
        fn = (strip_jpeg, strip_png, _strip_webp)[len(data) % 3]
    out = io.BytesIO()
    fn(io.BytesIO(data), out)
    return out.getvalue()


class _NoStore:
    """A store stand-in for token checks: no device exists (only reached with a valid MAC)."""

    def get_device(self, ref: int) -> None:
        return None


@cache
def _server_auth() -> tuple[Any, Any]:
    from xchat.server.auth import Challenges, ServerSecrets, Tokens

    secrets = ServerSecrets(Path(tempfile.mkdtemp(prefix="xchat-fuzz-")))
    return Tokens(secrets, 3_600_000), Challenges(secrets, 300_000)


def _token(text: str) -> object:
    tokens, _ = _server_auth()
    return tokens.from_header(text, _NoStore(), NOW_MS)


def _challenge(data: bytes) -> object:
    _, challenges = _server_auth()
    return challenges.consume(data, NOW_MS)


# --- seeds ---------------------------------------------------------------------------------


def _w(*names: str) -> Callable[[], list[Any]]:
    def seeds() -> list[Any]:
        out: list[Any] = []
        for n in names:
            val = getattr(world(), n)
            out.extend(val if isinstance(val, list) else [val])
        return out

    return seeds


def _bundle_seeds() -> list[Any]:
    return [world().bundle.to_json()]


def _bundle_response_seeds() -> list[Any]:
    w = world()
    device = w.bundle.to_json()
    return [
        {
            "address": w.bob.public.address(),
            "identity_key": device.pop("identity_key"),
            "devices": [device],
        }
    ]


def _record_seeds() -> list[Any]:
    w = world()
    return [w.spk.to_bytes(), w.otk.to_bytes(), w.kem.to_bytes(), w.last.to_bytes()]


def _att_seeds() -> list[Any]:
    return [world().attachment.ciphertext]


def _image_seeds() -> list[Any]:
    return list(world().images.values())


def _identity_seeds() -> list[Any]:
    w = world()
    return [w.alice.public.encode(), w.bob.public.encode()]


def _address_seeds() -> list[Any]:
    w = world()
    a = w.alice.public.address()
    return [a, a.upper(), w.bob.public.address(), " " + a + " "]


def _mnemonic_seeds() -> list[Any]:
    w = world()
    return [w.alice.mnemonic(), w.bob.mnemonic().upper()]


def _token_seeds() -> list[Any]:
    tokens, _ = _server_auth()

    class _Dev:
        ref = 1
        epoch = 0

    tok, _ = tokens.issue(_Dev(), NOW_MS)
    return ["Bearer " + tok, "Bearer " + "A" * 50]


def _challenge_seeds() -> list[Any]:
    _, challenges = _server_auth()
    ch, _ = challenges.issue(NOW_MS)
    return [ch]


# --- backup and recovery (PROTOCOL.md Part X) ------------------------------------------------

BACKUP_ADDRESS = "xc1qzxrggj7p8xpavs8pgph06jff403uml5my3rjmm4"
BACKUP_SECRET = bytes(range(32))


@cache
def _backup_world() -> dict[str, Any]:
    from xchat.client import archive
    from xchat.crypto import recovery as rc

    realm = Ed25519PrivateKey.from_private_bytes(bytes(32))
    realm_pub = realm.public_key().public_bytes_raw()
    regs = rc.enrol(BACKUP_SECRET, "482913", BACKUP_ADDRESS, [realm_pub], 1, rng=_rng(15))
    record = rc.record_id(realm_pub, BACKUP_ADDRESS)
    nonce = bytes(16)
    answer = rc.sign_response(
        realm,
        nonce,
        {"op": "info", "record": record.hex(), "nonce": rc.b64e(nonce), "status": "ok"},
    )
    segment = {"v": 1, "address": BACKUP_ADDRESS, "kind": "full", "messages": [], "contacts": []}
    manifest = {"v": 1, "address": BACKUP_ADDRESS, "segments": []}
    return {
        "realm_pub": realm_pub,
        "record": record,
        "nonce": nonce,
        "registration": regs[0].to_json(),
        "answer": answer,
        "segment": archive.encode_segment(segment),
        "manifest": archive.seal_manifest(BACKUP_SECRET, BACKUP_ADDRESS, manifest, _rng(16)),
    }


def _realm_registration(obj: Any) -> object:
    from xchat.crypto.recovery import Registration

    return Registration.from_json(obj)


def _realm_answer(obj: Any) -> object:
    from xchat.crypto.recovery import open_response

    w = _backup_world()
    return open_response(w["realm_pub"], "info", w["record"], w["nonce"], obj)


def _backup_segment(data: bytes) -> object:
    from xchat.client.archive import decode_segment

    return decode_segment(data, BACKUP_ADDRESS)


def _backup_manifest(data: bytes) -> object:
    from xchat.client.archive import open_manifest

    return open_manifest(BACKUP_SECRET, BACKUP_ADDRESS, data)


def _bw(name: str) -> Callable[[], list[Any]]:
    return lambda: [_backup_world()[name]]


DECODERS: tuple[Decoder, ...] = (
    Decoder("frames", "bytes", _frames, _w("frames")),
    Decoder("frames_send_fast", "bytes", _frames_send, _w("send_frames")),
    Decoder(
        "sealed_unseal",
        "bytes",
        _unseal,
        _w("sealed", "sealed_prekey", "sealed_multi", "sealed_expired_cert"),
    ),
    Decoder("session_decrypt", "bytes", _session_decrypt, _w("normal_message", "normal_message_3")),
    Decoder("session_respond", "bytes", _session_respond, _w("prekey_message")),
    Decoder("prekey_message_parse", "bytes", _prekey_parse, _w("prekey_message")),
    Decoder("ratchet_header", "bytes", _ratchet_header, _w("normal_message", "reply")),
    Decoder("prekey_bundle_json", "json", _bundle, _bundle_seeds),
    Decoder("bundle_response_json", "json", _bundle_response, _bundle_response_seeds),
    Decoder("sender_certificate", "bytes", _certificate, _w("cert_alice", "cert_expired")),
    Decoder(
        "session_record",
        "bytes",
        _session_record,
        _w("alice_session", "alice_session_pending", "bob_session"),
    ),
    Decoder("ratchet_state", "bytes", _ratchet_state, _w("alice_ratchet")),
    Decoder("prekey_records", "bytes", _prekey_records, _record_seeds),
    Decoder("sender_key_state", "bytes", _sk_state, _w("sk_own", "sk_member")),
    Decoder("sender_key_record", "bytes", _sk_record, _w("sk_record")),
    Decoder("sender_key_distribution", "bytes", _sk_distribution, _w("sk_dist")),
    Decoder("sender_key_message", "bytes", _sk_message, _w("sk_msg1", "sk_msg2")),
    Decoder("group_state", "bytes", _group_state, _w("group_state", "group_state2")),
    Decoder(
        "group_update", "bytes", _group_update, _w("group_genesis", "group_rename", "group_add")
    ),
    Decoder("group_history", "bytes", _group_history, _w("group_history")),
    Decoder("group_welcome", "bytes", _group_welcome, _w("group_state2")),
    Decoder("identity_key", "bytes", _identity_key, _identity_seeds),
    Decoder("address", "text", _address, _address_seeds),
    Decoder("mnemonic", "text", _mnemonic, _mnemonic_seeds),
    Decoder("padding_unpad", "bytes", _unpad, _w("padded")),
    Decoder("attachment_decrypt", "bytes", _attachment, _att_seeds),
    Decoder("attachment_stream", "bytes", _attachment_stream, _att_seeds),
    Decoder("client_content", "bytes", _content, _w("content")),
    Decoder("file_manifest_json", "json", _manifest, _w("manifest")),
    Decoder("image_metadata_strip", "bytes", _image, _image_seeds),
    Decoder("server_bearer_token", "text", _token, _token_seeds),
    Decoder("server_challenge", "bytes", _challenge, _challenge_seeds),
    Decoder("realm_registration_json", "json", _realm_registration, _bw("registration")),
    Decoder("realm_answer_json", "json", _realm_answer, _bw("answer")),
    Decoder("backup_segment", "bytes", _backup_segment, _bw("segment")),
    Decoder("backup_manifest", "bytes", _backup_manifest, _bw("manifest")),
)

BY_NAME: dict[str, Decoder] = {d.name: d for d in DECODERS}


def as_input(decoder: Decoder, data: bytes) -> Any:
    """Turn raw fuzzer bytes into the decoder's input kind (used by the atheris targets).

    ``json`` inputs that do not parse are returned as ``None`` (the caller skips them:
    a JSON syntax error is the HTTP client's problem, not the decoder's).
    """
    if decoder.kind == "bytes":
        return data
    text = data.decode("utf-8", "surrogatepass") if _utf8ok(data) else data.decode("latin-1")
    if decoder.kind == "text":
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _utf8ok(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True
