"""``xchat file ...``: send and fetch encrypted files (PROTOCOL.md Part VI).

* ``xchat file send TO PATH [--keep-metadata] [--name NAME] [--json]`` — strip image
  metadata, encrypt, upload with a progress bar (bytes, rate, ETA on stderr), then send the
  manifest to TO inside an end-to-end encrypted message.
* ``xchat file get MANIFEST [--out DIR] [--json]`` — download, verify and decrypt a file
  from a manifest JSON object (a file path, or ``-`` for stdin) into the profile's
  ``downloads`` directory.

The group stream reuses :func:`upload_with_progress` (encrypt + upload + progress bar) and
sends the returned manifest in its own group message (``xchat group file GROUP PATH``).

The ``file`` group is mounted into the main command with ``cli.add_command(file_group)``;
it reads the shared context object (``ctx.obj.client()``) without importing ``main``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from xchat.cli.output import escape_terminal
from xchat.client import files as xf

ProgressFn = Callable[[int, int], None]


@contextmanager
def progress_bar(label: str, *, enabled: bool | None = None) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr (bytes done, rate, ETA); ``None`` when stderr is not
    a terminal, so scripts get clean output."""
    console = Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(escape_terminal(label), total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


async def upload_with_progress(
    client: Any, path: Path, *, keep_metadata: bool = False, name: str | None = None
) -> xf.FileManifest:
    """Encrypt and upload ``path`` for ``client`` (an open :class:`Client`), showing a
    progress bar; return the manifest to send. Used by ``file send`` and ``group file``."""
    async with xf.BlobClient.from_api(client.api) as blobs:
        with progress_bar(f"sending {path.name}") as progress:
            return await xf.send_file(
                blobs, path, keep_metadata=keep_metadata, name=name, progress=progress
            )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@click.group("file")
def file_group() -> None:
    """Send and fetch end-to-end encrypted files."""


@file_group.command("send")
@click.argument("to")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--keep-metadata",
    is_flag=True,
    help="Do not strip EXIF/GPS and other metadata from images.",
)
@click.option("--name", default=None, help="File name to show the recipient.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def file_send(
    obj: Any, to: str, path: str, keep_metadata: bool, name: str | None, as_json: bool
) -> None:
    """Send the file PATH to TO (@handle or address)."""
    src = Path(path)

    async def go() -> tuple[str, xf.FileManifest]:
        async with obj.client() as c:
            manifest = await upload_with_progress(c, src, keep_metadata=keep_metadata, name=name)
            msg_id = await xf.send_manifest(c, to, manifest)
            return msg_id, manifest

    msg_id, manifest = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": msg_id,
                    "blob": manifest.blob_id,
                    "size": manifest.size,
                    "blob_size": manifest.blob_size,
                    "name": manifest.name,
                    "content_type": manifest.content_type,
                }
            )
        )
    else:
        click.echo(msg_id)


@file_group.command("get")
@click.argument("manifest", type=click.File("r"))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory to save into (default: <profile>/downloads).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def file_get(obj: Any, manifest: Any, out: str | None, as_json: bool) -> None:
    """Download and decrypt the file described by MANIFEST (JSON; '-' for stdin)."""
    try:
        raw = json.load(manifest)
    except ValueError:
        raise click.UsageError("MANIFEST is not JSON") from None
    m = xf.FileManifest.from_json(raw.get("file", raw) if isinstance(raw, dict) else raw)

    async def go() -> Path:
        async with obj.client() as c:
            target = Path(out) if out is not None else xf.downloads_dir(c.profile.path)
            async with xf.BlobClient(c.api.base_url) as blobs:
                with progress_bar(f"receiving {xf.safe_filename(m.name)}") as progress:
                    return await xf.receive_file(blobs, m, target, progress=progress)

    saved: Path = _run(go())
    if as_json:
        click.echo(json.dumps({"path": str(saved), "size": m.size}))
    else:
        click.echo(escape_terminal(str(saved)))
    sys.stdout.flush()
