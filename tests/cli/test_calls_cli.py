"""``xchat call`` / ``xchat calls ...`` as real subprocesses through a real relay (PROTOCOL.md
Part IX): exit statuses and the ``--json`` object scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from _cli_helpers import SRC, ok, one_error_line, xchat
from xchat.testing import ServerProcess

RESULT_KEYS = {
    "call_id",
    "state",
    "setup_ms",
    "duration_s",
    "audio_frames_sent",
    "audio_frames_received",
    "video_frames_received",
}


def _accounts(server: ServerProcess, tmp_path: Path, tag: str) -> tuple[Path, Path, str]:
    a, b = tmp_path / "a", tmp_path / "b"
    hb = f"{tag}b{os.getpid() % 1000}"
    ok(
        xchat(
            a,
            "account",
            "create",
            "--server",
            server.url,
            "--handle",
            f"{tag}a{os.getpid() % 1000}",
        )
    )
    ok(xchat(b, "account", "create", "--server", server.url, "--handle", hb))
    return a, b, "@" + hb


def _background(profile: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "XCHAT_NO_KEYRING": "1"}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "xchat", "--profile", str(profile), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _tone_wav(path: Path, hz: float, seconds: float = 3.0, rate: int = 16_000) -> None:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * hz * t) * 9000).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_call_answered_recorded_listed_and_in_history(
    server: ServerProcess, tmp_path: Path
) -> None:
    a, b, hb = _accounts(server, tmp_path, "cl")
    src = tmp_path / "in.wav"
    _tone_wav(src, 440.0)  # 16 kHz file: the CLI resamples to 48 kHz
    rec = tmp_path / "out.wav"
    answerer = _background(b, "calls", "answer", "--record", str(rec), "--timeout", "60", "--json")
    try:
        r = xchat(a, "call", hb, "--audio", str(src), "--duration", "2", "--json")
        out, err = answerer.communicate(timeout=60)
    finally:
        if answerer.poll() is None:
            answerer.kill()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + err
    caller = json.loads(r.stdout)
    callee = json.loads(out)
    assert answerer.returncode == 0, err
    assert caller.keys() >= RESULT_KEYS and callee.keys() >= RESULT_KEYS
    assert caller["state"] == callee["state"] == "ended"
    assert caller["call_id"] == callee["call_id"]
    assert caller["setup_ms"] > 0 and 1.5 <= caller["duration_s"] < 10
    assert caller["audio_frames_sent"] > 50 and callee["audio_frames_received"] > 50
    assert caller["video_frames_received"] == 0
    with wave.open(str(rec), "rb") as w:
        assert w.getframerate() == 48_000 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)
    spectrum = np.abs(np.fft.rfft(pcm[len(pcm) // 4 :]))
    peak = np.fft.rfftfreq(len(pcm[len(pcm) // 4 :]), 1 / 48_000)[int(np.argmax(spectrum[1:])) + 1]
    assert abs(peak - 440) < 5
    [row] = [json.loads(line) for line in ok(xchat(a, "calls", "list", "--json")).splitlines()]
    assert (row["direction"], row["state"], row["call_id"]) == ("out", "ended", caller["call_id"])
    assert {"peer", "start", "duration_s"} <= row.keys()
    history = ok(xchat(b, "history", callee["peer"]))
    assert "incoming call" in history and "ended" in history


def test_declined_missed_and_relay_only_without_turn_exit_statuses(
    server: ServerProcess, tmp_path: Path
) -> None:
    a, b, hb = _accounts(server, tmp_path, "cd")
    decliner = _background(b, "calls", "decline", "--timeout", "60", "--json")
    try:
        r = xchat(a, "call", hb, "--json")
        decliner.communicate(timeout=60)
    finally:
        if decliner.poll() is None:
            decliner.kill()
    assert r.returncode == 10, r.stderr
    assert json.loads(r.stdout)["state"] == "declined"
    # nobody answers: missed after the ring timeout
    r = xchat(a, "call", hb, "--ring-timeout", "1", "--json")
    assert r.returncode == 12, r.stderr
    assert json.loads(r.stdout)["state"] == "missed"
    states = [json.loads(x)["state"] for x in ok(xchat(a, "calls", "list", "--json")).splitlines()]
    assert states == ["missed", "declined"]  # newest first
    # this relay has no TURN server: a relay-only call fails before ringing, in one line
    r = xchat(a, "call", hb, "--relay-only")
    assert r.returncode == 13
    assert "TURN" in one_error_line(r)
    # the callee missed the second call (it was offline and the offer is stale or hung up)
    r = xchat(b, "calls", "answer", "--timeout", "3", "--json")
    assert r.returncode == 12 and json.loads(r.stdout)["state"] == "missed"
    listed = [json.loads(x) for x in ok(xchat(b, "calls", "list", "--json")).splitlines()]
    assert [(c["direction"], c["state"]) for c in listed] == [("in", "missed"), ("in", "declined")]
