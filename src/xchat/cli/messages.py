"""``xchat`` rich-messaging commands (PROTOCOL.md Part VIII; README "Rich messaging").

Stable for scripts: ``react``, ``edit``, ``delete``, ``disappear``, ``read``,
``requests``, ``accept``, ``block``, ``unblock``, ``search``, ``settings set``,
``group leave``. Every message command names its conversation with ``TO`` (``@handle``
or address) or with ``--group NAME`` instead of ``TO``. Commands that send print the id
of the content they sent. Refusals by the rules (a non-author's edit, the 24 h window,
a blocked contact) exit with status 9; bad input (an emoji that is not one, a duration
outside 5 s .. 4 weeks) with 2.

Also the JSON shapes ``xchat recv --json`` / ``history --json`` print for Part VIII
(:func:`event_json`, :func:`message_extras`, :func:`history_rows`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from xchat.cli.groups import group_group
from xchat.cli.output import escape_terminal, fmt_time, print_json, who
from xchat.client import events as ev
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.messaging import GROUP_PREFIX, author_of, conv_of_peer
from xchat.errors import ClientError, DecodeError, NotAllowed

T = TypeVar("T")


class BadInput(ClientError):
    """Refused before any work (exit status 2, like ``xchat send TO ''``)."""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _split(
    args: tuple[str, ...], group: str | None, names: list[str], optional: int = 0
) -> list[str | None]:
    """Positional arguments: ``TO`` first unless ``--group`` names the conversation."""
    want = names if group is None else names[1:]
    if not len(want) - optional <= len(args) <= len(want):
        usage = " ".join(want[: len(want) - optional]) + "".join(
            f" [{n}]" for n in want[len(want) - optional :]
        )
        raise click.UsageError(f"expected {usage}" + ("" if group is None else " (with --group)"))
    values: list[str | None] = list(args) + [None] * (len(want) - len(args))
    return ([None] if group is not None else []) + values


def _refusing(fn: Any) -> Any:
    """Map rule refusals and input errors of the SDK to the CLI's exit statuses."""

    async def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return await fn(*a, **k)
        except DecodeError as exc:  # TooLarge and friends: the input is wrong
            raise BadInput(str(exc)) from None

    return wrapper


def _print_id(msg_id: str | None, as_json: bool, **extra: Any) -> None:
    if as_json:
        print_json({"id": msg_id, **extra})
    elif msg_id:
        click.echo(msg_id)


# --- reactions, edits, deletes -------------------------------------------------------------


