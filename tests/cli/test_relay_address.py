"""A relay address carries the relay key's fingerprint (PROTOCOL.md Part III §3.1):
``xchat serve`` prints it, ``account create --server`` accepts it and refuses a relay
whose key does not match."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from _cli_helpers import ok, one_error_line, xchat
from xchat.crypto import relaykey
from xchat.testing import ServerProcess


def test_serve_prints_the_full_address(server: ServerProcess) -> None:
    base, fp = relaykey.split_address(server.address)
    assert base == server.url and fp is not None
    key = (server.data_dir / "server_signing.key").read_bytes()
    pub = Ed25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
    assert relaykey.matches(pub, fp)


def test_account_create_checks_the_fingerprint(server: ServerProcess, tmp_path: Path) -> None:
    out = json.loads(
        ok(xchat(tmp_path / "a", "account", "create", "--server", server.address, "--json"))
    )
    assert out["server"] == server.url  # the fragment is not kept as part of the URL
    wrong = server.url + "#" + relaykey.fingerprint(bytes(32))
    r = xchat(tmp_path / "b", "account", "create", "--server", wrong)
    assert r.returncode == 6
    assert "does not match the fingerprint" in one_error_line(r)
    r = xchat(tmp_path / "c", "account", "create", "--server", server.url + "#tooshort")
    assert r.returncode == 2 and "fingerprint" in one_error_line(r)
    # Nothing was created for the refused relays.
    r = xchat(tmp_path / "b", "whoami")
    assert "no account" in one_error_line(r)
