"""Lingering close: an oversized body is answered 413 and every client reads it (issue #18;
PROTOCOL Part III §6). Raw sockets, so nothing in an HTTP library hides a reset."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from urllib.parse import urlsplit

from xchat.testing import ServerProcess

BODY = 2 * 1024 * 1024  # twice the relay's 1 MiB request limit


def _post_junk(url: str, chunked: bool) -> bytes:
    """Send a 2 MiB junk body to POST /api/v1/messages at full speed from one thread while
    another reads; return everything the relay sent before closing."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=10)
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % BODY
    head = (
        b"POST /api/v1/messages HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
    )
    junk = b"x" * BODY
    if chunked:
        junk = b"%x\r\n%s\r\n0\r\n\r\n" % (BODY, junk)

    def send() -> None:
        with contextlib.suppress(OSError):  # a reset shows up on the reading side too
            sock.sendall(head + junk)

    sender = threading.Thread(target=send)
    sender.start()
    received = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    except ConnectionResetError:
        received += b"<RESET>"
    finally:
        sender.join(10)
        sock.close()
    return received


def test_oversized_body_gets_413_then_graceful_close(server: ServerProcess) -> None:
    for chunked in (False, True, False, True, False):
        received = _post_junk(server.url, chunked)
        assert received.startswith(b"HTTP/1.1 413 "), received[:200]
        assert b"<RESET>" not in received
        head, _, body = received.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower()
        assert json.loads(body)["error"].startswith("request body larger than")
