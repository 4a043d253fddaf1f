"""Terminal escaping of untrusted peer text."""

from __future__ import annotations

from xchat.cli.output import escape_terminal


def test_escapes_ansi_and_controls() -> None:
    evil = "hi\x1b[2J\x1b]0;owned\x07\r\x00\x7f\x9b"
    out = escape_terminal(evil)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\x00" not in out and "\x7f" not in out and "\x9b" not in out
    assert out.startswith("hi\\x1b[2J")


def test_escapes_bidi_overrides() -> None:
    out = escape_terminal("abc\u202edcba\u2066")
    assert "\u202e" not in out and "\\u{202e}" in out and "\\u{2066}" in out


def test_newlines_kept_only_when_asked() -> None:
    assert escape_terminal("a\nb") == "a\\x0ab"
    assert escape_terminal("a\nb", keep_newlines=True) == "a\n    b"
    assert escape_terminal("héllo ☃") == "héllo ☃"


def test_error_line_mapping() -> None:
    from xchat.cli.exits import error_line
    from xchat.errors import (
        ApiError,
        IdentityChanged,
        InvalidMnemonic,
        ProfileLocked,
        ServerUnreachable,
        UnknownContact,
    )

    msg, code = error_line(ApiError(429, "slow", retry_after=12))
    assert code == 4 and "12 s" in msg
    assert error_line(ServerUnreachable("x"))[1] == 3
    assert error_line(ProfileLocked("x"))[1] == 5
    assert error_line(IdentityChanged("x"))[1] == 6
    assert error_line(UnknownContact("x"))[1] == 7
    assert error_line(InvalidMnemonic("x"))[1] == 8
    assert error_line(ApiError(409, "taken"))[1] == 1
