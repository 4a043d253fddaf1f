"""The backup archive's body encoding (PROTOCOL.md Part X §9): strict base64 for non-UTF-8
bodies (``xchat.encoding``), so a junk value is a DecodeError, never silently other bytes."""

from __future__ import annotations

import pytest

from xchat.client import archive
from xchat.errors import DecodeError


def test_bodies_round_trip() -> None:
    for body in (b'{"type":"text"}', b"\xff\x00binary"):
        assert archive.body_from_json(archive.body_to_json(body)) == body


@pytest.mark.parametrize("junk", ["AA=\n", "A*AA", "AB==", 7])
def test_junk_base64_body_is_refused(junk: object) -> None:
    with pytest.raises(DecodeError, match="backup message body"):
        archive.body_from_json({"b64": junk})
