"""The context object every ``xchat`` command receives, and the helpers they share.

:class:`Ctx` is what ``--profile``/``--passphrase`` resolve to (``ctx.obj``); it opens the
profile's :class:`~xchat.client.client.Client`. The stderr notes here (identity changes,
proof-of-work progress, unconfirmed sends) are printed the same way by several commands,
so they live once, below the command modules.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from xchat.cli.output import escape_terminal, short_address, warn, who
from xchat.client import events as ev
from xchat.client.client import Client, RetryResult
from xchat.client.profile import PROFILE_FILE
from xchat.errors import ProfileLocked

T = TypeVar("T")


class Ctx:
    """The parsed global options: which profile, and whether it is passphrase-protected."""

    def __init__(self, profile: Path, passphrase: bool) -> None:
        self.profile = profile
        self.passphrase_flag = passphrase

    def passphrase(self, *, creating: bool = False) -> str | None:
        """The profile passphrase: from XCHAT_PASSPHRASE or a hidden prompt, when the
        profile uses one (or ``--passphrase`` was given)."""
        needed = self.passphrase_flag
        if not creating:
            try:
                cfg = json.loads((self.profile / PROFILE_FILE).read_text())
                needed = needed or cfg.get("key_source") == "passphrase"
            except (OSError, ValueError, AttributeError):
                pass
        if not needed:
            return None
        env = os.environ.get("XCHAT_PASSPHRASE")
        if env is not None:
            return env
        if not sys.stdin.isatty():
            raise ProfileLocked("this profile needs a passphrase (set XCHAT_PASSPHRASE)")
        return str(
            click.prompt(
                "Profile passphrase", hide_input=True, confirmation_prompt=creating, err=True
            )
        )

    def client(self, *, creating: bool = False) -> Client:
        return Client(self.profile, passphrase=self.passphrase(creating=creating))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def print_identity_warning(e: ev.Event) -> None:
    """A stderr warning for an :class:`~xchat.client.events.IdentityChangedEvent`."""
    if isinstance(e, ev.IdentityChangedEvent):
        name = who(e.address, e.handle)
        verified = (
            " (it was verified: sending is blocked until you re-verify)" if (e.was_verified) else ""
        )
        warn(f"the identity key of {name} changed{verified}; run `xchat verify {name}`")


def progress_printer() -> Callable[[int], None] | None:
    """A proof-of-work progress line on stderr, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def progress(tries: int) -> None:
        sys.stderr.write(f"\rsolving proof of work… {tries:,} tries")
        sys.stderr.flush()

    return progress


def report_retry(res: RetryResult, *, resumed: str | None = None) -> None:
    """stderr notes about unconfirmed messages of earlier runs (PROTOCOL Part IV §3.8)."""
    others = [h for h in res.sent if h.id != resumed]
    if others:
        n = len(others)
        warn(f"re-sent {n} message{'s' if n > 1 else ''} an earlier run had not confirmed")
    for h, reason in res.failed:
        warn(f"message {h.id} to {short_address(h.peer)} still not sent: {escape_terminal(reason)}")
