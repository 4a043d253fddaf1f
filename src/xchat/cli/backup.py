"""``xchat backup ...`` and ``xchat account restore --from-backup`` (PROTOCOL.md Part X).

The PIN is read from ``$XCHAT_PIN`` or a hidden prompt, never from an argument (arguments
end up in shell history and in ``ps``). Exit statuses as everywhere: 8 for a wrong PIN (the
message says how many guesses remain), 2 for a PIN the policy refuses.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from xchat.cli.output import print_json
from xchat.client import backup as bk
from xchat.errors import BackupUnavailable, ProfileLocked, XChatError


def read_pin(*, confirm: bool = False) -> str:
    """``$XCHAT_PIN``, else a hidden prompt (twice when setting one)."""
    env = os.environ.get("XCHAT_PIN")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise ProfileLocked("a backup PIN is needed (set XCHAT_PIN or run in a terminal)")
    return str(click.prompt("Backup PIN", hide_input=True, confirmation_prompt=confirm, err=True))


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _print_status(st: bk.BackupStatus, as_json: bool) -> None:
    if as_json:
        print_json(st.to_json())
        return
    if not st.enabled:
        click.echo("backup: off (run `xchat backup enable`)")
        return
    click.echo(f"backup:      on, {st.threshold} of {len(st.realms)} realms needed")
    for r in st.realms:
        click.echo(f"  realm      {r.name}  {r.url}")
    when = (
        datetime.fromtimestamp(st.last_backup_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if st.last_backup_ms
        else "never"
    )
    click.echo(f"last backup: {when}, {_fmt_size(st.last_backup_size)}")
    click.echo(f"history:     {st.messages} messages in {st.segments} segment(s)")
    if st.attachments:
        click.echo(f"attachments: {st.files} file(s)")
    if st.pending_upload:
        click.echo("             an interrupted upload resumes at the next `xchat backup now`")


@click.group("backup")
def backup_group() -> None:
    """PIN backup of your identity and encrypted backup of your history."""


@backup_group.command("enable")
@click.option(
    "--realm", "realms", multiple=True, help="Realm URL (repeatable; default: the relay's)."
)
@click.option(
    "--threshold", type=int, default=None, help="Realms needed to restore (default: a majority)."
)
@click.option(
    "--attachments/--no-attachments",
    default=None,
    help="Also back up received files (<profile>/downloads); off by default.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def enable(
    obj: Any,
    realms: tuple[str, ...],
    threshold: int | None,
    attachments: bool | None,
    as_json: bool,
) -> None:
    """Set a PIN, split your account secret across the realms, back up now."""
    pin = read_pin(confirm=True)

    async def go() -> bk.BackupStatus:
        async with obj.client() as c:
            return await bk.enable(c, pin, list(realms) or None, threshold, attachments=attachments)

    _print_status(asyncio.run(go()), as_json)


@backup_group.command("now")
@click.option("--full", is_flag=True, help="Upload everything again (not only what changed).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def now(obj: Any, full: bool, as_json: bool) -> None:
    """Back up the history now (resumes an interrupted upload first)."""

    async def go() -> bk.BackupStatus:
        async with obj.client() as c:
            return await bk.backup_now(c, full=full)

    _print_status(asyncio.run(go()), as_json)


@backup_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def status(obj: Any, as_json: bool) -> None:
    """Realms, threshold, last backup time and size."""

    async def go() -> bk.BackupStatus:
        async with obj.client() as c:
            return bk.status(c)

    _print_status(asyncio.run(go()), as_json)


@backup_group.command("disable")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def disable(obj: Any, as_json: bool) -> None:
    """Delete the shares at every realm and the history backup at the relay."""

    async def go() -> dict[str, Any]:
        async with obj.client() as c:
            return await bk.disable(c)

    out = asyncio.run(go())
    for url in out["unreachable"]:
        sys.stderr.write(
            f"xchat: warning: realm {url} is unreachable; its share stays until you run "
            "`xchat backup disable` again\n"
        )
    if as_json:
        print_json(
            {
                "deleted_realm_shares": out["realms"],
                "deleted_blobs": out["blobs"],
                "unreachable_realms": out["unreachable"],
            }
        )
    else:
        click.echo(
            f"backup: off; deleted {out['realms']} realm share(s) and {out['blobs']} blob(s)"
        )


def _history_note(restored: bk.HistoryRestored | None) -> None:
    if restored is None:
        sys.stderr.write("xchat: no history backup found; identity restored\n")
    else:
        sys.stderr.write(
            f"xchat: history restored: {restored.messages} messages, "
            f"{restored.contacts} contacts, {restored.groups} groups, {restored.files} files\n"
        )


async def restore_from_backup(obj: Any, server: str, target: str, realms: tuple[str, ...]) -> Any:
    """``account restore --from-backup``: PIN → realms → identity → history."""
    pin = read_pin()
    async with obj.client(creating=True) as c:
        info, restored = await bk.restore_with_pin(c, server, target, pin, list(realms) or None)
    _history_note(restored)
    return info


async def history_after_phrase(c: Any) -> None:
    """After a phrase restore: bring back the history backup too, if the relay has one."""
    try:
        restored: bk.HistoryRestored | None = await bk.restore_history(c)
    except BackupUnavailable:
        return
    _history_note(restored)


async def daily_backup(c: Any) -> None:
    """The automatic daily backup for command-line users: ``xchat recv`` takes one when the
    last is a day old (a no-op when backup is off). A failure is one warning line; the
    command itself still succeeds."""
    try:
        await bk.maybe_backup(c)
    except XChatError as exc:
        sys.stderr.write(f"xchat: warning: daily backup skipped ({exc})\n")
