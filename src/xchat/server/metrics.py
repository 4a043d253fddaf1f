"""Prometheus text exposition of aggregate counters only (PROTOCOL Part III §9).

No label ever carries an address, handle, device or IP: only totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}
        #: name -> callable returning recent samples; rendered as a Prometheus summary
        #: (p50/p99 quantiles + count) over that window.
        self.summaries: dict[str, Callable[[], list[float]]] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def render(self) -> str:
        lines = []
        for name in sorted(self.counters):
            lines.append(f"# TYPE xchat_{name} counter")
            lines.append(f"xchat_{name} {self.counters[name]}")
        for name in sorted(self.gauges):
            lines.append(f"# TYPE xchat_{name} gauge")
            lines.append(f"xchat_{name} {self.gauges[name]()}")
        for name in sorted(self.summaries):
            samples = sorted(self.summaries[name]())
            lines.append(f"# TYPE xchat_{name} summary")
            for q in (0.5, 0.9, 0.99):
                v = samples[min(len(samples) - 1, int(q * len(samples)))] if samples else 0.0
                lines.append(f'xchat_{name}{{quantile="{q}"}} {v}')
            lines.append(f"xchat_{name}_count {len(samples)}")
        return "\n".join(lines) + "\n"
