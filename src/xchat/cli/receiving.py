"""``xchat recv`` and ``xchat chat``: receiving, and how a received message is printed.

``recv`` drains the queue (and downloads received files into the profile before printing
them, so a "saved" line is never a lie); ``chat`` keeps the connection open and sends
typed lines. The text and JSON shapes of a message are shared with ``history``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import click

from xchat.cli.backup import daily_backup
from xchat.cli.context import Ctx, print_identity_warning, report_retry, run
from xchat.cli.exits import error_line
from xchat.cli.messages import event_json, event_line, message_extras
from xchat.cli.output import escape_terminal, fmt_time, print_json, warn, who
from xchat.client import events as ev
from xchat.client.client import Client, RetryResult
from xchat.errors import ServerUnreachable, XChatError


def _message_json(m: ev.MessageReceived, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    file = saved if saved is not None else m.file
    return {
        "type": "file" if m.file is not None else "text",
        "id": m.id,
        "from": m.sender,
        "handle": m.handle,
        "text": m.text,
        "ts": m.ts_ms,
        "reply_to": m.reply_to,
        **({"file": file} if file is not None else {}),
        **({"group": m.group} if m.group is not None else {}),
    }


async def _save_file(c: Client, m: ev.MessageReceived) -> dict[str, Any]:
    """Download and decrypt a received file into the profile's downloads directory:
    ``{"name", "size", "sha256" (of the saved plaintext), "path"}`` (path None + "error"
    if it failed; the message itself is already stored)."""
    import hashlib

    from xchat.client import files as xf

    out: dict[str, Any] = {
        "name": str((m.file or {}).get("name", "file")),
        "size": (m.file or {}).get("size"),
        "sha256": None,
        "path": None,
    }
    try:
        manifest = xf.FileManifest.from_json(m.file)
        out["name"], out["size"] = manifest.name, manifest.size
        async with xf.BlobClient(c.api.base_url) as blobs:
            path = await xf.receive_file(blobs, manifest, xf.downloads_dir(c.profile.path))
        peer = f"group:{m.group['id']}:{m.sender}" if m.group is not None else m.sender
        c.messaging.record_file(peer, m.id, str(path))  # deleted with the message (Part VIII)
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        out["sha256"], out["path"] = digest.hexdigest(), str(path)
    except XChatError as exc:
        out["error"] = error_line(exc)[0]
    return out


def file_note(file: dict[str, Any] | None) -> str:
    if file is None:
        return ""
    name = escape_terminal(str(file.get("name", "file")))
    return f" [file: {name}, {file.get('size', '?')} bytes; `xchat file get` to fetch]"


def _print_message(m: ev.MessageReceived, saved: dict[str, Any] | None = None) -> None:
    text = escape_terminal(m.text, keep_newlines=True)
    where = f"[{escape_terminal(m.group.get('name', '?'))}] " if m.group is not None else ""
    if saved is not None and saved.get("path"):
        note = f" [file saved: {escape_terminal(saved['path'])}]"
    elif saved is not None:
        note = f" [file not saved: {escape_terminal(str(saved.get('error')))}]"
    else:
        note = file_note(m.file)
    click.echo(f"[{fmt_time(m.ts_ms)}] {where}{who(m.sender, m.handle)}: {text}{note}")


@click.command()
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    help="Keep receiving this many seconds after the queue is drained.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message per line.")
@click.pass_obj
def recv(obj: Ctx, wait: float, as_json: bool) -> None:
    """Receive, decrypt and store queued messages, and print them. Received files are
    downloaded and decrypted into <profile>/downloads (printed once saved)."""
    files: list[ev.MessageReceived] = []

    client: list[Client] = []

    def emit(e: ev.MessageReceived, saved: dict[str, Any] | None = None) -> None:
        if as_json:
            print_json({**_message_json(e, saved), **message_extras(client[0], e)})
        else:
            _print_message(e, saved)

    def show(e: ev.Event) -> None:
        if isinstance(e, ev.MessageReceived):
            if e.file is not None:
                files.append(e)  # printed after the download below
                client[0].keep_unseen(e)  # ...so it stays "unseen" until then (§5.3)
            else:
                emit(e)
        elif isinstance(e, ev.DecryptionFailed):
            warn(f"dropped an undecryptable message ({escape_terminal(e.reason)})")
        elif isinstance(e, ev.GroupUpdateRejected):
            warn(f"rejected a group change by {e.sender} ({escape_terminal(e.reason)})")
        elif (rich := event_json(e)) is not None:  # PROTOCOL Part VIII kinds
            if as_json:
                print_json(rich)
            elif (line := event_line(e)) is not None:
                click.echo(line)
        else:
            print_identity_warning(e)

    async def go() -> None:
        async with obj.client() as c:
            client.append(c)
            try:
                res = await c.retry_pending()
            except ServerUnreachable:
                res = RetryResult()  # receive() reports it, after replaying unseen rows
            c.on_event(show)
            await c.receive(wait=max(0.0, wait))
            for m in files:
                emit(m, await _save_file(c, m))
                c.mark_shown(m)
            await daily_backup(c)
        report_retry(res)

    run(go())


@click.command()
@click.argument("to")
@click.pass_obj
def chat(obj: Ctx, to: str) -> None:
    """Interactive chat with TO: incoming messages live, typed lines are sent."""

    async def go() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def reader() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(lines.put_nowait, None)

        async with obj.client() as c:
            contact = await c.contact(to)
            report_retry(await c.retry_pending())

            def show(e: ev.Event) -> None:
                if isinstance(e, ev.MessageReceived):
                    _print_message(e)
                elif isinstance(e, ev.ReceiptReceived) and e.sender == contact.address:
                    pass
                else:
                    print_identity_warning(e)

            c.on_event(show)
            await c.start()
            name = who(contact.address, contact.handle)
            click.echo(
                f"chatting with {name}; type a line and press Enter (Ctrl-D to quit)", err=True
            )
            threading.Thread(target=reader, daemon=True).start()
            while (line := await lines.get()) is not None:
                if line.strip():
                    await c.send_text(contact.address, line)

    run(go())
