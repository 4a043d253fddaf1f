"""Sender keys (PROTOCOL.md Part V §2): chain, wire format, windows, persistence."""

from __future__ import annotations

import contextlib
import hashlib
import hmac as std_hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto import sender_keys as sk
from xchat.crypto.sender_keys import (
    DISTRIBUTION_LEN,
    MAX_FORWARD_JUMPS,
    MAX_MESSAGE_KEYS,
    MAX_SENDER_KEY_STATES,
    MESSAGE_OVERHEAD,
    SenderKeyRecord,
    SenderKeyState,
    parse_header,
)
from xchat.errors import (
    CryptoError,
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ProtocolError,
    TooLarge,
    TooManySkipped,
    UnknownSenderKey,
    UnsupportedVersion,
    XChatError,
)

GROUP = bytes(range(16))


def counter_rng(seed: int = 0):  # type: ignore[no-untyped-def]
    """Deterministic rng for known-answer tests."""
    state = {"n": seed}

    def rng(n: int) -> bytes:
        state["n"] += 1
        return hashlib.sha512(state["n"].to_bytes(8, "big")).digest()[:n]

    return rng


def pair() -> tuple[SenderKeyState, SenderKeyState]:
    sender = SenderKeyState.generate(GROUP)
    return sender, SenderKeyState.from_distribution(sender.distribution_message())


def advance(state: SenderKeyState, steps: int) -> None:
    """Move an own chain forward without sending (to reach far iterations quickly)."""
    for _ in range(steps):  # the chain's own step (private on purpose: no message made)
        _, state.chain_key = sk._chain_step(state.chain_key)
    state.iteration += steps


def test_round_trip_and_sizes() -> None:
    sender, receiver = pair()
    assert len(sender.distribution_message()) == DISTRIBUTION_LEN == 57
    assert MESSAGE_OVERHEAD == 41
    for i in range(5):
        msg = sender.encrypt(b"hello %d" % i)
        assert len(msg) == MESSAGE_OVERHEAD + len(b"hello %d" % i)
        assert parse_header(msg).iteration == i
        assert receiver.decrypt(msg) == b"hello %d" % i
    assert receiver.iteration == sender.iteration == 5


def test_known_answer_matches_spec() -> None:
    """Recompute one message from PROTOCOL Part V §2.2 with bare primitives: the layout, labels
    and KDF cannot drift without this failing."""
    rng = counter_rng()
    sender = SenderKeyState.generate(GROUP, rng)
    rng2 = counter_rng()
    key_id = struct.unpack(">I", rng2(4))[0]
    chain_key = rng2(32)
    assert (sender.key_id, sender.chain_key) == (key_id, chain_key)
    message = sender.encrypt(b"known answer")

    mk = std_hmac.digest(chain_key, b"\x01", "sha256")
    okm = HKDF(hashes.SHA256(), 44, None, b"XChat-v1-sender-key-message-keys").derive(mk)
    header = b"\x02" + GROUP + struct.pack(">II", key_id, 0)
    expected = header + AESGCM(okm[:32]).encrypt(okm[32:], b"known answer", header)
    assert message == expected
    assert sender.chain_key == std_hmac.digest(chain_key, b"\x02", "sha256")
    distribution = SenderKeyState.generate(GROUP, counter_rng()).distribution_message()
    assert distribution == b"\x02" + GROUP + struct.pack(">II", key_id, 0) + chain_key


@settings(max_examples=40, deadline=None)
@given(
    order=st.permutations(list(range(12))),
    repeats=st.lists(st.integers(0, 11), max_size=6),
)
def test_out_of_order_exactly_once(order: list[int], repeats: list[int]) -> None:
    sender, receiver = pair()
    messages = [sender.encrypt(b"m%d" % i) for i in range(12)]
    seen: set[int] = set()
    schedule = list(order)
    for r in repeats:  # redeliveries interleaved after the first copy
        schedule.insert(schedule.index(r) + 1, r)
    for index in schedule:
        if index in seen:
            with pytest.raises(DuplicateMessage):
                receiver.decrypt(messages[index])
        else:
            assert receiver.decrypt(messages[index]) == b"m%d" % index
            seen.add(index)
    assert seen == set(range(12))
    assert receiver.skipped == {}


def test_replay_refused_and_used_keys_deleted() -> None:
    sender, receiver = pair()
    first, second = sender.encrypt(b"a"), sender.encrypt(b"b")
    assert receiver.decrypt(second) == b"b"
    assert set(receiver.skipped) == {0}
    assert receiver.decrypt(first) == b"a"
    assert receiver.skipped == {}
    for msg in (first, second):
        with pytest.raises(DuplicateMessage):
            receiver.decrypt(msg)


