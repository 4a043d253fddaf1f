"""RFC 9497 Appendix A.1.1 (OPRF) and A.1.2 (VOPRF) vectors for ristretto255-SHA512, plus
the failure paths: a proof under another key, a tampered element, bad encodings."""

from __future__ import annotations

import secrets

import pytest

from xchat.crypto import oprf
from xchat.errors import DecodeError, InvalidProof, OprfError

SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
BLIND = bytes.fromhex("64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706")
BLIND2 = bytes.fromhex("222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e")
IN1 = bytes.fromhex("00")
IN2 = bytes.fromhex("5a" * 17)

# A.1.1 OPRF mode
OPRF_SK = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
OPRF_VECTORS = [
    (
        IN1,
        "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
        "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
        "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3"
        "ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
    ),
    (
        IN2,
        "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
        "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
        "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4"
        "f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73",
    ),
]

# A.1.2 VOPRF mode
VOPRF_SK = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
VOPRF_PK = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
OUT1 = (
    "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
    "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"
)
OUT2 = (
    "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
    "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"
)
VOPRF_VECTORS = [
    # inputs, blinds, blinded, evaluated, proof, proof random scalar, outputs
    (
        [IN1],
        [BLIND],
        ["863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945"],
        ["aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e"],
        "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06"
        "6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        [OUT1],
    ),
    (
        [IN2],
        [BLIND],
        ["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
        ["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
        "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a"
        "67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        [OUT2],
    ),
    (
        [IN1, IN2],
        [BLIND, BLIND2],
        [
            "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
            "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
        ],
        [
            "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
            "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
        ],
        "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a"
        "5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        [OUT1, OUT2],
    ),
]


def test_derive_key_pair_oprf() -> None:
    sk, pk = oprf.derive_key_pair(SEED, KEY_INFO, oprf.MODE_OPRF)
    assert sk.hex() == OPRF_SK
    assert pk == oprf.public_key(sk)


def test_derive_key_pair_voprf() -> None:
    sk, pk = oprf.derive_key_pair(SEED, KEY_INFO, oprf.MODE_VOPRF)
    assert sk.hex() == VOPRF_SK
    assert pk.hex() == VOPRF_PK


@pytest.mark.parametrize(("data", "blinded", "evaluated", "output"), OPRF_VECTORS)
def test_oprf_vectors(data: bytes, blinded: str, evaluated: str, output: str) -> None:
    sk = bytes.fromhex(OPRF_SK)
    r, be = oprf.blind(data, blind=BLIND)
    assert r == BLIND
    assert be.hex() == blinded
    ev = oprf.blind_evaluate(sk, be)
    assert ev.hex() == evaluated
    assert oprf.finalize(data, r, ev).hex() == output
    assert oprf.evaluate(sk, data).hex() == output


@pytest.mark.parametrize(
    ("inputs", "blinds", "blinded", "evaluated", "proof", "nonce", "outputs"), VOPRF_VECTORS
)
def test_voprf_vectors(
    inputs: list[bytes],
    blinds: list[bytes],
    blinded: list[str],
    evaluated: list[str],
    proof: str,
    nonce: str,
    outputs: list[str],
) -> None:
    sk, pk = bytes.fromhex(VOPRF_SK), bytes.fromhex(VOPRF_PK)
    bes = []
    for data, b, expected in zip(inputs, blinds, blinded, strict=True):
        _, be = oprf.blind(data, blind=b, mode=oprf.MODE_VOPRF)
        assert be.hex() == expected
        bes.append(be)
    evs, pr = oprf.blind_evaluate_verifiable(sk, pk, bes, r=bytes.fromhex(nonce))
    assert [e.hex() for e in evs] == evaluated
    assert pr.hex() == proof
    outs = oprf.finalize_verifiable(inputs, blinds, evs, bes, pk, pr)
    assert [o.hex() for o in outs] == outputs
    assert [oprf.evaluate(sk, x, oprf.MODE_VOPRF).hex() for x in inputs] == outputs


def _random_key_pair() -> tuple[bytes, bytes]:
    """A fresh ``(sk, pk)``: DeriveKeyPair from a random seed (RFC 9497 §3.2)."""
    return oprf.derive_key_pair(secrets.token_bytes(32), b"test key")


def test_random_round_trip_oprf() -> None:
    sk, _ = _random_key_pair()
    r, be = oprf.blind(b"correct horse")
    out = oprf.finalize(b"correct horse", r, oprf.blind_evaluate(sk, be))
    assert out == oprf.evaluate(sk, b"correct horse")
    r2, be2 = oprf.blind(b"correct horse")
    assert be2 != be  # a fresh blind each time: the server cannot link two requests
    assert oprf.finalize(b"correct horse", r2, oprf.blind_evaluate(sk, be2)) == out


def test_proof_under_another_key_is_refused() -> None:
    """The attack the proof exists for: an issuer evaluating one batch with a different
    (tagging) key than the one it published."""
    sk, pk = _random_key_pair()
    other_sk, _ = _random_key_pair()
    inputs = [b"a", b"b", b"c"]
    pairs = [oprf.blind(x, mode=oprf.MODE_VOPRF) for x in inputs]
    blinds = [p[0] for p in pairs]
    bes = [p[1] for p in pairs]
    evs, proof = oprf.blind_evaluate_verifiable(other_sk, oprf.public_key(other_sk), bes)
    with pytest.raises(InvalidProof):
        oprf.finalize_verifiable(inputs, blinds, evs, bes, pk, proof)
    # One element of an honest batch swapped for one under another key: refused as well.
    evs, proof = oprf.blind_evaluate_verifiable(sk, pk, bes)
    tampered = [evs[0], oprf.blind_evaluate(other_sk, bes[1]), evs[2]]
    with pytest.raises(InvalidProof):
        oprf.finalize_verifiable(inputs, blinds, tampered, bes, pk, proof)
    # A garbage proof is a failed proof, not a crash.
    with pytest.raises(InvalidProof):
        oprf.finalize_verifiable(inputs, blinds, evs, bes, pk, b"\xff" * 64)
    assert oprf.finalize_verifiable(inputs, blinds, evs, bes, pk, proof) == [
        oprf.evaluate(sk, x, oprf.MODE_VOPRF) for x in inputs
    ]


def test_bad_encodings() -> None:
    sk, _ = _random_key_pair()
    with pytest.raises(DecodeError):
        oprf.blind_evaluate(sk, bytes(32))  # the identity
    with pytest.raises(DecodeError):
        oprf.blind_evaluate(sk, b"\xff" * 32)  # not a ristretto255 encoding
    with pytest.raises(DecodeError):
        oprf.blind_evaluate(sk, b"\x01" * 31)
    with pytest.raises(DecodeError):
        oprf.blind(b"x", blind=b"\xff" * 32)  # scalar above the group order
    with pytest.raises(OprfError):
        oprf.blind(b"x", blind=bytes(32))
    with pytest.raises(OprfError):
        oprf.derive_key_pair(b"short", b"", oprf.MODE_OPRF)
    with pytest.raises(OprfError):
        oprf.context_string(2)
    with pytest.raises(OprfError):
        oprf.finalize_verifiable([b"a"], [], [], [], oprf.GENERATOR, bytes(64))
