"""The sans-I/O call state machine and signal codec (PROTOCOL.md Part IX §2-§3)."""

from __future__ import annotations

import pytest

from xchat.client import content as ct
from xchat.client.call_state import (
    CALLEE_RING_GRACE_MS,
    CONNECT_TIMEOUT_MS,
    MAX_CANDIDATES,
    RING_TIMEOUT_MS,
    TRANSITIONS,
    CallMachine,
    IceCandidate,
    Outcome,
    Role,
    Signal,
    State,
    parse_signal,
)
from xchat.errors import CallStateError, DecodeError

CID = "ab" * 16
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"


def caller(t: int = 0, **kw: int) -> CallMachine:
    return CallMachine(CID, Role.CALLER, "xc1peer", now_ms=t, **kw)


def callee(t: int = 0) -> CallMachine:
    return CallMachine(CID, Role.CALLEE, "xc1peer", now_ms=t)


def test_answered_call_ends_normally_on_both_sides() -> None:
    a, b = caller(), callee()
    assert a.handle("remote_ringing", 10).new is State.RINGING
    tr = b.handle("accept", 100)
    assert (tr.new, tr.send) == (State.CONNECTING, "call_answer")
    assert a.handle("remote_answer", 120).new is State.CONNECTING
    a.handle("media_connected", 200)
    b.handle("media_connected", 210)
    tr = a.handle("hangup", 5200)
    assert (tr.outcome, tr.send, tr.reason) == (Outcome.ENDED, "call_hangup", "normal")
    assert b.handle("remote_hangup", 5300).outcome is Outcome.ENDED
    assert a.duration_s() == 5.0 and a.ended


@pytest.mark.parametrize(
    ("remote", "outcome"),
    [("remote_busy", Outcome.BUSY), ("remote_decline", Outcome.DECLINED)],
)
def test_caller_outcomes_before_answer(remote: str, outcome: Outcome) -> None:
    a = caller()
    a.handle("remote_ringing", 1)
    tr = a.handle(remote, 2)
    assert tr.ended and tr.outcome is outcome and tr.send is None
    assert a.duration_s() == 0.0


def test_ring_timeout_is_missed_and_tells_the_callee() -> None:
    a = caller(1000, ring_timeout_ms=5000)
    assert a.tick(5999) is None
    tr = a.tick(6000)
    assert tr is not None and tr.outcome is Outcome.MISSED
    assert (tr.send, tr.reason) == ("call_hangup", "timeout")
    # the callee's own limit is longer: the caller's hang-up normally ends its ringing
    b = callee(0)
    assert b.deadline_ms() == RING_TIMEOUT_MS + CALLEE_RING_GRACE_MS
    assert b.handle("remote_hangup", 10).outcome is Outcome.MISSED


def test_connect_timeout_fails_the_call() -> None:
    a = caller()
    a.handle("remote_answer", 100)
    assert a.deadline_ms() == 100 + CONNECT_TIMEOUT_MS
    tr = a.tick(100 + CONNECT_TIMEOUT_MS)
    assert tr is not None and tr.outcome is Outcome.FAILED and tr.reason == "failed"
    assert a.reason == "media did not connect in time"


def test_callee_decline_busy_and_answered_elsewhere() -> None:
    b = callee()
    tr = b.handle("decline", 1)
    assert (tr.outcome, tr.send) == (Outcome.DECLINED, "call_decline")
    b = callee()
    assert b.handle("busy", 1).send == "call_busy"
    b = callee()
    assert b.handle("answered_elsewhere", 1).outcome is Outcome.ANSWERED_ELSEWHERE


def test_illegal_transitions_are_typed_errors() -> None:
    a = caller()
    with pytest.raises(CallStateError):
        a.handle("accept", 1)  # a caller cannot answer its own call
    b = callee()
    with pytest.raises(CallStateError):
        b.handle("remote_answer", 1)
    b.handle("decline", 2)
    for event in ("accept", "hangup", "remote_hangup", "media_connected"):
        with pytest.raises(CallStateError):
            b.handle(event, 3)  # ENDED is terminal
    assert not any(state is State.ENDED for (_, state, _) in TRANSITIONS)


def test_bad_call_id_refused() -> None:
    with pytest.raises(DecodeError):
        CallMachine("nothex", Role.CALLER, "x", now_ms=0)


def test_signals_round_trip_through_content() -> None:
    sigs = [
        Signal("call_offer", CID, sdp=SDP, video=True),
        Signal("call_answer", CID, sdp=SDP),
        Signal(
            "call_ice",
            CID,
            candidates=(IceCandidate("candidate:1 1 udp 1 1.2.3.4 5 typ host", "0", 0),),
        ),
        Signal("call_ringing", CID),
        Signal("call_busy", CID),
        Signal("call_decline", CID),
        Signal("call_hangup", CID, reason="answered_elsewhere", answered_by=2),
    ]
    assert {s.type for s in sigs} == set(ct.CALL_TYPES)
    for s in sigs:
        c = ct.Content(id=ct.new_message_id(), type=s.type, ts=1, call=s.to_json())
        back = ct.Content.decode(c.encode())
        assert back.type in ct.TYPES
        assert parse_signal(back.type, back.call) == s


@pytest.mark.parametrize(
    ("ctype", "obj"),
    [
        ("call_offer", {"id": CID}),  # no SDP
        ("call_offer", {"id": CID, "sdp": "not sdp"}),
        ("call_offer", {"id": CID, "sdp": "v=0" + "x" * 40_000}),
        ("call_answer", {"id": "AB" * 16, "sdp": SDP}),  # upper-case id
        ("call_offer", {"id": CID, "sdp": SDP, "video": "yes"}),
        ("call_ice", {"id": CID, "candidates": "x"}),
        ("call_ice", {"id": CID, "candidates": [{"candidate": "c"}] * (MAX_CANDIDATES + 1)}),
        ("call_ice", {"id": CID, "candidates": [{"candidate": 5}]}),
        ("call_hangup", {"id": CID, "answered_by": True}),
        ("call_ringing", None),
        ("text", {"id": CID}),
    ],
)
def test_malformed_signals_are_decode_errors(ctype: str, obj: object) -> None:
    with pytest.raises(DecodeError):
        parse_signal(ctype, obj)


def test_unknown_hangup_reason_is_a_plain_hangup() -> None:
    assert parse_signal("call_hangup", {"id": CID, "reason": "new"}).reason == "normal"
