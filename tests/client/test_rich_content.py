"""Part VIII content shapes and pure rules (PROTOCOL.md Part VIII §1-§6)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.client import content as ct
from xchat.client import rich_content as rc
from xchat.crypto.keys import IdentityKeyPair
from xchat.errors import DecodeError, TooLarge

A = IdentityKeyPair.generate().public.address()
B = IdentityKeyPair.generate().public.address()
MID = "ab" * 16


def _round(msg: ct.Content) -> ct.Content:
    return ct.Content.decode(msg.encode())


def test_reaction_round_trip_and_shape() -> None:
    msg = rc.reaction_content(rc.Target(MID, A), "👍", remove=False, group=None, now_ms=5)
    obj = json.loads(msg.encode())
    assert obj["type"] == "reaction" and obj["reaction"] == {"id": MID, "author": A, "emoji": "👍"}
    r = rc.parse_reaction(_round(msg))
    assert r == rc.Reaction(rc.Target(MID, A), "👍", False)
    gone = rc.parse_reaction(
        _round(rc.reaction_content(rc.Target(MID, A), "", remove=True, group="cd" * 16, now_ms=6))
    )
    assert gone.remove and gone.emoji == ""


@pytest.mark.parametrize("emoji", ["", "x" * 33, "a b", "\u202e", "\x1b[31m", "\n"])
def test_bad_emoji_refused(emoji: str) -> None:
    with pytest.raises(TooLarge):
        rc.reaction_content(rc.Target(MID, A), emoji, remove=False, group=None, now_ms=1)
    raw = {
        "v": 1,
        "id": MID,
        "type": "reaction",
        "ts": 1,
        "reaction": {"id": MID, "author": A, "emoji": emoji},
    }
    with pytest.raises(DecodeError):
        rc.parse_reaction(ct.Content.decode(json.dumps(raw).encode()))


def test_family_emoji_fits() -> None:
    rc.check_emoji("👨‍👩‍👧‍👦")
    rc.check_emoji("🏳️‍🌈")


@pytest.mark.parametrize(
    "target",
    [
        {"id": "AB" * 16, "author": A},
        {"id": MID, "author": A.upper()},
        {"id": MID},
        {"id": MID, "author": A[:-1] + ("q" if A[-1] != "q" else "p")},
        "x",
    ],
)
def test_bad_targets(target: object) -> None:
    raw = {"v": 1, "id": MID, "type": "delete", "ts": 1, "delete": target}
    with pytest.raises(DecodeError):
        rc.parse_delete(ct.Content.decode(json.dumps(raw).encode()))


def test_edit_needs_text() -> None:
    msg = rc.edit_content(rc.Target(MID, A), "fixed", group=None, now_ms=1)
    assert rc.parse_edit(_round(msg)).text == "fixed"
    with pytest.raises(TooLarge):
        rc.edit_content(rc.Target(MID, A), "  ", group=None, now_ms=1)


def test_edit_window_and_author() -> None:
    assert (
        rc.edit_allowed(editor=A, target_author=A, original_ms=0, edit_ms=rc.EDIT_WINDOW_MS) is None
    )
    assert "author" in (rc.edit_allowed(editor=B, target_author=A, original_ms=0, edit_ms=1) or "")
    late = rc.EDIT_WINDOW_MS + rc.CLOCK_SKEW_MS + 1
    assert "24 h" in (rc.edit_allowed(editor=A, target_author=A, original_ms=0, edit_ms=late) or "")


def test_quote_check() -> None:
    q = rc.Quote(A, "dinner at 8?")
    assert rc.quote_status(None, author=A, texts=[]) is None
    assert rc.quote_status(q, author=None, texts=[]) == "missing"
    assert rc.quote_status(q, author=A, texts=["dinner at 8? or 9"]) == "ok"
    assert rc.quote_status(q, author=B, texts=["dinner at 8?"]) == "forged"
    assert rc.quote_status(q, author=A, texts=["lunch at noon"]) == "forged"
    # an edited target still matches its original version
    assert rc.quote_status(q, author=A, texts=["dinner at 8?", "dinner at 9"]) == "ok"
    long = "x" * 500
    assert rc.quote_status(rc.Quote(A, long[: rc.MAX_QUOTE_CHARS]), author=A, texts=[long]) == "ok"


def test_timer_bounds_and_durations() -> None:
    assert rc.parse_duration("30s") == 30
    assert rc.parse_duration("1h") == 3600
    assert rc.parse_duration("7d") == 7 * 86400
    assert rc.parse_duration("4w") == rc.TIMER_MAX_S
    assert rc.parse_duration("off") is None
    for bad in ("4s", "29d", "1y", "", "-5s", "5 h h"):
        with pytest.raises(ValueError):
            rc.parse_duration(bad)
    assert rc.format_duration(3600) == "1h" and rc.format_duration(90) == "90s"
    with pytest.raises(TooLarge):
        rc.disappear_content(4, group=None, now_ms=1)
    msg = rc.disappear_content(60, group=None, now_ms=1)
    assert rc.parse_disappear(_round(msg)).seconds == 60
    assert (
        rc.parse_disappear(_round(rc.disappear_content(None, group=None, now_ms=1))).seconds is None
    )


def test_out_of_bounds_message_timer_is_clamped() -> None:
    raw = {"v": 1, "id": MID, "type": "text", "ts": 1, "text": "x", "expires": {"seconds": 1}}
    assert rc.message_timer(ct.Content.decode(json.dumps(raw).encode())) == rc.TIMER_MIN_S
    raw["expires"] = {"seconds": 10**9}
    assert rc.message_timer(ct.Content.decode(json.dumps(raw).encode())) == rc.TIMER_MAX_S


def test_receipt_kinds() -> None:
    read = rc.receipt_content([MID], "read", group=None, now_ms=1, sender=None)
    assert rc.receipt_kind(_round(read)) == "read"
    plain = rc.receipt_content([MID], "delivered", group=None, now_ms=1, sender=None)
    assert "receipt" not in json.loads(plain.encode())  # a Part IV §3.6 receipt, unchanged
    assert rc.receipt_kind(_round(plain)) == "delivered"
    grp = rc.receipt_content([MID], "delivered", group="cd" * 16, now_ms=1, sender=None)
    assert _round(grp).group == {"id": "cd" * 16}


def test_typing_states() -> None:
    assert rc.parse_typing(_round(rc.typing_content(True, group=None, now_ms=1))).started
    raw = {"v": 1, "id": MID, "type": "typing", "ts": 1, "typing": {"state": "dancing"}}
    with pytest.raises(DecodeError):
        rc.parse_typing(ct.Content.decode(json.dumps(raw).encode()))


def test_rich_field_must_be_an_object() -> None:
    raw = {"v": 1, "id": MID, "type": "reaction", "ts": 1, "reaction": [1]}
    with pytest.raises(DecodeError):
        ct.Content.decode(json.dumps(raw).encode())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    ctype=st.sampled_from(["reaction", "edit", "delete", "typing", "disappear", "receipt", "text"]),
    obj=st.dictionaries(
        st.sampled_from(["id", "author", "emoji", "remove", "state", "seconds", "kind", "text"]),
        _json,
        max_size=5,
    ),
    text=st.none() | st.text(max_size=20),
)
def test_parsers_raise_only_decode_errors(ctype: str, obj: dict, text: str | None) -> None:
    """Whatever a peer puts in a Part VIII object, the parsers answer a value or DecodeError."""
    key = {"receipt": "receipt", "text": "quote"}.get(ctype, ctype)
    raw = {"v": 1, "id": MID, "type": ctype, "ts": 1, key: obj, "reply_to": MID}
    if text is not None:
        raw["text"] = text
    msg = ct.Content.decode(json.dumps(raw).encode())
    parsers = {
        "reaction": rc.parse_reaction,
        "edit": rc.parse_edit,
        "delete": rc.parse_delete,
        "typing": rc.parse_typing,
        "disappear": rc.parse_disappear,
        "receipt": rc.receipt_kind,
        "text": rc.parse_quote,
    }
    try:
        parsers[ctype](msg)
        rc.message_timer(msg)
    except DecodeError:
        pass
