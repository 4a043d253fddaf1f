"""The signed device list, link codes and the provisioning channel (PROTOCOL.md Part VII
§2–§3), sans-I/O: every refusal the senders and the new device rely on."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xchat.crypto import devicelist as dl
from xchat.crypto.keys import IdentityKeyPair
from xchat.errors import DecodeError, DecryptionError, UnsupportedVersion, UntrustedDevice


def _list(identity: IdentityKeyPair, version: int, ids: list[int]) -> dl.DeviceList:
    entries = tuple(
        dl.DeviceEntry(i, 1000 + i, dl.seal_name(identity.seed, i, f"d{i}")) for i in ids
    )
    return dl.DeviceList.sign(identity, version, 5000, entries)


def test_roundtrip_names_and_digest() -> None:
    alice = IdentityKeyPair.generate()
    lst = _list(alice, 3, [1, 2, 5])
    back = dl.DeviceList.decode(lst.encode()).verify(alice.public)
    assert back.device_ids == (1, 2, 5) and back.version == 3
    assert back.digest() == lst.digest()
    names = [dl.open_name(alice.seed, e.device_id, e.name_sealed) for e in back.entries]
    assert names == ["d1", "d2", "d5"]
    other = IdentityKeyPair.generate()
    assert dl.open_name(other.seed, 1, back.entries[0].name_sealed) == "?"  # sealed


def test_forged_and_foreign_lists_refused() -> None:
    alice, mallory = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    raw = bytearray(_list(alice, 1, [1, 2]).encode())
    raw[-1] ^= 1
    with pytest.raises(UntrustedDevice, match="forged"):
        dl.DeviceList.decode(bytes(raw)).verify(alice.public)
    with pytest.raises(UntrustedDevice, match="another account"):
        _list(mallory, 9, [1, 2, 7]).verify(alice.public)
    # an added device changes the signed bytes: the old signature does not cover it
    good = _list(alice, 1, [1, 2])
    padded = dl.DeviceList(good.identity_key, good.version, good.ts_ms,
                           (*good.entries, dl.DeviceEntry(7, 0, b"")), good.signature)  # fmt: skip
    with pytest.raises(UntrustedDevice):
        dl.DeviceList.decode(padded.encode()).verify(alice.public)


def test_rollback_and_fork_refused() -> None:
    alice = IdentityKeyPair.generate()
    v2, v3 = _list(alice, 2, [1, 2, 3]), _list(alice, 3, [1, 2])
    dl.check_successor(v2, v3)
    dl.check_successor(v3, v3)
    with pytest.raises(UntrustedDevice, match="rolled back"):
        dl.check_successor(v3, v2)
    with pytest.raises(UntrustedDevice, match="forked"):
        dl.check_successor(v3, _list(alice, 3, [1, 2, 4]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated signature
        lambda b: b + b"\0",  # trailing byte
        lambda b: b"\x02" + b[1:],  # unknown version
        lambda b: b"",
    ],
)
def test_malformed_lists(mutate) -> None:  # type: ignore[no-untyped-def]
    raw = _list(IdentityKeyPair.generate(), 1, [1]).encode()
    with pytest.raises((DecodeError, UnsupportedVersion)):
        dl.DeviceList.decode(mutate(raw))


def test_entry_rules() -> None:
    alice = IdentityKeyPair.generate()
    with pytest.raises(DecodeError):
        _list(alice, 1, [])
    with pytest.raises(DecodeError):
        _list(alice, 1, list(range(1, dl.MAX_DEVICES + 2)))
    with pytest.raises(DecodeError):
        dl.DeviceList.sign(alice, 1, 0, (dl.DeviceEntry(0, 0, b""),))


def test_codes() -> None:
    code = dl.new_code()
    text = dl.format_code(code)
    assert len(text) == 29 and text.count("-") == 5
    assert dl.parse_code(text.upper().replace("-", " ")) == code
    assert len(dl.slot_id(code)) == 22 and dl.slot_id(code) != dl.slot_id(dl.new_code())
    for bad in ("", "hello", text[:-1], text.replace(text[0], "0")):
        with pytest.raises(DecodeError):
            dl.parse_code(bad)


def test_offer_and_answer_need_the_code() -> None:
    code, wrong = dl.new_code(), dl.new_code()
    e = X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    offer = dl.seal_offer(code, e_pub, b'{"name": "laptop"}')
    assert dl.open_offer(code, offer) == (e_pub, b'{"name": "laptop"}')
    with pytest.raises(DecryptionError):
        dl.open_offer(wrong, offer)
    answer = dl.seal_answer(code, e_pub, b"secret seed")
    assert dl.open_answer(code, e, answer) == b"secret seed"
    with pytest.raises(DecryptionError):
        dl.open_answer(wrong, e, answer)  # the code is in the key derivation too
    with pytest.raises(DecryptionError):
        dl.open_answer(code, X25519PrivateKey.generate(), answer)
    tampered = answer[:-1] + bytes([answer[-1] ^ 1])
    with pytest.raises(DecryptionError):
        dl.open_answer(code, e, tampered)
    assert dl.link_uri("http://r", code, e_pub).startswith("xchat-link:?v=1&server=http://r&code=")
