"""``xchat call`` and ``xchat calls ...``: end-to-end encrypted voice/video calls (PROTOCOL.md
Part IX). Stable for scripts: the options, exit statuses and ``--json`` keys below.

Exit statuses of ``xchat call`` and ``xchat calls answer``: 0 the call was answered and
ended normally; :data:`EXIT_DECLINED` 10, :data:`EXIT_BUSY` 11, :data:`EXIT_MISSED` 12
(unanswered: ring timeout, or no call came within ``--timeout``), :data:`EXIT_FAILED` 13
(media never connected or was lost, e.g. a forged DTLS fingerprint; or relay-only without
TURN). Other errors keep the ``xchat`` table (6 identity changed, 7 unknown contact, ...).

``--json`` prints one object at the end: ``call_id``, ``state`` (ended / declined / busy /
missed / failed), ``setup_ms`` (answer to first audio frame from the peer), ``duration_s``,
``audio_frames_sent``, ``audio_frames_received``, ``video_frames_received``, plus ``peer``,
``direction``, ``reason``, ``video`` and ``local_candidate_types``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from xchat.cli.output import escape_terminal, fmt_time, who
from xchat.client.call_log import CallRecord
from xchat.errors import CallError, XChatError

EXIT_DECLINED = 10
EXIT_BUSY = 11
EXIT_MISSED = 12
EXIT_FAILED = 13
EXIT_FOR_STATE = {
    "ended": 0,
    "declined": EXIT_DECLINED,
    "busy": EXIT_BUSY,
    "missed": EXIT_MISSED,
    "answered_elsewhere": EXIT_MISSED,
    "failed": EXIT_FAILED,
}
DEFAULT_ANSWER_TIMEOUT = 120.0


def _status(msg: str) -> None:
    sys.stderr.write(f"xchat: {escape_terminal(msg)}\n")
    sys.stderr.flush()


def _finish(result: dict[str, Any], as_json: bool, peer_name: str) -> None:
    """Print the result and exit with the status of its state."""
    state = result["state"]
    if as_json:
        click.echo(json.dumps(result))
    if state == "ended":
        _status(f"call with {peer_name} ended after {result['duration_s']:.1f} s")
    else:
        why = f" ({result['reason']})" if result.get("reason") else ""
        _status(f"call {state}{why}")
    sys.exit(EXIT_FOR_STATE.get(state, EXIT_FAILED))


def _failed(exc: XChatError, as_json: bool, call_id: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(_empty_result(call_id, "failed", str(exc))))
    sys.stderr.write(f"xchat: error: {escape_terminal(str(exc))}\n")
    sys.exit(EXIT_FAILED)


def _empty_result(call_id: str | None, state: str, reason: str | None) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "state": state,
        "reason": reason,
        "setup_ms": None,
        "duration_s": 0.0,
        "audio_frames_sent": 0,
        "audio_frames_received": 0,
        "video_frames_received": 0,
    }


def _audio(path: Path | None) -> Any:
    from xchat.client.call_media import Tone, WavFile

    return WavFile(path) if path is not None else Tone()


def _on_sigint(task: asyncio.Task[Any]) -> None:
    """Ctrl-C / SIGTERM hang up cleanly instead of killing the call mid-way."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)


@click.command("call")
@click.argument("to")
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PCM WAV file to stream once answered (default: a 440 Hz test tone).",
)
@click.option("--video", is_flag=True, help="Also send video (a test pattern).")
@click.option("--duration", type=click.FloatRange(min=0), help="Hang up after SECONDS.")
@click.option("--relay-only", is_flag=True, help="Media only through TURN (hides your IP).")
@click.option(
    "--ring-timeout",
    type=click.FloatRange(min=0.5, max=600),
    default=45.0,
    show_default=True,
    help="Seconds to ring before giving up (missed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.pass_obj
def call_command(
    obj: Any,
    to: str,
    audio: Path | None,
    video: bool,
    duration: float | None,
    relay_only: bool,
    ring_timeout: float,
    as_json: bool,
) -> None:
    """Ring TO, stream audio once answered, hang up after --duration (or Ctrl-C)."""
    from xchat.client.calls import CallManager

    source = _audio(audio)
    peer_name = to

    async def go() -> dict[str, Any]:
        nonlocal peer_name
        async with obj.client() as c:
            mgr = CallManager(c, ring_timeout=ring_timeout, relay_only=relay_only)
            await mgr.start()
            await c.start()
            try:
                call = await mgr.place(to, audio=source, video=video)
                peer_name = who(call.peer, call.handle)
                _status(f"ringing {peer_name} (call {call.id[:8]})")
                await _carry(mgr, call, duration)
                assert call.result is not None
                return call.result.to_json()
            finally:
                await mgr.close()

    try:
        result = asyncio.run(_guarded(go()))
    except CallError as exc:
        _failed(exc, as_json)
    _finish(result, as_json, peer_name)


async def _guarded(coro: Any) -> Any:
    task = asyncio.ensure_future(coro)
    _on_sigint(task)
    return await task


async def _carry(mgr: Any, call: Any, duration: float | None) -> None:
    """Wait for the end; once connected, hang up after ``duration``. Cancellation (Ctrl-C)
    hangs up."""
    try:
        connected = asyncio.ensure_future(_wait_state(mgr, call, "connected"))
        done = asyncio.ensure_future(call.finished.wait())
        await asyncio.wait({connected, done}, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        if not call.finished.is_set():
            _status("connected")
            if duration is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), duration)
                if not call.finished.is_set():
                    await mgr.hangup(call.id)
        await done
    except asyncio.CancelledError:
        if not call.finished.is_set():
            await mgr.hangup(call.id)


