"""Peer benchmark: Matrix Synapse carrying the same 1:1 traffic as bench/relay_bench.py.

Why: XChat's throughput and latency targets are stated relative to Synapse (the reference
Python messaging server), so it must be measured here, on the same machine and load
generator style, not quoted from elsewhere. See docs/bench-readme.md for what is measured
and how the numbers are read.

Setup (all on loopback, nothing leaves the machine): matrix-synapse from PyPI in its own
venv (bench/.synapse-venv), SQLite, one process, rate limits raised far out of the way,
presence off and WARNING-level logs (both make Synapse faster: the comparison is generous
to the peer), federation key servers disabled. N pairs of users, one room per pair.
Senders PUT m.room.message events with a 256-character body; receivers long-poll /sync
with a since token and a filter that keeps responses small.

Measured: messages/s (closed loop, every sender with one request in flight — the sustained
max), delivery latency (send start, or scheduled send time in --rate mode, → event seen in
the receiver's /sync), server CPU ms per message (/proc utime+stime delta), server RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import common

DATA_DIR = common.BENCH_DIR / ".synapse-data"
PAYLOAD_BYTES = 256
SERVER_NAME = "bench.localhost"
SHARED_SECRET = "xchat-bench-not-a-secret"
MSG_TYPE = "m.room.message"

# /sync filter: only message events in the timeline, no state, presence, receipts,
# typing or account data — the smallest /sync response Synapse can give for our traffic.
SYNC_FILTER = json.dumps(
    {
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "timeline": {"limit": 200, "types": [MSG_TYPE]},
            "state": {"types": []},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
        "event_fields": ["content.body", "sender", "type"],
    },
    separators=(",", ":"),
)

# --------------------------------------------------------------------------- install/config


def ensure_synapse(venv: Path = common.SYNAPSE_VENV) -> Path:
    """Create bench/.synapse-venv with matrix-synapse if it is not there yet; return python."""
    py = venv / "bin" / "python"
    if py.exists() and common.synapse_version(venv):
        return py
    print(f"installing matrix-synapse into {venv} (one-off, takes a minute)...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    # [postgres]: psycopg2 for the PostgreSQL mode (``--database``, issue #16)
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "matrix-synapse[postgres]"], check=True
    )
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _high(n: float = 100000) -> dict[str, float]:
    return {"per_second": n, "burst_count": n}


def _database(data_dir: Path, dsn: str | None) -> dict[str, Any]:
    """SQLite by default; with ``--database postgresql://user@host:port/db`` Synapse's own
    PostgreSQL driver (psycopg2), as a production Synapse runs (issue #16)."""
    if not dsn:
        return {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}}
    from urllib.parse import urlparse

    u = urlparse(dsn)
    args = {"user": u.username, "host": u.hostname, "port": u.port, "database": u.path[1:]}
    return {"name": "psycopg2", "args": {**args, "cp_min": 5, "cp_max": 10}}


