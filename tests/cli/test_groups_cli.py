"""``xchat group ...`` and file reception in ``xchat recv`` as real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from _cli_helpers import account, ok, one_error_line, xchat
from xchat.testing import ServerProcess


def _recv(profile: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in ok(xchat(profile, "recv", "--json")).splitlines()]


def test_group_commands_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tag = os.getpid() % 10000
    account(a, server.url, f"ga{tag}")
    addr_b = account(b, server.url, f"gb{tag}")
    account(c, server.url, f"gc{tag}")

    gid = ok(xchat(a, "group", "create", "crew", f"@gb{tag}", f"@gc{tag}")).strip()
    assert len(gid) == 32 and int(gid, 16) >= 0
    created = json.loads(ok(xchat(a, "group", "create", "crew", addr_b, "--json")))
    assert created["name"] == "crew" and len(created["members"]) == 2
    # Two groups are called "crew": the name is ambiguous -> one error line, non-zero exit.
    assert "ambiguous" in one_error_line(xchat(a, "group", "send", "crew", "hi"))
    assert "no group" in one_error_line(xchat(a, "group", "info", "nothing-like-it"))

    ok(xchat(a, "group", "send", gid, "hello crew"))
    for p in (b, c):
        got = [m for m in _recv(p) if m.get("text") == "hello crew"]
        assert len(got) == 1 and got[0]["group"] == {"id": gid, "name": "crew"}
    listed = json.loads(ok(xchat(b, "group", "list", "--json")))
    assert {g["id"] for g in listed} == {gid, created["id"]}
    info = json.loads(ok(xchat(c, "group", "info", gid, "--json")))
    assert len(info["members"]) == 3 and not info["admin"]
    assert "crew" in ok(xchat(c, "group", "info", gid))

    # A non-admin cannot change the group, nor make itself an admin ...
    one_error_line(xchat(b, "group", "add", gid, f"@ga{tag}"))
    assert "admin" in one_error_line(xchat(b, "group", "admin", gid, f"@gb{tag}"))
    # ... until an admin makes it one (every member's copy says so), and takes it back.
    promoted = json.loads(ok(xchat(a, "group", "admin", gid, f"@gb{tag}", "--json")))
    assert {m["address"] for m in promoted["members"] if m["admin"]} >= {addr_b}
    ok(xchat(b, "recv"))
    assert json.loads(ok(xchat(b, "group", "info", gid, "--json")))["admin"]
    ok(xchat(a, "group", "admin", gid, addr_b, "--revoke"))
    ok(xchat(b, "recv"))
    assert not json.loads(ok(xchat(b, "group", "info", gid, "--json")))["admin"]

    # Remove c; b still gets messages, c gets nothing readable.
    ok(xchat(a, "group", "remove", gid, f"@gc{tag}"))
    ok(xchat(c, "recv"))
    assert json.loads(ok(xchat(c, "group", "info", gid, "--json")))["left"]
    ok(xchat(b, "recv"))
    ok(xchat(a, "group", "send", gid, "without c"))
    assert [m["text"] for m in _recv(b)] == ["without c"]
    assert [m for m in _recv(c) if "text" in m] == []

    # A group file: one blob upload, one group message; recv saves it to downloads.
    src = tmp_path / "notes.txt"
    src.write_bytes(b"group file body\n" * 100)
    ok(xchat(a, "group", "file", gid, str(src)))
    got = _recv(b)
    assert len(got) == 1 and got[0]["type"] == "file" and got[0]["group"]["id"] == gid
    f = got[0]["file"]
    assert isinstance(f, dict)
    assert f["name"] == "notes.txt" and f["size"] == src.stat().st_size
    saved = Path(str(f["path"]))
    assert saved.parent == b / "downloads" and saved.read_bytes() == src.read_bytes()
    assert f["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_recv_saves_direct_file(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    tag = os.getpid() % 10000
    account(a, server.url, f"fa{tag}")
    account(b, server.url, f"fb{tag}")
    src = tmp_path / "photo.bin"
    src.write_bytes(os.urandom(70_000))
    ok(xchat(a, "file", "send", f"@fb{tag}", str(src)))
    plain = ok(xchat(b, "recv"))
    assert "file saved" in plain
    files = list((b / "downloads").iterdir())
    assert [p.read_bytes() for p in files] == [src.read_bytes()]
