"""TURN REST API credentials at GET /api/v1/turn (PROTOCOL.md Part IX §6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
import time
from pathlib import Path

import httpx

from xchat import encoding
from xchat.server.turn import TurnIssuer, load_issuer
from xchat.testing import ServerProcess, register, running_server

SECRET = "s3cret-shared-with-coturn-0123456789"


def test_no_turn_configured_is_404_and_needs_auth(
    server: ServerProcess, client: httpx.Client
) -> None:
    assert client.get("/api/v1/turn").status_code == 401
    acct = register(client, None)
    r = client.get("/api/v1/turn", headers=acct.headers)
    assert r.status_code == 404 and "TURN" in r.json()["error"]


def test_credentials_are_coturn_rest_api_hmacs(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET + "\n")
    env = {"turn_url": "turn:127.0.0.1:3478", "turn_secret_file": str(secret_file)}
    with (
        running_server(tmp_path / "srv", pow_bits=2, rate_limits=False, **env) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert c.get("/api/v1/turn").status_code == 401
        acct = register(c, None)
        before = int(time.time())
        a = c.get("/api/v1/turn", headers=acct.headers).json()
        b = c.get("/api/v1/turn", headers=acct.headers).json()
    assert a["urls"] == ["turn:127.0.0.1:3478"] and a["ttl"] == 3600
    expiry, _, rand = a["username"].partition(":")
    assert before + 3600 <= int(expiry) == a["expires"] <= before + 3602
    assert len(encoding.b64url_decode(rand, "random part", 16)) == 16 and "=" not in rand
    assert acct.address not in a["username"]  # the credential names nobody
    mac = hmac.new(SECRET.encode(), a["username"].encode(), hashlib.sha1).digest()
    assert a["credential"] == base64.b64encode(mac).decode()
    assert a["username"] != b["username"]  # fresh random part per request
    # a credential for one username does not fit another
    assert a["credential"] != b["credential"]


def test_issuer_refuses_bad_configuration(tmp_path: Path) -> None:
    assert load_issuer("", "", 3600) is None
    short = tmp_path / "short"
    short.write_text("abc")
    for args in (
        ("turn:127.0.0.1:3478", "", 3600),
        ("http://x", str(short), 3600),
        ("turn:127.0.0.1:3478", str(short), 3600),
        ("turn:127.0.0.1:3478", str(tmp_path / "missing"), 3600),
    ):
        try:
            load_issuer(*args)
        except SystemExit as exc:
            assert str(exc)  # one line for the operator
        else:
            raise AssertionError(f"accepted {args}")
    issuer = TurnIssuer(("turn:h:1",), b"k" * 16, 60)
    user, cred, exp = issuer.issue(1000.0)
    assert exp == 1060 and user.startswith("1060:")
    assert (
        cred == base64.b64encode(hmac.new(b"k" * 16, user.encode(), hashlib.sha1).digest()).decode()
    )


def test_serve_with_missing_secret_file_exits_with_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "xchat",
            "serve",
            "--port",
            "0",
            "--data",
            str(tmp_path / "d"),
            "--turn-url",
            "turn:127.0.0.1:3478",
            "--turn-secret-file",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "turn-secret-file" in r.stderr
