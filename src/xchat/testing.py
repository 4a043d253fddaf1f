"""Test helpers: a real relay process on loopback (xchat.testing).

``running_server(tmp_path)`` starts ``python -m xchat serve --port 0`` as a subprocess, waits
for its ready line and ``/healthz``, and kills it on exit. Keyword arguments become
``XCHAT_*`` environment variables (``ttl_seconds=1`` → ``XCHAT_TTL_SECONDS=1``), so tests
can shrink limits without code changes. Server logs go to ``<data_dir>/server.log``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from xchat import encoding
from xchat.crypto.keys import IdentityKeyPair
from xchat.crypto.pow import solve, stamp_ok
from xchat.crypto.prekeys import (
    KemPreKeyRecord,
    SignedPreKeyRecord,
    generate_kem_prekeys,
    generate_one_time_prekeys,
    prekey_upload,
)

READY_PREFIX = "xchat server listening on "


class ChildProcess:
    """A service subprocess a test starts on loopback: it prints ``<ready_prefix><url>`` on
    stdout once listening, then answers ``GET /healthz``; its stderr goes to a log file in
    its data directory. :class:`ServerProcess` (the relay) and the realm's ``RealmProcess``
    are the two kinds; they differ only in the command they run."""

    #: What the process is called in errors ("server did not start ...").
    what = "process"
    ready_prefix = ""
    log_name = "process.log"

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.url = ""
        self.port = port
        self._proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _launch(self, cmd: list[str], env: dict[str, str], timeout: float) -> None:
        """Run ``cmd``, wait for the ready line (it names the URL and port) and for
        ``/healthz``; RuntimeError (with the log's path) if either does not come."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / self.log_name, "a")  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True
        )
        line = _readline_with_timeout(self._proc, timeout)
        if not line.startswith(self.ready_prefix):
            self.stop()
            log = self.data_dir / self.log_name
            raise RuntimeError(f"{self.what} did not start: {line!r} (see {log})")
        self.url = line[len(self.ready_prefix) :].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        self._after_ready(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} never became healthy")
            time.sleep(0.02)

    def _after_ready(self, timeout: float) -> None:
        """Read whatever else the process prints after its ready line (nothing here)."""

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            _wait_or_kill(proc, timeout)
        self._cleanup()

    def stop_reading_stdout(self, timeout: float = 10.0) -> str:
        """Graceful stop (SIGTERM) that returns everything the process wrote to stdout
        after its ready line, for tests that scan all it ever printed."""
        proc = self._proc
        out = ""
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            if proc.stdout is not None:
                out = proc.stdout.read()  # until the process closes it, i.e. exits
            _wait_or_kill(proc, timeout)
        self._cleanup()
        return out

    def kill9(self) -> None:
        """Crash the process (SIGKILL): nothing after its last commit survives."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerProcess(ChildProcess):
    """A running relay subprocess: ``url``, ``pid``, ``data_dir``; ``restart``, ``kill9``."""

    what = "server"
    ready_prefix = READY_PREFIX
    log_name = "server.log"

    def __init__(self, data_dir: Path, pow_bits: int, env: dict[str, str], port: int = 0) -> None:
        super().__init__(data_dir, port)
        self.pow_bits = pow_bits
        #: /metrics is behind an operator token (issue #18); test relays get a known one.
        env.setdefault("XCHAT_METRICS_TOKEN", "test-metrics-" + secrets.token_hex(8))
        self.env = env
        self.address = ""  # url#fingerprint (PROTOCOL Part III §3.1), once started

    @property
    def metrics_headers(self) -> dict[str, str]:
        """``Authorization`` for ``GET /metrics`` of this relay."""
        return {"Authorization": f"Bearer {self.env['XCHAT_METRICS_TOKEN']}"}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/api/v1/ws"

    def start(self, timeout: float = 15.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "xchat",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--pow-bits",
            str(self.pow_bits),
        ]
        self._launch(cmd, {**os.environ, **self.env}, timeout)

    def _after_ready(self, timeout: float) -> None:
        # The next line is the shareable address with the key fingerprint (Part III §3.1).
        assert self._proc is not None
        second = _readline_with_timeout(self._proc, timeout)
        self.address = second.rsplit(" ", 1)[-1].strip() if "#" in second else self.url

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and data directory."""
        self.stop()
        self.start()


