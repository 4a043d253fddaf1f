"""``xchat device ...`` and ``xchat devices``: linked devices (PROTOCOL.md Part VII).

Stable for scripts: ``device link --json`` prints ``{"code": ...}`` as its first line (as
soon as the code exists), then one result object when the link is done; ``devices --json``
prints a list of ``{"id", "name", "current", "linked_at"}``. Errors are one line on
stderr with the exit statuses of ``cli.main`` (a refused or stale link code: 14).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import asdict
from typing import Any

import click

from xchat.cli.output import escape_terminal, fmt_time, print_json
from xchat.client.devices import DeviceInfo


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _progress(enabled: bool) -> Any:
    """A progress bar on stderr (history upload/download/import), or None."""
    if not enabled:
        return None
    last: list[tuple[str, int]] = [("", -1)]

    def report(phase: str, done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if (phase, pct) == last[0]:
            return
        last[0] = (phase, pct)
        bar = "#" * (pct // 5)
        sys.stderr.write(f"\rhistory {phase:<8} [{bar:<20}] {pct:3d}%")
        if pct >= 100:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _print_devices(devices: list[DeviceInfo], as_json: bool) -> None:
    if as_json:
        print_json([asdict(d) for d in devices])
        return
    for d in devices:
        mark = "  (this device)" if d.current else ""
        click.echo(f"{d.id:>3}  {escape_terminal(d.name)}  linked {fmt_time(d.linked_at)}{mark}")


@click.group("device")
def device_group() -> None:
    """Link, rename and remove this account's devices."""


@device_group.command("link")
@click.option("--server", required=True, help="The account's relay, e.g. https://relay.example.")
@click.option("--name", default="new device", show_default=True, help="This device's name.")
@click.option("--no-history", is_flag=True, help="Do not transfer the message history.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the approval (at most 600: codes expire after 10 minutes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def device_link(
    obj: Any, server: str, name: str, no_history: bool, wait: float, as_json: bool
) -> None:
    """On a NEW profile: show a link code and QR, wait until a device of the account runs
    `xchat device add CODE`, then become a device of that account (with its history)."""
    import segno

    def on_code(code: str, uri: str) -> None:
        if as_json:
            print_json({"code": code, "uri": uri})
            sys.stdout.flush()
            if sys.stderr.isatty():  # stdout stays JSON lines; the QR is for the human
                segno.make(uri, error="m").terminal(out=sys.stderr, compact=True)
            return
        click.echo(f"Link code: {code}")
        click.echo("On a device of your account run:  xchat device add " + code)
        click.echo("or scan this QR code with it:")
        segno.make(uri, error="m").terminal(out=sys.stdout, compact=True)
        sys.stdout.flush()

    async def go() -> Any:
        async with obj.client(creating=True) as c:
            return await c.link_device(
                server,
                name=name,
                history=not no_history,
                wait=wait,
                on_code=on_code,
                progress=_progress(sys.stderr.isatty()),
                use_keyring=True,
            )

    res = _run(go())
    if as_json:
        print_json(
            {
                "address": res.address,
                "device_id": res.device_id,
                "name": res.name,
                "messages": res.messages,
                "history_bytes": res.history_bytes,
            }
        )
    else:
        click.echo(
            f"Linked as device {res.device_id} ({escape_terminal(res.name)}) of {res.address}; "
            f"{res.messages} messages of history imported."
        )


@device_group.command("add")
@click.argument("code")
@click.option("--no-history", is_flag=True, help="Do not send the message history.")
@click.option(
    "--max-attachments",
    "max_attachments",
    type=click.IntRange(0, 256),
    default=25,
    show_default=True,
    metavar="MB",
    help="Copy attachments this device holds into the history, newest first, up to MB "
    "megabytes in total (0: none; larger ones stay downloadable while their blobs live).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def device_add(obj: Any, code: str, no_history: bool, max_attachments: int, as_json: bool) -> None:
    """Approve the new device showing CODE (sends it the account and the history)."""

    async def go() -> Any:
        async with obj.client() as c:
            return await c.approve_device(
                code,
                history=not no_history,
                progress=_progress(sys.stderr.isatty()),
                max_attachments=max_attachments * 1024 * 1024,
            )

    res = _run(go())
    if as_json:
        print_json(
            {"device_id": res.device_id, "name": res.name, "history_bytes": res.history_bytes}
        )
    else:
        click.echo(f"Approved device {res.device_id} ({escape_terminal(res.name)}).")


@device_group.command("remove")
@click.argument("device_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the remaining devices as JSON.")
@click.pass_obj
def device_remove(obj: Any, device_id: int, as_json: bool) -> None:
    """Remove device ID: it loses its sessions everywhere and gets nothing sent afterwards."""

    async def go() -> list[DeviceInfo]:
        async with obj.client() as c:
            out: list[DeviceInfo] = await c.remove_device(device_id)
            return out

    _print_devices(_run(go()), as_json)


@device_group.command("rename")
@click.argument("device_id", type=int)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@click.pass_obj
def device_rename(obj: Any, device_id: int, name: str, as_json: bool) -> None:
    """Rename device ID (names are sealed: only the account's devices can read them)."""

    async def go() -> list[DeviceInfo]:
        async with obj.client() as c:
            out: list[DeviceInfo] = await c.rename_device(device_id, name)
            return out

    _print_devices(_run(go()), as_json)


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def devices_command(obj: Any, as_json: bool) -> None:
    """List this account's devices (id, name, current, linked_at)."""

    async def go() -> list[DeviceInfo]:
        async with obj.client() as c:
            out: list[DeviceInfo] = await c.devices()
            return out

    _print_devices(_run(go()), as_json)