def homeserver_config(data_dir: Path, port: int, dsn: str | None = None) -> dict[str, Any]:
    """Synapse config (YAML is a superset of JSON, so it is written as JSON)."""
    return {
        "server_name": SERVER_NAME,
        "pid_file": str(data_dir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": _database(data_dir, dsn),
        "log_config": str(data_dir / "log.config"),
        "media_store_path": str(data_dir / "media_store"),
        "signing_key_path": str(data_dir / "signing.key"),
        "report_stats": False,
        "registration_shared_secret": SHARED_SECRET,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "macaroon_secret_key": "bench-macaroon-" + uuid.uuid4().hex,
        "form_secret": "bench-form-" + uuid.uuid4().hex,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "federation_domain_whitelist": [],
        "rc_message": _high(),
        "rc_registration": _high(),
        "rc_login": {"address": _high(), "account": _high(), "failed_attempts": _high()},
        "rc_joins": {"local": _high(), "remote": _high()},
        "rc_joins_per_room": _high(),
        "rc_invites": {"per_room": _high(), "per_user": _high(), "per_issuer": _high()},
        "rc_room_creation": _high(),
        "rc_admin_redaction": _high(),
        "rc_3pid_validation": _high(),
        "rc_key_requests": _high(),
        "rc_presence": {"per_user": _high()},
        "rc_delayed_event_mgmt": _high(),
        "rc_profile": _high(),
        "rc_user_directory": _high(),
    }


def log_config(data_dir: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(data_dir / "homeserver.log"),
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


# --------------------------------------------------------------------------- server process


@dataclass
class SynapseProcess:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("stdout.log", "homeserver.log"):
            p = self.data_dir / name
            if p.exists():
                out.append(f"--- {name} ---")
                out.extend(p.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SynapseStartError(RuntimeError):
    pass


def start_synapse(
    py: Path, data_dir: Path, timeout_s: float = 120.0, dsn: str | None = None
) -> SynapseProcess:
    """Fresh data dir, generated keys, real Synapse process; waits for /health."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    port = free_port()
    cfg = data_dir / "homeserver.yaml"
    cfg.write_text(json.dumps(homeserver_config(data_dir, port, dsn), indent=1))
    (data_dir / "log.config").write_text(json.dumps(log_config(data_dir), indent=1))
    base = [str(py), "-m", "synapse.app.homeserver", "-c", str(cfg)]
    gen = subprocess.run([*base, "--generate-keys"], capture_output=True, text=True)
    if gen.returncode != 0:
        raise SynapseStartError(f"--generate-keys failed:\n{gen.stdout}\n{gen.stderr}")
    out = (data_dir / "stdout.log").open("wb")
    proc = subprocess.Popen(base, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    sp = SynapseProcess(proc, f"http://127.0.0.1:{port}", data_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SynapseStartError(f"synapse exited with {proc.returncode}\n{sp.log_tail()}")
        try:
            if httpx.get(f"{sp.url}/health", timeout=2).status_code == 200:
                return sp
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sp.stop()
    raise SynapseStartError(f"synapse not healthy after {timeout_s:.0f} s\n{sp.log_tail()}")


# --------------------------------------------------------------------------- client side


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(client: httpx.AsyncClient, name: str) -> User:
    """Shared-secret admin registration (no captcha/e-mail, no UI auth round trips)."""
    r = await client.get("/_synapse/admin/v1/register")
    r.raise_for_status()
    nonce = r.json()["nonce"]
    password = "pw-" + name
    mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), password.encode(), b"notadmin"]))
    body = {
        "nonce": nonce,
        "username": name,
        "password": password,
        "admin": False,
        "mac": mac.hexdigest(),
    }
    r = await client.post("/_synapse/admin/v1/register", json=body)
    r.raise_for_status()
    data = r.json()
    return User(data["user_id"], data["access_token"])


@dataclass
class Pair:
    index: int
    sender: User
    receiver: User
    room_id: str
    since: str = ""
    txn: int = 0


async def make_pair(client: httpx.AsyncClient, i: int, run_tag: str) -> Pair:
    s = await register(client, f"s{i}_{run_tag}")
    r = await register(client, f"r{i}_{run_tag}")
    resp = await client.post(
        "/_matrix/client/v3/createRoom",
        headers=s.headers,
        json={"preset": "private_chat", "invite": [r.user_id], "is_direct": True},
    )
    resp.raise_for_status()
    room_id = resp.json()["room_id"]
    resp = await client.post(f"/_matrix/client/v3/join/{room_id}", headers=r.headers, json={})
    resp.raise_for_status()
    resp = await client.get(
        "/_matrix/client/v3/sync", headers=r.headers, params={"filter": SYNC_FILTER}
    )
    resp.raise_for_status()
    return Pair(i, s, r, room_id, since=resp.json()["next_batch"])


def body_for(pair: int, seq: int) -> str:
    """256 characters of text whose head identifies the message: 'pair:seq '."""
    head = f"{pair}:{seq} "
    return head + "x" * (PAYLOAD_BYTES - len(head))


@dataclass
class Tracker:
    """Send times and delivery times, keyed by (pair, seq); shared by all tasks."""

    sent_at: dict[tuple[int, int], float] = field(default_factory=dict)
    seen_at: dict[tuple[int, int], float] = field(default_factory=dict)
    errors: int = 0


async def receiver_loop(
    client: httpx.AsyncClient, p: Pair, tr: Tracker, stop: asyncio.Event
) -> None:
    """Long-poll /sync and timestamp every message event the moment its response arrives."""
    while not stop.is_set():
        try:
            resp = await client.get(
                "/_matrix/client/v3/sync",
                headers=p.receiver.headers,
                params={"filter": SYNC_FILTER, "since": p.since, "timeout": "5000"},
                timeout=30,
            )
        except httpx.HTTPError:
            tr.errors += 1
            await asyncio.sleep(0.1)
            continue
        now = time.perf_counter()
        if resp.status_code != 200:
            tr.errors += 1
            await asyncio.sleep(0.1)
            continue
        data = resp.json()
        p.since = data["next_batch"]
        room = data.get("rooms", {}).get("join", {}).get(p.room_id, {})
        for ev in room.get("timeline", {}).get("events", []):
            head = str(ev.get("content", {}).get("body", "")).split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                pair_s, seq_s = head.split(":")
                key = (int(pair_s), int(seq_s))
                tr.seen_at.setdefault(key, now)


async def send_one(client: httpx.AsyncClient, p: Pair, seq: int, tr: Tracker, t0: float) -> None:
    p.txn += 1
    tr.sent_at[(p.index, seq)] = t0
    path = f"/_matrix/client/v3/rooms/{p.room_id}/send/{MSG_TYPE}/t{p.txn}"
    try:
        resp = await client.put(
            path,
            headers=p.sender.headers,
            json={"msgtype": "m.text", "body": body_for(p.index, seq)},
        )
        if resp.status_code != 200:
            tr.errors += 1
    except httpx.HTTPError:
        tr.errors += 1


@dataclass
class Window:
    """One measurement window: which messages belong to it and when it ran."""

    keys: list[tuple[int, int]] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0


async def closed_loop(
    client: httpx.AsyncClient, pairs: list[Pair], tr: Tracker, seq0: int, duration: float
) -> Window:
    """Every sender keeps exactly one PUT in flight: the next starts when the last returns 200.

    This is the sustained max for `pairs` concurrent senders. Throughput counts only
    messages seen by receivers, and the window ends at the last delivery, so a backlog
    building up behind /sync lowers the figure instead of hiding in it.
    """
    win = Window(start=time.perf_counter())
    deadline = win.start + duration

    async def run(p: Pair) -> None:
        seq = seq0
        while time.perf_counter() < deadline:
            win.keys.append((p.index, seq))
            await send_one(client, p, seq, tr, time.perf_counter())
            seq += 1

    await asyncio.gather(*(run(p) for p in pairs))
    await drain(win, tr)
    return win


async def drain(win: Window, tr: Tracker, timeout: float = 15.0) -> None:
    """Wait until every message of the window was seen (or `timeout`); set win.end."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and any(k not in tr.seen_at for k in win.keys):
        await asyncio.sleep(0.05)
    win.end = max((tr.seen_at.get(k, 0.0) for k in win.keys), default=time.perf_counter())


async def open_loop(
    client: httpx.AsyncClient,
    pairs: list[Pair],
    tr: Tracker,
    seq0: int,
    duration: float,
    rate: float,
) -> Window:
    """Offered load: `rate` msgs/s in total, evenly spread over pairs, fired on schedule.

    Each send is its own task so a slow server cannot slow the schedule down (no
    coordinated omission); latency is measured from the scheduled time.
    """
    interval = len(pairs) / rate
    win = Window(start=time.perf_counter())
    tasks: set[asyncio.Task[None]] = set()

    async def run(p: Pair, offset: float) -> None:
        k = 0
        while True:
            t_sched = win.start + offset + k * interval
            if t_sched >= win.start + duration:
                return
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = (p.index, seq0 + k)
            win.keys.append(key)
            t = asyncio.create_task(send_one(client, p, seq0 + k, tr, t_sched))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            k += 1

    await asyncio.gather(*(run(p, i * interval / len(pairs)) for i, p in enumerate(pairs)))
    if tasks:
        await asyncio.gather(*tasks)
    await drain(win, tr)
    return win


def summarise(win: Window, tr: Tracker, cpu_s: float, offered: float | None) -> dict[str, Any]:
    lat = [(tr.seen_at[k] - tr.sent_at[k]) * 1000 for k in win.keys if k in tr.seen_at]
    elapsed = max(win.end - win.start, 1e-9)
    delivered = len(lat)
    out: dict[str, Any] = {
        "offered": offered,
        "sent": len(win.keys),
        "delivered": delivered,
        "lost": len(win.keys) - delivered,
        "elapsed_s": round(elapsed, 3),
        "achieved": round(delivered / elapsed, 2),
        "server_cpu_ms_per_msg": round(cpu_s * 1000 / delivered, 3) if delivered else None,
        "server_cpu_util": round(cpu_s / elapsed, 3),
    }
    out.update(common.latency_summary(lat))
    return out


async def measure(args: argparse.Namespace, sp: SynapseProcess) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.pairs * 2 + 16, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=sp.url, limits=limits, timeout=60) as client:
        tag = uuid.uuid4().hex[:6]
        pairs = [await make_pair(client, i, tag) for i in range(args.pairs)]
        rss_idle = common.proc_rss_bytes(sp.pid)
        tr = Tracker()
        stop = asyncio.Event()
        receivers = [asyncio.create_task(receiver_loop(client, p, tr, stop)) for p in pairs]
        seq = 0

        def open_at(s: int, rate: float) -> Awaitable[Window]:
            return open_loop(client, pairs, tr, s, args.duration, rate)

        async def window(
            run: Callable[[int], Awaitable[Window]], offered: float | None
        ) -> dict[str, Any]:
            nonlocal seq
            cpu0 = common.proc_cpu_seconds(sp.pid)
            win = await run(seq)
            cpu1 = common.proc_cpu_seconds(sp.pid)
            seq += 10_000_000
            return summarise(win, tr, cpu1 - cpu0, offered)

        print(f"warm-up {args.warmup:.0f} s...", flush=True)
        await window(lambda s: closed_loop(client, pairs, tr, s, args.warmup), None)
        points: list[dict[str, Any]] = []
        if args.rate:
            rates = [float(r) for r in args.rate]
            sat = None
        else:
            print(f"saturation run {args.duration:.0f} s ({args.pairs} pairs)...", flush=True)
            sat = await window(lambda s: closed_loop(client, pairs, tr, s, args.duration), None)
            sat["mode"] = "closed-loop"
            print(f"  max {sat['achieved']} msgs/s, p50 {sat['p50_ms']} p99 {sat['p99_ms']} ms")
            rates = [round(sat["achieved"] * f, 2) for f in args.fractions]
        for rate in rates:
            print(f"offered {rate} msgs/s for {args.duration:.0f} s...", flush=True)
            pt = await window(functools.partial(open_at, rate=rate), rate)
            pt["mode"] = "open-loop"
            print(f"  achieved {pt['achieved']}, p50 {pt['p50_ms']} p99 {pt['p99_ms']} ms")
            points.append(pt)
        rss_loaded = common.proc_rss_bytes(sp.pid)
        stop.set()
        for t in receivers:
            t.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
    return {
        "saturation": sat,
        "points": points,
        "rss_idle": rss_idle,
        "rss_loaded": rss_loaded,
        "errors": tr.errors,
    }


def build_result(
    args: argparse.Namespace, m: dict[str, Any], doc: dict[str, Any]
) -> dict[str, Any]:
    """Fill `doc` (made by common.new_result before the run, so the start load is right)."""
    sat, points = m["saturation"], m["points"]
    curve = [
        {
            "offered": p["offered"],
            "achieved": p["achieved"],
            "p50_ms": p["p50_ms"],
            "p99_ms": p["p99_ms"],
        }
        for p in points
    ]
    if sat:
        # The closed-loop run is the max: plot it at offered = achieved.
        curve.append(
            {
                "offered": sat["achieved"],
                "achieved": sat["achieved"],
                "p50_ms": sat["p50_ms"],
                "p99_ms": sat["p99_ms"],
                "closed_loop": True,
            }
        )
    curve.sort(key=lambda c: c["offered"])
    head = sat or max(points, key=lambda p: p["achieved"])
    low = min(points, key=lambda p: p["offered"]) if points else head
    doc["params"] = {
        "pairs": args.pairs,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "payload_bytes": PAYLOAD_BYTES,
        "rates": args.rate,
        "fractions": None if args.rate else args.fractions,
    }
    doc["summary"] = {
        "msgs_per_s": head["achieved"],
        "p50_ms": head["p50_ms"],
        "p99_ms": head["p99_ms"],
        "p50_ms_low_load": low["p50_ms"],
        "p99_ms_low_load": low["p99_ms"],
        "low_load_offered": low["offered"],
        "cpu_ms_per_msg": head["server_cpu_ms_per_msg"],
        "rss_mb_idle": round(m["rss_idle"] / 2**20, 1),
        "rss_mb_loaded": round(m["rss_loaded"] / 2**20, 1),
        "errors": m["errors"],
    }
    doc["saturation"] = sat
    doc["points"] = points
    doc["curve"] = curve
    doc["notes"] = [
        "Synapse: SQLite, one process, presence off, WARNING logs, rate limits raised.",
        "msgs_per_s = closed loop, one PUT in flight per sender, counted at the receivers.",
        "latency = send start (closed loop) / scheduled send (open loop) -> seen in /sync.",
        "server CPU = /proc utime+stime of the Synapse process over the window.",
    ]
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument(
        "--rate",
        type=float,
        action="append",
        help="offered load in msgs/s (repeatable); skips the saturation run",
    )
    ap.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        default=[0.1, 0.5, 0.8, 1.0],
        help="offered loads as fractions of the measured max",
    )
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/synapse.json")
    ap.add_argument("--quick", action="store_true", help="short windows, fewer points")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument(
        "--database",
        default=None,
        help="postgresql://user@host:port/db (created with C collation): Synapse on PostgreSQL",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 5.0)
        args.warmup = min(args.warmup, 1.0)
        args.fractions = [0.1, 1.0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = common.new_result("synapse", quick=args.quick)
    try:
        py = ensure_synapse()
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"synapse_bench: cannot install matrix-synapse: {e}", file=sys.stderr)
        return 2
    try:
        sp = start_synapse(py, DATA_DIR, args.start_timeout, args.database)
    except SynapseStartError as e:
        print(f"synapse_bench: Synapse failed to start: {e}", file=sys.stderr)
        return 3
    print(f"synapse {common.synapse_version()} pid {sp.pid} at {sp.url}", flush=True)
    try:
        m = asyncio.run(measure(args, sp))
    except (httpx.HTTPError, KeyError, ValueError) as e:
        print(f"synapse_bench: run failed: {e!r}\n{sp.log_tail()}", file=sys.stderr)
        return 4
    finally:
        sp.stop()
    doc = build_result(args, m, doc)
    path = common.write_json("synapse", common.finish_result(doc), out=args.out)
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
