"""Rich messaging, the I/O half (PROTOCOL.md Part VIII): the SDK calls that send.

:class:`Messaging` is a component of :class:`~xchat.client.Client` (``client.messaging``):
it builds Part VIII content (:mod:`xchat.client.rich_content`), applies it to our own
store first with the same :class:`~xchat.client.messaging.RichState` functions that
apply a peer's, and sends it — pairwise for a 1:1 chat, as one sender-key upload for a
group. Receipts and typing indicators are never worth a proof of work: they go only to
contacts whose delivery token we hold, and never to a request or a blocked contact.

A conversation is named as the CLI names it: ``to`` (``@handle`` or address) or
``group`` (group id or name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Protocol

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.devices import Devices
from xchat.client.group_book import GroupInfo
from xchat.client.groups import Groups
from xchat.client.messaging import GROUP_PREFIX, RequestInfo, RichState, group_of, row_peer
from xchat.client.profile import Profile
from xchat.client.search import SearchHit
from xchat.client.store import ContactRecord, Store
from xchat.clock import now_ms as _now
from xchat.crypto.group import GroupOp
from xchat.crypto.keys import is_address
from xchat.errors import ApiError, ClientError, NotAllowed, ServerUnreachable, XChatError

log = logging.getLogger(__name__)

#: Longest sleep of the expiry task (it also wakes for each new timer).
EXPIRY_POLL_S = 30.0


def _transient(exc: XChatError) -> bool:
    if isinstance(exc, ServerUnreachable):
        return True
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


class MessagingHost(Protocol):
    """What :class:`Messaging` uses of the client it is a component of: the
    :class:`~xchat.client.Client` satisfies it structurally. An interface rather than the
    class, because the client is assembled from this module (imports point one way,
    for the type checker too)."""

    @property
    def profile(self) -> Profile: ...
    @property
    def store(self) -> Store: ...
    @property
    def _store(self) -> Store | None: ...
    @property
    def address(self) -> str: ...
    @property
    def _groups(self) -> Groups: ...
    @property
    def _devices(self) -> Devices: ...
    def group_info(self, group: str) -> GroupInfo: ...
    def find_contact(self, to: str) -> ContactRecord | None: ...
    async def contact(self, to: str) -> ContactRecord: ...
    async def _sendable_contact(self, to: str) -> ContactRecord: ...
    def _own_sender_info(self) -> ct.SenderInfo: ...
    async def _send_content(
        self, c: ContactRecord, msg: ct.Content, *, store_as_message: bool
    ) -> None: ...
    async def _send_pending_receipts(self, address: str) -> None: ...
    async def _emit(self, event: ev.Event) -> None: ...
    def _background(self, coro: Awaitable[Any]) -> None: ...


class Messaging:
    """Part VIII operations of one client (use as ``client.messaging``)."""

    def __init__(self, client: MessagingHost) -> None:
        self.c = client
        self._state: RichState | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._running = False
        self._flush_lock = asyncio.Lock()

    # --- plumbing ---------------------------------------------------------------------

    @property
    def state(self) -> RichState:
        """The store-level rules (created with the store: after unlock/registration)."""
        store = self.c.store
        if self._state is None or self._state.store is not store:
            self._state = RichState(store, self.c.address)
            # Expired while no process ran: gone before anything reads the store (§6).
            if not store._db.in_transaction:
                self._state.expire(_now())
        return self._state

    def opened(self) -> None:
        """The client opened its profile: sweep what expired while no process ran."""
        if self.c.profile.initialised and self.c._store is not None:
            _ = self.state

    def pairwise_conv(self, sender: str, msg: ct.Content) -> str | None:
        """The conversation a pairwise Part VIII content belongs to: the sender's 1:1
        chat, or (a group receipt) a group we hold in which the sender is a member.
        None: ignore it."""
        if msg.group is None:
            return sender
        gid = msg.group.get("id")
        if not isinstance(gid, str) or self.c.store.get_group(gid) is None:
            return None
        try:
            members = {m.address for m in self.c.group_info(gid).members}
        except XChatError:
            return None
        return f"{GROUP_PREFIX}{gid}" if sender in members else None

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None

    async def _emit_all(self, events: list[Any]) -> None:
        for e in events:
            await self.c._emit(e)

    async def conv_for(self, to: str | None, group: str | None) -> tuple[str, ContactRecord | None]:
        """(conversation key, contact for a 1:1 chat)."""
        if (to is None) == (group is None):
            raise ClientError("name exactly one conversation: TO or --group NAME")
        if group is not None:
            return f"{GROUP_PREFIX}{self.c._groups.resolve(group).id}", None
        assert to is not None
        local = self.c.find_contact(to)
        if local is not None and local.identity_key is not None:
            return local.address, local
        named = self._group_named(to)
        if named is not None:
            return named, None
        contact = await self.c.contact(to)
        return contact.address, contact

    def _group_named(self, to: str) -> str | None:
        """TO that is neither an @handle nor an address but names a group we hold."""
        key = to.strip()
        if not key or key.startswith("@") or is_address(key):
            return None
        try:
            return f"{GROUP_PREFIX}{self.c._groups.resolve(key).id}"
        except ClientError:
            return None

    def local_conv(self, to: str | None, group: str | None) -> str:
        """Like :meth:`conv_for` without the network (for local reads)."""
        if (to is None) == (group is None):
            raise ClientError("name exactly one conversation: TO or --group NAME")
        if group is not None:
            return f"{GROUP_PREFIX}{self.c._groups.resolve(group).id}"
        assert to is not None
        contact = self.c.find_contact(to)
        named = self._group_named(to) if contact is None else None
        if named is not None:
            return named
        if contact is None:
            from xchat.errors import UnknownContact

            raise UnknownContact(f"no conversation with {to!r}")
        return contact.address

    async def _send(self, conv: str, contact: ContactRecord | None, msg: ct.Content) -> None:
        """Send control content (never stored as a message row)."""
        gid = group_of(conv)
        if gid is not None:
            await self.c._groups.send(gid, msg)  # not stored: a control type
            return
        assert contact is not None
        if self.state.is_blocked(contact.address):
            raise NotAllowed("this contact is blocked (xchat unblock first)")
        c = await self.c._sendable_contact(contact.address)
        if not c.token_shared:
            msg = _with_sender(msg, self.c._own_sender_info())
        await self.c._send_content(c, msg, store_as_message=False)

    # --- hooks the send and receive paths call ----------------------------------------

    async def prepare_outgoing(self, conv: str, msg: ct.Content) -> ct.Content:
        """A text/file of ours to ``conv``: refuse a blocked contact, add the quote of
        the message it replies to and the conversation's timer, record its state (the
        timer runs from now), and accept a request we answer (its owed delivery
        receipts go first)."""
        st = self.state
        if st.is_blocked(conv):
            raise NotAllowed("this contact is blocked (xchat unblock first)")
        peer = row_peer(conv, self.c.address, self.c.address)
        if self.c.store.get_message(peer, msg.id) is not None:
            return msg  # a re-send of a stored row: already prepared
        quote = st.quote_for(conv, msg.reply_to) if msg.reply_to else None
        rich = {**msg.rich, **rc.text_rich(quote=quote, timer_s=st.timer(conv))}
        out = replace(msg, rich=rich)
        was_request = st.state(conv) == "request"
        st.outgoing(peer, out, _now())
        if was_request:
            await self._send_delivery_receipts(conv)
        self._wake.set()
        return out

    async def _send_delivery_receipts(self, address: str) -> None:
        with contextlib.suppress(XChatError):
            await self.c._send_pending_receipts(address)

    async def on_event(self, e: ev.Event) -> None:
        """Listener: group notices from group changes; owed receipts after storing a
        group message and after every (re)connection (a relay outage keeps them owed)."""
        if isinstance(e, ev.GroupChanged):
            await self._group_notice(e)
        elif isinstance(e, ev.MessageReceived | rev.TimerChanged):
            self._wake.set()
        if (isinstance(e, ev.MessageReceived) and e.group is not None) or (
            isinstance(e, ev.ConnectionChanged) and e.connected and self.state.rs.owed(1)
        ):
            self.c._background(self.flush_owed())

    # --- reactions, edits, deletes (PROTOCOL Part VIII §2-§4) ---------------------------

    async def react(
        self,
        to: str | None,
        msg_id: str,
        emoji: str,
        *,
        remove: bool = False,
        group: str | None = None,
    ) -> str:
        """Set (or remove) our one reaction on message ``msg_id``."""
        conv, contact = await self.conv_for(to, group)
        st = self.state
        target = st._find_any_author(conv, msg_id)
        if target is None:
            raise ClientError(f"no message {msg_id} in this conversation")
        from xchat.client.messaging import author_of

        t = rc.Target(msg_id, author_of(target, self.c.address))
        msg = rc.reaction_content(t, emoji, remove=remove, group=group_of(conv), now_ms=_now())
        await self._send(conv, contact, msg)
        events: list[Any] = []
        st.apply(self.c.address, conv, msg, _now(), _now(), events)
        await self._emit_all(events)
        return msg.id

    async def edit(
        self, to: str | None, msg_id: str, text: str, *, group: str | None = None
    ) -> str:
        """Replace the text of our message ``msg_id`` (within 24 h; earlier versions
        are kept)."""
        conv, contact = await self.conv_for(to, group)
        st = self.state
        peer, m = st.own_message(conv, msg_id)
        row = st.rs.row(peer, msg_id)
        now = _now()
        why = rc.edit_allowed(
            editor=self.c.address,
            target_author=self.c.address,
            original_ms=row.origin_ms if row is not None else m.ts_ms,
            edit_ms=now,
        )
        if why is None and row is not None and row.deleted:
            why = "the message was deleted"
        if why is not None:
            raise NotAllowed(why)
        msg = rc.edit_content(
            rc.Target(msg_id, self.c.address), text, group=group_of(conv), now_ms=now
        )
        await self._send(conv, contact, msg)
        events: list[Any] = []
        st.apply(self.c.address, conv, msg, now, now, events)
        await self._emit_all(events)
        return msg.id

    async def delete(
        self,
        to: str | None,
        msg_id: str,
        *,
        for_everyone: bool = False,
        group: str | None = None,
    ) -> str | None:
        """Delete a message for me (any message; local only), or for everyone (ours
        only: a tombstone everywhere, attachments deleted)."""
        if not for_everyone:
            conv = self.local_conv(to, group)
            self.state.delete_for_me(conv, msg_id)
            try:  # our other devices delete it too (PROTOCOL Part VII §5)
                await self.c._devices.sync_own("delete", {"conv": conv, "id": msg_id})
            except XChatError as exc:
                log.warning("deletion not synced to our other devices: %s", exc)
            return None
        conv, contact = await self.conv_for(to, group)
        st = self.state
        st.own_message(conv, msg_id)  # ClientError unless ours
        msg = rc.delete_content(
            rc.Target(msg_id, self.c.address), group=group_of(conv), now_ms=_now()
        )
        await self._send(conv, contact, msg)
        events: list[Any] = []
        st.apply(self.c.address, conv, msg, _now(), _now(), events)
        await self._emit_all(events)
        return msg.id

    # --- disappearing messages (§6) ---------------------------------------------------

    async def set_timer(
        self, to: str | None, seconds: int | None, *, group: str | None = None
    ) -> str:
        """Set the conversation's timer (5 s .. 4 weeks; None = off), announced to it."""
        rc.check_timer(seconds)
        conv, contact = await self.conv_for(to, group)
        now = _now()
        msg = rc.disappear_content(seconds, group=group_of(conv), now_ms=now)
        await self._send(conv, contact, msg)
        events: list[Any] = []
        if self.state.state(conv) is None and group is None:
            self.state.rs.set_state(conv, "accepted", now)
        self.state.set_timer(conv, seconds, self.c.address, now, now, events)
        await self._emit_all(events)
        return msg.id

    def timer(self, to: str | None, group: str | None = None) -> int | None:
        return self.state.timer(self.local_conv(to, group))

    async def expire_now(self) -> list[rev.MessagesExpired]:
        """Delete what is due now and emit :class:`MessagesExpired`."""
        gone = self.state.expire(_now())
        await self._emit_all(list(gone))
        return gone

    def start(self) -> None:
        """Run the expiry task (``Client.start`` calls this)."""
        if self._expiry_task is None or self._expiry_task.done():
            self._running = True
            self._expiry_task = asyncio.create_task(self._expiry_loop())

    async def stop(self) -> None:
        self._running = False
        task, self._expiry_task = self._expiry_task, None
        if task is not None:
            self._wake.set()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _expiry_loop(self) -> None:
        # A flag as well as the cancel: a wake-up racing the cancel must not keep it alive.
        while self._running:
            try:
                await self.expire_now()
            except XChatError as exc:
                log.warning("expiry sweep failed: %s", exc)
            nxt = self.state.next_expiry()
            delay = EXPIRY_POLL_S if nxt is None else (nxt - _now()) / 1000
            self._wake.clear()
            try:
                async with asyncio.timeout(max(0.01, min(delay, EXPIRY_POLL_S))):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # --- receipts and typing (§5) -----------------------------------------------------

    async def mark_read(self, to: str | None, group: str | None = None) -> list[str]:
        """Mark the conversation read: timers of its messages start, read receipts go
        out (if enabled and the conversation is accepted)."""
        conv = self.local_conv(to, group)
        with self.c.store.transaction():
            ids = self.state.mark_read(conv, _now())
        self._wake.set()
        await self.flush_owed()
        msgs = self.state.rs.conversation_messages(conv)
        if msgs:  # the same read position on our other devices (PROTOCOL Part VII §5)
            await self.c._devices.sync_read(conv, max(m.ts_ms for m in msgs))
        return ids

    async def flush_owed(self) -> None:
        """Send the read receipts and group delivery receipts still owed (persisted in
        ``rich_outbox`` until the relay took them)."""
        async with self._flush_lock:
            st = self.state
            for recipient, conv, kind, ids in st.rs.owed():
                if not await self._send_receipt(recipient, conv, kind, ids):
                    return

    async def _send_receipt(self, recipient: str, conv: str, kind: str, ids: list[str]) -> bool:
        st = self.state
        c = self.c.store.get_contact(recipient)
        ok = (
            c is not None
            and c.identity_key is not None
            and c.delivery_token is not None  # never a proof of work for a receipt
            and not (c.verified and c.identity_changed)
            and not st.is_blocked(recipient)
            and st.accepted(conv)
            and (kind != "read" or st.setting("read-receipts"))
            and recipient != self.c.address
        )
        if not ok:
            st.rs.paid(recipient, conv, kind, ids)
            return True
        assert c is not None
        sender = None if c.token_shared else self.c._own_sender_info()
        r = rc.receipt_content(ids, kind, group=group_of(conv), now_ms=_now(), sender=sender)
        try:
            await self.c._send_content(c, r, store_as_message=False)
        except XChatError as exc:
            if _transient(exc):
                return False
            log.info("dropping %d %s receipts: %s", len(ids), kind, exc)
        st.rs.paid(recipient, conv, kind, ids)
        return True

    async def typing(
        self, to: str | None, started: bool = True, *, group: str | None = None
    ) -> bool:
        """Tell the conversation we are (not) typing; False when not sent (typing
        indicators off, a request, a blocked contact, or no delivery token)."""
        st = self.state
        if not st.setting("typing"):
            return False
        conv, contact = await self.conv_for(to, group)
        if not st.accepted(conv):
            return False
        if contact is not None and contact.delivery_token is None:
            return False
        msg = rc.typing_content(started, group=group_of(conv), now_ms=_now())
        try:
            await self._send(conv, contact, msg)
        except XChatError as exc:
            log.info("typing indicator not sent: %s", exc)
            return False
        return True

    async def set_setting(self, name: str, on: bool) -> bool:
        """Switch a setting (``read-receipts``, ``typing``) here and on our other devices
        (sync kind ``settings``, PROTOCOL Part VII §5); True if another device was told.
        A failed sync is logged: the change stands here, the next one carries it."""
        with self.c.store.transaction():
            self.state.set_setting(name, on)
        return await self.c._devices.sync_settings(self.state.settings_state())

    def setting(self, name: str) -> bool:
        return self.state.setting(name)

    # --- requests and blocking (§7) ---------------------------------------------------

    def requests(self) -> list[RequestInfo]:
        return self.state.requests()

    async def accept(self, to: str) -> str:
        """Accept a message request (or pre-accept an address): receipts go out now."""
        contact = self.c.find_contact(to)
        address = contact.address if contact is not None else (await self.c.contact(to)).address
        self.state.accept(address, _now())
        await self._send_delivery_receipts(address)
        await self.flush_owed()
        await self.c._devices.sync_conversation(address, "accept")  # Part VII §5
        return address

    async def block(self, to: str | None, group: str | None = None) -> str:
        if group is not None:
            conv = self.local_conv(None, group)
        else:
            assert to is not None
            contact = self.c.find_contact(to)
            conv = contact.address if contact is not None else (await self.c.contact(to)).address
        self.state.block(conv, _now())
        await self.c._devices.sync_conversation(conv, "block")  # Part VII §5
        return conv

    async def unblock(self, to: str | None, group: str | None = None) -> str:
        conv = self.local_conv(to, group)
        self.state.unblock(conv, _now())
        await self.c._devices.sync_conversation(conv, "unblock")
        return conv

    def delete_request(self, to: str) -> int:
        """Delete a request here only (:meth:`decline` also tells our other devices)."""
        return self.state.delete_request(self.local_conv(to, None))

    async def decline(self, to: str) -> int:
        """Delete a message request, on our other devices too (Part VII §5)."""
        conv = self.local_conv(to, None)
        n = self.state.delete_request(conv)
        await self.c._devices.sync_conversation(conv, "delete_request")
        return n

    # --- groups (§10) -----------------------------------------------------------------

    async def leave_group(self, group: str) -> None:
        """Leave: a signed self-removal to every member; they rotate their sender keys
        (PROTOCOL Part V §6) and show "@me left"."""
        info = self.c.group_info(group)
        if info.left:
            raise ClientError("you are no longer a member of this group")
        await self.c._groups.change(info.id, [GroupOp.remove(self.c.address)])
        conv = f"{GROUP_PREFIX}{info.id}"
        text = "you left the group"
        body = {
            "type": "group_notice",
            "kind": "left",
            "by": self.c.address,
            "targets": [],
            "text": text,
        }
        self.state.add_notice(conv, _now(), body)
        await self.c._emit(rev.GroupNotice(info.id, "left", None, (), info.name, text, _now()))

    async def _group_notice(self, e: ev.GroupChanged) -> None:
        name_key = f"rich.group_name.{e.group_id}"
        old = self.c.store.get_meta(name_key)
        self.c.store.put_meta(name_key, e.name.encode())
        by = self._who(e.by) if e.by else "you"
        notices: list[tuple[str, tuple[str, ...], str]] = []
        if old is None and not e.removed and not e.left:
            notices.append(("joined", (), f"{by} added you to {e.name}"))
        else:
            if e.added:
                notices.append(("added", e.added, f"{by} added " + self._names(e.added)))
            removed = tuple(a for a in e.removed if a != e.by)
            if e.by in e.removed:
                notices.append(("left", (e.by,) if e.by else (), f"{by} left"))
            if removed:
                notices.append(("removed", removed, f"{by} removed " + self._names(removed)))
            if e.left and e.by not in e.removed:
                notices.append(("removed", (self.c.address,), f"{by} removed you"))
            if old is not None and old.decode() != e.name:
                notices.append(("renamed", (), f"{by} renamed the group to {e.name}"))
        conv = f"{GROUP_PREFIX}{e.group_id}"
        for kind, targets, text in notices:
            body = {
                "type": "group_notice",
                "kind": kind,
                "by": e.by,
                "targets": list(targets),
                "text": text,
            }
            self.state.add_notice(conv, _now(), body)
            await self.c._emit(
                rev.GroupNotice(e.group_id, kind, e.by, targets, e.name, text, _now())
            )

    def _who(self, address: str) -> str:
        c = self.c.store.get_contact(address)
        return f"@{c.handle}" if c is not None and c.handle else address[:12] + "…"

    def _names(self, addresses: tuple[str, ...]) -> str:
        return ", ".join("you" if a == self.c.address else self._who(a) for a in addresses)

    # --- reading ----------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        to: str | None = None,
        group: str | None = None,
        person: str | None = None,
        limit: int = 50,
    ) -> list[SearchHit]:
        """Messages whose current text matches every word of ``query`` (prefixes),
        newest first; optionally in one conversation and/or by one person."""
        conv = self.local_conv(to, group) if (to is not None or group is not None) else None
        author = None
        if person is not None:
            contact = self.c.find_contact(person)
            if contact is None and person.strip().lower() not in ("me", "@me"):
                from xchat.errors import UnknownContact

                raise UnknownContact(f"unknown person {person!r}")
            author = contact.address if contact is not None else self.c.address
        return self.state.search(query, conv=conv, author=author, limit=limit)

    def record_file(self, peer: str, msg_id: str, path: str) -> None:
        self.state.record_file(peer, msg_id, path)


def _with_sender(msg: ct.Content, sender: ct.SenderInfo) -> ct.Content:
    return replace(msg, sender=sender)
