"""Call media for the SDK on aiortc (PROTOCOL.md Part IX §4-§5): DTLS-SRTP peer connections,
audio sources (a WAV file, a test tone, silence), a 48 kHz WAV recorder and frame counters.

aiortc is an optional dependency (the ``calls`` extra): importing this module without it
raises :class:`~xchat.errors.CallError` with the install hint, never an ImportError. The web
app does not use this module: there the browser's own WebRTC holds the media keys.

aiortc gathers every candidate before ``setLocalDescription`` returns, so SDK offers and
answers carry their candidates in the SDP (no trickle); candidates a browser trickles
arrive as ``call_ice`` and go to :meth:`MediaSession.add_candidates`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import re
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xchat.client.call_state import IceCandidate
from xchat.errors import CallError, MediaError

try:
    import aioice.ice as _aioice_ice
    import av
    import numpy as np
    from aiortc import (
        MediaStreamTrack,
        RTCConfiguration,
        RTCIceServer,
        RTCPeerConnection,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtcconfiguration import RTCIceTransportPolicy
    from aiortc.rtcdtlstransport import certificate_digest
    from aiortc.sdp import candidate_from_sdp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise CallError(
        f"calls need aiortc (pip install 'xchat[calls]'): {exc.name} is missing"
    ) from None

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # Opus's native rate; recordings are written at this rate
FRAME_SAMPLES = 960  # 20 ms, the Opus frame aiortc sends
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3  # of full scale
VIDEO_SIZE = (320, 240)  # the test pattern: small, so a core carries several calls
VIDEO_FPS = 15
MAX_WAV_SECONDS = 3600  # a source file is read into memory; an hour of mono is 345 MB
_FINGERPRINT_RE = re.compile(r"^a=fingerprint:(\S+) (\S+)\s*$", re.MULTILINE)


# --- candidates on loopback ------------------------------------------------------------------

_loopback = False


def allow_loopback_candidates(enabled: bool = True) -> None:
    """Also offer 127.0.0.1 as a host candidate (aioice leaves it out). For two parties on
    one machine, e.g. tests and ``make run`` with a loopback relay; process-wide, because
    aioice reads host addresses from a module function."""
    global _loopback
    _loopback = enabled


_original_host_addresses = _aioice_ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses: list[str] = _original_host_addresses(use_ipv4, use_ipv6)
    if _loopback and use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


_aioice_ice.get_host_addresses = _host_addresses


# --- audio sources ---------------------------------------------------------------------------


class AudioSource:
    """20 ms frames of 48 kHz mono s16 samples. Subclasses fill :meth:`samples`."""

    def samples(self, index: int) -> np.ndarray[Any, Any]:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)


class Silence(AudioSource):
    pass


class Tone(AudioSource):
    """A sine test tone (440 Hz by default)."""

    def __init__(self, hz: float = TONE_HZ, amplitude: float = TONE_AMPLITUDE) -> None:
        self.hz = hz
        self.amplitude = amplitude

    def samples(self, index: int) -> np.ndarray[Any, Any]:
        t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / SAMPLE_RATE
        wave_ = np.sin(2 * math.pi * self.hz * t) * (self.amplitude * 32767)
        return wave_.astype(np.int16)


class WavFile(AudioSource):
    """A PCM WAV file (any rate, mono or stereo, 8/16/32-bit), converted to 48 kHz mono
    once; played once, then silence (the call goes on until it is hung up)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.pcm = read_wav_48k_mono(self.path)

    def samples(self, index: int) -> np.ndarray[Any, Any]:
        chunk = self.pcm[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), np.int16)])
        return chunk


