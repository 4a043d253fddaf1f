"""What the call manager tells apps (PROTOCOL.md Part IX): events and the end result.

Kept apart from :mod:`xchat.client.calls` so apps and tests can import the shapes without the
manager; ``xchat.client.calls`` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xchat.client.call_state import IceCandidate


@dataclass(frozen=True)
class CallIncoming:
    """A contact is calling us; this device rings (answer or decline it)."""

    call_id: str
    peer: str
    handle: str | None
    video: bool


@dataclass(frozen=True)
class CallStateChanged:
    """A live call moved to ``state`` (ringing, connecting, connected)."""

    call_id: str
    state: str


@dataclass(frozen=True)
class CallEnded:
    call_id: str
    result: CallResult


@dataclass(frozen=True)
class CallRemoteDescription:
    """``external_media`` only: the peer's answer SDP for the page's RTCPeerConnection."""

    call_id: str
    type: str  # "answer"
    sdp: str


@dataclass(frozen=True)
class CallRemoteCandidates:
    """``external_media`` only: ICE candidates the peer trickled (empty: end of them)."""

    call_id: str
    candidates: tuple[IceCandidate, ...]


CallEvent = (
    CallIncoming | CallStateChanged | CallEnded | CallRemoteDescription | CallRemoteCandidates
)


@dataclass(frozen=True)
class CallResult:
    """The end of a call as apps and ``xchat call --json`` report it."""

    call_id: str
    peer: str
    direction: str  # "out" | "in"
    state: str  # ended | declined | busy | missed | failed | answered_elsewhere
    reason: str | None
    video: bool
    setup_ms: float | None  # answer -> first audio frame from the peer
    duration_s: float
    audio_frames_sent: int = 0
    audio_frames_received: int = 0
    video_frames_received: int = 0
    local_candidate_types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "peer": self.peer,
            "direction": self.direction,
            "state": self.state,
            "reason": self.reason,
            "video": self.video,
            "setup_ms": None if self.setup_ms is None else round(self.setup_ms, 1),
            "duration_s": round(self.duration_s, 3),
            "audio_frames_sent": self.audio_frames_sent,
            "audio_frames_received": self.audio_frames_received,
            "video_frames_received": self.video_frames_received,
            "local_candidate_types": sorted(set(self.local_candidate_types)),
        }
