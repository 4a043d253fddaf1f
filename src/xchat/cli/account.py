"""``xchat account create|restore`` and ``xchat whoami``: the identity of this profile.

Creating registers a new identity (and shows the recovery phrase once); restoring brings
back the same address from the phrase or, with ``--from-backup``, from the backup PIN.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from xchat.cli.backup import history_after_phrase, restore_from_backup
from xchat.cli.context import Ctx, progress_printer, run
from xchat.cli.output import print_json


@click.group()
def account() -> None:
    """Create or restore the account of this profile."""


def _print_account(info: Any, as_json: bool, phrase: str | None) -> None:
    if as_json:
        print_json(
            {
                "address": info.address,
                "handle": info.handle,
                "recovery_phrase": phrase,
                "server": info.server,
            }
        )
        return
    click.echo(f"address: {info.address}")
    click.echo(f"handle:  {'@' + info.handle if info.handle else '(none)'}")
    click.echo(f"server:  {info.server}")
    if phrase:
        click.echo("")
        click.echo("Recovery phrase (shown only once; write it down, keep it secret):")
        words = phrase.split()
        for i in range(0, len(words), 6):
            click.echo(
                "  " + " ".join(f"{i + j + 1:2d}.{w}" for j, w in enumerate(words[i : i + 6]))
            )


@account.command("create")
@click.option("--server", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--handle", default=None, help="Public @handle to register (optional).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def account_create(obj: Ctx, server: str, handle: str | None, as_json: bool) -> None:
    """Create a new identity and register it on SERVER."""

    async def go() -> None:
        async with obj.client(creating=True) as c:
            info = await c.create_account(server, handle, progress=progress_printer())
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        _print_account(info, as_json, info.recovery_phrase)

    run(go())


@account.command("restore")
@click.option("--server", required=True, help="Server URL the account is registered on.")
@click.option(
    "--from-backup",
    "from_backup",
    default=None,
    metavar="@HANDLE|ADDRESS",
    help="Restore with the backup PIN ($XCHAT_PIN or prompted) instead of the phrase.",
)
@click.option("--realm", "realms", multiple=True, help="Realm URL (default: the relay's).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def account_restore(
    obj: Ctx, server: str, from_backup: str | None, realms: tuple[str, ...], as_json: bool
) -> None:
    """Restore the account of a recovery phrase read from stdin (same address), or with
    --from-backup and the backup PIN; the history backup comes back too."""
    if from_backup is not None:
        _print_account(run(restore_from_backup(obj, server, from_backup, realms)), as_json, None)
        return
    if sys.stdin.isatty():
        phrase = click.prompt("Recovery phrase", hide_input=True, err=True)
    else:
        phrase = sys.stdin.read()

    async def go() -> None:
        async with obj.client(creating=True) as c:
            info = await c.restore_account(server, phrase, progress=progress_printer())
            await history_after_phrase(c)
        _print_account(info, as_json, None)

    run(go())


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def whoami(obj: Ctx, as_json: bool) -> None:
    """Show this profile's address, handle, server and device."""
    c = obj.client()
    try:
        info = c.whoami()
    finally:
        run(c.close())
    if as_json:
        print_json(
            {
                "address": info.address,
                "handle": info.handle,
                "server": info.server,
                "device_id": info.device_id,
            }
        )
    else:
        click.echo(f"address:   {info.address}")
        click.echo(f"handle:    {'@' + info.handle if info.handle else '(none)'}")
        click.echo(f"server:    {info.server}")
        click.echo(f"device_id: {info.device_id}")
