"""Relay signing key rotation (PROTOCOL.md Part III §3.1), end to end: the relay rotates
(``xchat serve --rotate-signing-key``'s function), clients that pinned the old key follow
the signed statement, mail sealed under the old key still opens during the overlap, and a
relay that swaps its key without a statement is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _crowd import texts

from xchat.client.client import Client
from xchat.errors import RelayKeyMismatch
from xchat.server.auth import ROTATION_FILE, rotate_signing_key
from xchat.testing import running_server


async def test_clients_follow_a_signed_rotation(tmp_path: Path, handle) -> None:
    with running_server(tmp_path / "relay", pow_bits=2, rate_limits=False) as server:
        a = Client(tmp_path / "a")
        b = Client(tmp_path / "b")
        try:
            await a.create_account(server.url, handle("kra"))
            await b.create_account(server.url, handle("krb"))
            old_key = b.relay_signing_key()
            await a.send_text(b.address, "sealed under the old key")
            server.stop()
            now = time.time_ns() // 1_000_000
            new_key = rotate_signing_key(server.data_dir, now, 48 * 3600_000)
            server.start()
            # Queued mail with an old-key certificate opens (the pin is still the old key).
            assert texts(await b.receive()) == ["sealed under the old key"]
            # A's next certificate is signed by the new key: A follows the rotation.
            a.store.put_meta("sender_cert", b"")
            await a.send_text(b.address, "sealed under the new key")
            assert a.relay_signing_key() == new_key
            # B meets a certificate it cannot verify, learns the rotation, and opens it.
            assert texts(await b.receive()) == ["sealed under the new key"]
            assert b.relay_signing_key() == new_key
            assert b.relay_keys(now + 1000) == [new_key, old_key]  # during the overlap
            assert b.relay_keys(now + 49 * 3600_000) == [new_key]  # after it

            # A relay that replaces its key without a statement is another relay.
            server.stop()
            (server.data_dir / "server_signing.key").unlink()
            (server.data_dir / ROTATION_FILE).unlink()
            server.start()
            with pytest.raises(RelayKeyMismatch):
                await a.check_relay_rotation()
            assert a.relay_signing_key() == new_key  # the pin did not move
        finally:
            await a.close()
            await b.close()
