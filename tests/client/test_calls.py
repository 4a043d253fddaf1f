"""Calls between two SDK clients through a real relay process (PROTOCOL.md Part IX).

Media is real aiortc DTLS-SRTP on loopback; the relay-only test starts a real coturn.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _crowd import Crowd

from xchat.client import content as ct
from xchat.client.call_media import Tone
from xchat.client.calls import CallEnded, CallIncoming, CallManager
from xchat.client.client import Client
from xchat.errors import IdentityChanged
from xchat.testing import TURNSERVER, ServerProcess, running_coturn, running_server

WAIT = 20.0  # generous bound for conditions on a loaded 2-core machine (never a sleep)


@dataclass
class Party:
    client: Client
    calls: CallManager
    incoming: asyncio.Queue[CallIncoming]
    ended: asyncio.Queue[CallEnded]

    @property
    def handle(self) -> str:
        h = self.client.whoami().handle
        assert h is not None
        return "@" + h

    async def next_incoming(self) -> CallIncoming:
        return await asyncio.wait_for(self.incoming.get(), WAIT)

    async def next_ended(self) -> CallEnded:
        return await asyncio.wait_for(self.ended.get(), WAIT)


@asynccontextmanager
async def party(url: str, home: Path, handle: str, **kw: Any) -> AsyncIterator[Party]:
    c = Client(home)
    await c.create_account(url, handle)
    p = await join(c, **kw)
    try:
        yield p
    finally:
        await p.calls.close()
        await c.close()


async def join(c: Client, **kw: Any) -> Party:
    """A call manager on ``c`` whose rings and ends land in queues; starts receiving."""
    mgr = CallManager(c, **kw)
    p = Party(c, mgr, asyncio.Queue(), asyncio.Queue())

    def route(e: object) -> None:
        if isinstance(e, CallIncoming):
            p.incoming.put_nowait(e)
        elif isinstance(e, CallEnded):
            p.ended.put_nowait(e)

    mgr.on_event(route)
    await mgr.start()
    await c.start()
    return p


async def until(cond: Any, what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def peak_hz(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    pcm = pcm[len(pcm) // 4 :]  # skip the start (jitter buffer fill)
    assert len(pcm) > 48_000 // 2, "less than half a second recorded"
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48_000)
    return float(freqs[int(np.argmax(spectrum[1:])) + 1])


async def test_tone_in_recording_peaks_at_440_hz_and_history_on_both_sides(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        call = await a.calls.place(b.handle, audio=Tone(440))
        ring = await b.next_incoming()
        assert ring.call_id == call.id and ring.peer == a.client.address
        answered = await b.calls.answer(ring.call_id, audio=Tone(660), record=tmp_path / "r.wav")
        # a second and a half of audio reaches Bob, then Alice hangs up
        await until(
            lambda: answered.media is not None and answered.media.stats.audio_frames_received >= 75,
            "audio at the callee",
        )
        await a.calls.hangup(call.id)
        ra, rb = await call.wait(WAIT), (await b.next_ended()).result
        assert ra.state == rb.state == "ended"
        assert ra.setup_ms is not None and rb.setup_ms is not None
        assert ra.audio_frames_sent > 0 and ra.audio_frames_received > 0
        assert rb.audio_frames_received >= 75 and rb.duration_s > 0
        assert abs(peak_hz(tmp_path / "r.wav") - 440) < 5
        # The relay learns nothing new: no call table, no call id or SDP in its log or DB.
        log = (server.data_dir / "server.log").read_text(errors="replace")
        assert call.id not in log and "a=fingerprint" not in log
        with sqlite3.connect(server.data_dir / "xchat.db") as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
            assert not [t for t in tables if "call" in t.lower()]
            dump = "\n".join(db.iterdump())
        assert call.id not in dump and "fingerprint" not in dump
        for mgr, direction, peer in (
            (a.calls, "out", b.client.address),
            (b.calls, "in", a.client.address),
        ):
            [rec] = mgr.history()
            assert (rec.id, rec.direction, rec.peer, rec.state) == (
                call.id,
                direction,
                peer,
                "ended",
            )
            assert rec.duration_s > 0


def forge_fingerprints(sdp: str) -> str:
    """The attacker's certificate fingerprints in place of the real ones."""
    from aiortc.rtcdtlstransport import RTCCertificate

    forged = RTCCertificate.generateCertificate().getFingerprints()
    lines = [ln for ln in sdp.split("\r\n") if not ln.startswith("a=fingerprint:")]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("a=setup:"))
    extra = [f"a=fingerprint:{f.algorithm} {f.value}" for f in forged]
    return "\r\n".join(lines[:at] + extra + lines[at:])


