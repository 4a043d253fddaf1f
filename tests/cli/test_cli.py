"""The real ``xchat`` command as a subprocess against a real relay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _cli_helpers import SRC, ok, one_error_line, xchat
from xchat.testing import ServerProcess


def test_conversation_through_the_command(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ha, hb = f"alice{os.getpid()}", f"bob{os.getpid()}"
    acc = json.loads(
        ok(xchat(a, "account", "create", "--server", server.url, "--handle", ha, "--json"))
    )
    assert set(acc) >= {"address", "handle", "recovery_phrase", "server"}
    assert acc["handle"] == ha and len(acc["recovery_phrase"].split()) == 24
    ok(xchat(b, "account", "create", "--server", server.url, "--handle", hb))
    me = json.loads(ok(xchat(a, "whoami", "--json")))
    assert me == {"address": acc["address"], "handle": ha, "server": server.url, "device_id": 1}

    msg_id = ok(xchat(a, "send", f"@{hb}", "hello \x1b[31mbob")).strip()
    assert len(msg_id) == 32
    lines = ok(xchat(b, "recv", "--json")).splitlines()
    got = [json.loads(line) for line in lines]
    assert len(got) == 1
    assert got[0]["id"] == msg_id and got[0]["from"] == acc["address"]
    assert got[0]["handle"] == ha and got[0]["text"] == "hello \x1b[31mbob"
    assert isinstance(got[0]["ts"], int)

    ok(xchat(b, "send", f"@{ha}", "evil \x1b]0;title\x07 reply"))
    plain = ok(xchat(a, "recv"))
    assert "\x1b" not in plain and "\x07" not in plain and "evil" in plain

    hist = [json.loads(x) for x in ok(xchat(a, "history", f"@{hb}", "--json")).splitlines()]
    assert [(h["direction"], h["text"]) for h in hist] == [
        ("out", "hello \x1b[31mbob"),
        ("in", "evil \x1b]0;title\x07 reply"),
    ]
    assert "\x1b" not in ok(xchat(a, "history", f"@{hb}"))

    contacts = ok(xchat(a, "contacts"))
    assert hb in contacts

    v = ok(xchat(a, "verify", f"@{hb}"))
    digits = [line for line in v.splitlines() if line.strip() and line.strip()[0].isdigit()]
    groups = " ".join(digits).split()
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    vb = ok(xchat(b, "verify", f"@{ha}", "--json"))
    assert json.loads(vb)["safety_number"] == " ".join(groups)
    ok(xchat(a, "verify", f"@{hb}", "--mark-verified"))
    assert "[verified]" in ok(xchat(a, "contacts"))


def test_error_lines(server: ServerProcess, tmp_path: Path) -> None:
    a = tmp_path / "a"
    ok(xchat(a, "account", "create", "--server", server.url))
    line = one_error_line(xchat(a, "send", "@no_such_handle_here", "hi"))
    assert "unknown" in line

    r = xchat(tmp_path / "x", "account", "create", "--server", "http://127.0.0.1:9")
    assert "reach" in one_error_line(r)
    assert r.returncode == 3

    r = xchat(
        tmp_path / "r",
        "account",
        "restore",
        "--server",
        server.url,
        stdin="abandon " * 23 + "zoo\n",
    )
    assert "recovery phrase" in one_error_line(r)

    r = xchat(tmp_path / "none", "whoami")
    assert "no account" in one_error_line(r)


def test_restore_same_address(server: ServerProcess, tmp_path: Path) -> None:
    acc = json.loads(
        ok(xchat(tmp_path / "orig", "account", "create", "--server", server.url, "--json"))
    )
    out = json.loads(
        ok(
            xchat(
                tmp_path / "new",
                "account",
                "restore",
                "--server",
                server.url,
                "--json",
                stdin=acc["recovery_phrase"] + "\n",
            )
        )
    )
    assert out["address"] == acc["address"]
    assert out["recovery_phrase"] is None


def test_passphrase_profile(server: ServerProcess, tmp_path: Path) -> None:
    p = tmp_path / "p"
    ok(
        xchat(
            p,
            "--passphrase",
            "account",
            "create",
            "--server",
            server.url,
            env={"XCHAT_PASSPHRASE": "right"},
        )
    )
    ok(xchat(p, "whoami", env={"XCHAT_PASSPHRASE": "right"}))
    r = xchat(p, "whoami", env={"XCHAT_PASSPHRASE": "wrong"})
    assert "passphrase" in one_error_line(r)
    assert r.returncode == 5


def test_chat_and_profile_lock(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    hb = f"chatbob{os.getpid()}"
    ok(xchat(a, "account", "create", "--server", server.url))
    ok(xchat(b, "account", "create", "--server", server.url, "--handle", hb))
    env = {
        **os.environ,
        "XCHAT_NO_KEYRING": "1",
        "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "xchat", "--profile", str(a), "chat", f"@{hb}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stderr is not None and proc.stdin is not None
            assert "chatting with" in proc.stderr.readline()  # running: profile is held
            r = xchat(a, "whoami")
            assert "in use" in one_error_line(r) and r.returncode == 5
            proc.stdin.write("line one\nline two\n")
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    texts = [json.loads(x)["text"] for x in ok(xchat(b, "recv", "--json")).splitlines()]
    assert texts == ["line one", "line two"]


def test_send_refuses_bad_input_with_exit_2(server: ServerProcess, tmp_path: Path) -> None:
    """PROTOCOL Part IV §9: an empty text or a mistyped address is a usage error (exit 2), an
    address-shaped typo is not reported as an unknown contact (exit 7)."""
    from xchat.crypto.keys import IdentityKeyPair

    a = tmp_path / "a"
    ok(xchat(a, "account", "create", "--server", server.url))
    for text in ("", "  \n\t "):
        r = xchat(a, "send", "@someone", text)
        assert "empty message" in one_error_line(r) and r.returncode == 2
    address = IdentityKeyPair.generate().public.address()
    typo = address[:-1] + ("q" if address[-1] != "q" else "p")
    r = xchat(a, "send", typo, "hi")
    assert one_error_line(r) == "xchat: error: invalid address: bad checksum (typo?)"
    assert r.returncode == 2
    r = xchat(a, "send", address, "hi")  # valid but not registered
    assert "unknown contact" in one_error_line(r) and r.returncode == 7
    r = xchat(a, "send", "--retry", "@someone")
    assert r.returncode == 2 and "--retry takes no" in r.stderr
    assert ok(xchat(a, "send", "--retry")) == ""  # nothing pending


def test_send_retry_resends_unconfirmed_with_original_id(
    server: ServerProcess, tmp_path: Path
) -> None:
    """PROTOCOL Part IV §3.8: `xchat send --retry` re-sends a row a failed send left behind,
    with its original id; the recipient shows it once."""
    import asyncio

    from xchat.client.client import Client
    from xchat.errors import ServerUnreachable

    a, b = tmp_path / "a", tmp_path / "b"
    ok(xchat(a, "account", "create", "--server", server.url))
    b_addr = json.loads(ok(xchat(b, "account", "create", "--server", server.url, "--json")))[
        "address"
    ]
    first = ok(xchat(a, "send", b_addr, "first")).strip()

    async def failed_send() -> str:
        async def down(*args: object, **kw: object) -> None:
            raise ServerUnreachable("relay down (test)")

        os.environ.setdefault("XCHAT_NO_KEYRING", "1")
        async with Client(a) as c:
            c._deliver = down  # type: ignore[method-assign]  # fault injection: relay down
            with pytest.raises(ServerUnreachable):
                await c.send_text(b_addr, "stuck")
            contact = c.find_contact(b_addr)
            assert contact is not None
            return next(h.id for h in c.history(contact) if h.status == "failed")

    stuck = asyncio.run(failed_send())
    out = [json.loads(x) for x in ok(xchat(a, "send", "--retry", "--json")).splitlines()]
    assert out == [{"id": stuck, "to": b_addr, "handle": None}]
    assert ok(xchat(a, "send", "--retry")) == ""
    got = [json.loads(x) for x in ok(xchat(b, "recv", "--json")).splitlines()]
    assert [(m["id"], m["text"]) for m in got] == [(first, "first"), (stuck, "stuck")]
    hist = [json.loads(x) for x in ok(xchat(a, "history", b_addr, "--json")).splitlines()]
    assert {h["status"] for h in hist} <= {"sent", "delivered"}
