"""``python -m xchat``: ``serve`` runs the relay; anything else goes to the ``xchat`` CLI."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from xchat.server.cli import serve_command

        serve_command.main(sys.argv[2:], prog_name="xchat serve")
        return
    try:
        from xchat.cli.main import main as cli_main
    except ImportError:
        sys.exit("usage: python -m xchat serve [OPTIONS]")
    cli_main()


if __name__ == "__main__":
    main()
