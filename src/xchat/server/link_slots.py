"""The relay's link slots (PROTOCOL.md Part VII §3.2): where a new device's offer waits for
an existing device's answer. One relay process keeps them in memory; relay nodes that
share Redis (``redis = "redis://..."``, several ``xchat serve`` nodes or ``--reuse-port``)
keep them in Redis, so the new device and the approving one may reach different nodes.

A slot holds only ciphertext under keys derived from a code the relay never sees (the slot
id is a hash of it). It is open for 10 minutes (``XCHAT_LINK_TTL_SECONDS`` shortens it),
answered at most once, and its answer is handed out at most once; a finished or expired
slot is remembered for an hour more, so a late or reused code gets 410, not 404.

In Redis a slot is the hash ``xchat:link:<slot>`` (``offer``, ``exp`` ms, ``state`` open /
answered / done, ``answer``) with a TTL of the lifetime plus that hour, and pending (open,
unexpired) slots are scored by expiry in the sorted set ``xchat:links`` for the 10,000
cap. Every change is one Lua script, so creating a slot is create-if-absent, answering is
check-open-and-set, and taking the answer is an atomic get-and-clear: two nodes racing on
one slot cannot both answer it or both hand the answer out. The new device's long poll
waits on an in-process event (woken at once when the answer arrives through the same
node) and otherwise re-reads the slot every :data:`POLL_MAX_S` at most.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

from xchat.crypto.devicelist import LINK_TTL_MS
from xchat.errors import ApiError

MAX_SLOTS = 10_000
#: A finished or expired slot is remembered this long, so a late or reused code gets
#: "expired"/"already used" rather than "unknown".
SLOT_MEMORY_MS = 60 * 60 * 1000
#: Longest pause between two reads of a slot in Redis while a new device waits.
POLL_MAX_S = 0.5
KEY_PREFIX = "xchat:link:"
PENDING_KEY = "xchat:links"

UNKNOWN = "unknown link code (mistyped?)"
USED = "link code already used"
EXPIRED = "link code expired (codes are valid for 10 minutes)"


def link_ttl_ms() -> int:
    """``XCHAT_LINK_TTL_SECONDS`` shortens the 10 minutes (tests of expiry, ops drills)."""
    return int(float(os.environ.get("XCHAT_LINK_TTL_SECONDS", "0")) * 1000) or LINK_TTL_MS


class LinkSlots(abc.ABC):
    """The four slot operations of Part VII §3.2; each refusal is an :class:`ApiError`
    (404 unknown, 409 exists, 410 expired or used, 503 too many pending)."""

    def __init__(self) -> None:
        self.ttl_ms = link_ttl_ms()

    @abc.abstractmethod
    async def put(self, sid: str, offer: bytes, t: int) -> int:
        """Open a slot with the new device's offer; returns its expiry (ms)."""

    @abc.abstractmethod
    async def offer(self, sid: str, t: int) -> tuple[bytes, int]:
        """``(offer, expires_ms)`` of an open, unexpired slot."""

    @abc.abstractmethod
    async def answer(self, sid: str, answer: bytes, t: int) -> None:
        """The approving device's answer; the slot is then used."""

    @abc.abstractmethod
    async def take_answer(self, sid: str, t: int) -> tuple[bytes | None, int]:
        """``(answer or None, expires_ms)``; an answer is handed out once, then the slot
        is done."""

    @abc.abstractmethod
    async def wait(self, sid: str, timeout: float) -> None:
        """Return when the slot may have been answered, or after ``timeout`` seconds."""


# --- one relay process ------------------------------------------------------------------------


@dataclass
class _Slot:
    offer: bytes
    expires_ms: int
    answer: bytes | None = None
    state: str = "open"  # open -> answered -> done
    event: asyncio.Event | None = None


