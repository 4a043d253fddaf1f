"""Crypto misuse: replays, re-addressed envelopes, stale certificates, version downgrades
(RELIABILITY.md §5). Samples come from the shared fuzz world (fuzz/xchat_decoders.py).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import xchat_decoders as D
from _rel_helpers import queued_ids, register, send

from xchat.crypto import sealed
from xchat.crypto.certificate import issue_sender_certificate
from xchat.crypto.keys import IdentityKeyPair, decode_address, encode_address
from xchat.crypto.prekeys import (
    InMemoryPreKeyStore,
    KemPreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
)
from xchat.crypto.session import Session
from xchat.errors import (
    CryptoError,
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ExpiredCertificate,
    InvalidCertificate,
    InvalidSignature,
    UnknownPreKey,
    UnsupportedVersion,
    UntrustedIdentity,
)
from xchat.testing import ServerProcess, running_server

W = D.world()
NOW = D.NOW_MS


def bob_session() -> Session:
    return Session.from_bytes(W.bob_session)


# --- replays ------------------------------------------------------------------------------


def test_replayed_sealed_envelope_refused_by_ratchet() -> None:
    """The same sealed envelope delivered twice: sealed sender has no state and opens it
    again, but the ratchet refuses the reused message key (DuplicateMessage)."""
    session = bob_session()
    first = sealed.unseal(W.bob, W.sealed, W.server_pub, NOW)
    assert session.decrypt(first.content) == b"second"
    again = sealed.unseal(W.bob, W.sealed, W.server_pub, NOW)
    with pytest.raises(DuplicateMessage):
        session.decrypt(again.content)


def test_replay_after_persisting_state_still_refused() -> None:
    """A replay after the state was saved and reloaded (a client restart) is still refused."""
    session = bob_session()
    session.decrypt(W.normal_message)
    reloaded = Session.from_bytes(session.to_bytes())
    with pytest.raises(DuplicateMessage):
        reloaded.decrypt(W.normal_message)


def test_replayed_out_of_order_message_refused_once_used() -> None:
    """A skipped-then-delivered message (message key kept) is accepted once, then refused."""
    session = bob_session()
    assert session.decrypt(W.normal_message_3) == b"third"
    assert session.decrypt(W.normal_message) == b"second"
    for msg in (W.normal_message, W.normal_message_3):
        with pytest.raises(DuplicateMessage):
            session.decrypt(msg)


def test_replayed_prekey_message_refused_after_one_time_key_deleted() -> None:
    """PQXDH §3.4: the responder deletes the one-time prekeys a PreKey message used, so the
    same PreKey message cannot set up a second session."""
    store = InMemoryPreKeyStore([W.spk], [W.otk], [W.kem, W.last])
    _, plaintext, used = Session.respond(W.bob, store, W.prekey_message)
    assert plaintext == b"hello bob"
    assert used.one_time_prekey_id is not None
    del store.one_time[used.one_time_prekey_id]
    if not used.kem_last_resort:
        del store.kem[used.kem_prekey_id]
    with pytest.raises(UnknownPreKey):
        Session.respond(W.bob, store, W.prekey_message)


def test_prekey_message_replayed_into_its_own_session_refused() -> None:
    session = Session.from_bytes(W.bob_session_fresh)
    with pytest.raises(DuplicateMessage):
        session.decrypt(W.prekey_message)


# --- re-addressed envelopes ---------------------------------------------------------------


def test_envelope_readdressed_to_another_identity_fails() -> None:
    with pytest.raises(DecryptionError):
        sealed.unseal(W.carol, W.sealed, W.server_pub, NOW)


def test_envelope_readdressed_to_another_device_fails() -> None:
    """The recipient device id is in the AAD: device 2 of the same account cannot open
    device 1's envelope (a relay moving envelopes between devices is detected)."""
    with pytest.raises(DecryptionError):
        sealed.unseal(W.bob, W.sealed, W.server_pub, NOW, own_device_id=2)


def test_multi_recipient_header_paired_with_other_payload_fails() -> None:
    header = W.sealed_multi[: sealed.MULTI_HEADER_LEN]
    shared, _ = sealed.seal_multi(
        W.alice, W.cert_alice, [(W.bob.public, 1)], 1, b"other payload", D._rng(9)
    )
    with pytest.raises(DecryptionError):
        sealed.unseal_multi(W.bob, header, shared, W.server_pub, NOW)


