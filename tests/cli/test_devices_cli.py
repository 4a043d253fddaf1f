"""``xchat device link/add/remove/rename`` and ``xchat devices`` as real subprocesses
against a real relay (PROTOCOL.md Part VII; the CLI contract of issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _cli_helpers import SRC, ok, one_error_line, xchat
from xchat.testing import ServerProcess


def _start_link(profile: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "XCHAT_NO_KEYRING": "1"}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "xchat", "--profile", str(profile), "device", "link", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_link_list_rename_remove(server: ServerProcess, tmp_path: Path) -> None:
    old, new, bob = tmp_path / "old", tmp_path / "new", tmp_path / "bob"
    ok(xchat(old, "account", "create", "--server", server.url, "--handle", "devcli_a"))
    ok(xchat(bob, "account", "create", "--server", server.url, "--handle", "devcli_b"))
    ok(xchat(old, "send", "@devcli_b", "history before linking"))
    proc = _start_link(new, "--server", server.url, "--name", "laptop", "--json")
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # {"code": ...} as soon as it exists
        assert set(first) >= {"code"} and first["uri"].startswith("xchat-link:")
        approved = json.loads(ok(xchat(old, "device", "add", first["code"], "--json")))
        assert approved["device_id"] == 2 and approved["name"] == "laptop"
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["device_id"] == 2 and result["messages"] == 1
    hist = ok(xchat(new, "history", "@devcli_b"))
    assert "history before linking" in hist
    rows = json.loads(ok(xchat(new, "devices", "--json")))
    assert [(r["id"], r["current"]) for r in rows] == [(1, False), (2, True)]
    assert set(rows[0]) == {"id", "name", "current", "linked_at"}
    ok(xchat(new, "device", "rename", "1", "desktop"))
    rows = json.loads(ok(xchat(old, "devices", "--json")))
    assert [r["name"] for r in rows] == ["desktop", "laptop"]
    # a message to the account reaches both devices; one sent from the new one shows on the old
    ok(xchat(bob, "send", "@devcli_a", "to both"))
    assert "to both" in ok(xchat(old, "recv"))
    assert "to both" in ok(xchat(new, "recv"))
    # a setting switched on one device is switched on the other (sync kind settings)
    assert ok(xchat(new, "settings", "set", "typing", "off")).strip() == "typing off"
    ok(xchat(old, "recv"))
    shown = json.loads(ok(xchat(old, "settings", "show", "--json")))
    assert shown == {"read-receipts": True, "typing": False}
    ok(xchat(old, "device", "remove", "2"))
    assert [r["id"] for r in json.loads(ok(xchat(old, "devices", "--json")))] == [1]
    ok(xchat(bob, "send", "@devcli_a", "after removal"))
    line = one_error_line(xchat(new, "recv"))
    assert "removed" in line


def test_bad_codes_and_no_history(server: ServerProcess, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ok(xchat(old, "account", "create", "--server", server.url, "--handle", "devcli_c"))
    r = xchat(old, "device", "add", "aaaa-bbbb-cccc-dddd-eeee-ffff")
    assert "unknown link code" in one_error_line(r) and r.returncode == 14
    r = xchat(old, "device", "add", "not-a-code")
    assert "not a link code" in one_error_line(r) and r.returncode == 14
    r = xchat(old, "device", "add", "not-a-code", "--max-attachments", "300")  # 0..256 MB
    assert "--max-attachments" in r.stderr and r.returncode == 2
    proc = _start_link(new, "--server", server.url, "--no-history", "--json")
    try:
        assert proc.stdout is not None
        code = json.loads(proc.stdout.readline())["code"]
        ok(xchat(old, "device", "add", code))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["history_bytes"] == 0
    r = xchat(old, "device", "add", code)  # reused
    assert "already used" in one_error_line(r) and r.returncode == 14
    r = xchat(tmp_path / "late", "device", "link", "--server", server.url, "--wait", "1")
    assert "not approved within" in one_error_line(r) and r.returncode == 14


def _link(old: Path, new: Path, server: ServerProcess) -> None:
    proc = _start_link(new, "--server", server.url, "--json")
    try:
        assert proc.stdout is not None
        code = json.loads(proc.stdout.readline())["code"]
        ok(xchat(old, "device", "add", code))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def _incoming_read(profile: Path, to: str) -> list[tuple[str, bool]]:
    rows = [json.loads(line) for line in ok(xchat(profile, "history", to, "--json")).splitlines()]
    return [(r["text"], r["read"]) for r in rows if r.get("direction") == "in"]


def test_read_and_declined_request_sync_between_devices(
    server: ServerProcess, tmp_path: Path
) -> None:
    """`xchat read` on one device: the messages are read on the other (sync kind read);
    `xchat requests --delete` on one: the request is gone on the other too."""
    old, new, bob, eve = tmp_path / "old", tmp_path / "new", tmp_path / "bob", tmp_path / "eve"
    ok(xchat(old, "account", "create", "--server", server.url, "--handle", "devcli_r"))
    ok(xchat(bob, "account", "create", "--server", server.url, "--handle", "devcli_rb"))
    ok(xchat(eve, "account", "create", "--server", server.url, "--handle", "devcli_re"))
    ok(xchat(old, "send", "@devcli_rb", "hello bob"))
    _link(old, new, server)
    ok(xchat(bob, "send", "@devcli_r", "first"))
    ok(xchat(eve, "send", "@devcli_r", "a request"))
    for p in (old, new):
        assert "first" in ok(xchat(p, "recv"))
    assert _incoming_read(new, "@devcli_rb") == [("first", False)]
    assert "1 message marked read" in ok(xchat(old, "read", "@devcli_rb"))
    ok(xchat(new, "recv"))
    assert _incoming_read(new, "@devcli_rb") == [("first", True)]
    assert "devcli_re" in ok(xchat(new, "requests"))
    ok(xchat(old, "requests", "--delete", "@devcli_re"))
    ok(xchat(new, "recv"))
    assert ok(xchat(new, "requests")) == ""
