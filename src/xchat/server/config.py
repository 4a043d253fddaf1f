"""Relay configuration: defaults, ``XCHAT_*`` environment variables, CLI flags (PROTOCOL III §9).

Precedence: CLI flag > environment variable > default. Every limit of the relay is here so
tests and the benchmark can tune it without code changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_POW_BITS = 20  # measured: xchat.crypto.pow.solve does ~1.5 M hashes/s -> ~0.7 s


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8420
    data: Path = Path("xchat-data")
    pow_bits: int = DEFAULT_POW_BITS
    log_ips: bool = False
    log_level: str = "info"
    # Mailbox
    ttl_seconds: int = 30 * 24 * 3600
    sweep_seconds: float = 600.0
    # Tokens and challenges
    token_ttl_seconds: int = 3600
    challenge_ttl_seconds: int = 300
    cert_ttl_seconds: int = 24 * 3600
    # Limits
    max_envelope: int = 256 * 1024
    max_request: int = 1024 * 1024
    max_fetch: int = 500
    keys_low: int = 10
    max_one_time_keys: int = 1000  # unused one-time prekeys a device holds, EC and KEM each (413)
    ws_outbox_limit: int = 8 * 1024 * 1024  # bytes queued to a slow socket before 4408
    ws_fast: bool = True  # serve /api/v1/ws by the same-port fast path (wsfast.py)
    ws_ping_seconds: float = 30.0  # fast path keepalive interval (0 = off)
    ws_direct_writes: bool = True  # fast path: os.write (GIL released) before transport.write
    delivery_hold_ms: float = 100.0  # delivered mail ACKed within this is never written (0: off)
    # Connection hygiene (PROTOCOL Part III §6): slowloris timeouts and sockets per IP bucket
    header_timeout: float = 5.0  # seconds from connect (or request start) to a full head
    body_timeout: float = 5.0  # seconds without a byte of a request body being received
    max_sockets_per_ip: int = 256  # open TCP connections per /24 or /64 (0 = unlimited)
    gil_switch_ms: float = 0.0  # sys.setswitchinterval for loop/writer handoffs (0 = default)
    # Rate limits (token buckets; rate per second, burst = bucket size)
    rate_limits: bool = True
    rate_ip_per_s: float = 20.0
    rate_ip_burst: float = 100.0
    rate_device_per_s: float = 20.0
    rate_device_burst: float = 100.0
    rate_send_per_s: float = 200.0  # envelopes per second per IP bucket
    rate_send_burst: float = 1000.0
    # Storage amplification (PROTOCOL Part III §6, issue #18): stored bytes per IP bucket,
    # and what one device's mailbox may hold before senders get 429 "mailbox full"
    rate_send_bytes_per_s: float = 4 * 1024 * 1024
    rate_send_bytes_burst: float = 64 * 1024 * 1024
    max_mailbox_envelopes: int = 10_000
    max_mailbox_bytes: int = 64 * 1024 * 1024
    # GET /metrics needs "Authorization: Bearer <metrics_token>"; empty = /metrics is off
    metrics_token: str = ""
    # Anonymous tokens and bundle fetches (PROTOCOL Part XI, Part III §4.3)
    anon_token_epoch_seconds: int = 86400  # issuer key epoch; a token lives 1-2 epochs
    anon_token_daily_limit: int = 200  # tokens issued per account per UTC day
    rate_bundle_per_s: float = 1.0  # bundle fetches per target account (429 beyond)
    rate_bundle_burst: float = 60.0
    otk_per_hour: float = 10.0  # one-time keys handed out per target account
    otk_burst: float = 10.0  # beyond it: signed + last-resort keys only
    # Scale-out and production (docs/deployment.md): empty = SQLite + in-process fan-out
    database: str = ""  # postgresql://... : every durable table in PostgreSQL
    redis: str = ""  # redis://... : which node holds each device's socket (needs database)
    resync_seconds: float = 2.0  # scaled-out: catch-up of wake-ups lost in Redis, from PG
    reuse_port: bool = False  # SO_REUSEPORT: several relays (same database/redis/data), one port
    tls_cert: str = ""  # PEM certificate chain: serve HTTPS/WSS on the relay port
    tls_key: str = ""  # PEM private key of tls_cert
    # TURN for calls (PROTOCOL Part IX §6): off unless both are set
    turn_url: str = ""  # turn:HOST:PORT (comma-separated for several)
    turn_secret_file: str = ""  # coturn's static-auth-secret, shared with this relay
    turn_ttl_seconds: int = 3600  # lifetime of the credentials GET /api/v1/turn issues
    # Backup realms listed at GET /api/v1/realms (PROTOCOL Part X §5.5): comma-separated URLs
    realms: str = ""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        base: ServerConfig | None = None,
        **overrides: Any,
    ) -> ServerConfig:
        """Build from ``XCHAT_<FIELD>`` variables (``XCHAT_DATA``, ``XCHAT_TTL_SECONDS``,
        ``XCHAT_TTL_DAYS``, ``XCHAT_RATE_LIMITS=0``, ...) over ``base`` (defaults, or a
        config file: :meth:`from_file`), then apply non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("XCHAT_" + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, getattr(cls, f.name))
        days = env.get("XCHAT_TTL_DAYS")
        if days is not None and "ttl_seconds" not in values:
            values["ttl_seconds"] = int(float(days) * 86400)
        cfg = replace(base, **values) if base is not None else cls(**values)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_file(cls, path: Path) -> ServerConfig:
        """Read a TOML config file (``xchat serve --config F``; reference: docs/config.md).

        Keys are the field names above; tables (``[limits]``, ``[scale]``, ...) only group
        them. ``ttl_days`` is accepted for ``ttl_seconds``. An unknown key or a value of the
        wrong type is an error naming the key (never silently ignored)."""
        import tomllib

        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise SystemExit(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SystemExit(f"config file {path} is not valid TOML: {exc}") from None
        flat: dict[str, Any] = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        if "ttl_days" in flat:
            flat.setdefault("ttl_seconds", int(float(flat.pop("ttl_days")) * 86400))
        known = {f.name: getattr(cls, f.name) for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in known:
                raise SystemExit(f"config file {path}: unknown option {key!r}")
            values[key] = _typed(key, value, known[key], path)
        return cls(**values)

    def limits(self) -> dict[str, Any]:
        """The limits published at ``GET /api/v1/server``."""
        return {
            "max_envelope": self.max_envelope,
            "max_request": self.max_request,
            "max_fetch": self.max_fetch,
            "ttl_seconds": self.ttl_seconds,
            "token_ttl_seconds": self.token_ttl_seconds,
            "challenge_ttl_seconds": self.challenge_ttl_seconds,
            "keys_low": self.keys_low,
            "rate_limits": self.rate_limits,
            "max_mailbox_envelopes": self.max_mailbox_envelopes,
            "max_mailbox_bytes": self.max_mailbox_bytes,
        }


def _typed(name: str, value: Any, default: Any, path: Path) -> Any:
    """A TOML value checked against the field's default type (ints allowed for floats)."""
    want = type(default)
    if isinstance(default, Path) and isinstance(value, str):
        return Path(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and (want is bool or not isinstance(value, bool)):
        return value
    raise SystemExit(
        f"config file {path}: {name} must be {want.__name__}, not {type(value).__name__}"
    )


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        raise SystemExit(f"invalid value for XCHAT_{name.upper()}: {raw!r}") from None
