"""Envelopes already delivered, waiting a moment for their ACK before anything is written
(PROTOCOL Part III §7, "delivery before commit").

Why: most mail goes to a device that is online. Committing it first and deleting it when
the ACK arrives a few milliseconds later costs the relay two write statements, a share of a
transaction and fsync, and a GIL-holding writer thread on every message, and puts the
commit on the delivery path. Signal's server, for one, keeps a recipient's queue in memory
and persists only what stays unread. Here an envelope pushed to a live socket is held in
memory for ``hold_seconds``; an ACK inside that time removes it and it is never written.
Whatever is not acknowledged in time is handed to the writer like any other enqueue. The
sender's SEND_RESULT 200 still waits until every envelope of its send is durable somewhere:
committed on the relay's disk, or ACKed by the recipient device, which ACKs only after its
own local commit (Part IV §5.2).

This class is loop-thread only and knows nothing of SQLite: ``release`` hands a send's
remaining envelopes to the store's writer queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from xchat.storage.base import NewEnvelope

#: ``callback(seqs, error)``, as for the store's ``enqueue_cb``.
Callback = Callable[[Any, BaseException | None], None]
#: How much later than its deadline a held send may be released: expiry runs in batches
#: (one timer per tick, not one per send).
RELEASE_TICK = 0.005


class _HeldSend:
    __slots__ = ("callback", "deadline", "left", "rows", "seqs")

    def __init__(
        self, rows: list[NewEnvelope], seqs: list[int], callback: Callback, deadline: float
    ) -> None:
        self.rows = rows
        self.seqs = seqs
        self.callback = callback
        self.deadline = deadline
        self.left = len(rows)  # envelopes neither ACKed nor released yet


class Holdback:
    """Sends whose envelopes were delivered before any commit, in arrival order."""

    __slots__ = ("_keys", "_loop", "_release", "_sends", "_timer", "acked_unwritten", "hold")

    def __init__(
        self,
        hold_seconds: float,
        release: Callable[[list[NewEnvelope], list[int], Callback], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.hold = hold_seconds
        self._release = release
        self._loop = loop
        self._sends: deque[_HeldSend] = deque()
        #: (device_ref, envelope_id) -> the held send that carries it
        self._keys: dict[tuple[int, bytes], _HeldSend] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: envelopes ACKed while held (never written): exported by /metrics
        self.acked_unwritten = 0

    def __len__(self) -> int:
        return len(self._keys)

    def hold_send(self, rows: list[NewEnvelope], seqs: list[int], callback: Callback) -> None:
        """Keep ``rows`` (already pushed to their sockets) until ACKed or ``hold`` passes."""
        send = _HeldSend(rows, seqs, callback, self._loop.time() + self.hold)
        keys = self._keys
        for row in rows:
            key = (row.device_ref, row.envelope_id)
            earlier = keys.get(key)
            if earlier is not None:
                # A client's retry of an envelope still held: write the first copy now (its
                # sender is told only once it is durable); the retry is held, and the store
                # ignores it as a duplicate if it is written too.
                self._hand_over(earlier)
            keys[key] = send
        self._sends.append(send)
        if self._timer is None:
            self._timer = self._loop.call_at(send.deadline + RELEASE_TICK, self._expire)

    def cancel(self, device_ref: int, envelope_ids: list[bytes]) -> list[bytes]:
        """An ACK: drop the held envelopes it names; return the ids that were not held
        (those are deleted from the store as before). A send whose last envelope is ACKed
        here is reported done at once: its mail is on the recipient devices."""
        keys = self._keys
        if not keys:
            return envelope_ids
        rest: list[bytes] = []
        for eid in envelope_ids:
            send = keys.pop((device_ref, eid), None)
            if send is None:
                rest.append(eid)
                continue
            self.acked_unwritten += 1
            send.left -= 1
            if send.left == 0:
                send.rows = []
                send.callback(send.seqs, None)
        return rest

    def _expire(self) -> None:
        self._timer = None
        sends = self._sends
        now = self._loop.time()
        while sends and sends[0].deadline <= now:
            self._hand_over(sends.popleft())
        if sends:
            self._timer = self._loop.call_at(
                max(sends[0].deadline, now + RELEASE_TICK), self._expire
            )

    def release_all(self) -> None:
        """Hand every held send to the store now (before a read of the mailbox, so it sees
        all mail accepted so far; and at shutdown)."""
        sends = self._sends
        while sends:
            self._hand_over(sends.popleft())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self, send: _HeldSend) -> None:
        if send.left == 0:
            return  # every envelope was ACKed (and the sender already told)
        keys = self._keys
        rows: list[NewEnvelope] = []
        seqs: list[int] = []
        for row, seq in zip(send.rows, send.seqs, strict=True):
            key = (row.device_ref, row.envelope_id)
            if keys.get(key) is send:
                del keys[key]
                rows.append(row)
                seqs.append(seq)
        send.left = 0
        self._release(rows, seqs, send.callback)
