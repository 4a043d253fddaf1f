"""The account helpers that turn what people type into what the client needs, with
errors that say what is wrong (issue #19): recovery phrases as written down, the word
that is wrong, handles checked as in onboarding (near misses included)."""

from __future__ import annotations

import pytest
from mnemonic import Mnemonic

from xchat.app.account import HANDLE_RULE, _handle, phrase_problem, phrase_words
from xchat.app.common import HttpError

WORDS = Mnemonic("english").to_mnemonic(bytes(range(32))).split()


def test_phrase_is_accepted_as_people_write_it() -> None:
    plain = " ".join(WORDS)
    written = [
        plain,
        plain.upper(),
        "  " + "   ".join(WORDS) + "\n",
        "\n".join(f"{i}. {w}" for i, w in enumerate(WORDS, 1)),
        "\n".join(f"{i}) {w.capitalize()}" for i, w in enumerate(WORDS, 1)),
        " ".join(f"{i}-{w}" for i, w in enumerate(WORDS, 1)),
        ", ".join(WORDS),
        "\t".join(f"{i}.{w}" for i, w in enumerate(WORDS, 1)),
    ]
    for text in written:
        assert phrase_words(text) == WORDS, text
        assert phrase_problem(phrase_words(text)) is None


def test_the_wrong_word_is_named() -> None:
    bad = list(WORDS)
    bad[6] = bad[6][:-1]  # a typo
    problem = phrase_problem(bad)
    assert problem is not None and problem.startswith(f"Word 7 (“{bad[6]}”) is not")
    bad[6] = "xylophonezzz"
    assert "Word 7" in (phrase_problem(bad) or "")
    assert "23" in (phrase_problem(WORDS[:23]) or "")
    assert "25" in (phrase_problem([*WORDS, WORDS[0]]) or "")
    # Near misses of valid words are not valid words.
    for near in (WORDS[0] + "s", WORDS[0].upper() + "\u200b", WORDS[0][1:]):
        assert phrase_problem([near, *WORDS[1:]]) is not None, near


def test_handles_are_checked_like_onboarding() -> None:
    for ok in ("ann", "Ann_1", "a" * 32, "@bob_"):
        assert _handle({"handle": ok}, required=True) == ok.removeprefix("@")
    for bad in ("ab", "a" * 33, "1abc", "_abc", "ann!", "an n", "ann\nx", "ånn", "ann.", "@@ann"):
        with pytest.raises(HttpError) as e:
            _handle({"handle": bad}, required=True)
        assert e.value.status == 400 and e.value.message == HANDLE_RULE, bad
    assert _handle({"handle": ""}, required=False) is None