async def test_forged_fingerprint_in_the_answer_fails_the_call_and_says_so(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    """What a relay or network that could rewrite signalling would do: swap the DTLS
    fingerprint in the answer for its own. Here the answer is rewritten on the callee's
    side just before it is encrypted (the relay itself cannot: it is inside the ratchet),
    and the caller's DTLS must refuse the real callee's certificate."""
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        # Private on purpose: the attacker rewrites the answer below the SDK's public API.
        real_send = b.client._send_content
        forged: list[str] = []

        async def tampering_send(c: Any, msg: ct.Content, **kw: Any) -> None:
            if msg.type == "call_answer" and msg.call is not None:
                sdp = forge_fingerprints(msg.call["sdp"])
                assert sdp != msg.call["sdp"]
                forged.append(sdp)
                msg = ct.Content(
                    msg.id, msg.type, msg.ts, sender=msg.sender, call={**msg.call, "sdp": sdp}
                )
            await real_send(c, msg, **kw)

        b.client._send_content = tampering_send  # type: ignore[method-assign]
        call = await a.calls.place(b.handle)
        ring = await b.next_incoming()
        await b.calls.answer(ring.call_id)
        ra = await call.wait(WAIT)
        rb = (await b.next_ended()).result
        assert forged
        assert ra.state == "failed" and "fingerprint mismatch" in (ra.reason or "")
        assert ra.audio_frames_received == 0  # no media ever reached the caller
        assert rb.state == "failed"
        assert [r.state for r in a.calls.history()] == ["failed"]


async def test_answer_from_a_third_party_is_ignored(
    server: ServerProcess, tmp_path: Path, handle: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Mallory learns the call id and sends Alice an answer with her own SDP: Alice's call
    only listens to Bob (the sealed sender identifies Mallory), and Bob's decline ends it."""
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
        party(server.url, tmp_path / "m", handle("mallory")) as m,
    ):
        caplog.set_level(logging.WARNING, logger="xchat.client.calls")
        call = await a.calls.place(b.handle)
        await b.next_incoming()
        await until(lambda: call.state == "ringing", "ringing")
        mallory_sdp = await _some_offer_sdp()
        alice = await m.client.contact(a.client.address)
        # Private calls on purpose: Mallory crafts a call answer no public method sends.
        fake = ct.Content(
            ct.new_message_id(),
            "call_answer",
            1,
            sender=m.client._own_sender_info(),
            call={"id": call.id, "sdp": mallory_sdp},
        )
        await m.client._send_content(alice, fake, store_as_message=False)
        await until(
            lambda: any("from someone else" in r.getMessage() for r in caplog.records),
            "alice to drop mallory's answer",
        )
        assert call.state == "ringing" and call.remote_sdp is None
        await b.calls.decline()
        assert (await call.wait(WAIT)).state == "declined"


async def _some_offer_sdp() -> str:
    from xchat.client.call_media import MediaSession

    media = MediaSession()
    try:
        return await media.offer()
    finally:
        await media.close()


async def test_decline_is_recorded_on_both_sides(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        call = await a.calls.place(b.handle, video=True)
        ring = await b.next_incoming()
        assert ring.video
        await b.calls.decline(ring.call_id)
        assert (await call.wait(WAIT)).state == "declined"
        assert [(r.direction, r.state, r.video) for r in a.calls.history()] == [
            ("out", "declined", True)
        ]
        assert [(r.direction, r.state) for r in b.calls.history()] == [("in", "declined")]


async def test_busy_callee_and_second_incoming_call(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
        party(server.url, tmp_path / "c", handle("carol")) as c,
    ):
        first = await c.calls.place(b.handle)
        await b.next_incoming()
        await b.calls.answer(first.id)
        await until(lambda: first.state == "connected", "carol-bob connected")
        second = await a.calls.place(b.handle)
        ra = await second.wait(WAIT)
        assert ra.state == "busy"
        busy_rows = [r for r in b.calls.history() if r.id == second.id]
        assert [(r.direction, r.state) for r in busy_rows] == [("in", "busy")]
        assert [r.state for r in a.calls.history()] == ["busy"]
        assert first.state == "connected"  # the call in progress is untouched
        await b.calls.hangup(first.id)
        assert (await first.wait(WAIT)).state == "ended"


async def test_unanswered_call_is_missed_on_both_sides(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice"), ring_timeout=1.0) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        call = await a.calls.place(b.handle)
        await b.next_incoming()  # Bob's device rings; nobody answers
        ra = await call.wait(WAIT)
        assert (ra.state, ra.reason) == ("missed", "no answer")
        rb = (await b.next_ended()).result  # the caller's timeout hang-up stops the ringing
        assert rb.state == "missed"
        assert [(r.direction, r.state) for r in b.calls.history()] == [("in", "missed")]


async def test_callee_hangs_up_a_video_call(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        call = await a.calls.place(b.handle, video=True)
        ring = await b.next_incoming()
        bc = await b.calls.answer(ring.call_id)
        await until(
            lambda: call.media is not None and call.media.stats.video_frames_received > 3,
            "video frames at the caller",
        )
        bc.mute(True)
        await b.calls.hangup()
        ra = await call.wait(WAIT)
        assert ra.state == "ended" and ra.video_frames_received > 3
        assert (await b.next_ended()).result.state == "ended"


async def test_call_to_a_changed_verified_identity_is_refused(
    server: ServerProcess, tmp_path: Path, handle: Any
) -> None:
    async with (
        party(server.url, tmp_path / "a", handle("alice")) as a,
        party(server.url, tmp_path / "b", handle("bob")) as b,
    ):
        bob = await a.client.resolve(b.client.address)
        a.client.mark_verified(bob)
        other = Client(tmp_path / "other")
        await other.create_account(server.url, None)
        a.client.store.update_contact(bob.address, identity_key=other.identity.public.encode())
        await other.close()
        a.client.forget_resolved()
        with pytest.raises(IdentityChanged):
            await a.calls.place(b.client.address)
        assert a.calls.live() is None and a.calls.history() == []


@pytest.mark.skipif(not Path(TURNSERVER).exists(), reason="coturn is not installed")
async def test_relay_only_call_goes_through_coturn_with_no_host_candidates(
    tmp_path: Path, handle: Any
) -> None:
    with (
        running_coturn(tmp_path / "turn") as turn,
        running_server(tmp_path / "srv", pow_bits=2, rate_limits=False, **turn.server_env()) as srv,
    ):
        async with (
            party(srv.url, tmp_path / "a", handle("alice"), relay_only=True) as a,
            party(srv.url, tmp_path / "b", handle("bob"), relay_only=True) as b,
        ):
            call = await a.calls.place(b.handle)
            ring = await b.next_incoming()
            bc = await b.calls.answer(ring.call_id)
            await until(
                lambda: bc.media is not None and bc.media.stats.audio_frames_received > 10,
                "audio through TURN",
            )
            for sdp in (call.remote_sdp or "", bc.remote_sdp or ""):
                types = set(re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.MULTILINE))
                assert types == {"relay"}, sdp
            await a.calls.hangup()
            ra = await call.wait(WAIT)
            assert ra.state == "ended" and set(ra.local_candidate_types) == {"relay"}
            assert ra.audio_frames_received > 0
        log = turn.log_text()
        assert "ALLOCATE processed, success" in log, log[-2000:]


async def test_a_call_rings_every_linked_device_and_the_first_answer_takes_it(
    server: ServerProcess, tmp_path: Path, handle: Any, crowd: Crowd
) -> None:
    """Bob has two devices (PROTOCOL Part VII): both ring; the one that answers carries the
    call and the other stops ringing ("answered elsewhere", PROTOCOL Part IX §3.4)."""
    async with party(server.url, tmp_path / "a", handle("alice")) as a:
        (b1,) = await crowd.make("bob")
        b2 = await crowd.link(b1, "laptop", history=False)
        bobs: list[Party] = []
        try:
            for c in (b1, b2):
                bobs.append(await join(c))
            call = await a.calls.place(b1.address)
            rings = [await p.next_incoming() for p in bobs]
            assert {r.call_id for r in rings} == {call.id}
            answered = await bobs[0].calls.answer(call.id)
            other = (await bobs[1].next_ended()).result
            assert other.state == "answered_elsewhere"
            await until(
                lambda: call.state == "connected" and answered.state == "connected", "the call"
            )
            await a.calls.hangup()
            assert (await call.wait(WAIT)).state == "ended"
            assert (await bobs[0].next_ended()).result.state == "ended"
            assert [r.state for r in bobs[1].calls.history()] == ["answered_elsewhere"]
        finally:
            for p in bobs:
                await p.calls.close()
