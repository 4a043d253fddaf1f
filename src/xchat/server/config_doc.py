"""Generate docs/config.md from :class:`~xchat.server.config.ServerConfig` itself.

    python -m xchat.server.config_doc > docs/config.md

Why generated: the reference must list every option (a test checks it), and the field
definitions with their trailing comments are the one place that is always current.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

from xchat.server import config as config_module
from xchat.server.config import ServerConfig

INTRO = """# Relay configuration reference

Every option of `xchat serve`, in one table. Each can be set three ways; the later wins:

1. a TOML file, `xchat serve --config /etc/xchat/relay.toml` (keys are the names below;
   tables such as `[server]`, `[limits]`, `[scale]` only group them; `ttl_days` is accepted
   for `ttl_seconds`; an unknown key or a wrongly typed value stops the relay with a one-line
   error naming it);
2. an environment variable `XCHAT_<NAME>` (upper case: `XCHAT_DATABASE`, `XCHAT_RATE_LIMITS=0`);
3. a command-line flag, where one exists (`--host`, `--port`, `--data`, `--pow-bits`,
   `--ttl-days`, `--log-ips`, `--database`, `--redis`, `--reuse-port`, `--tls-cert`, `--tls-key`,
   `--turn-url`, `--turn-secret-file`, `--realm`).

`xchat admin pow N` persists a proof-of-work level that overrides `pow_bits` (applied at
once on every PostgreSQL node, at the next start on SQLite). Example files: `docs/relay.toml`
(one machine) and the scale-out section of `docs/deployment.md`.

This file is generated: `python -m xchat.server.config_doc > docs/config.md`.

"""

_FIELD = re.compile(r"^\s{4}(\w+): [^=]+= (.+?)(?:\s+#\s*(.*))?$")
_SECTION = re.compile(r"^\s{4}#\s*(.+)$")


#: Descriptions of the fields whose definition carries no trailing comment.
EXTRA = {
    "host": "interface to bind (`--host`); `0.0.0.0` only behind a firewall or HAProxy",
    "port": "TCP port (`--port`), 0 = any free port (printed in the ready line)",
    "data": "data directory: SQLite database, server keys, blob files (`--data`)",
    "pow_bits": "proof-of-work difficulty for registration and first contact (`--pow-bits`)",
    "log_ips": "log client IPs (`--log-ips`; off: the relay logs no IP by default)",
    "log_level": "`debug`, `info`, `warning` or `error` (JSON lines on stderr)",
    "ttl_seconds": "undelivered mail expires after this (`--ttl-days`, TOML `ttl_days`)",
    "sweep_seconds": "how often expired mail is deleted",
    "token_ttl_seconds": "lifetime of a device's bearer token",
    "challenge_ttl_seconds": "lifetime of a single-use challenge",
    "cert_ttl_seconds": "lifetime of a sender certificate",
    "max_envelope": "largest envelope, bytes",
    "max_request": "largest HTTP body or WebSocket frame, bytes",
    "max_fetch": "most envelopes one `GET /messages` returns",
    "keys_low": "one-time prekeys left below which the device is told KEYS_LOW",
    "rate_limits": "master switch of every rate limit below",
    "rate_ip_per_s": "HTTP requests per second per IP bucket",
    "rate_ip_burst": "HTTP request burst per IP bucket",
    "rate_device_per_s": "authenticated requests per second per device",
    "rate_device_burst": "authenticated request burst per device",
    "rate_send_burst": "envelope burst per IP bucket",
    "rate_send_bytes_per_s": "envelope bytes per second per IP bucket",
    "rate_send_bytes_burst": "envelope byte burst per IP bucket",
    "max_mailbox_envelopes": "envelopes one device's mailbox may hold (429 mailbox full)",
    "max_mailbox_bytes": "bytes one device's mailbox may hold (429 mailbox full)",
    "rate_bundle_burst": "bundle fetch burst per target account",
}


def reference() -> str:
    src = inspect.getsource(config_module).splitlines()
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    section = "Server"
    for line in src:
        m = _SECTION.match(line)
        if m and not _FIELD.match(line):
            section = m.group(1)
            continue
        m = _FIELD.match(line)
        if m:
            comments[m.group(1)] = (m.group(3) or "").strip()
            sections[m.group(1)] = section
    out: list[str] = []
    current = None
    for f in fields(ServerConfig):
        group = sections.get(f.name, "Server")
        if group != current:
            current = group
            out += ["", f"**{group}**", "", "| option | default | what it does |", "|---|---|---|"]
        default = getattr(ServerConfig, f.name)
        shown = '`""` (off)' if isinstance(default, str) and not default else f"`{default}`"
        what = comments.get(f.name) or EXTRA.get(f.name, "")
        out.append(f"| `{f.name}` | {shown} | {what.replace('|', '/')} |")
    return INTRO + "\n".join(out).lstrip("\n") + "\n"


if __name__ == "__main__":
    print(reference(), end="")