def read_wav_48k_mono(path: Path) -> np.ndarray[Any, Any]:
    """Decode a PCM WAV file to 48 kHz mono int16 (MediaError for anything else)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                (w.getnframes()),
            )
            if n > MAX_WAV_SECONDS * rate:
                raise MediaError(f"{path}: longer than {MAX_WAV_SECONDS} s")
            raw = w.readframes(n)
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"cannot read {path} as a PCM WAV file: {exc}") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None or channels < 1:
        raise MediaError(f"{path}: unsupported WAV sample width {width * 8} bits")
    data = np.frombuffer(raw, dtype=dtype).astype(np.float64)
    if width == 1:
        data = (data - 128) * 256
    elif width == 4:
        data = data / 65536
    data = data[: len(data) // channels * channels].reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE and len(data):
        # Linear interpolation: good enough for speech and test tones; no SciPy needed.
        n_out = int(len(data) * SAMPLE_RATE / rate)
        data = np.interp(np.arange(n_out) * rate / SAMPLE_RATE, np.arange(len(data)), data)
    out: np.ndarray[Any, Any] = np.clip(data, -32768, 32767).astype(np.int16)
    return out


class WavRecorder:
    """Writes received audio as 48 kHz mono 16-bit WAV (the answerer's ``--record``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise MediaError(f"cannot write {path}: {exc.strerror}") from None
        self._w = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close()
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(SAMPLE_RATE)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.samples = 0

    def write(self, frame: av.AudioFrame) -> None:
        for out in self._resampler.resample(frame):
            pcm = out.to_ndarray().reshape(-1).astype(np.int16)
            self._w.writeframes(pcm.tobytes())
            self.samples += len(pcm)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._w.close()
        self._file.close()


# --- tracks we send --------------------------------------------------------------------------


class _AudioTrack(MediaStreamTrack):
    """Paces :class:`AudioSource` frames in real time and counts them; silence when muted."""

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self.source = source
        self.muted = False
        self.sent = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self.sent * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = np.zeros(FRAME_SAMPLES, np.int16) if self.muted else self.source.samples(self.sent)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.sent * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.sent += 1
        return frame


class _PatternTrack(MediaStreamTrack):
    """A moving test pattern (camera stand-in for ``xchat call --video``); black when the
    camera is off."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.sent = 0
        self._t0: float | None = None
        w, h = VIDEO_SIZE
        self._base = np.zeros((h, w, 3), np.uint8)
        self._base[:, :, 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]

    async def recv(self) -> av.VideoFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self.sent / VIDEO_FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = self._base.copy()
        if self.enabled:
            x = (self.sent * 4) % VIDEO_SIZE[0]
            img[:, x : x + 8, :] = 255
        else:
            img[:] = 0
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.sent * (90_000 // VIDEO_FPS)
        frame.time_base = fractions.Fraction(1, 90_000)
        self.sent += 1
        return frame


# --- one peer connection ---------------------------------------------------------------------


@dataclass(frozen=True)
class IceServer:
    """A STUN/TURN server with credentials (TURN REST API, PROTOCOL Part IX §6)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass
class MediaStats:
    audio_frames_sent: int = 0
    audio_frames_received: int = 0
    video_frames_sent: int = 0
    video_frames_received: int = 0
    first_audio_at: float | None = None  # time.monotonic() of the first received frame


class MediaSession:
    """One DTLS-SRTP peer connection. Callbacks: ``on_connected()`` once DTLS is up,
    ``on_failed(reason)`` if ICE or DTLS fails, ``on_first_audio()`` at the first decoded
    audio frame from the peer."""

    def __init__(
        self,
        *,
        audio: AudioSource | None = None,
        video: bool = False,
        record: str | Path | None = None,
        ice_servers: tuple[IceServer, ...] = (),
        relay_only: bool = False,
        on_connected: Callable[[], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_first_audio: Callable[[], None] | None = None,
    ) -> None:
        if relay_only and not any(u.startswith("turn") for s in ice_servers for u in s.urls):
            raise CallError("relay-only calls need a TURN server, and the relay offers none")
        self.recorder = WavRecorder(record) if record is not None else None
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in ice_servers
            ],
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
            ),
        )
        self.pc = RTCPeerConnection(config)
        self.audio = _AudioTrack(audio or Silence())
        self.pc.addTrack(self.audio)
        self.video: _PatternTrack | None = None
        if video:
            self.video = _PatternTrack()
            self.pc.addTrack(self.video)
        self.stats = MediaStats()
        self._on_connected = on_connected
        self._on_failed = on_failed
        self._on_first_audio = on_first_audio
        self._tasks: set[asyncio.Task[None]] = set()
        self._remote_sdp = ""
        self._closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # --- negotiation ---------------------------------------------------------------------

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, offer_sdp: str) -> str:
        await self._set_remote(offer_sdp, "offer")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        await self._set_remote(answer_sdp, "answer")

    async def _set_remote(self, sdp: str, kind: str) -> None:
        self._remote_sdp = sdp
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except (ValueError, KeyError, IndexError) as exc:
            raise MediaError(f"the peer's {kind} SDP is unusable: {exc}") from None

    async def add_candidates(self, candidates: tuple[IceCandidate, ...]) -> None:
        """Trickled remote candidates (an empty tuple: end of candidates)."""
        if not candidates:
            await self.pc.addIceCandidate(None)
            return
        for c in candidates:
            text = c.candidate.removeprefix("a=").removeprefix("candidate:")
            if not text:
                continue
            try:
                cand = candidate_from_sdp(text)
            except (ValueError, IndexError):
                log.info("ignoring a malformed ICE candidate")
                continue
            cand.sdpMid = c.sdp_mid
            cand.sdpMLineIndex = c.sdp_mline_index if c.sdp_mid is None else None
            if cand.sdpMid is None and cand.sdpMLineIndex is None:
                cand.sdpMLineIndex = 0
            with contextlib.suppress(ValueError):
                await self.pc.addIceCandidate(cand)

    def local_candidate_types(self) -> list[str]:
        """The ``typ`` of every candidate in our SDP (relay-only calls have only "relay")."""
        sdp = self.pc.localDescription.sdp if self.pc.localDescription else ""
        return re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.MULTILINE)

    # --- media in --------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._consume(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    self.stats.audio_frames_received += 1
                    if self.stats.first_audio_at is None:
                        self.stats.first_audio_at = time.monotonic()
                        if self._on_first_audio is not None:
                            self._on_first_audio()
                    if self.recorder is not None and isinstance(frame, av.AudioFrame):
                        self.recorder.write(frame)
                else:
                    self.stats.video_frames_received += 1

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._on_connected is not None:
            self._on_connected()
        elif state == "failed" and self._on_failed is not None and not self._closed:
            self._on_failed(self.failure_reason())

    def failure_reason(self) -> str:
        """Why the connection failed, telling a forged fingerprint (DTLS reached the peer,
        whose certificate is not the one the E2EE signalling named) from no route."""
        dtls = None
        for t in self.pc.getTransceivers():
            dtls = t.sender.transport or dtls
        if dtls is None:
            return "media connection failed"
        ice_state = dtls.transport.state
        if ice_state not in ("completed", "connected"):
            return "no network path to the peer (ICE failed)"
        ssl = getattr(dtls, "_ssl", None)
        cert = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
        if cert is not None:
            named = _FINGERPRINT_RE.findall(self._remote_sdp)
            for algorithm, value in named:
                with contextlib.suppress(KeyError):
                    if certificate_digest(cert, algorithm.lower()) != value.upper():
                        return (
                            "DTLS fingerprint mismatch: the peer's media certificate is not "
                            "the one in its end-to-end encrypted SDP (a man in the middle?)"
                        )
        return "DTLS handshake failed"

    # --- controls and life cycle ---------------------------------------------------------------

    def mute(self, muted: bool) -> None:
        self.audio.muted = muted

    def camera(self, enabled: bool) -> None:
        if self.video is not None:
            self.video.enabled = enabled

    def snapshot(self) -> MediaStats:
        s = self.stats
        s.audio_frames_sent = self.audio.sent
        s.video_frames_sent = self.video.sent if self.video is not None else 0
        return s

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.snapshot()
        await self.pc.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self.recorder is not None:
            self.recorder.close()
