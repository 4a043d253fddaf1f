"""Crash-without-loss load harness (RELIABILITY.md §7.1).

Several sender→recipient pairs of SDK :class:`~xchat.client.client.Client` objects run in
one asyncio process against a real relay subprocess, while a chaos task SIGKILLs the relay
and restarts it on the same port and data directory.

How a sender retries (PROTOCOL.md Part IV §3.4, §3.8):

* ``Client.send_text`` itself re-sends the identical SEND frame (same envelope ids, so the
  relay stores it once) up to ``SEND_ATTEMPTS`` times with backoff. A relay restart takes
  longer than that, so ``send_text`` raises and marks the row ``failed``.
* A retry through ``send_text`` would make a NEW content id (the recipient could then show
  the text twice). The product re-sends unconfirmed rows with their ORIGINAL content id via
  ``Client.retry_pending()`` (run by ``Client.start()`` on every reconnection). So that
  every message is acked before the checks, the harness also re-sends a failed row itself
  through the same per-row path (``_send_content(..., store_as_message=False)`` +
  ``Store.mark_sent``); either way the recipient's content-id dedupe (``messages`` primary
  key ``(peer, id)``) must show it once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.client import Client
from xchat.errors import XChatError
from xchat.testing import ServerProcess


@dataclass
class LoadResult:
    pairs: int
    per_pair: int
    sent_ok: int = 0  # messages whose send finally returned (relay acked)
    first_try_failures: int = 0  # send_text raised (after its own same-id retries)
    resends: int = 0  # harness re-sends of a stored row with its original content id
    kills: int = 0
    lost: int = 0
    duplicates_shown: int = 0  # MessageReceived events beyond the first per id
    duplicate_history_rows: int = 0
    unsent_rows: int = 0  # sender rows left 'sending'/'failed' although acked
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"pairs={self.pairs} messages={self.pairs * self.per_pair} acked={self.sent_ok} "
            f"kills={self.kills} send_text_failures={self.first_try_failures} "
            f"resends={self.resends} lost={self.lost} duplicates_shown={self.duplicates_shown} "
            f"duplicate_history_rows={self.duplicate_history_rows} unsent_rows={self.unsent_rows} "
            f"errors={dict(self.errors)} seconds={self.seconds:.1f}"
        )


async def _new_client(path: Path, server: ServerProcess) -> Client:
    c = Client(path, reconnect_cap=0.5)
    await c.create_account(server.url, use_keyring=False)
    return c


def _stored_row(c: Client, peer: str, text: str) -> ct.Content | None:
    """The content of our last outgoing row to ``peer`` carrying ``text`` (or None)."""
    for m in reversed(c.store.history(peer, 20)):
        if m.direction != "out":
            continue
        try:
            content = ct.Content.decode(m.body)
        except XChatError:
            continue
        if content.text == text:
            return content
    return None


async def send_until_acked(c: Client, peer: str, text: str, res: LoadResult) -> str:
    """Send ``text`` and keep retrying THE SAME message until the relay acknowledges it."""
    try:
        return await c.send_text(peer, text)
    except XChatError as exc:
        res.first_try_failures += 1
        res.errors[type(exc).__name__] += 1
    delay = 0.05
    while True:
        msg = _stored_row(c, peer, text)
        try:
            if msg is None:  # failed before anything was stored or sent: a fresh send is safe
                return await c.send_text(peer, text)
            contact = await c.contact(peer)
            res.resends += 1
            # Private on purpose: re-send exactly this row under its original id (what
            # retry_pending does for every pending row) without racing the other sends.
            await c._send_content(contact, msg, store_as_message=False)
            c.store.mark_sent(peer, msg.id)
            return msg.id
        except XChatError as exc:
            res.errors[type(exc).__name__] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def run_load(
    server: ServerProcess,
    workdir: Path,
    *,
    pairs: int,
    per_pair: int,
    kill_every: float = 3.0,
    max_kills: int = 0,
    kill_after: tuple[int, ...] = (),
    seed: int = 1,
    drain_timeout: float = 120.0,
) -> LoadResult:
    """Run the load with ``max_kills`` relay crashes spaced ~``kill_every`` s apart, or
    (``kill_after``) one crash each time the acked count reaches one of those numbers —
    the deterministic form the fast test uses."""
    rng = random.Random(seed)
    res = LoadResult(pairs, per_pair)
    t0 = time.monotonic()
    senders: list[Client] = []
    recipients: list[Client] = []
    for p in range(pairs):
        senders.append(await _new_client(workdir / f"s{p}", server))
        recipients.append(await _new_client(workdir / f"r{p}", server))
    shown: dict[int, collections.Counter[str]] = {p: collections.Counter() for p in range(pairs)}
    acked: dict[int, dict[str, str]] = {p: {} for p in range(pairs)}  # id -> text
    received_text: dict[int, dict[str, str]] = {p: {} for p in range(pairs)}

    def on_event(p: int):  # type: ignore[no-untyped-def]
        def cb(e: ev.Event) -> None:
            if isinstance(e, ev.MessageReceived):
                shown[p][e.id] += 1
                received_text[p][e.id] = e.text

        return cb

    for p, r in enumerate(recipients):
        r.on_event(on_event(p))
        await r.start()
    for s in senders:  # senders receive the recipients' receipts
        await s.start()
    sending_done = asyncio.Event()

    async def sender(p: int) -> None:
        s, r = senders[p], recipients[p]
        tag = os.urandom(3).hex()
        for i in range(per_pair):
            text = f"load-{tag}-p{p}-m{i}"
            mid = await send_until_acked(s, r.address, text, res)
            acked[p][mid] = text
            res.sent_ok += 1

    async def chaos_by_count() -> None:
        for threshold in kill_after:
            while res.sent_ok < threshold and not sending_done.is_set():
                await asyncio.sleep(0.01)
            if sending_done.is_set():
                return
            server.kill9()
            res.kills += 1
            await asyncio.to_thread(server.start)

    async def chaos() -> None:
        if kill_after:
            return await chaos_by_count()
        while res.kills < max_kills and not sending_done.is_set():
            try:
                await asyncio.wait_for(sending_done.wait(), kill_every * rng.uniform(0.7, 1.3))
                return
            except TimeoutError:
                pass
            server.kill9()
            res.kills += 1
            await asyncio.to_thread(server.start)

    chaos_task = asyncio.create_task(chaos())
    try:
        await asyncio.gather(*(sender(p) for p in range(pairs)))
    finally:
        sending_done.set()
        await chaos_task

    # Quiescent drain: every acknowledged message must arrive.
    deadline = time.monotonic() + drain_timeout
    while time.monotonic() < deadline:
        if all(set(acked[p]) <= set(shown[p]) for p in range(pairs)):
            break
        await asyncio.sleep(0.1)
    # A fence per pair instead of a sleep: a mailbox is delivered in order, so once the fence
    # is shown, every redelivery stored before it (a duplicate, if any) has been seen too.
    fences = [await send_until_acked(senders[p], recipients[p].address, "fence", res)
              for p in range(pairs)]  # fmt: skip
    while time.monotonic() < deadline + 60:
        if all(shown[p][fences[p]] for p in range(pairs)):
            break
        await asyncio.sleep(0.05)
    for p in range(pairs):
        assert shown[p][fences[p]], f"pair {p}: the fence never arrived"
        del shown[p][fences[p]], received_text[p][fences[p]]

    for p in range(pairs):
        hist = recipients[p].store.history(senders[p].address, per_pair * 2 + 10)
        ids = [m.id for m in hist if m.direction == "in"]
        res.duplicate_history_rows += len(ids) - len(set(ids))
        missing = (set(acked[p]) - set(shown[p])) | (set(acked[p]) - set(ids))
        res.lost += len(missing)
        res.missing.extend(sorted(missing)[:5])
        res.duplicates_shown += sum(n - 1 for n in shown[p].values() if n > 1)
        for mid, text in received_text[p].items():
            assert acked[p].get(mid) == text, f"pair {p}: {mid} arrived with the wrong text"
        out = senders[p].store.history(recipients[p].address, per_pair * 2 + 10)
        res.unsent_rows += sum(
            1 for m in out if m.direction == "out" and m.status not in ("sent", "delivered")
        )
    res.seconds = time.monotonic() - t0
    for c in senders + recipients:
        await c.close()
    return res
