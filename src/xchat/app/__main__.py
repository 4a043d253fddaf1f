"""``python -m xchat.app --profile DIR [--port P] [--server URL]``: the ``xchat app``
command without the main CLI group (used before it is mounted, and by tests)."""

from __future__ import annotations

from pathlib import Path

import click

from xchat.app.cli import app_command
from xchat.client.profile import default_home


class _Obj:
    def __init__(self, profile: Path) -> None:
        self.profile = profile

    def passphrase(self) -> str | None:
        import os

        return os.environ.get("XCHAT_PASSPHRASE")


@click.group(invoke_without_command=False)
@click.option("--profile", type=click.Path(file_okay=False), default=None)
@click.pass_context
def main(ctx: click.Context, profile: str | None) -> None:
    ctx.obj = _Obj(Path(profile).expanduser() if profile else default_home())


main.add_command(app_command)

if __name__ == "__main__":
    main()
