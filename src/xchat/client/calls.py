"""1:1 voice and video calls for the SDK (PROTOCOL.md Part IX): ``xchat.client.calls``.

:class:`CallManager` sits on top of a running :class:`~xchat.client.client.Client`
(``await client.start()``): it turns the client's ``CallSignalReceived`` events into
:class:`~xchat.client.call_state.CallMachine` transitions, sends signals back as E2EE
content over the same pairwise sessions as messages, runs the media (aiortc,
:mod:`xchat.client.call_media`) and keeps the call history (:mod:`xchat.client.call_log`).

Typical use::

    async with Client(home) as c:
        await c.start()
        calls = CallManager(c)
        await calls.start()
        call = await calls.place("@bob", audio=Tone())
        result = await call.wait()          # CallResult: state, setup_ms, frame counts

The web app uses the same manager with ``external_media=True``: the page's own WebRTC
makes the SDP, so offers/answers are passed in as strings and the peer's SDP and ICE
candidates come out as events; the page holds the media keys, this process the E2EE ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.call_events import (
    CallEnded,
    CallEvent,
    CallIncoming,
    CallRemoteCandidates,
    CallRemoteDescription,
    CallResult,
    CallStateChanged,
)
from xchat.client.call_log import CallLog, CallRecord
from xchat.client.call_state import (
    MAX_OFFER_AGE_MS,
    RING_TIMEOUT_MS,
    CallMachine,
    IceCandidate,
    Role,
    Signal,
    State,
    Transition,
    parse_signal,
)
from xchat.clock import now_ms
from xchat.errors import CallError, CallStateError, ProtocolError, XChatError

if TYPE_CHECKING:
    from xchat.client.call_media import AudioSource, IceServer, MediaSession
    from xchat.client.client import Client
    from xchat.client.store import ContactRecord

log = logging.getLogger(__name__)

__all__ = [
    "Call",
    "CallEnded",
    "CallEvent",
    "CallIncoming",
    "CallManager",
    "CallRemoteCandidates",
    "CallRemoteDescription",
    "CallResult",
    "CallStateChanged",
]

TICK_S = 0.1  # how often ring/connect deadlines are checked
TURN_PATH = "/api/v1/turn"
#: Credentials are refreshed this long before they expire (a call may start just then and
#: must still allocate; coturn checks the expiry at allocation).
TURN_REFRESH_MARGIN_S = 600
TURN_ABSENT_RECHECK_S = 600  # a relay without TURN is asked again after this long


# --- one call --------------------------------------------------------------------------------


@dataclass
class Call:
    """A live (or finished) call. ``await call.wait()`` returns its :class:`CallResult`."""

    machine: CallMachine
    handle: str | None = None
    media: MediaSession | None = None
    remote_sdp: str | None = None  # the peer's offer (callee) or answer (caller)
    peer_device: int | None = None  # the device that offered / answered
    pending_ice: list[IceCandidate] = field(default_factory=list)
    answered_at: float | None = None  # monotonic: our accept / the peer's answer arrived
    setup_ms: float | None = None
    result: CallResult | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    _candidates: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.machine.call_id

    @property
    def peer(self) -> str:
        return self.machine.peer

    @property
    def direction(self) -> str:
        return self.machine.role.value

    @property
    def state(self) -> str:
        return self.machine.outcome.value if self.machine.outcome else self.machine.state.value

    @property
    def video(self) -> bool:
        return self.machine.video

    def mute(self, muted: bool = True) -> None:
        if self.media is not None:
            self.media.mute(muted)

    def camera(self, enabled: bool) -> None:
        if self.media is not None:
            self.media.camera(enabled)

    async def wait(self, timeout: float | None = None) -> CallResult:
        """Wait until the call has ended; TimeoutError if ``timeout`` passes first."""
        await asyncio.wait_for(self.finished.wait(), timeout)
        assert self.result is not None
        return self.result


# --- the manager -----------------------------------------------------------------------------


class CallManager:
    """Places, answers and carries the calls of one client (one call at a time; a second
    incoming call meets "busy")."""

    def __init__(
        self,
        client: Client,
        *,
        ring_timeout: float = RING_TIMEOUT_MS / 1000,
        relay_only: bool = False,
        ice_servers: tuple[IceServer, ...] | None = None,
        external_media: bool = False,
        loopback: bool | None = None,
        accept_from: Callable[[str], bool] | None = None,
    ) -> None:
        self.client = client
        self.ring_timeout_ms = int(ring_timeout * 1000)
        self.relay_only = relay_only
        self.external_media = external_media
        self._ice_servers = ice_servers  # None: ask the relay (GET /api/v1/turn)
        self._turn_cache: tuple[tuple[IceServer, ...], float] = ((), 0.0)
        self._loopback = loopback
        self._accept_from = accept_from
        self.log = CallLog(client.store)
        self.calls: dict[str, Call] = {}
        self._listeners: list[Callable[[CallEvent], Awaitable[None] | None]] = []
        self._queues: list[asyncio.Queue[CallEvent]] = []
        self._inbox: asyncio.Queue[ev.CallSignalReceived] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._announce: list[Call] = []  # offers to announce once the inbox is empty

    # --- life cycle ------------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Listen for call signals (register before ``client.start()`` to see a backlog).
        With ``listen=False`` the app passes them in through :meth:`feed` instead."""
        self.start_nowait(listen=listen)

    def start_nowait(self, *, listen: bool = True) -> None:
        """:meth:`start` for synchronous callers running inside the event loop."""
        if self._tasks:
            return
        if not self.external_media:
            from xchat.client import call_media

            server = self.client.whoami().server
            loop = self._loopback
            if loop is None:
                loop = "://127.0.0.1" in server or "://localhost" in server
            if loop:
                call_media.allow_loopback_candidates()
        if listen:
            self.client.on_event(self.feed)
        self._tasks = [asyncio.create_task(self._worker()), asyncio.create_task(self._ticker())]
        if self._ice_servers is None:
            self._soon(self._prefetch_turn())

    async def close(self) -> None:
        """Hang up whatever is live, then stop."""
        for call in list(self.calls.values()):
            if not call.machine.ended:
                with contextlib.suppress(XChatError):
                    await self.hangup(call.id)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)
        with contextlib.suppress(ValueError):
            self.client._listeners.remove(self.feed)

    async def __aenter__(self) -> CallManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- events ---------------------------------------------------------------------------

    def on_event(self, callback: Callable[[CallEvent], Awaitable[None] | None]) -> None:
        self._listeners.append(callback)

    async def events(self) -> AsyncIterator[CallEvent]:
        q: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._queues.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.remove(q)

    async def _emit(self, event: CallEvent) -> None:
        for q in self._queues:
            q.put_nowait(event)
        for cb in list(self._listeners):
            try:
                r = cb(event)
                if r is not None:
                    await r
            except Exception:
                log.exception("call event callback failed for %s", type(event).__name__)

    # --- queries --------------------------------------------------------------------------

    def live(self) -> Call | None:
        """The call in progress (ringing either way, connecting or connected), if any."""
        for call in self.calls.values():
            if not call.machine.ended:
                return call
        return None

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise CallError(f"no call {call_id[:8]}")
        return call

    def history(self, peer: str | None = None, limit: int = 100) -> list[CallRecord]:
        return self.log.list(peer, limit)

    # --- placing a call -------------------------------------------------------------------

    async def place(
        self,
        to: str,
        *,
        audio: AudioSource | None = None,
        video: bool = False,
        sdp: str | None = None,
    ) -> Call:
        """Ring ``to`` (``@handle`` or address). A verified contact whose identity changed
        is refused with IdentityChanged, as a message would be. ``sdp`` (external media
        only) is the page's offer."""
        if self.live() is not None:
            raise CallError("already in a call: hang up first")
        contact = await self.client._sendable_contact(to)
        call_id = secrets.token_hex(16)
        machine = CallMachine(
            call_id,
            Role.CALLER,
            contact.address,
            now_ms=now_ms(),
            video=video,
            ring_timeout_ms=self.ring_timeout_ms,
        )
        call = Call(machine, handle=contact.handle)
        self.calls[call_id] = call
        try:
            if self.external_media:
                if sdp is None:
                    raise CallError("external media: the page must supply the offer SDP")
                offer = sdp
            else:
                call.media = await self._new_media(call, audio=audio, video=video)
                offer = await call.media.offer()
                call._candidates = tuple(call.media.local_candidate_types())
            self._record(call)
            await self._send(call, Signal("call_offer", call_id, sdp=offer, video=video), contact)
        except BaseException as exc:
            reason = str(exc) or type(exc).__name__
            if not machine.ended:
                await self._apply(call, "media_failed", reason=reason, send=False)
            raise
        return call

    # --- answering, declining, hanging up -----------------------------------------------------

    def _ringing(self, call_id: str | None) -> Call:
        for call in self.calls.values():
            if call.machine.state is State.INCOMING and call_id in (None, call.id):
                return call
        raise CallError("no incoming call to answer" if call_id is None else "no such call ringing")

    async def answer(
        self,
        call_id: str | None = None,
        *,
        audio: AudioSource | None = None,
        record: str | Path | None = None,
        sdp: str | None = None,
    ) -> Call:
        """Answer the ringing call (``call_id``, or the only one). ``record`` writes the
        peer's audio to a 48 kHz WAV file; ``sdp`` (external media) is the page's answer."""
        call = self._ringing(call_id)
        assert call.remote_sdp is not None
        if self.external_media:
            if sdp is None:
                raise CallError("external media: the page must supply the answer SDP")
            answer_sdp = sdp
        else:
            call.media = await self._new_media(call, audio=audio, video=call.video, record=record)
            try:
                answer_sdp = await call.media.answer(call.remote_sdp)
                call._candidates = tuple(call.media.local_candidate_types())
                await self._flush_ice(call)
            except BaseException:
                await call.media.close()
                raise
        if call.machine.ended:  # the caller gave up while we were setting up
            if call.media is not None:
                await call.media.close()
            raise CallError("the call ended before it could be answered")
        call.answered_at = time.monotonic()
        await self._apply(call, "accept", signal=Signal("call_answer", call.id, sdp=answer_sdp))
        return call

    async def decline(self, call_id: str | None = None) -> Call:
        call = self._ringing(call_id)
        await self._apply(call, "decline")
        return call

    async def hangup(self, call_id: str | None = None) -> Call:
        """End the live call (``call_id``, or the only live one) from any state."""
        call = self.get(call_id) if call_id is not None else self.live()
        if call is None:
            raise CallError("no call in progress")
        if not call.machine.ended:
            await self._apply(call, "hangup")
        return call

    async def send_candidates(self, call_id: str, candidates: tuple[IceCandidate, ...]) -> None:
        """External media: forward the page's trickled ICE candidates to the peer."""
        call = self.get(call_id)
        if not call.machine.ended:
            await self._send(call, Signal("call_ice", call_id, candidates=candidates))

    async def media_connected(self, call_id: str) -> None:
        """External media: the page's RTCPeerConnection is connected."""
        call = self.get(call_id)
        if call.machine.can("media_connected"):
            await self._apply(call, "media_connected")

    async def media_failed(self, call_id: str, reason: str) -> None:
        call = self.get(call_id)
        if call.machine.can("media_failed"):
            await self._apply(call, "media_failed", reason=reason)

    # --- the state machine driver -------------------------------------------------------------

    async def _apply(
        self,
        call: Call,
        event: str,
        *,
        reason: str | None = None,
        signal: Signal | None = None,
        send: bool = True,
    ) -> Transition:
        tr = call.machine.handle(event, now_ms(), reason=reason)
        await self._after(call, tr, signal, send)
        return tr

    async def _after(
        self, call: Call, tr: Transition, signal: Signal | None = None, send: bool = True
    ) -> None:
        self._record(call)
        if tr.send is not None and send:
            sig = signal or Signal(tr.send, call.id, reason=tr.reason)
            try:
                await self._send(call, sig)
            except XChatError as exc:
                if not tr.ended:
                    raise
                log.info("could not send %s for call %s: %s", tr.send, call.id[:8], exc)
        if tr.ended:
            await self._finish(call)
        elif tr.new is not tr.old:
            await self._emit(CallStateChanged(call.id, tr.new.value))

    async def _finish(self, call: Call) -> None:
        m = call.machine
        stats = None
        if call.media is not None:
            await call.media.close()
            stats = call.media.snapshot()
        assert m.outcome is not None
        call.result = CallResult(
            call_id=call.id,
            peer=call.peer,
            direction=call.direction,
            state=m.outcome.value,
            reason=m.reason,
            video=m.video,
            setup_ms=call.setup_ms,
            duration_s=m.duration_s(),
            audio_frames_sent=stats.audio_frames_sent if stats else 0,
            audio_frames_received=stats.audio_frames_received if stats else 0,
            video_frames_received=stats.video_frames_received if stats else 0,
            local_candidate_types=call._candidates,
        )
        self._record(call)
        call.finished.set()
        await self._emit(CallEnded(call.id, call.result))

    def _record(self, call: Call) -> None:
        m = call.machine
        self.log.record(
            call.id,
            call.peer,
            call.direction,
            call.state,
            video=m.video,
            started_ms=m.started_ms,
            answered_ms=m.answered_ms,
            ended_ms=m.ended_ms,
            duration_ms=int(m.duration_s() * 1000),
            reason=m.reason,
        )

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            t = now_ms()
            for call in list(self.calls.values()):
                deadline = call.machine.deadline_ms()
                if deadline is not None and t >= deadline:
                    tr = call.machine.tick(t)
                    if tr is not None:
                        try:
                            await self._after(call, tr)
                        except XChatError as exc:
                            log.info("call timer: %s", exc)
                        except Exception:
                            log.exception("call timer failed for call %s", call.id[:8])

    # --- media -------------------------------------------------------------------------------

    async def _new_media(
        self,
        call: Call,
        *,
        audio: AudioSource | None,
        video: bool,
        record: str | Path | None = None,
    ) -> MediaSession:
        from xchat.client.call_media import MediaSession

        servers = await self.ice_servers()
        return MediaSession(
            audio=audio,
            video=video,
            record=record,
            ice_servers=servers,
            relay_only=self.relay_only,
            on_connected=lambda: self._soon(self._media_event(call, "media_connected")),
            on_failed=lambda why: self._soon(self._media_event(call, "media_failed", why)),
            on_first_audio=lambda: self._first_audio(call),
        )

    async def ice_servers(self) -> tuple[IceServer, ...]:
        """TURN servers with credentials from the relay (PROTOCOL Part IX §6); none when
        the relay has no TURN configured (host candidates only). Fetched when the manager
        starts and again shortly before they expire, never per call, so the relay cannot
        tell from this request when someone calls."""
        if self._ice_servers is not None:
            return self._ice_servers
        cached, until_s = self._turn_cache
        if time.time() < until_s:
            return cached
        from xchat.client.call_media import IceServer
        from xchat.errors import ApiError

        api = await self.client._authed()
        try:
            data = await api.request("GET", TURN_PATH, auth=True)
        except ApiError as exc:
            if exc.status == 404:
                self._turn_cache = ((), time.time() + TURN_ABSENT_RECHECK_S)
                return ()
            raise
        if not isinstance(data, dict):
            raise ProtocolError("server sent a malformed TURN credential")
        urls, user, cred = data.get("urls"), data.get("username"), data.get("credential")
        expires = data.get("expires")
        if (
            not isinstance(urls, list)
            or not all(isinstance(u, str) for u in urls)
            or not isinstance(user, str)
            or not isinstance(cred, str)
            or not isinstance(expires, int)
        ):
            raise ProtocolError("server sent a malformed TURN credential")
        servers = (IceServer(tuple(urls), user, cred),)
        self._turn_cache = (servers, expires - TURN_REFRESH_MARGIN_S)
        return servers

    async def _prefetch_turn(self) -> None:
        try:
            await self.ice_servers()
        except XChatError as exc:  # the next call asks again
            log.info("no TURN credentials yet: %s", exc)

    def _first_audio(self, call: Call) -> None:
        if call.answered_at is not None and call.setup_ms is None:
            call.setup_ms = (time.monotonic() - call.answered_at) * 1000

    async def _media_event(self, call: Call, event: str, reason: str | None = None) -> None:
        if call.machine.can(event):
            await self._apply(call, event, reason=reason)

    def _soon(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except XChatError as exc:
                log.info("call media event: %s", exc)
            except Exception:
                log.exception("call media event failed")

        task = asyncio.ensure_future(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _flush_ice(self, call: Call) -> None:
        if call.media is not None and call.pending_ice:
            pending, call.pending_ice = tuple(call.pending_ice), []
            await call.media.add_candidates(pending)

    # --- signalling ----------------------------------------------------------------------------

    async def _send(self, call: Call, sig: Signal, contact: ContactRecord | None = None) -> None:
        """Send one signal as E2EE content to the call's peer (all of its devices)."""
        c = contact or self.client.store.get_contact(call.peer)
        if c is None:
            raise CallError("the peer of this call is not a contact")
        if c.verified and c.identity_changed:
            from xchat.errors import IdentityChanged

            raise IdentityChanged("the identity of this verified contact changed")
        sender = None if c.token_shared else self.client._own_sender_info()
        msg = ct.Content(
            id=ct.new_message_id(), type=sig.type, ts=now_ms(), sender=sender, call=sig.to_json()
        )
        await self.client._send_content(c, msg, store_as_message=False)

    def feed(self, e: ev.Event) -> None:
        """Take a client event; call signals are queued for the state machines."""
        if isinstance(e, ev.CallSignalReceived):
            self._inbox.put_nowait(e)

    async def _worker(self) -> None:
        while True:
            e = await self._inbox.get()
            try:
                sig = parse_signal(e.type, e.call)
                await self._receive(e, sig)
            except CallStateError as exc:
                log.info("ignoring call signal: %s", exc)  # late or duplicated: normal
            except XChatError as exc:
                log.warning("bad call signal from a contact: %s", exc)
            except Exception:  # a media-stack surprise must not stop every later call
                log.exception("call signal %s failed", e.type)
            if self._inbox.empty():
                ready, self._announce = self._announce, []
                for call in ready:
                    if call.machine.state is State.INCOMING:
                        await self._emit(CallIncoming(call.id, call.peer, call.handle, call.video))

    async def _receive(self, e: ev.CallSignalReceived, sig: Signal) -> None:
        if e.sender == self.client.address:
            # A copy of our own account's signal (linked devices): never a call to us, but
            # an answer or decline by another of our devices stops this one ringing.
            own = self.calls.get(sig.call_id)
            if own is not None and own.machine.state is State.INCOMING:
                if sig.type == "call_answer":
                    await self._apply(
                        own, "answered_elsewhere", reason="answered on another device"
                    )
                elif sig.type == "call_decline":
                    await self._apply(
                        own, "decline", reason="declined on another device", send=False
                    )
            return
        if sig.type == "call_offer":
            await self._receive_offer(e, sig)
            return
        call = self.calls.get(sig.call_id)
        if call is None or call.machine.ended:
            return  # not ours, or over: late signals are normal
        if e.sender != call.peer:
            # Only the party we called (or who called us) may move this call: a third
            # contact who learned the call id cannot answer or end it (PROTOCOL Part IX §4).
            log.warning("call signal for call %s from someone else: ignored", call.id[:8])
            return
        t = sig.type
        if t == "call_ringing":
            await self._apply(call, "remote_ringing")
        elif t == "call_answer":
            await self._receive_answer(call, e, sig)
        elif t == "call_ice":
            await self._receive_ice(call, sig)
        elif t == "call_busy":
            await self._apply(call, "remote_busy", reason="the callee is in another call")
        elif t == "call_decline":
            await self._apply(call, "remote_decline", reason="declined")
        elif t == "call_hangup":
            await self._receive_hangup(call, sig)

    async def _receive_offer(self, e: ev.CallSignalReceived, sig: Signal) -> None:
        if sig.call_id in self.calls:
            return  # a duplicate
        t = now_ms()
        c = self.client.store.get_contact(e.sender)
        handle = c.handle if c is not None else None
        machine = CallMachine(sig.call_id, Role.CALLEE, e.sender, now_ms=t, video=sig.video)
        call = Call(machine, handle=handle, remote_sdp=sig.sdp, peer_device=e.device_id)
        self.calls[sig.call_id] = call
        refuse: tuple[str, str] | None = None
        if t - e.ts_ms > MAX_OFFER_AGE_MS:
            refuse = ("ring_timeout", "offer arrived too late (we were offline)")
        elif c is not None and c.verified and c.identity_changed:
            refuse = ("ring_timeout", "the caller's verified identity changed")
        elif self._accept_from is not None and not self._accept_from(e.sender):
            refuse = ("ring_timeout", "not the caller this device waits for")
        elif any(x.id != call.id and not x.machine.ended for x in self.calls.values()):
            refuse = ("busy", "busy: in another call")
        if refuse is not None:
            event, reason = refuse
            tr = machine.handle(event, t, reason=reason)
            send = event == "busy" and not (c is not None and c.verified and c.identity_changed)
            await self._after(call, tr, send=send)
            return
        self._record(call)
        with contextlib.suppress(XChatError):
            await self._send(call, Signal("call_ringing", call.id))
        # Announced once the signals queued behind it are processed: an offline callee
        # gets the offer and the caller's hang-up in one backlog, and must not ring.
        self._announce.append(call)

    async def _receive_answer(self, call: Call, e: ev.CallSignalReceived, sig: Signal) -> None:
        if not call.machine.can("remote_answer"):
            raise CallStateError(f"call {call.id[:8]}: a second answer (another device)")
        assert sig.sdp is not None
        call.remote_sdp = sig.sdp
        call.peer_device = e.device_id
        call.answered_at = time.monotonic()
        await self._apply(call, "remote_answer")
        if self.external_media:
            await self._emit(CallRemoteDescription(call.id, "answer", sig.sdp))
        elif call.media is not None:
            try:
                await call.media.accept_answer(sig.sdp)
                await self._flush_ice(call)
            except XChatError as exc:
                await self._media_event(call, "media_failed", str(exc))
                return
        if len(self._devices_of(call.peer)) > 1:
            # Every device of the callee rang: the others stop now (PROTOCOL Part IX §3.4).
            stop = Signal("call_hangup", call.id, reason="answered_elsewhere")
            stop = Signal(stop.type, stop.call_id, reason=stop.reason, answered_by=e.device_id)
            self._soon(self._send(call, stop))

    def _devices_of(self, address: str) -> list[int]:
        """The peer's devices: its signed device list (PROTOCOL Part VII) when the client
        keeps them, else the devices we hold sessions with."""
        listed = getattr(self.client, "device_ids", None)
        if callable(listed):
            return list(listed(address))
        return self.client.store.session_devices(address)

    async def _receive_ice(self, call: Call, sig: Signal) -> None:
        if self.external_media:
            await self._emit(CallRemoteCandidates(call.id, sig.candidates))
        elif call.media is not None and call.machine.state in (State.CONNECTING, State.CONNECTED):
            await call.media.add_candidates(sig.candidates)
        else:
            call.pending_ice.extend(sig.candidates)

    async def _receive_hangup(self, call: Call, sig: Signal) -> None:
        if sig.reason == "answered_elsewhere":
            own = self.client.profile.config.device_id or 1
            if sig.answered_by == own:
                return  # that is us: the caller tells our other devices
            if call.machine.can("answered_elsewhere"):
                await self._apply(call, "answered_elsewhere", reason="answered on another device")
            return
        if sig.reason == "failed" and call.machine.can("media_failed"):
            # The peer's media failed (e.g. our certificate did not match the fingerprint
            # it was given): a failed call on both sides, whatever our DTLS thinks.
            await self._apply(call, "media_failed", reason="the peer's media failed", send=False)
            return
        why = "the caller gave up (no answer)" if sig.reason == "timeout" else "hung up"
        await self._apply(call, "remote_hangup", reason=why)
