"""Local full-text search over the encrypted history (PROTOCOL.md Part VIII §8).

Design: an SQLite FTS5 index that lives **only in memory**, built from the decrypted
history the first time a process searches, then kept current by the same code paths
that store, edit, delete and expire messages. Nothing of it ever reaches the disk: the
profile's store holds message bodies sealed under the profile key, and an on-disk FTS
table would be a plaintext copy of them (FTS5 shadow tables cannot be sealed per row).
Building costs one AES-GCM open and one JSON parse per stored message (about 10 µs
each here), so a 100,000-message history indexes in about a second, paid once per
process and only by processes that search.

Queries are the user's words, each matched as a prefix (``din`` finds "dinner");
FTS5 operators in user input are neutralised by quoting every term.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

_TERM_RE = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 16
MAX_RESULTS = 200


@dataclass(frozen=True)
class SearchHit:
    peer: str  # messages.peer
    id: str
    conv: str  # contact address or group:<gid>
    author: str
    ts_ms: int
    text: str


def match_query(query: str) -> str | None:
    """User text -> an FTS5 MATCH expression of quoted prefix terms (None: no terms)."""
    terms = _TERM_RE.findall(query)[:MAX_TERMS]
    if not terms:
        return None
    return " ".join('"' + t.replace('"', '""') + '"*' for t in terms)


class SearchIndex:
    """An in-memory FTS5 index of (conversation, author, text) per message."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE fts USING fts5(text, peer UNINDEXED, id UNINDEXED, "
            "conv UNINDEXED, author UNINDEXED, ts UNINDEXED, tokenize = 'unicode61 "
            "remove_diacritics 2')"
        )
        self.built = False

    def add(self, hit: SearchHit) -> None:
        self.remove(hit.peer, hit.id)
        if hit.text.strip():
            self._db.execute(
                "INSERT INTO fts (text, peer, id, conv, author, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (hit.text, hit.peer, hit.id, hit.conv, hit.author, hit.ts_ms),
            )

    def remove(self, peer: str, msg_id: str) -> None:
        self._db.execute("DELETE FROM fts WHERE peer = ? AND id = ?", (peer, msg_id))

    def clear(self) -> None:
        self._db.execute("DELETE FROM fts")
        self.built = False

    def search(
        self,
        query: str,
        *,
        conv: str | None = None,
        author: str | None = None,
        limit: int = 50,
    ) -> list[SearchHit]:
        """Newest first. ``conv``/``author`` restrict to one conversation / person."""
        expr = match_query(query)
        if expr is None:
            return []
        sql = "SELECT peer, id, conv, author, ts, text FROM fts WHERE fts MATCH ?"
        args: list[object] = [expr]
        if conv is not None:
            sql += " AND conv = ?"
            args.append(conv)
        if author is not None:
            sql += " AND author = ?"
            args.append(author)
        sql += " ORDER BY ts DESC LIMIT ?"
        args.append(max(1, min(limit, MAX_RESULTS)))
        rows = self._db.execute(sql, args).fetchall()
        return [
            SearchHit(str(p), str(i), str(c), str(a), int(t), str(x)) for p, i, c, a, t, x in rows
        ]

    def close(self) -> None:
        self._db.close()