def _wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Wait for a signalled process to exit; SIGKILL it if it does not within ``timeout``."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    out: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ""


def env_from_kwargs(kwargs: dict[str, Any]) -> dict[str, str]:
    env = {}
    for key, value in kwargs.items():
        name = key.upper()
        if not name.startswith("XCHAT_"):
            name = "XCHAT_" + name
        if isinstance(value, bool):
            value = "1" if value else "0"
        env[name] = str(value)
    return env


@contextmanager
def running_server(data_dir: Path | str, pow_bits: int = 4, **env: Any) -> Iterator[ServerProcess]:
    """Run a relay subprocess for the duration of the ``with`` block (xchat.testing)."""
    server = ServerProcess(Path(data_dir), pow_bits, env_from_kwargs(env))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_nodes(
    data_dir: Path, pow_bits: int, env: dict[str, str], *, share_port: bool = False
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two relay nodes on one data directory (the same relay keys, one blob store) and one
    metrics token; the first starts alone because it creates the keys. ``share_port``: the
    second binds the first's port (``--reuse-port``)."""
    first = ServerProcess(data_dir, pow_bits, dict(env))
    first.start()
    second_env = {**env, "XCHAT_METRICS_TOKEN": first.env["XCHAT_METRICS_TOKEN"]}
    second = ServerProcess(data_dir, pow_bits, second_env, port=first.port if share_port else 0)
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


# --- a minimal account on a real relay, for tests and benchmarks ---------------------------
# Built on the crypto modules and raw HTTP only, so server tests need no client SDK.


def b64(data: bytes) -> str:
    """Standard padded base64, as every JSON body of the relay uses (PROTOCOL Part III)."""
    return encoding.b64encode(data)


@dataclass
class Account:
    """A registered device: its identity, address, bearer token and delivery token."""

    identity: IdentityKeyPair
    address: str
    token: str
    delivery_token: bytes = field(default=b"")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def key_upload(
    ik: IdentityKeyPair, n_ec: int = 3, n_kem: int = 3, start: int = 1
) -> dict[str, Any]:
    """A PreKeyUpload body: signed prekey, last-resort KEM key and a few one-time keys."""
    return prekey_upload(
        signed_prekey=SignedPreKeyRecord.generate(ik, 1),
        kem_last_resort=KemPreKeyRecord.generate(ik, 100_000, last_resort=True),
        one_time_ec=generate_one_time_prekeys(start, n_ec),
        one_time_kem=generate_kem_prekeys(ik, start, n_kem),
    )


def get_challenge(client: httpx.Client) -> tuple[bytes, int]:
    """A fresh challenge and the server's proof-of-work difficulty."""
    r = client.post("/api/v1/challenge")
    assert r.status_code == 200, r.text
    challenge = encoding.b64decode(r.json()["challenge"], "challenge")  # strict, as a client
    return challenge, int(r.json()["pow_bits"])


def register_body(
    client: httpx.Client,
    ik: IdentityKeyPair,
    handle: str | None = None,
    n_ec: int = 3,
    n_kem: int = 3,
    valid_pow: bool = True,
) -> dict[str, Any]:
    """The ``POST /api/v1/accounts`` body; ``valid_pow=False`` makes a stamp that fails."""
    ch, bits = get_challenge(client)
    nonce = solve(ch, ik.public.encode(), bits)
    if not valid_pow:
        nonce = next(
            n
            for n in range(nonce + 1, nonce + 10_000)
            if not stamp_ok(ch, ik.public.encode(), n, bits)
        )
    return {
        "identity_key": b64(ik.public.encode()),
        "challenge": b64(ch),
        "signature": b64(ik.sign(b"XChat-v1-register" + ch)),
        "pow_nonce": nonce,
        "handle": handle,
        "keys": key_upload(ik, n_ec, n_kem),
    }


def register(
    client: httpx.Client,
    handle: str | None = None,
    n_ec: int = 3,
    n_kem: int = 3,
    ik: IdentityKeyPair | None = None,
    delivery_token: bool = True,
) -> Account:
    """Register (or re-register, i.e. restore) an identity; publish a delivery token."""
    ik = ik or IdentityKeyPair.generate()
    r = client.post("/api/v1/accounts", json=register_body(client, ik, handle, n_ec, n_kem))
    assert r.status_code == 200, r.text
    j = r.json()
    acct = Account(ik, j["address"], j["token"])
    if delivery_token:
        acct.delivery_token = os.urandom(16)
        r = client.put(
            "/api/v1/delivery-token",
            json={"token_hash": b64(hashlib.sha256(acct.delivery_token).digest())},
            headers=acct.headers,
        )
        assert r.status_code == 200, r.text
    return acct


def anon_headers(client: httpx.Client, acct: Account, n: int = 1) -> list[dict[str, str]]:
    """``n`` anonymous access tokens (PROTOCOL Part XI) obtained by ``acct``, each as the
    request headers of one ``GET /bundles``, ``/handles`` or ``/accounts`` call."""
    from xchat.crypto import tokens as tk

    keys = client.get("/api/v1/tokens/keys").json()["keys"][0]
    pk = encoding.b64decode(keys["public_key"], "token public key")
    out: list[dict[str, str]] = []
    while len(out) < n:
        pending = tk.begin_batch(keys["epoch"], pk, min(tk.MAX_BATCH, n - len(out)))
        r = client.post(
            "/api/v1/tokens",
            json={"epoch": keys["epoch"], "blinded": [b64(b) for b in pending.blinded]},
            headers=acct.headers,
        )
        assert r.status_code == 200, r.text
        j = r.json()
        evaluated = [encoding.b64decode(e, "evaluated element") for e in j["evaluated"]]
        proof = encoding.b64decode(j["proof"], "token proof")
        for t in tk.finish_batch(pending, evaluated, proof):
            out.append({"Authorization": f'PrivateToken token="{tk.encode_token(t)}"'})
    return out


# --- coturn for call tests (PROTOCOL.md Part IX §6) -------------------------------------------

TURNSERVER = "/usr/bin/turnserver"


@dataclass
class TurnProcess:
    """A real coturn on loopback with the TURN REST API secret (``use-auth-secret``)."""

    port: int
    secret_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"

    def server_env(self) -> dict[str, str]:
        """``running_server(..., **turn.server_env())`` points the relay at this coturn."""
        return {"turn_url": self.url, "turn_secret_file": str(self.secret_file)}

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stun_answers(port: int, timeout: float) -> bool:
    """One STUN Binding request (RFC 8489 §5) to 127.0.0.1:port; True if anything answers."""
    import socket

    request = struct.pack(">HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, ("127.0.0.1", port))
            return len(s.recv(2048)) >= 20
        except OSError:
            return False


@contextmanager
def running_coturn(work_dir: Path | str, timeout: float = 10.0) -> Iterator[TurnProcess]:
    """Start ``turnserver`` on 127.0.0.1 (UDP, no TLS, loopback peers allowed, relay ports
    in a random 200-port window), wait until it answers STUN, stop it on exit."""
    import random

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    secret_file = work / "turn-secret"
    secret = os.urandom(24).hex()
    secret_file.write_text(secret + "\n")
    log_file = work / "turnserver.log"
    port = _free_udp_port()
    low = random.randrange(40000, 60000, 200)
    cmd = [
        TURNSERVER,
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={low}",
        f"--max-port={low + 199}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        "--realm=xchat.test",
        "--fingerprint",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--allow-loopback-peers",
        "--no-software-attribute",
        f"--log-file={log_file}",
        "--simple-log",
        "--verbose",
        f"--pidfile={work / 'turnserver.pid'}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    turn = TurnProcess(port, secret_file, log_file, proc)
    try:
        deadline = time.monotonic() + timeout
        while not _stun_answers(port, 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start (see {log_file})")
        yield turn
    finally:
        if proc.poll() is None:
            proc.terminate()
            _wait_or_kill(proc, 5)
