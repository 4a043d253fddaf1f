"""The ``xchat`` command (README.md).

A thin layer over :class:`xchat.client.Client`. Command names, options and ``--json``
keys are a stable interface for scripts. Every failure ends as one line on stderr,
``xchat: error: ...``, and a non-zero exit status (table in :data:`EXIT_CODES`); never a
traceback. Peer text is escaped before it reaches the terminal (:mod:`.output`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from xchat import __version__
from xchat.app.cli import app_command
from xchat.cli.admin import admin_group
from xchat.cli.backup import (
    backup_group,
    daily_backup,
    history_after_phrase,
    restore_from_backup,
)
from xchat.cli.calls import call_command, call_json, call_line, calls_group
from xchat.cli.devices import device_group, devices_command
from xchat.cli.files import file_group
from xchat.cli.groups import group_group
from xchat.cli.messages import COMMANDS as MESSAGE_COMMANDS
from xchat.cli.messages import (
    BadInput,
    event_json,
    event_line,
    history_extras,
    history_rows,
    history_text,
    message_extras,
)
from xchat.cli.output import escape_terminal, fmt_time, print_json, short_address, warn, who
from xchat.client import events as ev
from xchat.client.call_log import CallLog, CallRecord
from xchat.client.client import Client, RetryResult
from xchat.client.profile import PROFILE_FILE, default_home
from xchat.client.reports import mark_reported
from xchat.errors import (
    ApiError,
    ClientError,
    IdentityChanged,
    InvalidAddress,
    InvalidMnemonic,
    LinkError,
    NotAllowed,
    ProfileError,
    ProfileLocked,
    ServerUnreachable,
    UnknownContact,
    UntrustedDevice,
    WeakPin,
    WrongPin,
    XChatError,
)
from xchat.realm.cli import realm_group
from xchat.server.cli import serve_command

T = TypeVar("T")

# Exit statuses (stable; documented in README.md).
EXIT_ERROR = 1
EXIT_USAGE = 2  # also bad input: an empty message, a mistyped address
EXIT_UNREACHABLE = 3
EXIT_RATE_LIMITED = 4
EXIT_PROFILE_LOCKED = 5
EXIT_IDENTITY_CHANGED = 6
EXIT_UNKNOWN_CONTACT = 7
EXIT_BAD_PHRASE = 8
EXIT_NOT_ALLOWED = 9  # a rich-messaging rule refused it (PROTOCOL Part VIII)
EXIT_LINK = 14  # a wrong, used or expired link code, or no approval in time (Part VII)
EXIT_UNTRUSTED_DEVICE = 15  # a forged/rolled-back device list or an unlisted device
EXIT_INTERRUPTED = 130


class InvalidInput(ClientError):
    """An argument the command refuses before doing any work (exit status 2)."""


EXIT_CODES: list[tuple[type[XChatError], int]] = [
    (InvalidInput, EXIT_USAGE),
    (InvalidAddress, EXIT_USAGE),
    (ServerUnreachable, EXIT_UNREACHABLE),
    (ProfileLocked, EXIT_PROFILE_LOCKED),
    (IdentityChanged, EXIT_IDENTITY_CHANGED),
    (UnknownContact, EXIT_UNKNOWN_CONTACT),
    (InvalidMnemonic, EXIT_BAD_PHRASE),
    (WrongPin, EXIT_BAD_PHRASE),  # backup PIN: the message says how many guesses remain
    (WeakPin, EXIT_USAGE),
    (BadInput, EXIT_USAGE),
    (NotAllowed, EXIT_NOT_ALLOWED),
    (LinkError, EXIT_LINK),
    (UntrustedDevice, EXIT_UNTRUSTED_DEVICE),
]


def error_line(exc: XChatError) -> tuple[str, int]:
    """The one-line message and exit status for an error."""
    if isinstance(exc, ApiError):
        if exc.status == 429:
            wait = f"; try again in {exc.retry_after:.0f} s" if exc.retry_after else ""
            return f"rate limited by the server{wait}", EXIT_RATE_LIMITED
        return f"server refused the request: {exc.message} (HTTP {exc.status})", EXIT_ERROR
    if isinstance(exc, InvalidMnemonic):
        return f"wrong recovery phrase: {exc}", EXIT_BAD_PHRASE
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return str(exc), code
    return str(exc) or type(exc).__name__, EXIT_ERROR


# --- plumbing --------------------------------------------------------------------------------


class Ctx:
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


def _print_identity_warning(e: ev.Event) -> None:
    if isinstance(e, ev.IdentityChangedEvent):
        name = who(e.address, e.handle)
        verified = (
            " (it was verified: sending is blocked until you re-verify)" if (e.was_verified) else ""
        )
        warn(f"the identity key of {name} changed{verified}; run `xchat verify {name}`")


def _progress_printer() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def progress(tries: int) -> None:
        sys.stderr.write(f"\rsolving proof of work… {tries:,} tries")
        sys.stderr.flush()

    return progress


# --- the command group -----------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    "profile",
    type=click.Path(file_okay=False),
    default=None,
    help="Profile directory (default: $XCHAT_HOME or ~/.xchat).",
)
@click.option(
    "--passphrase",
    is_flag=True,
    help="Protect/unlock the profile key with a passphrase "
    "(read from $XCHAT_PASSPHRASE or prompted).",
)
@click.version_option(version=__version__, prog_name="xchat")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, passphrase: bool) -> None:
    """XChat: end-to-end encrypted messaging."""
    ctx.obj = Ctx(Path(profile).expanduser() if profile else default_home(), passphrase)


@cli.group()
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
            info = await c.create_account(server, handle, progress=_progress_printer())
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
            info = await c.restore_account(server, phrase, progress=_progress_printer())
            await history_after_phrase(c)
        _print_account(info, as_json, None)

    run(go())


@cli.command()
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


def _report_retry(res: RetryResult, *, resumed: str | None = None) -> None:
    """stderr notes about unconfirmed messages of earlier runs (PROTOCOL Part IV §3.8)."""
    others = [h for h in res.sent if h.id != resumed]
    if others:
        n = len(others)
        warn(f"re-sent {n} message{'s' if n > 1 else ''} an earlier run had not confirmed")
    for h, reason in res.failed:
        warn(f"message {h.id} to {short_address(h.peer)} still not sent: {escape_terminal(reason)}")


@cli.command()
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
            c.on_event(_print_identity_warning)
            res = await c.retry_pending()
            msg_id = await c.send_text(to, text, reply_to=reply_to, resume=True)
            contact = await c.contact(to)
            store_path = c.profile.store_path
        _report_retry(res, resumed=msg_id)
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


def _file_note(file: dict[str, Any] | None) -> str:
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
        note = _file_note(m.file)
    click.echo(f"[{fmt_time(m.ts_ms)}] {where}{who(m.sender, m.handle)}: {text}{note}")


@cli.command()
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
            _print_identity_warning(e)

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
        _report_retry(res)

    run(go())


@cli.command()
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
            _report_retry(await c.retry_pending())

            def show(e: ev.Event) -> None:
                if isinstance(e, ev.MessageReceived):
                    _print_message(e)
                elif isinstance(e, ev.ReceiptReceived) and e.sender == contact.address:
                    pass
                else:
                    _print_identity_warning(e)

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


@cli.command()
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


@cli.command()
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
            click.echo(f"[{fmt_time(m.ts_ms)}] {arrow}: {text}{_file_note(m.file)}{status}")


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


@cli.command()
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
            c.on_event(_print_identity_warning)
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


# --- `xchat serve` (server stream) -----------------------------------------------------------
cli.add_command(serve_command)
cli.add_command(admin_group)
cli.add_command(file_group)
cli.add_command(group_group)
cli.add_command(device_group)
cli.add_command(devices_command)
for _command in MESSAGE_COMMANDS:  # react, edit, delete, ... (PROTOCOL Part VIII)
    cli.add_command(_command)
cli.add_command(app_command)
cli.add_command(realm_group)
cli.add_command(backup_group)
cli.add_command(call_command)
cli.add_command(calls_group)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI with one error handler around everything."""
    try:
        cli.main(args=argv, prog_name="xchat", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("xchat: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except XChatError as exc:
        message, code = error_line(exc)
        sys.stderr.write(f"xchat: error: {escape_terminal(message)}\n")
        sys.exit(code)
    except KeyboardInterrupt:
        sys.stderr.write("xchat: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except ProfileError as exc:  # pragma: no cover - subclass of XChatError, kept explicit
        sys.stderr.write(f"xchat: error: {exc}\n")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # a bug: still one line, never a traceback
        if os.environ.get("XCHAT_DEBUG"):
            raise
        sys.stderr.write(f"xchat: error: internal error ({type(exc).__name__}: {exc})\n")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
