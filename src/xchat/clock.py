"""The wall clock, read in one place (I/O layers only).

The sans-I/O core (``xchat.crypto``, ``xchat.protocol``) never reads a clock: it takes ``now``
as a parameter, so tests pin time. The relay, the realm and the client read it here, in
milliseconds since the Unix epoch, the unit of every timestamp on the wire and in the stores.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (integer arithmetic, no float rounding)."""
    return time.time_ns() // 1_000_000
