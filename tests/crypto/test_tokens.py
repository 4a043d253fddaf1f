"""The sans-I/O token protocol (PROTOCOL.md Part XI): layout, issuance round trip, the
issuer tagging a batch with another key, epochs, encodings."""

from __future__ import annotations

import contextlib
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.crypto import oprf
from xchat.crypto import tokens as tk
from xchat.errors import InvalidProof, InvalidToken, XChatError

SEED = bytes(range(32))


def _tokens(epoch: int, n: int) -> list[tk.Token]:
    sk, pk = tk.epoch_key(SEED, epoch)
    pending = tk.begin_batch(epoch, pk, n)
    evaluated, proof = tk.issue(sk, pk, pending.blinded)
    return tk.finish_batch(pending, evaluated, proof)


def test_round_trip_and_layout() -> None:
    sk, pk = tk.epoch_key(SEED, 7)
    tokens = _tokens(7, 5)
    assert len({t.nonce for t in tokens}) == 5
    for t in tokens:
        raw = t.to_bytes()
        assert len(raw) == tk.TOKEN_LEN == 134
        assert raw[:2] == b"\x58\x01" and raw[2:6] == (7).to_bytes(4, "big")
        assert raw[38:70] == tk.key_id(pk)
        assert tk.decode_token(tk.encode_token(t)) == t
        tk.verify(sk, pk, t)
        # What the issuer evaluates directly is what the client unblinded.
        assert t.authenticator == oprf.evaluate(sk, t.token_input, oprf.MODE_VOPRF)


def test_epoch_keys_rotate() -> None:
    assert tk.epoch_key(SEED, 1) != tk.epoch_key(SEED, 2)
    assert tk.epoch_key(SEED, 1) == tk.epoch_key(SEED, 1)  # derived, nothing to store
    t = _tokens(1, 1)[0]
    sk2, pk2 = tk.epoch_key(SEED, 2)
    with pytest.raises(InvalidToken):
        tk.verify(sk2, pk2, t)  # names another key
    forged = tk.Token(1, t.nonce, tk.key_id(pk2), t.authenticator)
    with pytest.raises(InvalidToken):
        tk.verify(sk2, pk2, forged)  # claims the key but was not made with it
    assert tk.epoch_expires_ms(3, 60) == 5 * 60_000


def test_tagging_key_is_detected() -> None:
    """A relay that evaluates one account's batch with a private key (to recognise its
    tokens later) cannot produce a proof for the published key."""
    _, pk = tk.epoch_key(SEED, 3)
    tag_sk, tag_pk = oprf.derive_key_pair(secrets.token_bytes(32), b"tag", oprf.MODE_VOPRF)
    pending = tk.begin_batch(3, pk, 4)
    evaluated, proof = tk.issue(tag_sk, tag_pk, pending.blinded)
    with pytest.raises(InvalidProof):
        tk.finish_batch(pending, evaluated, proof)


def test_spent_key_is_per_token() -> None:
    a, b = _tokens(4, 2)
    assert tk.spent_key(a) != tk.spent_key(b) and len(tk.spent_key(a)) == 32


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x58\x01" + bytes(10), b"\x00\x01" + bytes(tk.TOKEN_LEN - 2), bytes(tk.TOKEN_LEN + 1)],
)
def test_bad_tokens(bad: bytes) -> None:
    with pytest.raises(InvalidToken):
        tk.Token.from_bytes(bad)


def test_bad_batches() -> None:
    _, pk = tk.epoch_key(SEED, 1)
    with pytest.raises(InvalidToken):
        tk.begin_batch(1, pk, 0)
    with pytest.raises(InvalidToken):
        tk.begin_batch(1, pk, tk.MAX_BATCH + 1)
    with pytest.raises(InvalidToken):
        tk.decode_token("not base64url!")
    pending = tk.begin_batch(1, pk, 2)
    with pytest.raises(InvalidToken):
        tk.finish_batch(pending, [pending.blinded[0]], bytes(64))


@given(st.binary(max_size=300))
def test_token_decoder_raises_only_invalid_token(data: bytes) -> None:
    for parse in (tk.Token.from_bytes, lambda d: tk.decode_token(d.decode("latin-1"))):
        with contextlib.suppress(InvalidToken):
            parse(data)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3), st.binary())
def test_finish_batch_never_raises_a_foreign_error(evaluated: list[bytes], proof: bytes) -> None:
    _, pk = tk.epoch_key(SEED, 1)
    pending = tk.begin_batch(1, pk, len(evaluated))
    with contextlib.suppress(XChatError):
        tk.finish_batch(pending, evaluated, proof)