async def _wait_state(mgr: Any, call: Any, state: str) -> None:
    while call.state != state:
        if call.finished.is_set():
            return
        await asyncio.sleep(0.02)


@click.group("calls")
def calls_group() -> None:
    """Answer, decline and list calls (the call history)."""


def _wait_for_incoming(obj: Any, sender: str | None, timeout: float, action: Any) -> Any:
    """Run a client + manager, wait for a call (from ``sender``), then ``action(mgr, call)``."""
    from xchat.client.calls import CallIncoming, CallManager

    async def go() -> Any:
        async with obj.client() as c:
            want: str | None = None
            if sender is not None:
                want = (await c.resolve(sender)).address
            mgr = CallManager(c, accept_from=(lambda a: a == want) if want else None)
            incoming: asyncio.Queue[CallIncoming] = asyncio.Queue()
            mgr.on_event(lambda e: incoming.put_nowait(e) if isinstance(e, CallIncoming) else None)
            await mgr.start()
            await c.start()
            try:
                try:
                    ring = await asyncio.wait_for(incoming.get(), timeout)
                except TimeoutError:
                    return None
                return await action(mgr, mgr.get(ring.call_id))
            finally:
                await mgr.close()

    return asyncio.run(_guarded(go()))


@calls_group.command("answer")
@click.option("--from", "sender", help="Only answer a call from this contact.")
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the caller's audio to this WAV file (48 kHz mono).",
)
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PCM WAV file to stream (default: a 440 Hz test tone).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_ANSWER_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a call.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.pass_obj
def calls_answer(
    obj: Any,
    sender: str | None,
    record: Path | None,
    audio: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Wait for an incoming call, answer it, and stay until the caller hangs up."""
    source = _audio(audio)
    name = {"peer": sender or "the caller"}

    async def take(mgr: Any, call: Any) -> dict[str, Any]:
        name["peer"] = who(call.peer, call.handle)
        _status(f"answering {name['peer']} (call {call.id[:8]})")
        await mgr.answer(call.id, audio=source, record=record)
        await _carry(mgr, call, None)
        assert call.result is not None
        result: dict[str, Any] = call.result.to_json()
        return result

    try:
        result = _wait_for_incoming(obj, sender, timeout, take)
    except CallError as exc:
        _failed(exc, as_json)
    if result is None:
        if as_json:
            click.echo(json.dumps(_empty_result(None, "missed", "no call came")))
        _status(f"no call within {timeout:g} s")
        sys.exit(EXIT_MISSED)
    _finish(result, as_json, name["peer"])


@calls_group.command("decline")
@click.option("--from", "sender", help="Only decline a call from this contact.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_ANSWER_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a call.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.pass_obj
def calls_decline(obj: Any, sender: str | None, timeout: float, as_json: bool) -> None:
    """Wait for an incoming call and decline it."""

    async def refuse(mgr: Any, call: Any) -> dict[str, Any]:
        await mgr.decline(call.id)
        assert call.result is not None
        result: dict[str, Any] = call.result.to_json()
        return result

    result = _wait_for_incoming(obj, sender, timeout, refuse)
    if result is None:
        if as_json:
            click.echo(json.dumps(_empty_result(None, "missed", "no call came")))
        _status(f"no call within {timeout:g} s")
        sys.exit(EXIT_MISSED)
    if as_json:
        click.echo(json.dumps(result))
    _status(f"declined call {result['call_id'][:8]}")


def call_json(r: CallRecord, handle: str | None) -> dict[str, Any]:
    return {
        "call_id": r.id,
        "direction": r.direction,
        "peer": r.peer,
        "handle": handle,
        "state": r.state,
        "video": r.video,
        "start": r.started_ms,  # ms since the epoch
        "duration": r.duration_s,  # seconds of connected media
        "duration_s": r.duration_s,
        "reason": r.reason,
    }


def call_line(r: CallRecord, handle: str | None) -> str:
    """One line of the call history (also used by ``xchat history``)."""
    arrow = "outgoing" if r.direction == "out" else "incoming"
    kind = "video call" if r.video else "call"
    dur = f", {r.duration_s:.0f} s" if r.state == "ended" else ""
    return f"[{fmt_time(r.started_ms)}] {arrow} {kind} {who(r.peer, handle)}: {r.state}{dur}"


@calls_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def calls_list(obj: Any, limit: int, as_json: bool) -> None:
    """The call history, newest first: direction, peer, state, start, duration."""
    from xchat.client.call_log import CallLog

    c = obj.client()
    try:
        rows = CallLog(c.store).list(None, limit)
        handles = {r.peer: _handle(c, r.peer) for r in rows}
    finally:
        asyncio.run(c.close())
    for r in rows:
        if as_json:
            click.echo(json.dumps(call_json(r, handles[r.peer])))
        else:
            click.echo(call_line(r, handles[r.peer]))


def _handle(c: Any, address: str) -> str | None:
    contact = c.store.get_contact(address)
    return contact.handle if contact is not None else None
