"""Pure helpers of the web app's server: event and message JSON (no processes)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from xchat.app.server import event_json, message_json
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
        "peer": "xc1peer",
        "handle": "bob",
        "id": "ab" * 16,
        "text": "<script>x</script>",
        "ts_ms": 5,
    }
    assert json.loads(json.dumps(out)) == out
    assert event_json(ev.ReceiptReceived("xc1p", ("a", "b"), 1)) == {
        "type": "receipt",
        "peer": "xc1p",
        "ids": ["a", "b"],
    }
    assert event_json(ev.Drained()) == {"type": "drained"}


def test_event_json_unknown_events_become_other() -> None:
    @dataclass(frozen=True)
    class GroupThing:
        group_id: str

    assert event_json(GroupThing("g1")) == {"type": "other", "name": "GroupThing", "peer": "g1"}


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
