"""The last client gap of issue #18: ``xchat send`` killed after the relay's ack was
recorded but before the command reported it. Re-running the same command must give the
same message id and send nothing new (PROTOCOL.md Part IV §3.8, client/reports.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from _cli_helpers import SRC, ok, xchat
from xchat.client.client import Client
from xchat.testing import ServerProcess

# The SDK part of `xchat send`, killed right after send_text returned (ack recorded, row
# "sent"), i.e. where interpreter teardown used to be.
_KILLED_BEFORE_REPORT = """
import asyncio, os, signal, sys
from xchat.client.client import Client

async def main():
    async with Client(sys.argv[1]) as c:
        msg_id = await c.send_text(sys.argv[2], sys.argv[3], resume=True)
        print(msg_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "XCHAT_NO_KEYRING": "1", "PYTHONPATH": str(SRC)}


def test_rerun_after_kill_before_report_keeps_the_id(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ok(xchat(a, "account", "create", "--server", server.url))
    bob = json.loads(ok(xchat(b, "account", "create", "--server", server.url, "--json")))
    text = "exactly once, please"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_REPORT, str(a), bob["address"], text],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    first_id = proc.stdout.strip()
    assert len(first_id) == 32
    # The user saw no success (the process died): running the command again is that send.
    again = json.loads(ok(xchat(a, "send", bob["address"], text, "--json")))
    assert again["id"] == first_id
    # A finished, reported send is not matched: the same text again is a new message.
    third = json.loads(ok(xchat(a, "send", bob["address"], text, "--json")))
    assert third["id"] != first_id
    ids = [e.id for e in asyncio.run(_receive(b)) if getattr(e, "text", None) == text]
    assert sorted(ids) == sorted([first_id, third["id"]])


async def _receive(profile: Path) -> list[object]:
    async with Client(profile) as c:
        return list(await c.receive())
