"""Token-bucket rate limits per device and per IP bucket (PROTOCOL Part III §6).

IP buckets group addresses the way one user or host typically holds them: an IPv4 /24 or an
IPv6 /64, so rotating through a block does not multiply the budget. Buckets live only in
memory (a restart refills them) and idle ones are pruned.
"""

from __future__ import annotations

import ipaddress
import time


def ip_bucket(host: str | None) -> str:
    """The rate-limit key of a client address: ``a.b.c.0/24`` or ``x:x:x:x::/64``."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class RateLimiter:
    """Buckets of ``burst`` tokens refilled at ``rate`` per second, one per key."""

    def __init__(self, rate: float, burst: float, enabled: bool = True) -> None:
        self.rate = rate
        self.burst = burst
        self.enabled = enabled and rate > 0
        self._buckets: dict[object, tuple[float, float]] = {}
        self._last_prune = time.monotonic()

    def take(self, key: object, cost: float = 1.0, now: float | None = None) -> float:
        """Spend ``cost`` tokens; return 0.0 if allowed, else seconds until it would be."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            self._maybe_prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (min(cost, self.burst) - tokens) / self.rate

    def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < 60 or len(self._buckets) < 10_000:
            return
        self._last_prune = now
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
