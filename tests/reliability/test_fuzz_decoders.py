"""Property: every decoder of attacker-controlled input is total (RELIABILITY.md §1).

For each entry of ``fuzz/xchat_decoders.py`` and any input -- random bytes/text/JSON, or a
valid sample with bits flipped, bytes inserted, deleted, duplicated or truncated -- the
decoder returns a value or raises an :class:`xchat.errors.XChatError` subclass; any other
exception (``struct.error``, ``ValueError``, ``RecursionError``, ...) fails the test.

Budget: ``XCHAT_FUZZ_EXAMPLES`` examples per decoder (default 150) keeps the whole file
well under 30 s; the ``slow`` soak variant runs 20x that.
"""

from __future__ import annotations

import contextlib
import os
import string
from typing import Any

import pytest
import xchat_decoders as D
from _fuzz_stats import COUNTS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xchat.errors import DecodeError, XChatError

EXAMPLES = int(os.environ.get("XCHAT_FUZZ_EXAMPLES", "150"))
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOAK = settings(FAST, max_examples=EXAMPLES * 20)


# --- mutation strategies -------------------------------------------------------------------

_INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF)


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid sample with 1-4 structural mutations (AFL-style havoc, small)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "grow"]))
        n = len(data)
        pos = draw(st.integers(0, max(0, n - 1)))
        if op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[pos] = draw(st.sampled_from(_INTERESTING) | st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and n:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif op == "dup" and n:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        elif op == "grow":
            data += draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@st.composite
def mutated_text(draw: st.DrawFn, seeds: list[str]) -> str:
    """A valid string with characters replaced, inserted or removed."""
    chars = list(draw(st.sampled_from(seeds)))
    alphabet = st.sampled_from(string.ascii_letters + string.digits + " \t\n1qpzry9x8") | st.text(
        min_size=1, max_size=1
    )
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "swap", "truncate"]))
        n = len(chars)
        pos = draw(st.integers(0, max(0, n - 1)))
        if op == "replace" and n:
            chars[pos] = draw(alphabet)
        elif op == "insert":
            chars.insert(pos, draw(alphabet))
        elif op == "delete" and n:
            del chars[pos]
        elif op == "swap" and n > 1:
            other = draw(st.integers(0, n - 1))
            chars[pos], chars[other] = chars[other], chars[pos]
        elif op == "truncate":
            del chars[draw(st.integers(0, n)) :]
    return "".join(chars)


_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["AAAA", "====", "BQ==", "not base64!", "", "\u00e9"])
)
JSON = st.recursive(
    _JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A valid JSON document with 1-3 nodes replaced, removed, or (strings) byte-mutated."""
    import base64
    import copy

    doc = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return draw(JSON)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        current = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "mutate"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "mutate" and isinstance(current, str):
            try:
                raw = base64.b64decode(current, validate=True)
            except ValueError:
                parent[key] = draw(mutated_text([current or "x"]))
            else:
                parent[key] = base64.b64encode(draw(mutated_bytes([raw or b"\x00"]))).decode()
        elif op == "mutate" and isinstance(current, int) and not isinstance(current, bool):
            parent[key] = draw(
                st.sampled_from([-1, 0, 2**32 - 1, 2**32, 2**63, current + 1, current - 1])
            )
        else:
            parent[key] = draw(JSON)
    return doc


def inputs(decoder: D.Decoder) -> st.SearchStrategy[Any]:
    seeds = decoder.seeds()
    if decoder.kind == "bytes":
        biggest = max(len(s) for s in seeds)
        return (
            mutated_bytes(seeds)
            | mutated_bytes(seeds)
            | st.binary(max_size=min(4 * biggest, 8192))
            | st.sampled_from(seeds)
        )
    if decoder.kind == "text":
        return mutated_text(seeds) | mutated_text(seeds) | st.text(max_size=300)
    return mutated_json(seeds) | mutated_json(seeds) | JSON


def check(decoder: D.Decoder, value: Any) -> None:
    """The property: a value or a typed XChatError, nothing else."""
    COUNTS[decoder.name] += 1
    with contextlib.suppress(XChatError):
        decoder.run(value)


# --- the tests ------------------------------------------------------------------------------

NAMES = [d.name for d in D.DECODERS]


@pytest.mark.parametrize("name", NAMES)
def test_decoder_is_total(name: str) -> None:
    decoder = D.BY_NAME[name]

    @FAST
    @given(inputs(decoder))
    def prop(value: Any) -> None:
        check(decoder, value)

    prop()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_decoder_is_total_soak(name: str) -> None:
    decoder = D.BY_NAME[name]

    @SOAK
    @given(inputs(decoder))
    def prop(value: Any) -> None:
        check(decoder, value)

    prop()


def test_every_seed_is_accepted_or_typed() -> None:
    """The seeds themselves decode (or fail only for a documented reason), so mutations
    start from inputs that reach deep into each decoder."""
    for decoder in D.DECODERS:
        for seed in decoder.seeds():
            check(decoder, seed)


def test_registry_covers_the_brief() -> None:
    """Every decoder family named in RELIABILITY.md §1 has an entry."""
    wanted = {
        "frames",
        "sealed_unseal",
        "session_decrypt",
        "session_respond",
        "prekey_message_parse",
        "prekey_bundle_json",
        "sender_certificate",
        "session_record",
        "ratchet_state",
        "prekey_records",
        "sender_key_state",
        "sender_key_record",
        "group_state",
        "group_update",
        "group_history",
        "identity_key",
        "address",
        "mnemonic",
        "padding_unpad",
        "attachment_decrypt",
        "client_content",
        "file_manifest_json",
    }
    assert wanted <= set(NAMES)


# --- regressions found by this file --------------------------------------------------------


def test_content_decode_deeply_nested_json() -> None:
    with pytest.raises(DecodeError):
        D.BY_NAME["client_content"].run(b"[" * 50_000)


@given(st.integers(1, 60_000))
@example(50_000)
@settings(FAST, max_examples=5)
def test_frames_survive_long_inputs(n: int) -> None:
    check(D.BY_NAME["frames"], bytes([0x01]) + b"\xff" * n)


def _outcome(fn: Any, data: bytes) -> Any:
    try:
        return ("ok", fn(data))
    except XChatError as exc:
        return ("error", type(exc).__name__)


def _send_as_tuples(frame: Any) -> Any:
    return (
        frame.req_id,
        [
            (d.address, d.access, [(e.device_id, e.envelope_id, e.content) for e in d.envelopes])
            for d in frame.destinations
        ],
    )


def test_decode_send_agrees_with_decode_frame() -> None:
    """Differential: the server's SEND hot path (``frames.decode_send``) must accept and
    reject exactly what the reference ``decode_frame`` does (its docstring's promise)."""
    from xchat.protocol import frames as F

    seeds = D.BY_NAME["frames_send_fast"].seeds()

    @FAST
    @given(mutated_bytes(seeds) | st.binary(max_size=200).map(lambda b: b"\x01" + b))
    def prop(data: bytes) -> None:
        COUNTS["frames_send_differential"] += 1
        fast = _outcome(F.decode_send, data)
        ref = _outcome(F.decode_frame, data)
        if ref[0] == "ok" and isinstance(ref[1], F.Send):
            assert fast[0] == "ok", (data, fast)
            req_id, dests = fast[1]
            assert (req_id, dests) == _send_as_tuples(ref[1])
        else:
            assert fast[0] == "error", (data, fast, ref)

    prop()
