"""``xchat contacts``, ``xchat history`` and ``xchat verify``: the stored conversations.

``history`` merges messages, calls (PROTOCOL Part IX §7) and Part VIII notices in time
order; ``verify`` shows the safety number and records an in-person comparison.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from xchat.cli.calls import call_json, call_line
from xchat.cli.context import Ctx, print_identity_warning, run
from xchat.cli.messages import history_extras, history_rows, history_text
from xchat.cli.output import escape_terminal, fmt_time, print_json, who
from xchat.cli.receiving import file_note
from xchat.client.call_log import CallLog, CallRecord
from xchat.errors import ServerUnreachable, UnknownContact


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def contacts(obj: Ctx, as_json: bool) -> None:
    """List contacts."""
    c = obj.client()
    try:
        rows = c.contacts()
    finally:
        run(c.close())
    for r in rows:
        if as_json:
            print_json(
                {
                    "address": r.address,
                    "handle": r.handle,
                    "verified": r.verified,
                    "identity_changed": r.identity_changed,
                }
            )
        else:
            flags = (" [verified]" if r.verified else "") + (
                " [IDENTITY CHANGED]" if r.identity_changed else ""
            )
            handle = "@" + escape_terminal(r.handle) if r.handle else "-"
            click.echo(f"{handle:20s} {r.address}{flags}")


def _history_ts(m: Any) -> int:
    if isinstance(m, dict):  # a Part VIII notice
        return int(m["ts"])
    return int(m.started_ms if isinstance(m, CallRecord) else m.ts_ms)


@click.command()
@click.argument("to", required=False)
@click.option("--group", "group", default=None, help="A group's history (instead of TO).")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(obj: Ctx, to: str | None, group: str | None, limit: int, as_json: bool) -> None:
    """Show the stored conversation with TO (or --group NAME)."""
    if group is not None or to is None:
        return _group_history(obj, group, limit, as_json)
    c = obj.client()
    try:
        contact = c.find_contact(to)
        if contact is None:
            raise UnknownContact(f"no conversation with {to!r}")
        items = c.history(contact, limit)
        calls = CallLog(c.store).list(contact.address, limit)  # calls too (PROTOCOL Part IX §7)
        me = c.address
        rich, notices = history_extras(c, contact.address, [m.id for m in items])
    finally:
        run(c.close())
    merged: list[Any] = sorted([*items, *calls, *notices], key=_history_ts)
    for m in merged:
        if isinstance(m, dict):  # a Part VIII notice (disappearing timer set, ...)
            if as_json:
                print_json(m)
            else:
                click.echo(history_text(m, me))
            continue
        if isinstance(m, CallRecord):
            if as_json:
                print_json({"type": "call", **call_json(m, contact.handle)})
            else:
                click.echo(call_line(m, contact.handle))
            continue
        if as_json:
            print_json(
                {
                    "id": m.id,
                    "direction": m.direction,
                    "from": m.peer if m.direction == "in" else me,
                    "to": me if m.direction == "in" else m.peer,
                    "handle": contact.handle,
                    "text": m.text,
                    "ts": m.ts_ms,
                    "status": m.status,
                    "reply_to": m.reply_to,
                    **({"file": m.file} if m.file is not None else {}),
                    "type": "file" if m.file is not None else "text",
                    **rich.get(m.id, {}),
                }
            )
        else:
            arrow = who(contact.address, contact.handle) if m.direction == "in" else "me"
            status = f" ({m.status})" if m.direction == "out" else ""
            text = escape_terminal(m.text or "", keep_newlines=True)
            click.echo(f"[{fmt_time(m.ts_ms)}] {arrow}: {text}{file_note(m.file)}{status}")


def _group_history(obj: Ctx, group: str | None, limit: int, as_json: bool) -> None:
    if group is None:
        raise click.UsageError("missing TO (or --group NAME)")
    c = obj.client()
    try:
        gid = c.group_info(group).id
        rows = history_rows(c, f"group:{gid}", limit)
        me = c.address
    finally:
        run(c.close())
    for row in rows:
        if as_json:
            print_json(row)
        else:
            click.echo(history_text(row, me))


@click.command()
@click.argument("to")
@click.option(
    "--mark-verified", is_flag=True, help="Record that you compared the safety number in person."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def verify(obj: Ctx, to: str, mark_verified: bool, as_json: bool) -> None:
    """Show the safety number with TO (and a QR code to scan)."""
    import segno

    async def go() -> None:
        async with obj.client() as c:
            c.on_event(print_identity_warning)
            try:
                contact = await c.resolve(to)
            except ServerUnreachable:
                # Offline: the key we recorded is what the number is about anyway.
                local = c.find_contact(to)
                if local is None or local.identity_key is None:
                    raise
                contact = local
            digits, qr = c.safety_number(contact)
            if mark_verified:
                await c.mark_verified_everywhere(contact)  # and on our other devices
        if as_json:
            print_json(
                {
                    "address": contact.address,
                    "handle": contact.handle,
                    "safety_number": digits,
                    "verified": mark_verified or contact.verified,
                }
            )
            return
        click.echo(f"Safety number with {who(contact.address, contact.handle)}:")
        groups = digits.split()
        for i in range(0, len(groups), 4):
            click.echo("  " + " ".join(groups[i : i + 4]))
        click.echo("")
        segno.make(qr, error="m").terminal(out=sys.stdout, compact=True)
        if mark_verified:
            click.echo(f"{who(contact.address, contact.handle)} is now marked as verified.")
        else:
            click.echo("Compare this number in person, then run with --mark-verified.")

    run(go())
