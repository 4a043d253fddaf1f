"""Browser sessions on disk (app/session.py): only digests are kept, both halves are
needed, near misses fail, the list is bounded, and forgetting works across restarts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from xchat.app.security import cookie_value
from xchat.app.session import MAX_SESSIONS, SESSIONS_FILE, Sessions


def test_sessions_keep_only_digests_and_need_both_halves(tmp_path: Path) -> None:
    s = Sessions(tmp_path)
    cookie, key = s.create()
    assert len(cookie) == len(key) == 43 and cookie != key
    raw = (tmp_path / SESSIONS_FILE).read_text()
    assert cookie not in raw and key not in raw
    assert stat.S_IMODE(os.stat(tmp_path / SESSIONS_FILE).st_mode) == 0o600
    again = Sessions(tmp_path)  # after a restart
    assert again.valid(cookie, key)
    for c, k in (
        (key, cookie),
        (cookie, key[:-1]),
        (cookie + "A", key),
        (cookie.upper(), key),
        (cookie, ""),
        ("", key),
        (cookie + "|" + key, ""),
        (cookie, key + " "),
    ):
        assert not again.valid(c, k), (c, k)
    again.forget(cookie, key)
    assert not Sessions(tmp_path).valid(cookie, key)


def test_sessions_are_bounded_and_survive_a_damaged_file(tmp_path: Path) -> None:
    s = Sessions(tmp_path)
    made = [s.create() for _ in range(MAX_SESSIONS + 3)]
    assert not s.valid(*made[0])  # the oldest dropped
    assert all(s.valid(*m) for m in made[3:])
    assert len(json.loads((tmp_path / SESSIONS_FILE).read_text())["sessions"]) == MAX_SESSIONS
    (tmp_path / SESSIONS_FILE).write_text("{nope")
    assert not s.valid(*made[-1])
    assert s.valid(*s.create())


def test_cookie_value_is_exact_and_refuses_twins() -> None:
    assert cookie_value("xchat_8471=abc", "xchat_8471") == "abc"
    assert cookie_value("a=1; xchat_8471=abc; b=2", "xchat_8471") == "abc"
    for header in (
        "xchat_84710=abc",
        "xchat_847=abc",
        "Xchat_8471=abc",
        "xchat_8471",
        "",
        "xchat_8471=abc; xchat_8471=def",  # a twin planted by another 127.0.0.1 port
        "pre_xchat_8471=abc",
    ):
        assert cookie_value(header, "xchat_8471") in (None, ""), header
