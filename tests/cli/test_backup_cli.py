"""``xchat backup ...`` and ``xchat account restore --from-backup`` as subprocesses against
a real relay and three real realms (PROTOCOL.md Part X)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _cli_helpers import ok, one_error_line, xchat
from xchat.realm.testing import RealmProcess, running_realms
from xchat.testing import ServerProcess, running_server

PIN = {"XCHAT_PIN": "482913"}


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, list[RealmProcess]]]:
    root = tmp_path_factory.mktemp("backup-cli")
    with running_realms(root / "realms", 3) as realms:
        urls = ",".join(r.url for r in realms)
        with running_server(root / "relay", pow_bits=2, rate_limits=False, realms=urls) as s:
            yield s, realms


def test_enable_status_restore_disable(
    relay: tuple[ServerProcess, list[RealmProcess]], tmp_path: Path
) -> None:
    server, realms = relay
    a, b = tmp_path / "a", tmp_path / "b"
    ha, hb = f"alicecli{os.getpid()}", f"bobcli{os.getpid()}"
    created = json.loads(
        ok(xchat(a, "account", "create", "--server", server.url, "--handle", ha, "--json"))
    )
    ok(xchat(b, "account", "create", "--server", server.url, "--handle", hb))
    ok(xchat(a, "send", f"@{hb}", "before the loss"))
    ok(xchat(b, "recv"))
    ok(xchat(b, "send", f"@{ha}", "noted"))
    ok(xchat(a, "recv"))

    # The PIN is never an argument; a weak one is refused (exit 2).
    weak = xchat(a, "backup", "enable", env={"XCHAT_PIN": "123456"})
    assert weak.returncode == 2 and "too easy" in one_error_line(weak)
    st = json.loads(ok(xchat(a, "backup", "enable", "--json", env=PIN)))
    assert st["enabled"] and st["threshold"] == 2 and len(st["realms"]) == 3
    assert st["last_backup_ms"] and st["last_backup_size"] > 0
    ok(xchat(a, "backup", "now"))
    st = json.loads(ok(xchat(a, "backup", "status", "--json")))
    assert {r["url"] for r in st["realms"]} == {r.url for r in realms}
    assert st["messages"] == 2
    human = ok(xchat(a, "backup", "status"))
    assert "2 of 3 realms" in human and "last backup" in human

    # Wrong PIN: exit 8, and the message says how many guesses remain.
    wrong = xchat(
        tmp_path / "thief",
        "account",
        "restore",
        "--server",
        server.url,
        "--from-backup",
        f"@{ha}",
        env={"XCHAT_PIN": "777001"},
    )
    assert wrong.returncode == 8
    assert "9 guess(es) remain" in one_error_line(wrong)

    new = tmp_path / "a2"
    restored = json.loads(
        ok(
            xchat(
                new,
                "account",
                "restore",
                "--server",
                server.url,
                "--from-backup",
                f"@{ha}",
                "--json",
                env=PIN,
            )
        )
    )
    assert set(restored) == set(created)  # the same fields as `account create --json`
    assert restored["address"] == created["address"] and restored["handle"] == ha
    hist = [json.loads(x) for x in ok(xchat(new, "history", f"@{hb}", "--json")).splitlines()]
    assert [h["text"] for h in hist] == ["before the loss", "noted"]

    # The phrase restores the history too.
    phrase_profile = tmp_path / "a3"
    r = xchat(
        phrase_profile,
        "account",
        "restore",
        "--server",
        server.url,
        stdin=created["recovery_phrase"],
    )
    ok(r)
    assert "history restored: 2 messages" in r.stderr

    gone = json.loads(ok(xchat(new, "backup", "disable", "--json")))
    assert gone == {"deleted_realm_shares": 3, "deleted_blobs": 1, "unreachable_realms": []}
    assert json.loads(ok(xchat(new, "backup", "status", "--json")))["enabled"] is False
    after = xchat(
        tmp_path / "a4",
        "account",
        "restore",
        "--server",
        server.url,
        "--from-backup",
        created["address"],
        env=PIN,
    )
    assert after.returncode == 1 and "no PIN backup" in one_error_line(after)


def test_pin_is_never_an_argument(
    relay: tuple[ServerProcess, list[RealmProcess]], tmp_path: Path
) -> None:
    r = xchat(tmp_path / "x", "backup", "enable", "482913")
    assert r.returncode == 2  # click usage error: no such argument
    r = xchat(tmp_path / "x", "backup", "enable", "--pin", "482913")
    assert r.returncode == 2
