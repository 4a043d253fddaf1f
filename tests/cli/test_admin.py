"""``xchat admin`` and the production options (issue #16), against real relay processes:
stats show aggregates only, the PoW level and a released handle take effect, SQLite online
backup + restore and ``pg_dump`` + ``pg_restore`` keep every queued message, a SQLite node
migrated to PostgreSQL loses nothing, ``--config`` and ``--tls-cert`` work."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from xchat.ops.services import Postgres, pg_bin
from xchat.testing import b64, register, running_server


def xchat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xchat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def send(c: httpx.Client, to: Any, n: int) -> list[bytes]:
    ids = []
    for _ in range(n):
        eid = os.urandom(16)
        dest = {
            "address": to.address,
            "delivery_token": b64(to.delivery_token),
            "envelopes": [{"device_id": 1, "id": b64(eid), "content": b64(b"c" + eid)}],
        }
        r = c.post("/api/v1/messages", json={"destinations": [dest]})
        assert r.status_code == 200, r.text
        ids.append(eid)
    return ids


def fetch_ids(c: httpx.Client, acct: Any) -> list[bytes]:
    r = c.get("/api/v1/messages", params={"limit": 500}, headers=acct.headers)
    assert r.status_code == 200, r.text
    return [base64.b64decode(e["id"]) for e in r.json()["envelopes"]]


def test_stats_pow_and_release_handle_on_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    with (
        running_server(data, pow_bits=2, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        alice = register(c, handle="alice_admin")
        bob = register(c)
        send(c, bob, 3)
        r = xchat("admin", "stats", "--data", str(data), "--json")
        assert r.returncode == 0, r.stderr
        stats = json.loads(r.stdout)
        assert stats["accounts"] == 2 and stats["queued_envelopes"] == 3
        assert stats["handles"] == 1
        assert alice.address not in r.stdout and bob.address not in r.stdout  # no addresses
        assert xchat("admin", "pow", "3", "--data", str(data)).returncode == 0
        r = xchat("admin", "release-handle", "@alice_admin", "--data", str(data))
        assert r.returncode == 0, r.stderr
        bad = xchat("admin", "release-handle", "nobody_here", "--data", str(data))
        assert bad.returncode == 1 and "no account holds" in bad.stderr
        srv.restart()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/api/v1/server").json()["pow_bits"] == 3
            assert c.get("/api/v1/handles/alice_admin").status_code in (401, 404)


def test_backup_and_restore_keep_queued_mail(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    with (
        running_server(data, pow_bits=2, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        bob = register(c)
        sent = send(c, bob, 5)
        r = xchat("admin", "backup", "--data", str(data), "--out", str(tmp_path / "b.tgz"))
        assert r.returncode == 0, r.stderr  # while the relay runs (online backup)
    restored = tmp_path / "restored"
    r = xchat("admin", "restore", "--from", str(tmp_path / "b.tgz"), "--data", str(restored))
    assert r.returncode == 0, r.stderr
    again = xchat("admin", "restore", "--from", str(tmp_path / "b.tgz"), "--data", str(restored))
    assert again.returncode == 1 and "not empty" in again.stderr
    with (
        running_server(restored, pow_bits=2, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert sorted(fetch_ids(c, bob)) == sorted(sent)  # same keys: bob's token works


def test_migrate_sqlite_to_postgres_loses_nothing(
    tmp_path: Path, pg_service: Postgres, backend_env: Callable[[str], dict[str, Any]]
) -> None:
    data = tmp_path / "relay"
    with (
        running_server(data, pow_bits=2, rate_limits=False) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        alice = register(c, handle="alice_migrate")
        bob = register(c, n_ec=5, n_kem=5)
        sent = send(c, bob, 7)
        blob = c.post("/api/v1/blobs", json={"size": 4}, headers=alice.headers).json()
        r = c.patch(
            f"/api/v1/blobs/{blob['id']}",
            content=b"abcd",
            headers={**alice.headers, "Upload-Offset": "0"},
        )
        assert r.status_code == 200, r.text
    before = json.loads(xchat("admin", "stats", "--data", str(data), "--json").stdout)
    env = backend_env("postgres")
    r = xchat("admin", "migrate", "--data", str(data), "--to", env["database"])
    assert r.returncode == 0, r.stderr
    after = json.loads(xchat("admin", "stats", "--database", env["database"], "--json").stdout)
    assert {k: v for k, v in after.items() if k != "pow_bits_setting"} == {
        k: v for k, v in before.items() if k != "pow_bits_setting"
    }
    twice = xchat("admin", "migrate", "--data", str(data), "--to", env["database"])
    assert twice.returncode == 1 and "not empty" in twice.stderr
    with (
        running_server(data, pow_bits=2, rate_limits=False, **env) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert sorted(fetch_ids(c, bob)) == sorted(sent)  # same refs: old tokens work
        more = send(c, bob, 2)  # sequences moved past the copied ids
        assert sorted(fetch_ids(c, bob)) == sorted(sent + more)
        assert c.get(f"/api/v1/blobs/{blob['id']}").content == b"abcd"
        info = c.get("/api/v1/keys/count", headers=bob.headers).json()
        assert info == {"ec": 5, "kem": 5}


def test_pg_dump_and_restore_keep_queued_mail(
    tmp_path: Path, pg_service: Postgres, backend_env: Callable[[str], dict[str, Any]]
) -> None:
    env = backend_env("postgres")
    with (
        running_server(tmp_path / "relay", pow_bits=2, rate_limits=False, **env) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        bob = register(c)
        sent = send(c, bob, 4)
    dump = tmp_path / "xchat.dump"
    pg_dump, pg_restore = pg_bin("pg_dump"), pg_bin("pg_restore")
    assert pg_dump and pg_restore
    subprocess.run([pg_dump, "-Fc", "-f", str(dump), env["database"]], check=True)
    target = backend_env("postgres")
    subprocess.run([pg_restore, "--no-owner", "-d", target["database"], str(dump)], check=True)
    with (
        running_server(tmp_path / "relay", pow_bits=2, rate_limits=False, **target) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert sorted(fetch_ids(c, bob)) == sorted(sent)


def test_config_file_and_bad_options(tmp_path: Path) -> None:
    from xchat.server.config import ServerConfig

    cfg = tmp_path / "xchat.toml"
    cfg.write_text('[server]\nhost = "127.0.0.1"\n\n[limits]\npow_bits = 3\nttl_days = 2\n')
    c = ServerConfig.from_env({"XCHAT_POW_BITS": "5"}, base=ServerConfig.from_file(cfg))
    assert c.pow_bits == 5 and c.ttl_seconds == 2 * 86400  # env over file, file over default
    for text, message in (
        ("no_such_option = 1\n", "unknown option 'no_such_option'"),
        ('pow_bits = "many"\n', "pow_bits must be int"),
        ("pow_bits = [\n", "is not valid TOML"),
    ):
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(SystemExit, match=re.escape(message)):
            ServerConfig.from_file(tmp_path / "bad.toml")
    r = xchat("serve", "--config", str(tmp_path / "bad.toml"))  # the command: one line, no trace
    assert r.returncode != 0 and "is not valid TOML" in r.stderr and "Traceback" not in r.stderr
    r = xchat("serve", "--redis", "redis://127.0.0.1:1", "--data", str(tmp_path / "d"))
    assert r.returncode == 2 and "--redis needs --database" in r.stderr


def test_every_config_option_is_documented() -> None:
    from dataclasses import fields

    from xchat.server.config import ServerConfig

    doc = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    missing = [f.name for f in fields(ServerConfig) if f"`{f.name}`" not in doc]
    assert not missing, f"docs/config.md does not describe: {missing}"


def test_tls_on_the_relay(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xchat", "serve", "--port", str(port), "--data",
         str(tmp_path / "d"), "--tls-cert", str(cert_pem), "--tls-key", str(key_pem)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("xchat server listening on https://"), line
        import ssl

        ctx = ssl.create_default_context(cafile=str(cert_pem))
        with httpx.Client(verify=ctx, timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
