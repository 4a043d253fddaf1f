"""``xchat group ...``: groups the server cannot see (PROTOCOL.md Part V §10).

GROUP is a group id (32 hex digits) or an unambiguous group name; an ambiguous or unknown
name is a one-line error with a non-zero exit (ClientError, handled by ``cli.main``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from xchat.cli.files import upload_with_progress
from xchat.cli.output import escape_terminal, who
from xchat.client.group_book import GroupInfo


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _info_json(g: GroupInfo) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "version": g.version,
        "epoch": g.epoch,
        "admin": g.admin,
        "left": g.left,
        "members": [
            {"address": m.address, "handle": m.handle, "admin": m.admin} for m in g.members
        ],
    }


def _show_info(g: GroupInfo, as_json: bool) -> None:
    """One group's state, as ``--json`` or for people (every command that changes it)."""
    if as_json:
        click.echo(json.dumps(_info_json(g)))
        return
    state = " (you left)" if g.left else ""
    click.echo(f"{g.id}  {escape_terminal(g.name)}{state}  v{g.version}  epoch {g.epoch[:16]}")
    for m in g.members:
        click.echo(f"  {who(m.address, m.handle)}{'  [admin]' if m.admin else ''}")


@click.group("group")
def group_group() -> None:
    """End-to-end encrypted groups (the server never sees a group or its members)."""


@group_group.command("create")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def group_create(obj: Any, name: str, members: tuple[str, ...], as_json: bool) -> None:
    """Create group NAME with MEMBERS (@handles or addresses); prints the group id."""

    async def go() -> GroupInfo:
        async with obj.client() as c:
            info: GroupInfo = await c.create_group(name, list(members))
            return info

    info = _run(go())
    click.echo(json.dumps(_info_json(info)) if as_json else info.id)


def _change(obj: Any, method: str, group: str, members: tuple[str, ...], as_json: bool) -> None:
    async def go() -> GroupInfo:
        async with obj.client() as c:
            info: GroupInfo = await getattr(c, method)(group, list(members))
            return info

    info = _run(go())
    _show_info(info, as_json)


@group_group.command("add")
@click.argument("group")
@click.argument("members", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_add(obj: Any, group: str, members: tuple[str, ...], as_json: bool) -> None:
    """Add MEMBERS to GROUP (admins only). New members cannot read earlier messages."""
    _change(obj, "add_members", group, members, as_json)


@group_group.command("remove")
@click.argument("group")
@click.argument("members", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_remove(obj: Any, group: str, members: tuple[str, ...], as_json: bool) -> None:
    """Remove MEMBERS from GROUP (admins only; anyone may remove themselves)."""
    _change(obj, "remove_members", group, members, as_json)


async def _member_address(c: Any, member: str) -> str:
    """The address of MEMBER: ourselves, a known contact, or resolved at the relay."""
    me = c.whoami()
    key = member.strip()
    if key == me.address or (me.handle and key.lower() == f"@{me.handle}".lower()):
        return str(me.address)
    found = c.find_contact(key)
    return str(found.address if found is not None else (await c.contact(key)).address)


@group_group.command("admin")
@click.argument("group")
@click.argument("member")
@click.option("--revoke", is_flag=True, help="Take the admin right away instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_admin(obj: Any, group: str, member: str, revoke: bool, as_json: bool) -> None:
    """Make MEMBER (@handle or address) an admin of GROUP, or with --revoke no longer one
    (admins only; signed into the group's state like every change, PROTOCOL Part V)."""

    async def go() -> GroupInfo:
        async with obj.client() as c:
            info: GroupInfo = await c.set_group_admin(
                group, await _member_address(c, member), admin=not revoke
            )
            return info

    info = _run(go())
    _show_info(info, as_json)


@group_group.command("send")
@click.argument("group")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_send(obj: Any, group: str, text: str, as_json: bool) -> None:
    """Send TEXT to GROUP: encrypted once, uploaded once for every member."""

    async def go() -> tuple[str, str, int]:
        async with obj.client() as c:
            msg_id = await c.send_group(group, text)
            return msg_id, c.group_info(group).id, c.last_upload_bytes

    msg_id, gid, size = _run(go())
    if as_json:
        click.echo(json.dumps({"id": msg_id, "group": gid, "uploaded_bytes": size}))
    else:
        click.echo(msg_id)


@group_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_list(obj: Any, as_json: bool) -> None:
    """List the groups this profile holds."""
    c = obj.client()
    try:
        groups = c.groups()
    finally:
        _run(c.close())
    if as_json:
        click.echo(json.dumps([_info_json(g) for g in groups]))
        return
    for g in groups:
        left = " (left)" if g.left else ""
        click.echo(f"{g.id}  {escape_terminal(g.name)}  {len(g.members)} members{left}")


@group_group.command("info")
@click.argument("group")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_info(obj: Any, group: str, as_json: bool) -> None:
    """Show GROUP's members, admins, version and epoch hash."""
    c = obj.client()
    try:
        info = c.group_info(group)
    finally:
        _run(c.close())
    _show_info(info, as_json)


@group_group.command("file")
@click.argument("group")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--keep-metadata", is_flag=True, help="Do not strip image metadata.")
@click.option("--name", default=None, help="File name to show the members.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def group_file(
    obj: Any, group: str, path: str, keep_metadata: bool, name: str | None, as_json: bool
) -> None:
    """Send the file PATH to GROUP: the encrypted blob is uploaded once, its manifest goes
    out in one group message."""

    async def go() -> tuple[str, Any]:
        async with obj.client() as c:
            c.group_info(group)  # fail on a bad GROUP before uploading anything
            manifest = await upload_with_progress(
                c, Path(path), keep_metadata=keep_metadata, name=name
            )
            msg_id = await c.send_group_file(group, manifest.to_json())
            return msg_id, manifest

    msg_id, manifest = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {"id": msg_id, "blob": manifest.blob_id, "size": manifest.size,
                 "name": manifest.name}
            )
        )  # fmt: skip
    else:
        click.echo(msg_id)
