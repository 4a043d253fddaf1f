"""The sans-I/O state machine of one 1:1 call and its signalling messages (PROTOCOL.md Part IX).

Nothing here touches a socket, a clock or a media stack: the caller passes ``now_ms`` in
and gets a :class:`Transition` back that says which signal to send and whether the call
ended (and how). :mod:`xchat.client.calls` is the thin asyncio layer around it, exactly as
``websockets.protocol`` is the core of ``websockets.asyncio``.

Every legal transition is one row of :data:`TRANSITIONS` (written as data, as in h11's
``_state.py``); anything else is a :class:`~xchat.errors.CallStateError`, which the I/O
layer logs and drops for remote signals (a late or duplicated signal is normal on a
store-and-forward relay) and raises for local actions (an app bug).

Signals (§2) are E2EE content types: ``call_offer``, ``call_answer``, ``call_ice``,
``call_ringing``, ``call_busy``, ``call_decline``, ``call_hangup``, each with a ``"call"``
object that carries the 128-bit call id. They ride the pairwise Double Ratchet sessions,
so the SDP and therefore the DTLS fingerprints inside it are authenticated as coming from
the peer's identity key (§4): a relay that swaps them cannot decrypt or re-encrypt them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from xchat.client.content import CALL_TYPES
from xchat.errors import CallStateError, DecodeError

# --- limits and timeouts (PROTOCOL Part IX §3.3) ------------------------------------------

#: How long an outgoing call rings before it counts as missed (Signal and WhatsApp: ~45-60 s).
RING_TIMEOUT_MS = 45_000
#: The callee's own ring limit: a little longer than the caller's, so that the caller's
#: ``timeout`` hang-up normally ends the ringing; this only covers a lost hang-up.
CALLEE_RING_GRACE_MS = 15_000
#: From the answer to connected media. ICE on loopback takes milliseconds and through TURN
#: well under a second; 20 s leaves room for consent checks over a poor network.
CONNECT_TIMEOUT_MS = 20_000
#: An offer older than this when it arrives (the callee was offline) is recorded as missed
#: without ringing: the caller has given up long ago.
MAX_OFFER_AGE_MS = RING_TIMEOUT_MS + CALLEE_RING_GRACE_MS
#: SDP of an audio+video offer from aiortc or Chromium is 2-7 KB; 32 KiB bounds a peer.
MAX_SDP_CHARS = 32 * 1024
MAX_CANDIDATES = 32  # per call_ice message
MAX_CANDIDATE_CHARS = 512

HANGUP_REASONS = ("normal", "timeout", "failed", "answered_elsewhere")

_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class Role(StrEnum):
    CALLER = "out"
    CALLEE = "in"


class State(StrEnum):
    DIALING = "dialing"  # caller: offer sent, no ringing yet
    RINGING = "ringing"  # caller: the callee's device rings
    INCOMING = "incoming"  # callee: we ring
    CONNECTING = "connecting"  # answered; ICE + DTLS running
    CONNECTED = "connected"  # DTLS-SRTP up, media flowing
    ENDED = "ended"  # terminal


class Outcome(StrEnum):
    """How a call ended: the ``state`` of ``xchat call --json`` and of the call history."""

    ENDED = "ended"  # answered, then hung up by either side
    DECLINED = "declined"
    BUSY = "busy"
    MISSED = "missed"  # never answered: ring timeout, or the caller gave up
    FAILED = "failed"  # answered but media never connected, or lost
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # another device of ours took it


# (role, state, event) -> (next state, outcome when it ends the call, signal to send)
# Events: local "accept", "decline", "busy", "hangup", "ring_timeout", "connect_timeout",
# "media_connected", "media_failed"; remote "remote_ringing", "remote_answer",
# "remote_busy", "remote_decline", "remote_hangup", "answered_elsewhere".
Row = tuple[State, Outcome | None, str | None]
_C, _E = Role.CALLER, Role.CALLEE
TRANSITIONS: dict[tuple[Role, State, str], Row] = {
    # caller, before the answer
    (_C, State.DIALING, "remote_ringing"): (State.RINGING, None, None),
    (_C, State.RINGING, "remote_ringing"): (State.RINGING, None, None),  # another device
    (_C, State.DIALING, "remote_answer"): (State.CONNECTING, None, None),
    (_C, State.RINGING, "remote_answer"): (State.CONNECTING, None, None),
    (_C, State.DIALING, "remote_busy"): (State.ENDED, Outcome.BUSY, None),
    (_C, State.RINGING, "remote_busy"): (State.ENDED, Outcome.BUSY, None),
    (_C, State.DIALING, "remote_decline"): (State.ENDED, Outcome.DECLINED, None),
    (_C, State.RINGING, "remote_decline"): (State.ENDED, Outcome.DECLINED, None),
    (_C, State.DIALING, "hangup"): (State.ENDED, Outcome.MISSED, "call_hangup"),
    (_C, State.RINGING, "hangup"): (State.ENDED, Outcome.MISSED, "call_hangup"),
    (_C, State.DIALING, "ring_timeout"): (State.ENDED, Outcome.MISSED, "call_hangup"),
    (_C, State.RINGING, "ring_timeout"): (State.ENDED, Outcome.MISSED, "call_hangup"),
    (_C, State.DIALING, "media_failed"): (State.ENDED, Outcome.FAILED, "call_hangup"),
    (_C, State.RINGING, "media_failed"): (State.ENDED, Outcome.FAILED, "call_hangup"),
    # callee, while ringing
    (_E, State.INCOMING, "accept"): (State.CONNECTING, None, "call_answer"),
    (_E, State.INCOMING, "decline"): (State.ENDED, Outcome.DECLINED, "call_decline"),
    (_E, State.INCOMING, "busy"): (State.ENDED, Outcome.BUSY, "call_busy"),  # in another call
    (_E, State.INCOMING, "hangup"): (State.ENDED, Outcome.DECLINED, "call_decline"),
    (_E, State.INCOMING, "remote_hangup"): (State.ENDED, Outcome.MISSED, None),
    (_E, State.INCOMING, "ring_timeout"): (State.ENDED, Outcome.MISSED, None),
    (_E, State.INCOMING, "answered_elsewhere"): (State.ENDED, Outcome.ANSWERED_ELSEWHERE, None),
    # two of our devices answered at once: the caller kept the other one
    (_E, State.CONNECTING, "answered_elsewhere"): (State.ENDED, Outcome.ANSWERED_ELSEWHERE, None),
}
for _role in (Role.CALLER, Role.CALLEE):  # both sides once answered
    TRANSITIONS.update(
        {
            (_role, State.CONNECTING, "media_connected"): (State.CONNECTED, None, None),
            (_role, State.CONNECTING, "media_failed"): (State.ENDED, Outcome.FAILED, "call_hangup"),
            (_role, State.CONNECTING, "connect_timeout"): (
                State.ENDED,
                Outcome.FAILED,
                "call_hangup",
            ),
            (_role, State.CONNECTING, "hangup"): (State.ENDED, Outcome.ENDED, "call_hangup"),
            (_role, State.CONNECTING, "remote_hangup"): (State.ENDED, Outcome.ENDED, None),
            (_role, State.CONNECTED, "media_failed"): (State.ENDED, Outcome.FAILED, "call_hangup"),
            (_role, State.CONNECTED, "hangup"): (State.ENDED, Outcome.ENDED, "call_hangup"),
            (_role, State.CONNECTED, "remote_hangup"): (State.ENDED, Outcome.ENDED, None),
        }
    )
#: Hang-up reason sent with the signal, by the event that caused it.
HANGUP_REASON_FOR = {
    "ring_timeout": "timeout",
    "media_failed": "failed",
    "connect_timeout": "failed",
}


@dataclass(frozen=True)
class Transition:
    """What one event did: the I/O layer sends ``send`` (if any) and, when ``outcome`` is
    set, closes the media and records the call."""

    event: str
    old: State
    new: State
    outcome: Outcome | None = None
    send: str | None = None
    reason: str | None = None  # hang-up reason to send, or why the call failed

    @property
    def ended(self) -> bool:
        return self.new is State.ENDED


class CallMachine:
    """One call, one side. ``handle(event, now_ms)`` moves it; ``tick(now_ms)`` turns an
    expired ring or connect deadline into its timeout event."""

    def __init__(
        self,
        call_id: str,
        role: Role,
        peer: str,
        *,
        now_ms: int,
        video: bool = False,
        ring_timeout_ms: int = RING_TIMEOUT_MS,
        connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
    ) -> None:
        if not _ID_RE.match(call_id):
            raise DecodeError("call id must be 32 lower-case hex digits")
        self.call_id = call_id
        self.role = role
        self.peer = peer
        self.video = video
        self.state = State.DIALING if role is Role.CALLER else State.INCOMING
        self.outcome: Outcome | None = None
        self.reason: str | None = None
        self.started_ms = now_ms
        self.answered_ms: int | None = None
        self.connected_ms: int | None = None
        self.ended_ms: int | None = None
        self.connect_timeout_ms = connect_timeout_ms
        ring = ring_timeout_ms + (CALLEE_RING_GRACE_MS if role is Role.CALLEE else 0)
        self._deadline_ms: int | None = now_ms + ring

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    def can(self, event: str) -> bool:
        return (self.role, self.state, event) in TRANSITIONS

    def handle(self, event: str, now_ms: int, *, reason: str | None = None) -> Transition:
        """Apply ``event``; CallStateError if it is not legal in this state."""
        row = TRANSITIONS.get((self.role, self.state, event))
        if row is None:
            raise CallStateError(
                f"call {self.call_id[:8]}: {event!r} is not allowed in state {self.state.value!r}"
            )
        new, outcome, send = row
        old = self.state
        self.state = new
        if new is State.CONNECTING:
            self.answered_ms = now_ms
            self._deadline_ms = now_ms + self.connect_timeout_ms
        elif new is State.CONNECTED:
            self.connected_ms = now_ms
            self._deadline_ms = None
        if outcome is not None:
            self.outcome = outcome
            self.ended_ms = now_ms
            self._deadline_ms = None
            self.reason = reason or HANGUP_REASON_FOR.get(event)
        if send == "call_hangup":
            reason = HANGUP_REASON_FOR.get(event, reason or "normal")
        return Transition(event, old, new, outcome, send, reason)

    def deadline_ms(self) -> int | None:
        """When :meth:`tick` will next produce an event (None: no timer running)."""
        return self._deadline_ms

    def tick(self, now_ms: int) -> Transition | None:
        if self._deadline_ms is None or now_ms < self._deadline_ms:
            return None
        if self.state is State.CONNECTING:
            return self.handle("connect_timeout", now_ms, reason="media did not connect in time")
        return self.handle("ring_timeout", now_ms, reason="no answer")

    def duration_s(self) -> float:
        """Seconds from connected media to the end (0 for an unanswered call)."""
        if self.connected_ms is None or self.ended_ms is None:
            return 0.0
        return max(0, self.ended_ms - self.connected_ms) / 1000


# --- signals on the wire (PROTOCOL Part IX §2) --------------------------------------------


@dataclass(frozen=True)
class IceCandidate:
    candidate: str  # "candidate:..." as in SDP (RFC 8839), without the "a=" prefix
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "sdpMid": self.sdp_mid,
            "sdpMLineIndex": self.sdp_mline_index,
        }


@dataclass(frozen=True)
class Signal:
    """One decoded call signal: ``type`` is one of :data:`CALL_TYPES`."""

    type: str
    call_id: str
    sdp: str | None = None  # offer, answer
    video: bool = False  # offer
    candidates: tuple[IceCandidate, ...] = ()  # ice ([] with end=True: end of candidates)
    reason: str | None = None  # hangup
    answered_by: int | None = None  # hangup with reason answered_elsewhere: the device id

    def to_json(self) -> dict[str, Any]:
        """The ``"call"`` object of the content (§2)."""
        obj: dict[str, Any] = {"id": self.call_id}
        if self.type in ("call_offer", "call_answer"):
            obj["sdp"] = self.sdp
        if self.type == "call_offer":
            obj["video"] = self.video
        if self.type == "call_ice":
            obj["candidates"] = [c.to_json() for c in self.candidates]
        if self.type == "call_hangup":
            obj["reason"] = self.reason or "normal"
            if self.answered_by is not None:
                obj["answered_by"] = self.answered_by
        return obj


def parse_signal(ctype: str, obj: object) -> Signal:
    """Validate the ``"call"`` object of a content of type ``ctype`` (DecodeError if bad)."""
    if ctype not in CALL_TYPES:
        raise DecodeError(f"not a call signal type: {ctype!r}")
    if not isinstance(obj, dict):
        raise DecodeError("call signal needs a 'call' object")
    call_id = obj.get("id")
    if not isinstance(call_id, str) or not _ID_RE.match(call_id):
        raise DecodeError("call id must be 32 lower-case hex digits")
    sdp: str | None = None
    if ctype in ("call_offer", "call_answer"):
        sdp = obj.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP_CHARS:
            raise DecodeError("call sdp must be an SDP string of at most 32 KiB")
    video = obj.get("video", False)
    if not isinstance(video, bool):
        raise DecodeError("call video must be a boolean")
    candidates: tuple[IceCandidate, ...] = ()
    if ctype == "call_ice":
        candidates = _parse_candidates(obj.get("candidates"))
    reason: str | None = None
    answered_by: int | None = None
    if ctype == "call_hangup":
        reason = obj.get("reason", "normal")
        if reason not in HANGUP_REASONS:
            reason = "normal"  # forward compatibility: an unknown reason is a hang-up
        ab = obj.get("answered_by")
        if ab is not None and (not isinstance(ab, int) or isinstance(ab, bool) or ab < 1):
            raise DecodeError("call answered_by must be a device id")
        answered_by = ab
    return Signal(ctype, call_id, sdp, video, candidates, reason, answered_by)


def _parse_candidates(raw: object) -> tuple[IceCandidate, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
        raise DecodeError(f"call candidates must be a list of at most {MAX_CANDIDATES}")
    out = []
    for c in raw:
        if not isinstance(c, dict):
            raise DecodeError("call candidate must be an object")
        cand, mid, idx = c.get("candidate"), c.get("sdpMid"), c.get("sdpMLineIndex")
        if not isinstance(cand, str) or len(cand) > MAX_CANDIDATE_CHARS:
            raise DecodeError("call candidate string invalid")
        if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
            raise DecodeError("call candidate sdpMid invalid")
        if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool) or idx < 0):
            raise DecodeError("call candidate sdpMLineIndex invalid")
        out.append(IceCandidate(cand, mid, idx))
    return tuple(out)