def test_every_byte_flip_rejected_without_state_change() -> None:
    sender, receiver = pair()
    sender.encrypt(b"skip me")
    message = sender.encrypt(b"x" * 40)
    before = receiver.to_bytes()
    for position in range(len(message)):
        for flip in (0x01, 0x80):
            tampered = bytearray(message)
            tampered[position] ^= flip
            with pytest.raises(CryptoError):
                receiver.decrypt(bytes(tampered))
            assert receiver.to_bytes() == before
    for cut in (0, 1, MESSAGE_OVERHEAD - 1, len(message) - 1):
        with pytest.raises(CryptoError):
            receiver.decrypt(message[:cut])
    assert receiver.decrypt(message) == b"x" * 40


def test_a_members_copy_cannot_send() -> None:
    """A chain from a distribution message is receive-only, also after a store round trip.

    That a member cannot *speak under* another member's chain is not this module's job: the
    chain is chosen by the authenticated sealed sender (tests/client/test_group_forgery.py).
    """
    sender, receiver = pair()
    for chain in (receiver, SenderKeyState.from_bytes(receiver.to_bytes())):
        assert not chain.is_own
        with pytest.raises(ProtocolError):
            chain.encrypt(b"I am the sender")
    assert SenderKeyState.from_bytes(sender.to_bytes()).is_own


def test_version_1_states_are_still_read() -> None:
    """A store written before version 2 (per-chain signing keys) keeps its chains."""
    sender, receiver = pair()
    receiver.decrypt(sender.encrypt(b"a") and sender.encrypt(b"b"))
    signing_public = bytes(32)
    for chain, private in ((sender, bytes(32)), (receiver, b"")):
        v2 = chain.to_bytes()
        fixed = 1 + 1 + 16 + 12 + 32
        v1 = b"\x01" + v2[1:fixed] + signing_public + private + v2[fixed:]
        restored = SenderKeyState.from_bytes(v1)
        assert restored.to_bytes() == v2
    assert SenderKeyState.from_bytes(receiver.to_bytes()).decrypt(sender.encrypt(b"c")) == b"c"


def test_version_1_messages_are_refused() -> None:
    sender, receiver = pair()
    message = sender.encrypt(b"v")
    with pytest.raises(UnsupportedVersion):
        receiver.decrypt(b"\x01" + message[1:] + bytes(64))


def test_forward_jump_limit_and_eviction() -> None:
    sender, receiver = pair()
    early = sender.encrypt(b"early")
    advance(sender, MAX_FORWARD_JUMPS)
    with pytest.raises(TooManySkipped):
        receiver.decrypt(sender.encrypt(b"too far"))
    assert receiver.iteration == 0
    sender2, receiver2 = pair()
    old = sender2.encrypt(b"old")
    advance(sender2, MAX_MESSAGE_KEYS + 10)
    assert receiver2.decrypt(sender2.encrypt(b"new")) == b"new"
    assert len(receiver2.skipped) == MAX_MESSAGE_KEYS
    with pytest.raises(DuplicateMessage):  # its key was evicted
        receiver2.decrypt(old)
    assert receiver.decrypt(early) == b"early"


def test_new_member_cannot_read_earlier_messages() -> None:
    sender, old_member = pair()
    history = [sender.encrypt(b"before %d" % i) for i in range(3)]
    newcomer = SenderKeyState.from_distribution(sender.distribution_message())
    later = sender.encrypt(b"after")
    for msg in history:
        assert old_member.decrypt(msg).startswith(b"before")
        with pytest.raises(DecryptionError):
            newcomer.decrypt(msg)
    assert newcomer.decrypt(later) == b"after"


def test_rotation_locks_out_removed_member() -> None:
    sender = SenderKeyState.generate(GROUP)
    removed, staying = SenderKeyRecord(), SenderKeyRecord()
    for record in (removed, staying):
        record.add(SenderKeyState.from_distribution(sender.distribution_message()))
    assert removed.decrypt(sender.encrypt(b"while a member")) == b"while a member"
    staying.decrypt(sender.encrypt(b"skipped by removed"))
    rotated = SenderKeyState.generate(GROUP)
    assert staying.add(SenderKeyState.from_distribution(rotated.distribution_message()))
    secret = rotated.encrypt(b"after removal")
    with pytest.raises(UnknownSenderKey):
        removed.decrypt(secret)
    # even a message re-labelled with the old key id does not open under the old chain
    relabelled = secret[:17] + struct.pack(">I", sender.key_id) + secret[21:]
    with pytest.raises(CryptoError):
        removed.decrypt(relabelled)
    assert staying.decrypt(secret) == b"after removal"


