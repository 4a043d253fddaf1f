"""Call media helpers: WAV sources of any PCM shape, the recorder, the tone (PROTOCOL IX §5)."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from xchat.client.call_media import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    MediaSession,
    Tone,
    WavFile,
    WavRecorder,
    read_wav_48k_mono,
)
from xchat.errors import CallError, MediaError


def _write(path: Path, rate: int, channels: int, width: int, seconds: float = 0.5) -> None:
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * 440 * t)
    if width == 1:
        pcm = ((x * 100) + 128).astype(np.uint8)
    elif width == 2:
        pcm = (x * 10000).astype(np.int16)
    else:
        pcm = (x * 10000 * 65536).astype(np.int32)
    data = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def _peak(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    return float(np.fft.rfftfreq(len(pcm), 1 / SAMPLE_RATE)[int(np.argmax(spectrum[1:])) + 1])


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(48000, 1, 2), (16000, 2, 2), (8000, 1, 1), (44100, 2, 4)]
)
def test_any_pcm_wav_becomes_48k_mono(tmp_path: Path, rate: int, channels: int, width: int) -> None:
    p = tmp_path / "in.wav"
    _write(p, rate, channels, width)
    pcm = read_wav_48k_mono(p)
    assert pcm.dtype == np.int16 and abs(len(pcm) - SAMPLE_RATE // 2) <= 2
    assert abs(_peak(pcm) - 440) < 5
    src = WavFile(p)
    assert len(src.samples(0)) == FRAME_SAMPLES
    assert not src.samples(10_000).any()  # after the end: silence, the call goes on


def test_bad_wav_is_a_media_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF....not a wav")
    with pytest.raises(MediaError):
        read_wav_48k_mono(p)
    with pytest.raises(MediaError):
        read_wav_48k_mono(tmp_path / "missing.wav")
    with pytest.raises(MediaError):
        WavRecorder(tmp_path / "no" / "such" / "dir.wav")


def test_recorder_writes_48k_mono_from_stereo_frames(tmp_path: Path) -> None:
    rec = WavRecorder(tmp_path / "out.wav")
    tone = Tone(440)
    for i in range(25):
        mono = tone.samples(i)
        stereo = np.repeat(mono[None, :], 2, axis=0).T.reshape(1, -1)  # packed s16 stereo
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        rec.write(frame)
    rec.close()
    with wave.open(str(tmp_path / "out.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert len(pcm) >= 20 * FRAME_SAMPLES
    assert abs(_peak(pcm) - 440) < 5


def test_relay_only_without_turn_is_refused() -> None:
    with pytest.raises(CallError, match="TURN"):
        MediaSession(relay_only=True)
