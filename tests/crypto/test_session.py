"""Session API end to end: setup, delivery orders, tampering, identities, FS/PCS, persistence."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xchat.crypto import constants as C
from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.prekeys import (
    InMemoryPreKeyStore,
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
)
from xchat.crypto.ratchet import kdf_ck, message_key_material
from xchat.crypto.session import (
    NORMAL,
    PREKEY,
    PREKEY_HEADER_LEN,
    PreKeyMessage,
    Session,
    message_kind,
)
from xchat.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    InvalidSignature,
    TooLarge,
    UnknownPreKey,
    UnsupportedVersion,
    XChatError,
)


def rng_of(seed: int) -> Any:
    return random.Random(seed).randbytes


class Device:
    """An identity with a prekey store, as a client would hold it."""

    def __init__(self, seed: int) -> None:
        rng = rng_of(seed)
        self.identity = IdentityKeyPair.generate(rng)
        self.spk = SignedPreKeyRecord.generate(self.identity, 1, rng)
        self.last_resort = KemPreKeyRecord.generate(self.identity, 100, last_resort=True, rng=rng)
        self.kem = KemPreKeyRecord.generate(self.identity, 2, last_resort=False, rng=rng)
        self.otks = [OneTimePreKeyRecord.generate(10 + i, rng) for i in range(3)]
        self.store = InMemoryPreKeyStore([self.spk], self.otks, [self.kem, self.last_resort])

    def bundle(self, *, one_time: bool = True, last_resort: bool = False) -> PreKeyBundle:
        return PreKeyBundle.from_records(
            self.identity.public,
            1,
            self.spk,
            self.last_resort if last_resort else self.kem,
            self.otks[0] if one_time else None,
        )


ALICE = Device(1)
BOB = Device(2)
CAROL = Device(3)


def fresh_pair(seed: int = 0) -> tuple[Session, Session]:
    alice = Session.initiate(ALICE.identity, BOB.bundle(), rng_of(seed))
    bob, pt, _ = Session.respond(BOB.identity, BOB.store, alice.encrypt(b"hello"), rng_of(seed + 1))
    assert pt == b"hello"
    alice.decrypt(bob.encrypt(b"hi"), rng_of(seed + 2))
    return alice, bob


# --- setup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("one_time", [True, False])
@pytest.mark.parametrize("last_resort", [True, False])
def test_setup_and_used_prekeys(one_time: bool, last_resort: bool) -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle(one_time=one_time, last_resort=last_resort))
    assert alice.awaiting_reply and alice.remote_identity == BOB.identity.public
    first = alice.encrypt(b"first")
    assert message_kind(first) == PREKEY
    bob, pt, used = Session.respond(BOB.identity, BOB.store, first)
    assert pt == b"first" and bob.remote_identity == ALICE.identity.public
    assert used.signed_prekey_id == 1
    assert used.kem_prekey_id == (100 if last_resort else 2)
    assert used.kem_last_resort is last_resort
    assert used.one_time_prekey_id == (10 if one_time else None)
    reply = bob.encrypt(b"reply")
    assert message_kind(reply) == NORMAL
    assert alice.decrypt(reply) == b"reply"
    assert not alice.awaiting_reply
    assert message_kind(alice.encrypt(b"now normal")) == NORMAL


def test_prekey_message_layout() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle())
    data = alice.encrypt(b"x")
    msg = PreKeyMessage.parse(data)
    assert data[:2] == b"\x01\x02" and data[2:67] == ALICE.identity.public.encode()
    assert msg.base_key == alice.base_key == data[67:99]
    assert (msg.signed_prekey_id, msg.kem_prekey_id, msg.one_time_prekey_id) == (1, 2, 10)
    assert data[107] == 1 and len(msg.kem_ciphertext) == 1568
    assert msg.message == data[PREKEY_HEADER_LEN:] and message_kind(msg.message) == NORMAL


def test_forged_bundle_signature_refused() -> None:
    bundle = BOB.bundle()
    sig = bytearray(bundle.signed_prekey_signature)
    sig[10] ^= 4
    with pytest.raises(InvalidSignature):
        Session.initiate(
            ALICE.identity, dataclasses.replace(bundle, signed_prekey_signature=bytes(sig))
        )


def test_unknown_prekeys() -> None:
    for store in (
        InMemoryPreKeyStore([BOB.spk], [], [BOB.kem]),  # one-time key already used
        InMemoryPreKeyStore([], BOB.otks, [BOB.kem]),  # signed prekey rotated away
        InMemoryPreKeyStore([BOB.spk], BOB.otks, []),  # KEM key used
    ):
        alice = Session.initiate(ALICE.identity, BOB.bundle())
        with pytest.raises(UnknownPreKey):
            Session.respond(BOB.identity, store, alice.encrypt(b"x"))


def test_wrong_recipient_and_substituted_sender() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle())
    first = alice.encrypt(b"for bob")
    # Carol holds prekeys with the same ids but is not Bob
    with pytest.raises(DecryptionError):
        Session.respond(CAROL.identity, CAROL.store, first)
    # Mallory rewrites the sender identity to claim the message as hers
    forged = first[:2] + CAROL.identity.public.encode() + first[67:]
    with pytest.raises(DecryptionError):
        Session.respond(BOB.identity, BOB.store, forged)
    # a normal message of one session is meaningless in another
    a1, _b1 = fresh_pair(10)
    _a2, b2 = fresh_pair(20)
    with pytest.raises(XChatError):
        b2.decrypt(a1.encrypt(b"x"))


def test_later_prekey_messages_go_to_the_existing_session() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle())
    m1, m2, m3 = (alice.encrypt(b"%d" % i) for i in range(3))
    bob, pt, _ = Session.respond(BOB.identity, BOB.store, m2)
    assert pt == b"1"
    assert bob.matches_prekey_message(m1) and bob.matches_prekey_message(m3)
    assert bob.decrypt(m3) == b"2" and bob.decrypt(m1) == b"0"
    with pytest.raises(DuplicateMessage):
        bob.decrypt(m2)
    other = Session.initiate(ALICE.identity, BOB.bundle()).encrypt(b"new run")
    assert not bob.matches_prekey_message(other)
    with pytest.raises(DecryptionError):
        bob.decrypt(other)
    assert not alice.matches_prekey_message(m1)  # the initiator never takes PreKey messages


# --- tampering -----------------------------------------------------------------------------


def test_every_byte_flip_of_a_prekey_message_is_rejected() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle(), rng_of(5))
    first, second = alice.encrypt(b"first" * 10), alice.encrypt(b"second")
    bob, _, _ = Session.respond(BOB.identity, BOB.store, first)
    snapshot = bob.to_bytes()
    for i in range(len(first)):
        flipped = first[:i] + bytes([first[i] ^ 0x01]) + first[i + 1 :]
        with pytest.raises(XChatError):
            Session.respond(BOB.identity, BOB.store, flipped)
    for i in range(len(second)):  # into the established session
        flipped = second[:i] + bytes([second[i] ^ 0x80]) + second[i + 1 :]
        with pytest.raises(XChatError):
            bob.decrypt(flipped)
        assert bob.to_bytes() == snapshot
    assert bob.decrypt(second) == b"second"


def test_every_byte_flip_of_a_normal_message_is_rejected() -> None:
    alice, bob = fresh_pair(6)
    for text in (b"in order", b""):
        msg = alice.encrypt(text)
        snapshot = bob.to_bytes()
        for i in range(len(msg)):
            for bit in (0x01, 0x80):
                flipped = msg[:i] + bytes([msg[i] ^ bit]) + msg[i + 1 :]
                with pytest.raises(XChatError):
                    bob.decrypt(flipped)
                assert bob.to_bytes() == snapshot
        assert bob.decrypt(msg) == text
    # and after a ratchet step (new ratchet key in the header)
    alice.decrypt(bob.encrypt(b"turn"))
    msg = alice.encrypt(b"stepped")
    snapshot = bob.to_bytes()
    for i in range(len(msg)):
        with pytest.raises(XChatError):
            bob.decrypt(msg[:i] + bytes([msg[i] ^ 0x10]) + msg[i + 1 :])
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(msg) == b"stepped"


def test_truncations_and_extensions_rejected() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle(), rng_of(7))
    first = alice.encrypt(b"abc")
    for n in range(len(first)):
        with pytest.raises(XChatError):
            Session.respond(BOB.identity, BOB.store, first[:n])
    with pytest.raises(XChatError):
        Session.respond(BOB.identity, BOB.store, first + b"\x00")
    bob, _, _ = Session.respond(BOB.identity, BOB.store, first)
    reply = bob.encrypt(b"xyz")
    for n in range(len(reply)):
        with pytest.raises(XChatError):
            alice.decrypt(reply[:n])
    with pytest.raises(XChatError):
        alice.decrypt(reply + b"\x00")
    assert alice.decrypt(reply) == b"xyz"


def test_kinds_versions_and_sizes() -> None:
    alice, bob = fresh_pair(8)
    msg = alice.encrypt(b"x")
    with pytest.raises(UnsupportedVersion):
        message_kind(b"\x02" + msg[1:])
    with pytest.raises(UnsupportedVersion):
        bob.decrypt(b"\x02" + msg[1:])
    with pytest.raises(DecodeError):
        message_kind(b"\x01\x07")
    with pytest.raises(DecodeError):
        message_kind(b"\x01")
    with pytest.raises(TooLarge):
        bob.decrypt(msg + b"\x00" * C.MAX_MESSAGE_LEN)
    with pytest.raises(TooLarge):
        PreKeyMessage.parse(b"\x01\x02" + b"\x00" * C.MAX_MESSAGE_LEN)
    with pytest.raises(TooLarge):
        alice.encrypt(b"\x00" * C.MAX_MESSAGE_LEN)
    big = b"\xaa" * (C.MAX_MESSAGE_LEN - PREKEY_HEADER_LEN - 58)
    assert bob.decrypt(alice.encrypt(big)) == big


# --- FS / PCS ------------------------------------------------------------------------------


def test_forward_secrecy_message_key_not_in_state() -> None:
    alice, bob = fresh_pair(9)
    cks = alice._ratchet.cks  # private on purpose: the test inspects the ratchet's state
    assert cks is not None
    _, mk = kdf_ck(cks)
    aes_key, _ = message_key_material(mk)
    msg = alice.encrypt(b"secret")
    assert bob.decrypt(msg) == b"secret"
    state = bob.to_bytes()
    assert mk not in state and aes_key not in state and cks not in state


def test_post_compromise_security() -> None:
    alice, bob = fresh_pair(11)
    stolen = bob.to_bytes()  # attacker copies Bob's whole state
    assert bob.decrypt(alice.encrypt(b"a1")) == b"a1"
    attacker = Session.from_bytes(stolen)
    # one round trip of DH ratchet steps, with fresh randomness the attacker never saw
    assert alice.decrypt(bob.encrypt(b"b1")) == b"b1"
    late = alice.encrypt(b"after healing")
    assert bob.decrypt(late) == b"after healing"
    with pytest.raises(DecryptionError):
        attacker.decrypt(late, rng_of(12345))
    # even an attacker who followed every message it could
    alice2, bob2 = fresh_pair(13)
    stolen2 = bob2.to_bytes()
    m1 = alice2.encrypt(b"a")
    follower = Session.from_bytes(stolen2)
    assert follower.decrypt(m1, rng_of(1)) == b"a"  # before healing: compromised, as expected
    assert bob2.decrypt(m1) == b"a"
    alice2.decrypt(bob2.encrypt(b"b"))
    with pytest.raises(DecryptionError):
        follower.decrypt(alice2.encrypt(b"healed"))


# --- persistence ---------------------------------------------------------------------------


def test_session_serialization_round_trip() -> None:
    alice = Session.initiate(ALICE.identity, BOB.bundle(), rng_of(14))
    first = alice.encrypt(b"1")
    alice = Session.from_bytes(alice.to_bytes())
    assert alice.awaiting_reply
    second = alice.encrypt(b"2")
    bob, _, _ = Session.respond(BOB.identity, BOB.store, second)
    bob = Session.from_bytes(bob.to_bytes())
    assert bob.matches_prekey_message(first) and bob.decrypt(first) == b"1"
    data = bob.to_bytes()
    assert Session.from_bytes(data).to_bytes() == data
    alice.decrypt(bob.encrypt(b"3"))
    alice = Session.from_bytes(alice.to_bytes())
    assert not alice.awaiting_reply
    assert alice.remote_identity == BOB.identity.public
    assert alice.local_identity == ALICE.identity.public
    assert Session.from_bytes(bob.to_bytes()).decrypt(alice.encrypt(b"4")) == b"4"


def test_session_record_rejects_garbage() -> None:
    alice, bob = fresh_pair(15)
    for record in (
        alice.to_bytes(),
        bob.to_bytes(),
        Session.initiate(ALICE.identity, BOB.bundle()).to_bytes(),
    ):
        with pytest.raises(UnsupportedVersion):
            Session.from_bytes(b"\x09" + record[1:])
        for n in range(0, len(record), 7):
            with pytest.raises(XChatError):
                Session.from_bytes(record[:n])
        with pytest.raises(DecodeError):
            Session.from_bytes(record + b"\x00")
        with pytest.raises(DecodeError):
            Session.from_bytes(record[:1] + b"\x80" + record[2:])
    with pytest.raises(TooLarge):
        Session.from_bytes(b"\x01" * (C.MAX_SESSION_RECORD_LEN + 1))


# --- property: any delivery order and loss -------------------------------------------------


class Conversation:
    """Alice and Bob with in-flight queues; Bob's session starts at first delivery."""

    def __init__(self, seed: int) -> None:
        self.rng = rng_of(seed)
        self.alice = Session.initiate(ALICE.identity, BOB.bundle(), self.rng)
        self.bob: Session | None = None
        self.to_bob: list[tuple[bytes, bytes]] = []
        self.to_alice: list[tuple[bytes, bytes]] = []
        self.delivered: list[tuple[str, bytes]] = []
        self.ratchet_keys: dict[str, list[bytes]] = {"a": [], "b": []}  # distinct, in order
        self.count = 0

    @staticmethod
    def ratchet_key(data: bytes) -> bytes:
        inner = PreKeyMessage.parse(data).message if message_kind(data) == PREKEY else data
        return inner[2:34]

    def send(self, who: str) -> None:
        self.count += 1
        text = b"%s-%d" % (who.encode(), self.count)
        if who == "a":
            self.to_bob.append((self.alice.encrypt(text), text))
        elif self.bob is not None:
            self.to_alice.append((self.bob.encrypt(text), text))

    def deliver(self, who: str, index: int) -> None:
        queue = self.to_bob if who == "b" else self.to_alice
        if not queue:
            return
        data, text = queue.pop(index % len(queue))
        if who == "b" and self.bob is None:
            self.bob, got, _ = Session.respond(BOB.identity, BOB.store, data, self.rng)
        else:
            receiver = self.bob if who == "b" else self.alice
            assert receiver is not None
            got = receiver.decrypt(data, self.rng)
        assert got == text
        self.delivered.append((who, data))
        key = self.ratchet_key(data)
        if key not in self.ratchet_keys[who]:
            self.ratchet_keys[who].append(key)

    def replay(self, index: int) -> None:
        if not self.delivered:
            return
        who, data = self.delivered[index % len(self.delivered)]
        receiver = self.bob if who == "b" else self.alice
        assert receiver is not None
        snapshot = receiver.to_bytes()
        # the receiver remembers its current and MAX_PREVIOUS_RATCHET_KEYS retired keys
        recent_keys = self.ratchet_keys[who][-(C.MAX_PREVIOUS_RATCHET_KEYS + 1) :]
        recent = self.ratchet_key(data) in recent_keys
        with pytest.raises(DuplicateMessage if recent else (DuplicateMessage, DecryptionError)):
            receiver.decrypt(data, self.rng)
        assert receiver.to_bytes() == snapshot


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["send_a", "send_b", "deliver_b", "deliver_a", "drop", "replay", "persist"]
        ),
        st.integers(0, 1000),
    ),
    min_size=5,
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), actions=ACTIONS)
def test_any_delivery_order_and_loss(seed: int, actions: list[tuple[str, int]]) -> None:
    conv = Conversation(seed)
    conv.send("a")
    for action, arg in actions:
        if action == "send_a":
            conv.send("a")
        elif action == "send_b":
            conv.send("b")
        elif action == "deliver_b":
            conv.deliver("b", arg)
        elif action == "deliver_a":
            conv.deliver("a", arg)
        elif action == "drop":
            queue = conv.to_bob if arg % 2 else conv.to_alice
            if queue:
                queue.pop(arg % len(queue))
        elif action == "persist":  # store and reload one side mid-conversation
            if arg % 2:
                conv.alice = Session.from_bytes(conv.alice.to_bytes())
            elif conv.bob is not None:
                conv.bob = Session.from_bytes(conv.bob.to_bytes())
        else:
            conv.replay(arg)
    # everything still in flight arrives at the end, in reverse order
    while conv.to_bob or conv.to_alice:
        if conv.to_bob:
            conv.deliver("b", len(conv.to_bob) - 1)
        if conv.to_alice:
            conv.deliver("a", len(conv.to_alice) - 1)
    # and the session is still healthy both ways
    if conv.bob is not None:
        assert conv.bob.decrypt(conv.alice.encrypt(b"final-a")) == b"final-a"
        assert conv.alice.decrypt(conv.bob.encrypt(b"final-b")) == b"final-b"
