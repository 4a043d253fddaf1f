"""``xchat send``: one message to a contact or a group, or ``--retry`` of unconfirmed ones.

A send exits 0 only once the relay has the message; what an earlier run left unconfirmed
is re-sent first with its original id (PROTOCOL Part IV §3.8), so a re-run after a crash
never sends a message twice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from xchat.cli.context import Ctx, print_identity_warning, report_retry, run
from xchat.cli.exits import InvalidInput
from xchat.cli.output import escape_terminal, print_json, short_address, warn
from xchat.client.client import RetryResult
from xchat.client.reports import mark_reported
from xchat.errors import ClientError


@click.command()
@click.argument("to", required=False)
@click.argument("text", required=False)
@click.option("--reply-to", default=None, help="Id of the message this replies to.")
@click.option("--group", "group", default=None, help="Send to this group (instead of TO).")
@click.option(
    "--retry",
    is_flag=True,
    help="Only re-send messages whose send was never confirmed (left by a crash or a "
    "failed send), with their original ids; takes no TO/TEXT.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def send(
    obj: Ctx,
    to: str | None,
    text: str | None,
    reply_to: str | None,
    group: str | None,
    retry: bool,
    as_json: bool,
) -> None:
    """Send TEXT to TO (@handle or address). Exits 0 once the server has it.

    Messages earlier runs left unconfirmed are re-sent first with their original ids; a
    TEXT equal to one of them (same TO and --reply-to) is that message, not a new one."""
    if retry:
        if to is not None or text is not None or reply_to is not None:
            raise click.UsageError("--retry takes no TO, TEXT or --reply-to")
        return _send_retry(obj, as_json)
    if group is not None:  # xchat send --group NAME TEXT (PROTOCOL Part VIII)
        return _send_group(obj, group, to if text is None else text, to, reply_to, as_json)
    if to is None or text is None:
        raise click.UsageError("missing TO and TEXT (or use --retry)")
    if not text.strip():
        raise InvalidInput("refusing to send an empty message")

    async def go() -> tuple[str, Path]:
        async with obj.client() as c:
            c.on_event(print_identity_warning)
            res = await c.retry_pending()
            msg_id = await c.send_text(to, text, reply_to=reply_to, resume=True)
            contact = await c.contact(to)
            store_path = c.profile.store_path
        report_retry(res, resumed=msg_id)
        if as_json:
            print_json({"id": msg_id, "to": contact.address, "handle": contact.handle})
        else:
            click.echo(msg_id)
        return msg_id, store_path

    msg_id, store_path = run(go())
    # Reported: only now is the send finished for a re-run (PROTOCOL Part IV §3.8). Exit at
    # once, so no kill can land between this and the exit (interpreter teardown took ~60 ms).
    sys.stdout.flush()
    sys.stderr.flush()
    mark_reported(store_path, msg_id)
    os._exit(0)


def _send_group(
    obj: Ctx,
    group: str,
    text: str | None,
    extra: str | None,
    reply_to: str | None,
    as_json: bool,
) -> None:
    if text is None or (extra is not None and extra != text):
        raise click.UsageError("with --group give only TEXT: xchat send --group NAME TEXT")
    if not text.strip():
        raise InvalidInput("refusing to send an empty message")

    async def go() -> None:
        async with obj.client() as c:
            msg_id = await c.send_group(group, text, reply_to=reply_to)
            gid = c.group_info(group).id
        if as_json:
            print_json({"id": msg_id, "group": gid})
        else:
            click.echo(msg_id)

    run(go())


def _send_retry(obj: Ctx, as_json: bool) -> None:
    async def go() -> RetryResult:
        async with obj.client() as c:
            res = await c.retry_pending()
            contacts = {h.peer: c.store.get_contact(h.peer) for h in res.sent}
        for h in res.sent:
            contact = contacts.get(h.peer)
            if as_json:
                handle = contact.handle if contact is not None else None
                print_json({"id": h.id, "to": h.peer, "handle": handle})
            else:
                click.echo(h.id)
        return res

    res = run(go())
    for h, reason in res.failed:
        warn(f"message {h.id} to {short_address(h.peer)} still not sent: {escape_terminal(reason)}")
    if res.failed:
        n = len(res.failed)
        raise ClientError(f"{n} message{'s' if n > 1 else ''} could not be re-sent")