@click.command("react")
@click.argument("args", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove your reaction instead.")
@click.option("--group", "group", default=None, help="The group (instead of TO).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def react_command(
    obj: Any, args: tuple[str, ...], remove: bool, group: str | None, as_json: bool
) -> None:
    """React to message ID with EMOJI: xchat react TO ID EMOJI [--remove]."""
    to, msg_id, emoji = _split(args, group, ["TO", "ID", "EMOJI"], optional=1 if remove else 0)
    assert msg_id is not None
    if not remove and emoji is None:
        raise click.UsageError("missing EMOJI (or use --remove)")

    @_refusing
    async def go() -> str:
        async with obj.client() as c:
            return str(await c.messaging.react(to, msg_id, emoji or "", remove=remove, group=group))

    _print_id(_run(go()), as_json)


@click.command("edit")
@click.argument("args", nargs=-1, required=True)
@click.option("--group", "group", default=None, help="The group (instead of TO).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def edit_command(obj: Any, args: tuple[str, ...], group: str | None, as_json: bool) -> None:
    """Edit your message ID (within 24 h): xchat edit TO ID TEXT."""
    to, msg_id, text = _split(args, group, ["TO", "ID", "TEXT"])
    assert msg_id is not None and text is not None
    if not text.strip():
        raise BadInput("refusing an empty text")

    @_refusing
    async def go() -> str:
        async with obj.client() as c:
            return str(await c.messaging.edit(to, msg_id, text, group=group))

    _print_id(_run(go()), as_json)


@click.command("delete")
@click.argument("args", nargs=-1, required=True)
@click.option("--for-everyone", is_flag=True, help="Your own message, for everyone (a tombstone).")
@click.option("--group", "group", default=None, help="The group (instead of TO).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def delete_command(
    obj: Any, args: tuple[str, ...], for_everyone: bool, group: str | None, as_json: bool
) -> None:
    """Delete message ID for you (any message), or --for-everyone (yours)."""
    to, msg_id = _split(args, group, ["TO", "ID"])
    assert msg_id is not None

    async def go() -> str | None:
        async with obj.client() as c:
            sent: str | None = await c.messaging.delete(
                to, msg_id, for_everyone=for_everyone, group=group
            )
            return sent

    sent = _run(go())
    if as_json:
        print_json({"id": sent, "deleted": msg_id, "for_everyone": for_everyone})
    elif sent:
        click.echo(sent)


# --- disappearing messages, read --------------------------------------------------------


@click.command("disappear")
@click.argument("args", nargs=-1, required=True)
@click.option("--group", "group", default=None, help="The group (instead of TO).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def disappear_command(obj: Any, args: tuple[str, ...], group: str | None, as_json: bool) -> None:
    """Set the conversation's disappearing timer: DURATION (30s, 5m, 1h, 7d, 4w) or off."""
    to, duration = _split(args, group, ["TO", "DURATION"])
    assert duration is not None
    try:
        seconds = rc.parse_duration(duration)
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    async def go() -> str:
        async with obj.client() as c:
            return str(await c.messaging.set_timer(to, seconds, group=group))

    _print_id(_run(go()), as_json, seconds=seconds)


@click.command("read")
@click.argument("to", required=False)
@click.option("--group", "group", default=None, help="The group (instead of TO).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def read_command(obj: Any, to: str | None, group: str | None, as_json: bool) -> None:
    """Mark the conversation read (read receipts go out if enabled; timers start)."""

    async def go() -> list[str]:
        async with obj.client() as c:
            return list(await c.messaging.mark_read(to, group))

    ids = _run(go())
    if as_json:
        print_json({"read": ids})
    else:
        click.echo(f"{len(ids)} message{'s' if len(ids) != 1 else ''} marked read")


# --- requests and blocking ---------------------------------------------------------------


@click.command("requests")
@click.option("--json", "as_json", is_flag=True)
@click.option("--delete", "delete", default=None, metavar="ADDRESS", help="Delete this request.")
@click.pass_obj
def requests_command(obj: Any, as_json: bool, delete: str | None) -> None:
    """List message requests: first messages from people who are not contacts."""
    if delete is not None:  # on our other devices too (PROTOCOL Part VII §5)

        async def go() -> int:
            async with obj.client() as d:
                return int(await d.messaging.decline(delete))

        n = _run(go())
        click.echo(f"deleted the request ({n} message{'s' if n != 1 else ''})")
        return
    c = obj.client()
    try:
        rows = c.messaging.requests()
    finally:
        _run(c.close())
    for r in rows:
        if as_json:
            print_json(
                {
                    "address": r.address,
                    "handle": r.handle,
                    "messages": r.messages,
                    "last_text": r.last_text,
                    "ts": r.last_ts,
                }
            )
        else:
            text = escape_terminal(r.last_text or "", keep_newlines=False)
            click.echo(f"{who(r.address, r.handle)}  {r.address}  ({r.messages}) {text}")


@click.command("accept")
@click.argument("address")
@click.pass_obj
def accept_command(obj: Any, address: str) -> None:
    """Accept the message request of ADDRESS (or @handle): it moves to the inbox."""

    async def go() -> str:
        async with obj.client() as c:
            return str(await c.messaging.accept(address))

    click.echo(_run(go()))


def _block(obj: Any, to: str | None, group: str | None, unblock: bool) -> None:
    if to is None and group is None:
        raise click.UsageError("missing TO (or --group NAME)")

    async def go() -> str:
        async with obj.client() as c:
            m = c.messaging
            return str(await (m.unblock(to, group) if unblock else m.block(to, group)))

    click.echo(_run(go()))


@click.command("block")
@click.argument("to", required=False)
@click.option("--group", "group", default=None)
@click.pass_obj
def block_command(obj: Any, to: str | None, group: str | None) -> None:
    """Block TO: their messages are dropped, they get no receipts."""
    _block(obj, to, group, unblock=False)


@click.command("unblock")
@click.argument("to", required=False)
@click.option("--group", "group", default=None)
@click.pass_obj
def unblock_command(obj: Any, to: str | None, group: str | None) -> None:
    """Unblock TO."""
    _block(obj, to, group, unblock=True)


@group_group.command("leave")
@click.argument("group")
@click.pass_obj
def group_leave(obj: Any, group: str) -> None:
    """Leave GROUP: the others rotate their keys and see that you left."""

    async def go() -> None:
        async with obj.client() as c:
            await c.messaging.leave_group(group)

    _run(go())


# --- search and settings -----------------------------------------------------------------


@click.command("search")
@click.argument("query")
@click.option("--in", "in_", default=None, metavar="TO", help="Only this conversation (contact).")
@click.option("--group", "group", default=None, help="Only this group.")
@click.option("--from", "person", default=None, metavar="WHO", help="Only messages by WHO (or me).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def search_command(
    obj: Any,
    query: str,
    in_: str | None,
    group: str | None,
    person: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Search your history (decrypted in memory only; newest first)."""
    c = obj.client()
    try:
        to = in_
        if in_ is not None and group is None and c.find_contact(in_) is None:
            to, group = None, in_  # --in also takes a group name
        hits = c.messaging.search(query, to=to, group=group, person=person, limit=limit)
        me = c.address
        names = {h.author: _handle(c, h.author) for h in hits}
    finally:
        _run(c.close())
    for h in hits:
        gid = h.conv[len(GROUP_PREFIX) :] if h.conv.startswith(GROUP_PREFIX) else None
        if as_json:
            print_json(
                {
                    "id": h.id,
                    "conversation": gid or h.conv,
                    "group": gid,
                    "from": h.author,
                    "handle": names[h.author],
                    "mine": h.author == me,
                    "ts": h.ts_ms,
                    "text": h.text,
                }
            )
        else:
            name = "me" if h.author == me else who(h.author, names[h.author])
            text = escape_terminal(h.text, keep_newlines=True)
            click.echo(f"[{fmt_time(h.ts_ms)}] {h.id[:8]} {name}: {text}")


def _handle(c: Any, address: str) -> str | None:
    contact = c.store.get_contact(address)
    return contact.handle if contact is not None else None


@click.group("settings")
def settings_group() -> None:
    """Privacy settings of this profile."""


@settings_group.command("set")
@click.argument("name", type=click.Choice(["read-receipts", "typing"]))
@click.argument("value", type=click.Choice(["on", "off"]))
@click.pass_obj
def settings_set(obj: Any, name: str, value: str) -> None:
    """read-receipts off: you send none and see none. typing off: likewise. The setting
    is the account's: your other linked devices switch too."""

    async def go() -> None:
        async with obj.client() as c:
            await c.messaging.set_setting(name, value == "on")

    _run(go())
    click.echo(f"{name} {value}")


@settings_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def settings_show(obj: Any, as_json: bool) -> None:
    c = obj.client()
    try:
        values = {n: c.messaging.setting(n) for n in ("read-receipts", "typing")}
    finally:
        _run(c.close())
    if as_json:
        print_json(values)
    else:
        for n, v in values.items():
            click.echo(f"{n} {'on' if v else 'off'}")


COMMANDS = (
    react_command,
    edit_command,
    delete_command,
    disappear_command,
    read_command,
    requests_command,
    accept_command,
    block_command,
    unblock_command,
    search_command,
    settings_group,
)


# --- JSON shapes for recv / history ----------------------------------------------------------


def event_json(e: ev.Event) -> dict[str, Any] | None:
    """One ``recv --json`` line for a Part VIII event (None: not one of ours)."""
    base: dict[str, Any]
    if isinstance(e, rev.ReactionChanged):
        base = {
            "type": "reaction",
            "from": e.sender,
            "target": e.target_id,
            "target_author": e.target_author,
            "emoji": e.emoji,
            "removed": e.emoji is None,
        }
    elif isinstance(e, rev.MessageEdited):
        base = {
            "type": "edit",
            "from": e.sender,
            "target": e.target_id,
            "text": e.text,
            "version": e.version,
        }
    elif isinstance(e, rev.MessageDeleted):
        base = {"type": "delete", "from": e.sender, "target": e.target_id}
    elif isinstance(e, rev.RichReceipt):
        base = {"type": "receipt", "kind": e.kind, "from": e.sender, "ids": list(e.message_ids)}
    elif isinstance(e, ev.ReceiptReceived):
        return {
            "type": "receipt",
            "kind": "delivered",
            "from": e.sender,
            "ids": list(e.message_ids),
            "ts": e.ts_ms,
            "group": None,
        }
    elif isinstance(e, rev.TypingChanged):
        base = {"type": "typing", "from": e.sender, "started": e.started}
    elif isinstance(e, rev.TimerChanged):
        base = {
            "type": "disappear",
            "from": e.sender,
            "seconds": e.seconds,
            "duration": rc.format_duration(e.seconds),
        }
    elif isinstance(e, rev.GroupNotice):
        return {
            "type": "group_notice",
            "group": e.group,
            "kind": e.kind,
            "by": e.by,
            "targets": list(e.targets),
            "name": e.name,
            "text": e.text,
            "ts": e.ts_ms,
        }
    elif isinstance(e, rev.MessageRequest):
        return None  # the message's own line says "request": true
    elif isinstance(e, rev.MessagesExpired):
        return {"type": "expired", "conversation": _conv_name(e.conv), "ids": list(e.ids)}
    elif isinstance(e, rev.RichRejected):
        return {
            "type": "rejected",
            "from": e.sender,
            "kind": e.kind,
            "target": e.target_id,
            "reason": e.reason,
        }
    else:
        return None
    return {**base, "ts": e.ts_ms, "group": e.group}


def _conv_name(conv: str) -> str:
    return conv[len(GROUP_PREFIX) :] if conv.startswith(GROUP_PREFIX) else conv


def event_line(e: ev.Event) -> str | None:
    """The human ``recv`` line for a Part VIII event (None: not shown)."""
    obj = event_json(e)
    if obj is None or obj["type"] in ("receipt", "typing", "expired"):
        return None
    sender = obj.get("from") or obj.get("by") or ""
    name = escape_terminal(str(sender))[:14]
    kind = obj["type"]
    if kind == "reaction":
        what = (
            "removed a reaction" if obj["removed"] else f"reacted {escape_terminal(obj['emoji'])}"
        )
        return f"{name}: {what} to {obj['target'][:8]}"
    if kind == "edit":
        text = escape_terminal(obj["text"], keep_newlines=True)
        return f"{name}: edited {obj['target'][:8]}: {text}"
    if kind == "delete":
        return f"{name}: deleted {obj['target'][:8]}"
    if kind == "disappear":
        return f"{name}: disappearing messages {obj['duration']}"
    if kind == "group_notice":
        return f"[{escape_terminal(obj['name'])}] {escape_terminal(obj['text'])}"
    if kind == "request":
        return f"message request from {name} (xchat accept {sender})"
    if kind == "rejected":
        return f"refused a {obj['kind']} by {name}: {escape_terminal(obj['reason'])}"
    return None


def message_extras(c: Any, e: ev.MessageReceived) -> dict[str, Any]:
    """Part VIII keys of a received message for ``recv --json``."""
    peer = f"{GROUP_PREFIX}{e.group['id']}:{e.sender}" if e.group is not None else e.sender
    m = c.store.get_message(peer, e.id)
    if m is None:  # expired or deleted in the meantime
        return {"deleted": True}
    out = dict(c.messaging.state.describe(m))
    state = c.messaging.state.state(conv_of_peer(peer))
    out["request"] = e.group is None and state == "request"
    return out


def history_rows(c: Any, conv: str, limit: int) -> list[dict[str, Any]]:
    """``history --json`` rows of a conversation: messages (with their Part VIII state,
    earlier versions of edited ones) and the conversation's notices, oldest first."""
    st = c.messaging.state
    me = c.address
    members = None
    if conv.startswith(GROUP_PREFIX):
        members = max(0, len(c.group_info(conv[len(GROUP_PREFIX) :]).members) - 1)
    msgs = st.rs.conversation_messages(conv)[-limit:]
    rows: list[dict[str, Any]] = []
    for m in msgs:
        try:
            from xchat.client import content as ct

            body = ct.Content.decode(m.body)
        except Exception:
            body = None
        author = author_of(m, me)
        extra = st.describe(m, members=members)
        row = {
            "type": "file" if body is not None and body.file is not None else "text",
            "id": m.id,
            "direction": m.direction,
            "from": author,
            "handle": _handle(c, author) if author != me else c.whoami().handle,
            "text": body.text if body is not None else None,
            "ts": m.ts_ms,
            "status": m.status,
            "reply_to": body.reply_to if body is not None else None,
            **extra,
        }
        if body is not None and body.file is not None:
            row["file"] = body.file
        if extra["edited"]:
            row["versions"] = st.versions(conv, m.id)
        rows.append(row)
    for n in st.notices(conv, limit):
        rows.append({**n, "type": n.get("type", "group_notice")})
    rows.sort(key=lambda r: r["ts"])
    return rows[-limit:] if len(rows) > limit else rows


def history_text(row: dict[str, Any], me: str) -> str:
    """One human ``history`` line."""
    ts = fmt_time(int(row["ts"]))
    if row["type"] not in ("text", "file"):
        return f"[{ts}] -- {escape_terminal(str(row.get('text', '')))}"
    name = "me" if row["from"] == me else who(row["from"], row.get("handle"))
    if row.get("deleted"):
        return f"[{ts}] {name}: (deleted)"
    text = escape_terminal(row.get("text") or "", keep_newlines=True)
    marks = " (edited)" if row.get("edited") else ""
    quote = row.get("quote")
    if quote is not None:
        q = escape_terminal(str(quote.get("text") or "")[:40])
        flag = {"forged": " FORGED QUOTE", "missing": " unverified", "deleted": " deleted"}.get(
            quote["status"], ""
        )
        text = f"> {q}{flag} | {text}"
    reactions = " ".join(
        f"{escape_terminal(r['emoji'])}{r['count']}" for r in row.get("reactions", [])
    )
    status = (
        f" ({row['status']}{', read' if row.get('read') else ''})"
        if row["direction"] == "out"
        else ""
    )
    return f"[{ts}] {name}: {text}{marks}{' [' + reactions + ']' if reactions else ''}{status}"


def history_extras(
    c: Any, conv: str, ids: list[str]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Part VIII keys per message id of a 1:1 history, and the conversation's notices."""
    st = c.messaging.state
    extras: dict[str, dict[str, Any]] = {}
    for msg_id in ids:
        m = c.store.get_message(conv, msg_id)
        if m is None:
            continue
        extra = st.describe(m)
        if extra["edited"]:
            extra["versions"] = st.versions(conv, msg_id)
        extras[msg_id] = extra
    return extras, st.notices(conv)


__all__ = [
    "COMMANDS",
    "BadInput",
    "NotAllowed",
    "event_json",
    "event_line",
    "history_extras",
    "history_rows",
    "history_text",
    "message_extras",
]
