"""What the page is told about unconfirmed sends (app/compose.py), without processes: a
stored 'sending'/'failed' row is *pending* unless a real failure was recorded for it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from xchat.app.common import AppState
from xchat.app.compose import FAILED_META, _set_failure, apply_status, failures, transient
from xchat.errors import ApiError, ServerUnreachable, UnknownContact


class _Store:
    def __init__(self) -> None:
        self.meta: dict[str, bytes] = {}

    def get_meta(self, key: str) -> bytes | None:
        return self.meta.get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self.meta[key] = value


def _state(tmp_path: Path) -> AppState:
    client = SimpleNamespace(profile=SimpleNamespace(path=str(tmp_path)), store=_Store())
    return AppState(client, "s", 1)  # type: ignore[arg-type]


def _msg(msg_id: str, status: str, direction: str = "out") -> dict[str, Any]:
    return {"id": msg_id, "peer": "xc1bob", "direction": direction, "status": status}


def test_unconfirmed_rows_are_pending_unless_really_refused(tmp_path: Path) -> None:
    st = _state(tmp_path)
    _set_failure(st, "xc1bob", "m3", "the relay refused it as too large")
    items = apply_status(
        st,
        [
            _msg("m1", "sending"),
            _msg("m2", "failed"),
            _msg("m3", "failed"),
            _msg("m4", "sent"),
            _msg("m5", "delivered"),
            _msg("m6", "failed", "in"),  # never ours: untouched
        ],
    )
    assert [m["status"] for m in items] == [
        "pending",
        "pending",
        "failed",
        "sent",
        "delivered",
        "failed",
    ]
    assert items[2]["error"] == "the relay refused it as too large"
    assert "error" not in items[1]
    _set_failure(st, "xc1bob", "m3", None)  # retried: pending again until it goes out
    assert failures(st) == {}
    assert FAILED_META in st.client.store.meta  # sealed in the store, not app-state.json
    assert apply_status(st, [_msg("m3", "failed")])[0]["status"] == "pending"


def test_which_errors_only_wait() -> None:
    assert transient(ServerUnreachable("down"))
    assert transient(ApiError(503, "busy")) and transient(ApiError(429, "slow down"))
    assert not transient(ApiError(413, "too large")) and not transient(ApiError(400, "bad"))
    assert not transient(UnknownContact("who"))
