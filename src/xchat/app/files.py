"""The web app's file routes: send a file to a contact or a group, fetch (download, verify,
decrypt) a received one into the profile's downloads directory, serve the decrypted bytes
(docs/app-readme.md "Files"; formats in PROTOCOL.md Part VI).

Decryption happens only here, in the app process; the page gets plaintext bytes over the
authenticated loopback API and shows images from ``blob:`` URLs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from xchat import encoding
from xchat.app.common import (
    MAX_FILE_BYTES,
    MAX_UPLOAD_JSON,
    PREVIEW_TYPES,
    AppState,
    HttpError,
    _group,
    _is_group,
    _require_account,
    _str,
    read_json,
)
from xchat.client import files as xf
from xchat.client.metadata import detect_image
from xchat.errors import DecodeError, XChatError


def _progress(st: AppState, transfer: str, direction: str) -> Callable[[int, int], None]:
    """A progress callback that tells every open page, at most once per percent (so a
    large file costs ~100 events, not one per chunk)."""
    last = [-1]

    def cb(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if pct != last[0]:
            last[0] = pct
            st.broadcast(
                {
                    "type": "file_progress",
                    "transfer": transfer,
                    "direction": direction,
                    "done": done,
                    "total": total,
                }
            )

    return cb


async def send_file(request: Request, st: AppState) -> Response:
    """Encrypt + upload the blob once, then send its manifest to a contact or a group."""
    _require_account(st)
    data = await read_json(request, MAX_UPLOAD_JSON)
    to = _str(data, "to", limit=128)
    name = _str(data, "name", limit=255)
    transfer = _str(data, "transfer", required=False, limit=64) or secrets.token_hex(8)
    gid = _group(st, to).id if _is_group(to) else None
    try:
        raw = encoding.b64decode(_str(data, "data", limit=MAX_UPLOAD_JSON), "data")
    except DecodeError:
        raise HttpError(400, "'data' must be base64") from None
    if len(raw) > MAX_FILE_BYTES:
        raise HttpError(413, f"files up to {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    ctype = data.get("content_type")
    with tempfile.TemporaryDirectory(prefix="xchat-app-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(raw)
        del raw
        async with xf.BlobClient.from_api(st.client.api) as blobs:
            manifest = await xf.send_file(
                blobs,
                path,
                name=xf.safe_filename(name),
                content_type=ctype if isinstance(ctype, str) and ctype else None,
                progress=_progress(st, transfer, "up"),
            )
    if gid is not None:
        msg_id = await st.client.send_group_file(gid, manifest.to_json())
    else:
        msg_id = await st.client.send_file_manifest(to, manifest.to_json())
    return JSONResponse({"id": msg_id, "transfer": transfer})


def _manifest(st: AppState, peer: str, message_id: str) -> xf.FileManifest:
    m = st.client.store.get_message(peer, message_id)
    if m is None:
        raise HttpError(404, "no such message")
    try:
        man = xf.manifest_from_content(json.loads(m.body))
    except (ValueError, XChatError):
        man = None
    if man is None:
        raise HttpError(404, "that message carries no file")
    return man


async def fetch_file(request: Request, st: AppState) -> Response:
    """Download, verify and decrypt a file message's blob into <profile>/downloads (once
    per message: later calls reuse the saved file), broadcasting ``file_progress``."""
    _require_account(st)
    data = await read_json(request)
    message_id = _str(data, "message_id", limit=64)
    peer = _str(data, "peer", limit=256)
    man = _manifest(st, peer, message_id)
    key = f"{peer}/{message_id}"
    async with st.fetch_locks.setdefault(key, asyncio.Lock()):
        path = st.saved_file(key)
        if path is None:
            target = xf.downloads_dir(st.client.profile.path)
            async with xf.BlobClient(st.client.api.base_url) as blobs:
                path = await xf.receive_file(
                    blobs, man, target, progress=_progress(st, message_id, "down")
                )
            st.remember_file(key, path)
            st.client.messaging.record_file(peer, message_id, str(path))  # Part VIII §4, §6
    st.fetch_locks.pop(key, None)
    with open(path, "rb") as fh:
        image = detect_image(fh.read(16))
    return JSONResponse(
        {
            "url": f"/api/files/{message_id}?peer={quote(peer)}",
            "name": xf.safe_filename(man.name),
            "saved_as": path.name,
            "size": man.size,
            "image": image if image in PREVIEW_TYPES else None,
        }
    )


async def file_content(request: Request, st: AppState) -> Response:
    _require_account(st)
    message_id = request.path_params["message_id"]
    path = st.saved_file(f"{request.query_params.get('peer', '')}/{message_id}")
    if path is None:
        raise HttpError(404, "fetch the file first")
    with open(path, "rb") as fh:
        image = detect_image(fh.read(16))
    # Only sniffed raster images keep an image type; everything else is opaque bytes.
    media = image if image in PREVIEW_TYPES else "application/octet-stream"
    return FileResponse(
        path,
        media_type=media,
        headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(path.name)}"},
    )


def mark_auto_previews(st: AppState, items: list[dict[str, Any]]) -> None:
    """Set ``file.auto`` on image messages the page may download by itself: our own, and
    those from people we write to (we sent them a 1:1 message, opened the chat, or verified
    them). From anyone else the download waits for a click, because fetching the blob tells
    the uploader's relay when the chat was opened (issue #18)."""
    known: dict[str, bool] = {}
    chats: set[str] | None = None
    for m in items:
        f = m.get("file")
        if not isinstance(f, dict) or not f.get("image"):
            continue
        sender = m.get("sender")
        if m.get("direction") != "in" or not isinstance(sender, str):
            f["auto"] = True
            continue
        if sender not in known:
            chats = st.chats() if chats is None else chats
            known[sender] = _writes_to(st, sender, chats)
        f["auto"] = known[sender]


def _writes_to(st: AppState, address: str, chats: set[str]) -> bool:
    if address in chats:
        return True
    c = st.client.store.get_contact(address)
    if c is not None and c.verified:
        return True
    return any(m.direction == "out" for m in st.client.store.history(address, 200))


ROUTES = [
    ("POST", "/api/files/send", send_file),
    ("POST", "/api/files/fetch", fetch_file),
    ("GET", "/api/files/{message_id:str}", file_content),
]
