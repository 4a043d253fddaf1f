"""Output helpers for the ``xchat`` command.

Peer-supplied text (messages, handles) is untrusted: before it reaches a terminal, every
control character that could move the cursor, change colours, rewrite the title bar or
reorder text (C0/C1 controls, DEL, ANSI escape sequences, bidi overrides) is replaced by a
visible escape, as websockets' ``cli.py`` does. JSON output needs no escaping (json.dumps
escapes control characters itself).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

# Bidi embedding/override/isolate controls (Trojan Source, CVE-2021-42574) and other
# invisible formatting characters that can make text display differently than it reads.
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def escape_terminal(text: str, *, keep_newlines: bool = False) -> str:
    """Make untrusted text safe to print: controls become ``\\xNN`` / ``\\u{NNNN}``."""
    out: list[str] = []
    for ch in text:
        o = ord(ch)
        if ch == "\n" and keep_newlines:
            out.append("\n    ")
        elif ch == "\t":
            out.append("    ")
        elif o < 0x20 or 0x7F <= o <= 0x9F:
            out.append(f"\\x{o:02x}")
        elif o in _BIDI or 0xFFF9 <= o <= 0xFFFB:
            out.append(f"\\u{{{o:04x}}}")
        else:
            out.append(ch)
    return "".join(out)


def fmt_time(ts_ms: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "????-??-?? ??:??:??"


def short_address(address: str) -> str:
    return address if len(address) <= 16 else f"{address[:10]}…{address[-4:]}"


def who(address: str, handle: str | None) -> str:
    if handle:
        return "@" + escape_terminal(handle)
    return short_address(address)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"xchat: warning: {message}\n")
    sys.stderr.flush()
