"""``xchat serve`` (PROTOCOL Part III §9). The lead mounts :data:`serve_command` into the ``xchat``
group; ``python -m xchat serve`` calls it directly."""

from __future__ import annotations

from pathlib import Path

import click

from xchat.server.config import ServerConfig


@click.command("serve")
@click.option("--host", default=None, help="Interface to bind [XCHAT_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="TCP port, 0 = any free [XCHAT_PORT, 8420].")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory [XCHAT_DATA, ./xchat-data].",
)
@click.option("--pow-bits", type=click.IntRange(0, 40), default=None, help="PoW difficulty.")
@click.option("--ttl-days", type=float, default=None, help="Undelivered mail TTL [30].")
@click.option(
    "--log-ips/--no-log-ips", default=None, help="Log client IPs (off unless the operator asks)."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file with any option below (docs/config.md); flags win over it.",
)
@click.option("--database", default=None, help="postgresql://... (scale-out) [SQLite in --data].")
@click.option("--redis", default=None, help="redis://... routing between nodes (with --database).")
@click.option(
    "--reuse-port/--no-reuse-port",
    default=None,
    help="SO_REUSEPORT: run several relays (same --database, --redis, --data) on one port "
    "[XCHAT_REUSE_PORT, off].",
)
@click.option("--tls-cert", default=None, help="PEM certificate chain: serve HTTPS/WSS.")
@click.option("--tls-key", default=None, help="PEM private key for --tls-cert.")
@click.option("--turn-url", default=None, help="TURN server for calls, turn:HOST:PORT.")
@click.option(
    "--turn-secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File with the TURN server's static-auth-secret (coturn use-auth-secret).",
)
@click.option(
    "--realm",
    "realms",
    multiple=True,
    help="Backup realm URL to recommend to clients (repeatable; PROTOCOL Part X §5.5).",
)
@click.option(
    "--metrics-token",
    default=None,
    help="Serve GET /metrics to 'Authorization: Bearer TOKEN' only [XCHAT_METRICS_TOKEN; "
    "unset: /metrics is off].",
)
@click.option(
    "--rotate-signing-key",
    "rotate_hours",
    type=click.FloatRange(24, 24 * 90),
    default=None,
    help="Replace the signing key by one signed by the current key, old certificates "
    "accepted for this many hours (>= 24); prints the new address and exits (relay stopped).",
)
def serve_command(
    host: str | None,
    port: int | None,
    data: Path | None,
    pow_bits: int | None,
    ttl_days: float | None,
    log_ips: bool | None,
    config_file: Path | None,
    database: str | None,
    redis: str | None,
    reuse_port: bool | None,
    tls_cert: str | None,
    tls_key: str | None,
    turn_url: str | None,
    turn_secret_file: str | None,
    realms: tuple[str, ...] = (),
    metrics_token: str | None = None,
    rotate_hours: float | None = None,
) -> None:
    """Run the XChat relay server."""
    from xchat.server.serve import run_server

    if rotate_hours is not None:  # PROTOCOL Part III §3.1
        from xchat.clock import now_ms
        from xchat.crypto.relaykey import fingerprint
        from xchat.server.auth import rotate_signing_key

        data_dir = data or ServerConfig.from_env().data
        new = rotate_signing_key(data_dir, now_ms(), int(rotate_hours * 3600_000))
        click.echo(f"xchat relay signing key rotated; new fingerprint: {fingerprint(new)}")
        return

    ttl = int(ttl_days * 86400) if ttl_days is not None else None
    config = ServerConfig.from_env(
        base=ServerConfig.from_file(config_file) if config_file is not None else None,
        database=database,
        redis=redis,
        reuse_port=reuse_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        host=host,
        port=port,
        data=data,
        pow_bits=pow_bits,
        ttl_seconds=ttl,
        log_ips=log_ips,
        turn_url=turn_url,
        turn_secret_file=turn_secret_file,
        realms=",".join(realms) or None,
        metrics_token=metrics_token,
    )
    run_server(config)