def test_session_message_for_another_session_fails() -> None:
    """Alice's ratchet message to Bob given to Carol's session with Alice."""
    rng = D._rng(77)
    carol_spk = SignedPreKeyRecord.generate(W.carol, 1, rng)
    carol_kem = KemPreKeyRecord.generate(W.carol, 2, last_resort=True, rng=rng)
    bundle = PreKeyBundle.from_records(W.carol.public, 1, carol_spk, carol_kem)
    to_carol = Session.initiate(W.alice, bundle, rng)
    first = to_carol.encrypt(b"hi carol")
    carol_session, _, _ = Session.respond(
        W.carol, InMemoryPreKeyStore([carol_spk], [], [carol_kem]), first, rng
    )
    with pytest.raises(DecryptionError):
        carol_session.decrypt(W.normal_message)


# --- sender certificates ------------------------------------------------------------------


def test_expired_certificate_refused() -> None:
    with pytest.raises(ExpiredCertificate):
        sealed.unseal(W.bob, W.sealed_expired_cert, W.server_pub, NOW)


def test_certificate_used_after_its_expiry_refused() -> None:
    """A certificate valid when sealed, opened after it expired (an old captured envelope)."""
    with pytest.raises(ExpiredCertificate):
        sealed.unseal(W.bob, W.sealed, W.server_pub, NOW + D.DAY_MS + 1)


def test_certificate_from_another_server_refused() -> None:
    other_server = IdentityKeyPair.generate().ed25519_private.public_key().public_bytes_raw()
    with pytest.raises(InvalidCertificate):
        sealed.unseal(W.bob, W.sealed, other_server, NOW)


def test_certificate_of_another_identity_refused() -> None:
    """Mallory seals with Alice's (genuine) certificate: the static key that authenticated
    the envelope is Mallory's, so the recipient refuses it."""
    mallory = IdentityKeyPair.generate()
    with pytest.raises(UntrustedIdentity):
        sealed.seal(mallory, W.cert_alice, W.bob.public, 1, b"x")  # refused at the sender
    inner = W.cert_alice + bytes([1]) + b"forged"
    envelope = sealed._wrap(sealed.SEALED_VERSION, mallory, W.bob.public, 1, inner, b"", os.urandom)
    with pytest.raises(UntrustedIdentity):
        sealed.unseal(W.bob, envelope, W.server_pub, NOW)


def test_certificate_for_other_device_still_names_sender() -> None:
    cert = issue_sender_certificate(W.server_key, W.alice.public, 7, NOW + 1000)
    env = sealed.seal(W.alice, cert, W.bob.public, 1, b"x")
    assert sealed.unseal(W.bob, env, W.server_pub, NOW).device_id == 7


# --- version downgrades -------------------------------------------------------------------


def _set(data: bytes, index: int, value: int) -> bytes:
    out = bytearray(data)
    out[index] = value
    return bytes(out)


def _run_session_decrypt(data: bytes) -> object:
    return bob_session().decrypt(data)


# (name, sample, version byte index, current value, decoder, errors other than DecodeError
# allowed because the byte then names another *valid* structure that fails authentication)
VERSIONED: list[tuple[str, bytes, int, Callable[[bytes], object], tuple[type, ...]]] = [
    ("identity_key", W.alice.public.encode(), 0, D.BY_NAME["identity_key"].run, ()),
    ("sender_certificate", W.cert_alice, 0, D.BY_NAME["sender_certificate"].run, ()),
    ("sealed_envelope", W.sealed, 0, D.BY_NAME["sealed_unseal"].run, (DecryptionError,)),
    ("sealed_multi", W.sealed_multi, 0, D.BY_NAME["sealed_unseal"].run, (DecryptionError,)),
    ("ratchet_message", W.normal_message, 0, _run_session_decrypt, ()),
    ("prekey_message", W.prekey_message, 0, D.BY_NAME["session_respond"].run, ()),
    ("session_record", W.alice_session, 0, D.BY_NAME["session_record"].run, ()),
    ("signed_prekey_record", W.spk.to_bytes(), 0, type(W.spk).from_bytes, ()),
    ("one_time_prekey_record", W.otk.to_bytes(), 0, type(W.otk).from_bytes, ()),
    ("kem_prekey_record", W.kem.to_bytes(), 0, type(W.kem).from_bytes, ()),
    ("sender_key_message", W.sk_msg1, 0, D.BY_NAME["sender_key_message"].run, ()),
    ("sender_key_distribution", W.sk_dist, 0, D.BY_NAME["sender_key_distribution"].run, ()),
    ("sender_key_state", W.sk_own, 0, D.BY_NAME["sender_key_state"].run, ()),
    ("sender_key_record", W.sk_record, 0, D.BY_NAME["sender_key_record"].run, ()),
    ("group_update", W.group_rename, 0, D.BY_NAME["group_update"].run, ()),
    ("group_state", W.group_state, 0, D.BY_NAME["group_state"].run, ()),
    ("group_history", W.group_history, 0, D.BY_NAME["group_history"].run, ()),
]


