"""The web app's group routes: create, inspect, change membership, rename — direct calls
to the Client's group API (PROTOCOL.md Part V §10; docs/app-readme.md "Groups").

Admin checks happen here first (a clear 403 for the page) and again in the client,
which refuses to sign a change it may not make, and on every member's device.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xchat.app.common import (
    AppState,
    HttpError,
    _group,
    _require_account,
    _str,
    group_json,
    read_json,
)
from xchat.client.group_book import GroupInfo


def _members(data: dict[str, Any], key: str) -> list[str]:
    members = data.get(key) or []
    if not isinstance(members, list) or not all(
        isinstance(m, str) and 0 < len(m.strip()) <= 128 for m in members
    ):
        raise HttpError(400, f"{key!r} must be a list of @handles or addresses")
    out = []
    for m in members:
        m = m.strip()
        out.append(m if m.startswith(("@", "xc1")) else "@" + m)
    return out


async def create_group(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    name = _str(data, "name", limit=128).strip()
    members = _members(data, "members")
    if not members:
        raise HttpError(400, "add at least one member")
    group = await st.client.create_group(name, members)
    return JSONResponse({"group": group_json(st, group)})


async def group_info(request: Request, st: AppState) -> Response:
    _require_account(st)
    return JSONResponse(
        {"group": group_json(st, _group(st, request.query_params.get("group", "")))}
    )


def _require_admin(g: GroupInfo) -> None:
    if not g.admin:
        raise HttpError(403, "only a group admin can change the group")


async def group_members(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    g = _group(st, _str(data, "group", limit=128))
    add, remove = _members(data, "add"), _members(data, "remove")
    _require_admin(g)
    if add:
        g = await st.client.add_members(g.id, add)
    if remove:
        g = await st.client.remove_members(g.id, remove)
    return JSONResponse({"group": group_json(st, g)})


async def rename_group(request: Request, st: AppState) -> Response:
    _require_account(st)
    data = await read_json(request)
    g = _group(st, _str(data, "group", limit=128))
    _require_admin(g)
    g = await st.client.rename_group(g.id, _str(data, "name", limit=128).strip())
    return JSONResponse({"group": group_json(st, g)})


ROUTES = [
    ("POST", "/api/groups/create", create_group),
    ("GET", "/api/groups/info", group_info),
    ("POST", "/api/groups/members", group_members),
    ("POST", "/api/groups/rename", rename_group),
]
