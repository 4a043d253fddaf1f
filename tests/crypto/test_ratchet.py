"""Double Ratchet: KDFs, ordering, bounds, replay, transactional decrypt, forward secrecy."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xchat.crypto import constants as C
from xchat.crypto.ratchet import (
    HEADER_LEN,
    RatchetState,
    kdf_ck,
    kdf_rk,
    message_key_material,
    parse_header,
)
from xchat.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    ProtocolError,
    TooLarge,
    TooManySkipped,
    UnsupportedVersion,
)

AD = b"A" * 65 + b"B" * 65


def rng_of(seed: int) -> Any:
    return random.Random(seed).randbytes


def make_pair(seed: int = 0) -> tuple[RatchetState, RatchetState]:
    rng = rng_of(seed)
    secret = rng(32)
    spk = X25519PrivateKey.from_private_bytes(rng(32))
    alice = RatchetState.init_alice(secret, AD, spk.public_key().public_bytes_raw(), rng)
    bob = RatchetState.init_bob(secret, AD, spk)
    return alice, bob


def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def test_kdfs_match_documented_construction() -> None:
    rk, dh, ck = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
    prk = ref_hmac(rk, dh)  # HKDF-Extract(salt=rk, ikm=dh)
    t1 = ref_hmac(prk, b"XChat_Ratchet_v1\x01")
    t2 = ref_hmac(prk, t1 + b"XChat_Ratchet_v1\x02")
    assert kdf_rk(rk, dh) == (t1, t2)
    assert kdf_ck(ck) == (ref_hmac(ck, b"\x02"), ref_hmac(ck, b"\x01"))
    mk = b"\x44" * 32  # HKDF-Expand only (RFC 5869 §3.3): mk is already a PRK
    e1 = ref_hmac(mk, b"XChat_MessageKeys_v1\x01")
    e2 = ref_hmac(mk, e1 + b"XChat_MessageKeys_v1\x02")
    assert message_key_material(mk) == (e1, e2[:12])


def test_header_layout_and_parse() -> None:
    alice, _ = make_pair()
    msg = alice.encrypt(b"hi")
    assert msg[:2] == b"\x01\x01" and msg[2:34] == alice.dhs_pub
    assert struct.unpack(">II", msg[34:42]) == (0, 0)
    assert len(msg) == HEADER_LEN + 2 + 16
    assert parse_header(msg) == (alice.dhs_pub, 0, 0)
    with pytest.raises(UnsupportedVersion):
        parse_header(b"\x02" + msg[1:])
    with pytest.raises(DecodeError):
        parse_header(msg[:1] + b"\x02" + msg[2:])
    with pytest.raises(DecodeError):
        parse_header(msg[: HEADER_LEN + 15])
    with pytest.raises(TooLarge):
        parse_header(msg + b"\x00" * C.MAX_MESSAGE_LEN)


def test_bob_cannot_send_first() -> None:
    _, bob = make_pair()
    with pytest.raises(ProtocolError):
        bob.encrypt(b"x")


def test_conversation_in_and_out_of_order() -> None:
    alice, bob = make_pair(1)
    a1 = [alice.encrypt(b"a1-%d" % i) for i in range(4)]
    assert bob.decrypt(a1[2]) == b"a1-2"
    assert bob.decrypt(a1[0]) == b"a1-0"
    b1 = [bob.encrypt(b"b1-%d" % i) for i in range(3)]
    assert alice.decrypt(b1[1]) == b"b1-1"
    a2 = [alice.encrypt(b"a2-%d" % i) for i in range(2)]
    # Bob gets the new chain first; old-chain keys were stored via pn, still usable
    assert bob.decrypt(a2[1]) == b"a2-1"
    assert bob.decrypt(a1[3]) == b"a1-3"
    assert bob.decrypt(a1[1]) == b"a1-1"
    assert bob.decrypt(a2[0]) == b"a2-0"
    assert alice.decrypt(b1[0]) == b"b1-0"
    assert alice.decrypt(b1[2]) == b"b1-2"
    assert not bob.skipped and not alice.skipped


def test_replays_are_duplicates_on_every_path() -> None:
    alice, bob = make_pair(2)
    m0, m1, m2 = (alice.encrypt(b"%d" % i) for i in range(3))
    bob.decrypt(m0)
    with pytest.raises(DuplicateMessage):  # in-order key already consumed
        bob.decrypt(m0)
    bob.decrypt(m2)
    bob.decrypt(m1)  # via skipped store
    with pytest.raises(DuplicateMessage):  # skipped key already consumed
        bob.decrypt(m1)
    alice.decrypt(bob.encrypt(b"r"))
    bob.decrypt(alice.encrypt(b"new chain"))
    with pytest.raises(DuplicateMessage):  # retired ratchet key
        bob.decrypt(m2)


def test_too_many_skipped_in_chain_and_across_step() -> None:
    alice, bob = make_pair(3)
    msgs = [alice.encrypt(b"") for _ in range(C.MAX_SKIP + 3)]
    before = bob.to_bytes()
    with pytest.raises(TooManySkipped):  # new ratchet key, n > MAX_SKIP
        bob.decrypt(msgs[-1])
    assert bob.to_bytes() == before
    bob.decrypt(msgs[0])
    with pytest.raises(TooManySkipped):  # same chain, jump > MAX_SKIP
        bob.decrypt(msgs[-1])
    assert bob.decrypt(msgs[-2]) == b""  # exactly MAX_SKIP ahead is allowed
    # pn too far: Alice's old chain claims far more messages than Bob saw
    alice2, bob2 = make_pair(4)
    bob2.decrypt(alice2.encrypt(b"first"))
    for _ in range(C.MAX_SKIP + 1):
        alice2.encrypt(b"")
    alice2.decrypt(bob2.encrypt(b"reply"))
    with pytest.raises(TooManySkipped):
        bob2.decrypt(alice2.encrypt(b"after step"))


def test_skipped_store_is_capped_oldest_evicted() -> None:
    alice, bob = make_pair(5)
    chain1 = [alice.encrypt(b"c1-%d" % i) for i in range(1500)]
    bob.decrypt(chain1[-1])
    alice.decrypt(bob.encrypt(b"r"))
    chain2 = [alice.encrypt(b"c2-%d" % i) for i in range(1500)]
    bob.decrypt(chain2[-1])
    assert len(bob.skipped) == C.MAX_SKIPPED_KEYS
    with pytest.raises(DuplicateMessage):  # evicted: oldest keys of chain 1
        bob.decrypt(chain1[0])
    assert bob.decrypt(chain1[1498]) == b"c1-1498"
    assert bob.decrypt(chain2[0]) == b"c2-0"


def _flip_last(msg: bytes) -> bytes:
    return msg[:-1] + bytes([msg[-1] ^ 1])


def test_failed_decrypt_leaves_state_unchanged() -> None:
    alice, bob = make_pair(6)
    m = [alice.encrypt(b"%d" % i) for i in range(3)]
    for path_msg in (m[0], m[2]):  # ratchet step, then skip path
        snapshot = bob.to_bytes()
        with pytest.raises(DecryptionError):
            bob.decrypt(_flip_last(path_msg), rng_of(99))
        assert bob.to_bytes() == snapshot
        bob.decrypt(path_msg)
    snapshot = bob.to_bytes()
    with pytest.raises(DecryptionError):  # skipped-key path
        bob.decrypt(_flip_last(m[1]))
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(m[1]) == b"1"
    m3 = alice.encrypt(b"3")
    snapshot = bob.to_bytes()
    with pytest.raises(DecryptionError):  # in-order fast path
        bob.decrypt(_flip_last(m3))
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(m3) == b"3"


def test_forward_secrecy_keys_gone_after_use() -> None:
    alice, bob = make_pair(7)
    bob.decrypt(alice.encrypt(b"warm-up"))
    assert alice.cks is not None
    _, mk0 = kdf_ck(alice.cks)
    m0 = alice.encrypt(b"zero")
    m1 = alice.encrypt(b"one")
    assert bob.decrypt(m1) == b"one"
    assert mk0 in bob.to_bytes()  # skipped: still held, needed for the late message
    assert bob.decrypt(m0) == b"zero"
    state = bob.to_bytes()
    aes_key, _nonce = message_key_material(mk0)
    assert mk0 not in state and aes_key not in state
    # the in-order path too
    ck_before = alice.cks
    _, mk2 = kdf_ck(ck_before)
    bob.decrypt(alice.encrypt(b"two"))
    state = bob.to_bytes()
    assert mk2 not in state and ck_before not in state
    assert message_key_material(mk2)[0] not in state


def test_serialization_round_trip_mid_conversation() -> None:
    alice, bob = make_pair(8)
    msgs = [alice.encrypt(b"%d" % i) for i in range(5)]
    bob.decrypt(msgs[4])
    alice.decrypt(bob.encrypt(b"r"))
    data = bob.to_bytes()
    bob2, used = RatchetState.from_bytes(data, AD)
    assert used == len(data) and bob2.to_bytes() == data
    for i in range(4):
        assert bob2.decrypt(msgs[i]) == b"%d" % i
    alice2, _ = RatchetState.from_bytes(alice.to_bytes(), AD)
    assert bob2.decrypt(alice2.encrypt(b"x")) == b"x"
    for bad in (data[:10], data[:-1], b"\x08" + data[1:]):
        with pytest.raises(DecodeError):
            RatchetState.from_bytes(bad, AD)


def test_golden_vector_pins_the_wire_format() -> None:
    """Byte-exact output for pinned inputs: any change to KDF labels, header layout or AEAD
    use breaks this on purpose (an interoperating implementation must reproduce it)."""
    rng = rng_of(2024)
    secret = rng(32)
    spk = X25519PrivateKey.from_private_bytes(rng(32))
    ad = bytes(range(130))
    alice = RatchetState.init_alice(secret, ad, spk.public_key().public_bytes_raw(), rng)
    bob = RatchetState.init_bob(secret, ad, spk)
    m1 = alice.encrypt(b"golden vector 1")
    assert m1.hex() == (
        "01018f9098184aa361563a1c7beca13fd4204ede555448e257c2e8762f14d7675e2f0000000000000000"
        "4b420d1e1bba329e2da664b262038b7a7d5e255685148e3af3f8579fbb3a8f"
    )
    assert bob.decrypt(m1, rng) == b"golden vector 1"
    assert bob.encrypt(b"golden vector 2").hex() == (
        "0101b0d6fd8563c1bcadaeeabb0bceb90c84dd138c30d67cb4e7def54453d92e68110000000000000000"
        "e4948d5bf647b5b5a9ae16df21e92f90cc14621f3afad8ad196eb45c83bdfb"
    )