def test_encrypt_refusals() -> None:
    sender, receiver = pair()
    with pytest.raises(ProtocolError):
        receiver.encrypt(b"not mine")
    with pytest.raises(TooLarge):
        sender.encrypt(b"\0" * (sk.MAX_PLAINTEXT_LEN + 1))
    sender.iteration = sk.MAX_ITERATION + 1
    with pytest.raises(ProtocolError):
        sender.encrypt(b"exhausted")


def test_header_checks() -> None:
    sender, receiver = pair()
    message = sender.encrypt(b"v")
    with pytest.raises(UnsupportedVersion):
        parse_header(b"\x03" + message[1:])
    with pytest.raises(TooLarge):
        parse_header(message[:1] + b"\0" * sk.MAX_MESSAGE_LEN)
    with pytest.raises(DecodeError):
        parse_header(message[:21] + b"\xff\xff\xff\xff" + message[25:])
    other_group = SenderKeyState.generate(b"\x01" * 16)
    with pytest.raises(DecryptionError):
        receiver.decrypt(other_group.encrypt(b"elsewhere"))


def test_state_serialization_round_trip() -> None:
    sender, receiver = pair()
    messages = [sender.encrypt(b"%d" % i) for i in range(6)]
    receiver.decrypt(messages[4])
    restored_sender = SenderKeyState.from_bytes(sender.to_bytes())
    restored = SenderKeyState.from_bytes(receiver.to_bytes())
    assert restored.to_bytes() == receiver.to_bytes()
    assert restored_sender.is_own and not restored.is_own
    for i in (0, 2, 1, 3, 5):
        assert restored.decrypt(messages[i]) == b"%d" % i
    assert restored.decrypt(restored_sender.encrypt(b"next")) == b"next"
    with pytest.raises(DuplicateMessage):
        restored.decrypt(messages[4])


def test_distribution_message_checks() -> None:
    sender, _ = pair()
    dm = sender.distribution_message()
    with pytest.raises(DecodeError):
        SenderKeyState.from_distribution(dm[:-1])
    with pytest.raises(UnsupportedVersion):
        SenderKeyState.from_distribution(b"\x09" + dm[1:])
    with pytest.raises(DecodeError):
        SenderKeyState.from_distribution(dm[:21] + b"\xff" * 4 + dm[25:])


def test_record_behaviour() -> None:
    record = SenderKeyRecord()
    senders = [SenderKeyState.generate(GROUP) for _ in range(MAX_SENDER_KEY_STATES + 1)]
    for s in senders:
        assert record.add(SenderKeyState.from_distribution(s.distribution_message()))
    assert len(record.states) == MAX_SENDER_KEY_STATES
    with pytest.raises(UnknownSenderKey):  # the oldest chain was dropped
        record.decrypt(senders[0].encrypt(b"old"))
    newest = senders[-1]
    msg = newest.encrypt(b"fresh")
    resent = SenderKeyState.from_distribution(newest.distribution_message())
    assert not record.add(resent)
    assert record.decrypt(msg) == b"fresh"
    with pytest.raises(DuplicateMessage):  # re-sent distribution did not rewind the chain
        record.decrypt(msg)
    restored = SenderKeyRecord.from_bytes(record.to_bytes())
    assert restored.to_bytes() == record.to_bytes()
    assert restored.decrypt(newest.encrypt(b"again")) == b"again"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_raise_only_xchat_errors(data: bytes) -> None:
    _sender, receiver = pair()
    for parse in (
        SenderKeyState.from_bytes,
        SenderKeyState.from_distribution,
        SenderKeyRecord.from_bytes,
        receiver.decrypt,
        SenderKeyRecord([receiver]).decrypt,
    ):
        with contextlib.suppress(XChatError):
            parse(data)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_state_bytes_raise_only_xchat_errors(data: st.DataObject) -> None:
    sender, receiver = pair()
    receiver.decrypt(sender.encrypt(b"a") and sender.encrypt(b"b"))
    raw = bytearray(data.draw(st.sampled_from([sender.to_bytes(), receiver.to_bytes()])))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(XChatError):
        SenderKeyState.from_bytes(bytes(raw))


def test_generate_uses_rng_only() -> None:
    a = SenderKeyState.generate(GROUP, counter_rng(7))
    b = SenderKeyState.generate(GROUP, counter_rng(7))
    assert a.to_bytes() == b.to_bytes()
    assert SenderKeyState.generate(GROUP, os.urandom).chain_key != a.chain_key
