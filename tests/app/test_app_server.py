"""Pure helpers of the web app's server: event and message JSON (no processes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from xchat.app.server import AppState, event_json, message_json
from xchat.client import events as ev


@dataclass
class _Msg:
    id: str
    peer: str
    direction: str
    ts_ms: int
    status: str
    body: bytes


def test_event_json_keeps_peer_text_as_data() -> None:
    e = ev.MessageReceived("ab" * 16, "xc1peer", "bob", "<script>x</script>", 5)
    out = event_json(e)
    assert out == {
        "type": "message",
        "conv": "xc1peer",
        "peer": "xc1peer",
        "handle": "bob",
        "id": "ab" * 16,
        "text": "<script>x</script>",
        "ts_ms": 5,
    }
    assert json.loads(json.dumps(out)) == out
    assert event_json(ev.ReceiptReceived("xc1p", ("a", "b"), 1)) == {
        "type": "receipt",
        "conv": "xc1p",
        "peer": "xc1p",
        "ids": ["a", "b"],
    }
    assert event_json(ev.Drained()) == {"type": "drained"}


def test_event_json_group_message_and_change() -> None:
    gid = "0f" * 16
    e = ev.MessageReceived(
        "ab" * 16,
        "xc1carol",
        "carol",
        "hi all",
        7,
        file={"name": "../x.png", "size": 3},
        group={"id": gid, "name": "<i>Team</i>"},
    )
    out = event_json(e)
    assert out["conv"] == f"group:{gid}" and out["peer"] == "xc1carol"
    assert out["group"] == {"id": gid, "name": "<i>Team</i>"}
    assert out["file"] == {"name": "x.png"}
    changed = event_json(ev.GroupChanged(gid, "Team", 2, "xc1a", ("xc1b",), (), False))
    assert changed == {
        "type": "group",
        "conv": f"group:{gid}",
        "name": "Team",
        "by": "xc1a",
        "added": ["xc1b"],
        "removed": [],
        "left": False,
    }
    rejected = event_json(ev.GroupUpdateRejected(gid, "xc1m", "not an admin"))
    assert rejected == {"type": "group_rejected", "conv": f"group:{gid}", "peer": "xc1m"}


def test_event_json_unknown_events_become_other() -> None:
    @dataclass(frozen=True)
    class Thing:
        group_id: str

    assert event_json(Thing("g1")) == {"type": "other", "name": "Thing"}


def test_message_json_group_sender_and_conversation() -> None:
    gid = "1a" * 16
    body = json.dumps({"v": 1, "id": "d" * 32, "type": "text", "ts": 1, "text": "yo"}).encode()
    m = message_json(
        _Msg("d" * 32, f"group:{gid}:xc1carol", "in", 1, "received", body),
        {"xc1carol": "carol"}.get,
    )
    assert (m["conv"], m["sender"], m["sender_handle"]) == (f"group:{gid}", "xc1carol", "carol")
    assert m["peer"] == f"group:{gid}:xc1carol"  # the storage key file routes take
    mine = message_json(_Msg("e" * 32, f"group:{gid}:xc1me", "out", 1, "sent", body))
    assert (mine["conv"], mine["sender"], mine["sender_handle"]) == (f"group:{gid}", None, None)
    direct = message_json(_Msg("f" * 32, "xc1bob", "in", 1, "received", body))
    assert (direct["conv"], direct["sender"]) == ("xc1bob", "xc1bob")


def test_message_json_text_file_and_garbage() -> None:
    text = json.dumps({"v": 1, "id": "a" * 32, "type": "text", "ts": 1, "text": "hi"})
    m = message_json(_Msg("a" * 32, "xc1p", "in", 1, "received", text.encode()))
    assert (m["kind"], m["text"], m["file"]) == ("text", "hi", None)
    file_body = {
        "v": 1,
        "id": "b" * 32,
        "type": "file",
        "ts": 2,
        "file": {
            "blob": "0" * 32,
            "key": "A" * 43 + "=",
            "digest": "A" * 43 + "=",
            "name": "../../etc/passwd",
            "size": 10,
            "content_type": "image/png",
            "chunk_size": 65536,
        },
    }
    m = message_json(_Msg("b" * 32, "xc1p", "out", 2, "sent", json.dumps(file_body).encode()))
    assert m["kind"] == "file", m
    assert "/" not in m["file"]["name"]  # shown sanitised
    assert m["file"]["image"] is True
    file_body["file"]["blob"] = "not-a-blob-id"  # a bad manifest is not a file
    m = message_json(_Msg("b" * 32, "xc1p", "in", 2, "received", json.dumps(file_body).encode()))
    assert m["kind"] == "other"
    m = message_json(_Msg("c" * 32, "xc1p", "in", 3, "received", b"\xff not json"))
    assert m["kind"] == "other" and m["text"] is None


def test_app_state_file_keeps_marks_chats_and_saved_files(tmp_path: Path) -> None:
    client = SimpleNamespace(profile=SimpleNamespace(path=str(tmp_path)))
    st = AppState(client, "s", 1)  # type: ignore[arg-type]
    assert st.read_marks() == {} and st.chats() == set()
    st.mark_read("group:" + "ab" * 16, 5)
    st.mark_read("group:" + "ab" * 16, 3)  # never goes back
    st.add_chat("xc1bob")
    saved = tmp_path / "downloads" / "a.png"
    saved.parent.mkdir()
    saved.write_bytes(b"x")
    st.remember_file("xc1bob/m1", saved)
    st.remember_file("xc1bob/m2", tmp_path / "gone")
    again = AppState(client, "s", 1)  # type: ignore[arg-type]
    assert again.read_marks() == {"group:" + "ab" * 16: 5}
    assert again.chats() == {"xc1bob"}
    assert again.saved_file("xc1bob/m1") == saved
    assert again.saved_file("xc1bob/m2") is None  # deleted files are fetched again
    (tmp_path / "app-state.json").write_text("[1, 2]")  # damaged: start afresh
    assert again.read_marks() == {} and again.saved_file("xc1bob/m1") is None