class MemoryLinkSlots(LinkSlots):
    """The slots of a relay that runs alone (SQLite, or PostgreSQL without Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: dict[str, _Slot] = {}

    def _sweep(self, t: int) -> None:
        for sid in [s for s, v in self.slots.items() if v.expires_ms + SLOT_MEMORY_MS < t]:
            del self.slots[sid]

    def _get(self, sid: str, t: int, *, open_only: bool) -> _Slot:
        slot = self.slots.get(sid)
        if slot is None or slot.expires_ms + SLOT_MEMORY_MS < t:
            raise ApiError(404, UNKNOWN)
        if slot.state == "done" or (open_only and slot.state != "open"):
            raise ApiError(410, USED)
        if slot.expires_ms < t and slot.state == "open":
            raise ApiError(410, EXPIRED)
        return slot

    async def put(self, sid: str, offer: bytes, t: int) -> int:
        self._sweep(t)
        if sid in self.slots:
            raise ApiError(409, "link slot exists")
        if len(self.slots) >= MAX_SLOTS:
            raise ApiError(503, "too many pending links, try again later")
        self.slots[sid] = _Slot(offer, t + self.ttl_ms, event=asyncio.Event())
        return t + self.ttl_ms

    async def offer(self, sid: str, t: int) -> tuple[bytes, int]:
        slot = self._get(sid, t, open_only=True)
        return slot.offer, slot.expires_ms

    async def answer(self, sid: str, answer: bytes, t: int) -> None:
        slot = self._get(sid, t, open_only=True)
        slot.answer, slot.state = answer, "answered"
        if slot.event is not None:
            slot.event.set()

    async def take_answer(self, sid: str, t: int) -> tuple[bytes | None, int]:
        slot = self._get(sid, t, open_only=False)
        if slot.state != "answered":
            return None, slot.expires_ms
        answer, slot.answer, slot.state = slot.answer, None, "done"
        return answer, slot.expires_ms

    async def wait(self, sid: str, timeout: float) -> None:
        slot = self.slots.get(sid)
        if slot is not None and slot.event is not None and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.event.wait(), timeout)


# --- relay nodes sharing Redis ----------------------------------------------------------------

# KEYS: slot, pending set. ARGV: offer, expires_ms, now_ms, key ttl ms, max pending.
_PUT = """
if redis.call('exists', KEYS[1]) == 1 then return 'exists' end
redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[3])
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[5]) then return 'full' end
redis.call('hset', KEYS[1], 'offer', ARGV[1], 'exp', ARGV[2], 'state', 'open')
redis.call('pexpire', KEYS[1], ARGV[4])
redis.call('zadd', KEYS[2], ARGV[2], KEYS[1])
return 'ok'
"""

# KEYS: slot, pending set. ARGV: answer, now_ms.
_ANSWER = """
local v = redis.call('hmget', KEYS[1], 'state', 'exp')
if not v[1] then return 'unknown' end
if v[1] ~= 'open' then return 'used' end
if tonumber(v[2]) < tonumber(ARGV[2]) then return 'expired' end
redis.call('hset', KEYS[1], 'state', 'answered', 'answer', ARGV[1])
redis.call('zrem', KEYS[2], KEYS[1])
return 'ok'
"""

# KEYS: slot. ARGV: now_ms. -> {status, exp[, answer]}
_TAKE = """
local v = redis.call('hmget', KEYS[1], 'state', 'exp', 'answer')
if not v[1] then return {'unknown'} end
if v[1] == 'done' then return {'used'} end
if v[1] == 'open' then
  if tonumber(v[2]) < tonumber(ARGV[1]) then return {'expired'} end
  return {'open', v[2]}
end
redis.call('hset', KEYS[1], 'state', 'done')
redis.call('hdel', KEYS[1], 'answer')
return {'answer', v[2], v[3]}
"""

_REFUSALS = {
    b"unknown": (404, UNKNOWN),
    b"used": (410, USED),
    b"expired": (410, EXPIRED),
    b"exists": (409, "link slot exists"),
    b"full": (503, "too many pending links, try again later"),
}


def _refuse(status: bytes) -> ApiError:
    code, message = _REFUSALS[status]
    return ApiError(code, message)


class RedisLinkSlots(LinkSlots):
    """The slots of relay nodes that share Redis (the fan-out's client, ``fanout.redis``).

    Redis being down is a 503 (the client retries or the user tries again), never a
    traceback; a slot lost with a Redis restart makes its code "unknown"."""

    def __init__(self, redis: Any) -> None:
        super().__init__()
        self.redis = redis
        self._put = redis.register_script(_PUT)
        self._answer = redis.register_script(_ANSWER)
        self._take = redis.register_script(_TAKE)
        #: long polls waiting on this node, woken at once by an answer through this node
        self._waiting: dict[str, asyncio.Event] = {}

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError):
            raise ApiError(503, "link codes are unavailable right now, try again", 1.0) from None

    async def put(self, sid: str, offer: bytes, t: int) -> int:
        expires = t + self.ttl_ms
        status = await self._run(
            self._put,
            [KEY_PREFIX + sid, PENDING_KEY],
            [offer, expires, t, self.ttl_ms + SLOT_MEMORY_MS, MAX_SLOTS],
        )
        if status != b"ok":
            raise _refuse(status)
        return expires

    async def offer(self, sid: str, t: int) -> tuple[bytes, int]:
        from redis.exceptions import RedisError

        try:
            state, exp, offer = await self.redis.hmget(KEY_PREFIX + sid, "state", "exp", "offer")
        except (RedisError, OSError):
            raise ApiError(503, "link codes are unavailable right now, try again", 1.0) from None
        if state is None:
            raise _refuse(b"unknown")
        if state != b"open":
            raise _refuse(b"used")
        if int(exp) < t:
            raise _refuse(b"expired")
        return bytes(offer), int(exp)

    async def answer(self, sid: str, answer: bytes, t: int) -> None:
        status = await self._run(self._answer, [KEY_PREFIX + sid, PENDING_KEY], [answer, t])
        if status != b"ok":
            raise _refuse(status)
        event = self._waiting.get(sid)
        if event is not None:
            event.set()

    async def take_answer(self, sid: str, t: int) -> tuple[bytes | None, int]:
        got = await self._run(self._take, [KEY_PREFIX + sid], [t])
        if got[0] == b"open":
            return None, int(got[1])
        if got[0] == b"answer":
            return bytes(got[2]), int(got[1])
        raise _refuse(got[0])

    async def wait(self, sid: str, timeout: float) -> None:
        from redis.exceptions import RedisError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = self._waiting.setdefault(sid, asyncio.Event())
        pause = 0.05
        try:
            while (left := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(pause, left))
                    return
                try:
                    state = await self.redis.hget(KEY_PREFIX + sid, "state")
                except (RedisError, OSError):
                    state = b"open"  # keep waiting: the next read may work
                if state != b"open":
                    return
                pause = min(pause * 2, POLL_MAX_S)
        finally:
            if self._waiting.get(sid) is event:
                del self._waiting[sid]


def make_link_slots(fanout: object) -> LinkSlots:
    """Redis slots when the relay's fan-out runs on Redis (nodes share it), else memory."""
    redis = getattr(fanout, "redis", None)
    return RedisLinkSlots(redis) if redis is not None else MemoryLinkSlots()
