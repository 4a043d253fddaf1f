"""The ``xchat`` command (README.md): the command group and the entry point.

A thin layer over :class:`xchat.client.Client`. Command names, options and ``--json``
keys are a stable interface for scripts. Every failure ends as one line on stderr,
``xchat: error: ...``, and a non-zero exit status (table in :mod:`.exits`); never a
traceback. Peer text is escaped before it reaches the terminal (:mod:`.output`). The
commands live in one module per concept; this module only mounts them and owns the one
error handler around everything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from xchat import __version__
from xchat.app.cli import app_command
from xchat.cli.account import account, whoami
from xchat.cli.admin import admin_group
from xchat.cli.backup import backup_group
from xchat.cli.calls import call_command, calls_group
from xchat.cli.context import Ctx
from xchat.cli.conversations import contacts, history, verify
from xchat.cli.devices import device_group, devices_command
from xchat.cli.exits import EXIT_ERROR, EXIT_INTERRUPTED, error_line
from xchat.cli.files import file_group
from xchat.cli.groups import group_group
from xchat.cli.messages import COMMANDS as MESSAGE_COMMANDS
from xchat.cli.output import escape_terminal
from xchat.cli.receiving import chat, recv
from xchat.cli.sending import send
from xchat.client.profile import default_home
from xchat.errors import ProfileError, XChatError
from xchat.realm.cli import realm_group
from xchat.server.cli import serve_command


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


# --- the commands, one module per concept ---------------------------------------------------
for _command in (account, whoami, send, recv, chat, contacts, history, verify):
    cli.add_command(_command)
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