@pytest.mark.parametrize("name", [v[0] for v in VERSIONED])
def test_every_other_version_byte_refused(name: str) -> None:
    _, sample, index, decode, also = next(v for v in VERSIONED if v[0] == name)
    decode(sample)  # the genuine one is fine (or fails only for a documented reason)
    current = sample[index]
    for value in range(256):
        if value == current:
            continue
        try:
            decode(_set(sample, index, value))
        except (DecodeError, *also):
            continue
        except Exception as exc:
            raise AssertionError(f"{name} v{value}: {type(exc).__name__}: {exc}") from None
        raise AssertionError(f"{name}: version byte {value} was accepted")


def test_version_byte_errors_are_unsupported_version() -> None:
    """A *future* version (current + 1) is reported as UnsupportedVersion, so a client can
    say "update the app" rather than "corrupt message"."""
    loose = {"sealed_envelope", "sealed_multi"}  # 0x01 <-> 0x02 name each other
    for name, sample, index, decode, _ in VERSIONED:
        if name in loose:
            continue
        with pytest.raises(UnsupportedVersion):
            decode(_set(sample, index, (sample[index] + 1) % 256 or 0x7F))


def test_sealed_future_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion):
        sealed.unseal(W.bob, _set(W.sealed, 0, 0x03), W.server_pub, NOW)


def test_message_type_swap_refused() -> None:
    """Relabelling a normal message as a PreKey message (or back) never decrypts."""
    swapped = _set(W.normal_message, 1, W.prekey_message[1])
    with pytest.raises(CryptoError):
        bob_session().decrypt(swapped)
    swapped = _set(W.prekey_message, 1, W.normal_message[1])
    with pytest.raises(CryptoError):  # parsed as a normal header: TooManySkipped/Decryption
        bob_session().decrypt(swapped)


def test_address_version_refused() -> None:
    from bech32m.codecs import Encoding, bech32_encode, convertbits

    digest = decode_address(W.alice.public.address())
    assert encode_address(digest) == W.alice.public.address()
    for version in (1, 2, 0x10, 0xFF):
        data = convertbits(bytes([version]) + digest, 8, 5, True)
        forged = bech32_encode("xc", data, Encoding.BECH32M)
        with pytest.raises(DecodeError):
            decode_address(forged)


def test_content_version_refused() -> None:
    from xchat.client.content import Content

    for v in (0, 2, "1", None, 1.5):
        raw = W.content[0].replace(b'"v": 1', b'"v": ' + repr(v).encode().replace(b"'", b'"'))
        raw = raw.replace(b"None", b"null")
        with pytest.raises(DecodeError):
            Content.decode(raw)


def test_no_classical_only_downgrade() -> None:
    """A bundle without its ML-KEM prekey (a server stripping PQ to force classical X3DH) is
    refused at parse time; PQXDH has no fallback."""
    bundle = W.bundle.to_json()
    for mutate in (
        lambda b: b.pop("kem_prekey"),
        lambda b: b["kem_prekey"].pop("key"),
        lambda b: b["kem_prekey"].__setitem__("key", base64.b64encode(bytes(1569)).decode()),
        lambda b: b["kem_prekey"].__setitem__("signature", base64.b64encode(bytes(64)).decode()),
    ):
        doc = copy.deepcopy(bundle)
        mutate(doc)
        with pytest.raises((DecodeError, InvalidSignature)):
            D.BY_NAME["prekey_bundle_json"].run(doc)


# --- server-side envelope-id dedupe -------------------------------------------------------


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("misuse"), pow_bits=4, rate_limits=False) as s:
        yield s


def test_server_dedupes_envelope_ids(relay: ServerProcess) -> None:
    """A re-sent (device, envelope_id) is stored once (PROTOCOL Part III §5), over HTTP and over the
    WebSocket, so a network-level replay of a send cannot double-deliver."""
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        bob = register(c)
        env_id = os.urandom(16)
        for _ in range(3):
            assert send(c, bob, b"once", env_id).status_code == 200
        assert queued_ids(c, bob).count(env_id) == 1


async def test_server_dedupes_envelope_ids_over_ws(relay: ServerProcess) -> None:
    import asyncio

    from _relay_helpers import ws_connect
    from xchat.protocol import frames as F

    with httpx.Client(base_url=relay.url, timeout=10) as c:
        bob = register(c)
    env_id = os.urandom(16)
    dest = F.Destination(
        bob.address, F.TokenAccess(bob.delivery_token), (F.OutEnvelope(1, env_id, b"once"),)
    )
    ws = await ws_connect(relay.ws_url)
    try:
        for req in range(3):
            await ws.send(F.encode_frame(F.Send(req, (dest,))))
            result: Any = F.decode_frame(await asyncio.wait_for(ws.recv(), 5))
            assert isinstance(result, F.SendResult) and result.status == 200, result
    finally:
        await ws.close()
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        assert queued_ids(c, bob).count(env_id) == 1
