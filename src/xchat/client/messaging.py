"""Rich-messaging state rules of one device (PROTOCOL.md Part VIII).

The pure shapes and rules are in :mod:`xchat.client.rich_content`, the tables in
:mod:`xchat.client.rich_store`; this module applies them to the local store. Every
state change is a plain synchronous function over the store (no network), so the
receive path calls them inside its store transaction and the device-sync code can call
the same functions for changes made on our other devices:

* :meth:`RichState.apply` — an incoming (or own-device) reaction, edit, delete,
  disappear timer, typing indicator, read receipt or group receipt;
* :meth:`RichState.message_stored` — a text/file was stored (quote check, timer,
  message request, search index);
* :meth:`RichState.mark_read`, :meth:`RichState.delete_for_me`,
  :meth:`RichState.expire` — local actions.

Sending is in :mod:`xchat.client.rich_send`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from dataclasses import dataclass, replace
from typing import Any

from xchat.client import content as ct
from xchat.client import rich_content as rc
from xchat.client import rich_events as rev
from xchat.client.rich_store import RichRow, RichStore
from xchat.client.search import SearchHit, SearchIndex
from xchat.client.store import MessageRecord, Store
from xchat.clock import now_ms
from xchat.errors import ClientError, DecodeError, NotAllowed, XChatError

log = logging.getLogger(__name__)

GROUP_PREFIX = "group:"
#: Settings (sealed in ``meta``), both on by default as in Signal. They are the account's:
#: each is a last-writer-wins value synced to our other devices (PROTOCOL Part VII §5).
SETTINGS = {"read-receipts": "rich.read_receipts", "typing": "rich.typing"}
#: the field of each setting in a ``settings`` sync object and the history archive
SYNC_FIELDS = {"read-receipts": "read_receipts", "typing": "typing"}


def conv_of_peer(peer: str) -> str:
    """``messages.peer`` -> conversation key (``group:<gid>:<author>`` -> ``group:<gid>``)."""
    if peer.startswith(GROUP_PREFIX):
        gid = peer[len(GROUP_PREFIX) :].partition(":")[0]
        return f"{GROUP_PREFIX}{gid}"
    return peer


def group_of(conv: str) -> str | None:
    return conv[len(GROUP_PREFIX) :] if conv.startswith(GROUP_PREFIX) else None


def row_peer(conv: str, author: str, me: str) -> str:
    """The ``messages.peer`` of the message by ``author`` in ``conv``."""
    return f"{conv}:{author}" if conv.startswith(GROUP_PREFIX) else conv


def author_of(m: MessageRecord, me: str) -> str:
    if m.direction == "out":
        return me
    return m.peer.rsplit(":", 1)[-1] if m.peer.startswith(GROUP_PREFIX) else m.peer


@dataclass(frozen=True)
class RequestInfo:
    address: str
    handle: str | None
    messages: int
    last_text: str | None
    last_ts: int


class RichState:
    """Part VIII state of one profile: apply changes, answer questions about messages."""

    def __init__(self, store: Store, me: str) -> None:
        self.store = store
        self.rs = RichStore(store)
        self.me = me
        self.index = SearchIndex()

    def close(self) -> None:
        self.index.close()

    # --- settings ------------------------------------------------------------------------

    def setting(self, name: str) -> bool:
        raw = self.store.get_meta(SETTINGS[name])
        return raw != b"0"

    def setting_ts(self, name: str) -> int:
        """When the setting last changed (ms, the changing device's clock; 0: never)."""
        raw = self.store.get_meta(f"{SETTINGS[name]}.ts")
        return struct.unpack(">Q", raw)[0] if raw is not None and len(raw) == 8 else 0

    def _put_setting(self, name: str, on: bool, ts_ms: int) -> None:
        self.store.put_meta(SETTINGS[name], b"1" if on else b"0")
        self.store.put_meta(f"{SETTINGS[name]}.ts", struct.pack(">Q", ts_ms))

    def set_setting(self, name: str, on: bool, changed_ms: int | None = None) -> int:
        """The user switched ``name`` here; returns the change's timestamp, later than
        any this device has seen for it (so the change wins here whatever the clocks)."""
        if name not in SETTINGS:
            raise ClientError(f"unknown setting {name!r} (read-receipts, typing)")
        ts = max(now_ms() if changed_ms is None else changed_ms, self.setting_ts(name) + 1)
        self._put_setting(name, on, ts)
        return ts

    def settings_state(self) -> dict[str, dict[str, Any]]:
        """Every setting with its timestamp: the fields of a ``settings`` sync object."""
        return {
            field: {"on": self.setting(name), "ts": self.setting_ts(name)}
            for name, field in SYNC_FIELDS.items()
        }

    def settings_synced(self, fields: dict[str, Any]) -> bool:
        """Adopt the settings one of our devices sent (sync or history archive): per
        setting, the later timestamp wins, a tie goes to "off" (so every device ends on
        the same value). A malformed field refuses the whole object (DecodeError)."""
        wanted = []
        for name, field in SYNC_FIELDS.items():
            value = fields.get(field)
            if value is None:
                continue
            on = value.get("on") if isinstance(value, dict) else None
            ts = value.get("ts") if isinstance(value, dict) else None
            if not isinstance(on, bool) or not isinstance(ts, int) or isinstance(ts, bool):
                raise DecodeError(f"settings {field}: not {{on: bool, ts: int}}")
            if ts < 0 or ts >= 1 << 64:
                raise DecodeError(f"settings {field}: ts out of range")
            wanted.append((name, on, ts))
        changed = False
        for name, on, ts in wanted:
            mine_ts, mine = self.setting_ts(name), self.setting(name)
            if ts > mine_ts or (ts == mine_ts and mine and not on):
                self._put_setting(name, on, ts)
                changed = changed or on != mine
        return changed

    # --- conversation state (PROTOCOL Part VIII §7) --------------------------------------

    def state(self, conv: str) -> str | None:
        row = self.rs.conversation(conv)
        if row is not None:
            return row.state
        if not conv.startswith(GROUP_PREFIX) and self._wrote_to(conv):
            # We wrote to them (history restored from a backup or a linked device's
            # archive carries no state rows): a contact, not a stranger (§7).
            self.rs.set_state(conv, "accepted", 0)
            return "accepted"
        return None

    def _wrote_to(self, address: str) -> bool:
        return (
            self.rs.db.execute(
                "SELECT 1 FROM messages WHERE peer = ? AND direction = 'out' LIMIT 1", (address,)
            ).fetchone()
            is not None
        )

    def is_blocked(self, address: str) -> bool:
        return self.state(address) == "blocked"

    def accepted(self, conv: str) -> bool:
        """Groups are conversations we were added to by a member: accepted unless the
        group itself was blocked."""
        state = self.state(conv)
        if conv.startswith(GROUP_PREFIX):
            return state != "blocked"
        return state == "accepted"

    def timer(self, conv: str) -> int | None:
        row = self.rs.conversation(conv)
        return None if row is None else row.timer_s

    def accept(self, address: str, now_ms: int) -> list[str]:
        """Move a request (or a stranger) to the inbox; returns the ids of its messages
        that are now owed a delivery receipt (queued in ``pending_receipts``)."""
        was = self.state(address)
        self.rs.set_state(address, "accepted", now_ms)
        if was in ("accepted", "blocked"):
            return []
        owed = []
        for m in self.rs.conversation_messages(address, direction="in"):
            self.store.add_pending_receipt(address, m.id, now_ms)
            owed.append(m.id)
        return owed

    def block(self, conv: str, now_ms: int) -> None:
        """Drop everything from ``conv`` from now on and owe it nothing."""
        self.rs.set_state(conv, "blocked", now_ms)
        if not conv.startswith(GROUP_PREFIX):
            self.rs.forget_owed_to(conv)

    def unblock(self, conv: str, now_ms: int) -> None:
        if self.state(conv) == "blocked":
            self.rs.set_state(conv, "accepted", now_ms)

    def delete_request(self, address: str) -> int:
        """Delete a request conversation entirely (a later message is a new request)."""
        if self.state(address) != "request":
            raise ClientError("there is no message request from this address")
        gone = self._drop(address)
        self.rs.forget_conversation(address)
        self.store.delete_pending_receipts(address)
        return gone

    def requests(self) -> list[RequestInfo]:
        out = []
        for conv in self.rs.conversations_in("request"):
            msgs = self.rs.conversation_messages(conv)
            c = self.store.get_contact(conv)
            last = msgs[-1] if msgs else None
            out.append(
                RequestInfo(
                    conv,
                    c.handle if c is not None else None,
                    len(msgs),
                    _text_of(last) if last else None,
                    last.ts_ms if last else 0,
                )
            )
        return out

    # --- incoming: admission and stored messages -----------------------------------------

    def admit(self, sender: str, conv: str | None = None) -> bool:
        """False: drop this content silently (the sender, or the group, is blocked)."""
        if self.is_blocked(sender):
            return False
        return not (conv is not None and self.state(conv) == "blocked")

    def message_stored(
        self,
        peer: str,
        sender: str,
        msg: ct.Content,
        origin_ms: int,
        now_ms: int,
        events: list[Any],
    ) -> bool:
        """A text/file from ``sender`` was stored at ``peer``: check its quote, note its
        timer, file a stranger's first message under Requests. True if a delivery
        receipt may go back (PROTOCOL Part VIII §7: nothing goes back to a request)."""
        conv = conv_of_peer(peer)
        quote = rc.parse_quote(msg)
        status = self._quote_status(conv, msg.reply_to, quote) if quote else None
        timer = rc.message_timer(msg)
        self.rs.put_row(
            RichRow(peer, msg.id, conv, sender, origin_ms, timer, None, None, 0, False, status)
        )
        self._index_add(peer, msg.id, conv, sender, msg.ts, msg.text)
        if conv.startswith(GROUP_PREFIX):
            if self.accepted(conv):
                self.rs.owe(sender, conv, "delivered", msg.id, now_ms)
                return True
            return False
        state = self.state(conv)
        if state is None:
            self.rs.set_state(conv, "request", now_ms)
            events.append(rev.MessageRequest(conv, msg.id))
            return False
        return state == "accepted"

    def _quote_status(self, conv: str, reply_to: str | None, quote: rc.Quote) -> str | None:
        target = self._find(conv, reply_to, quote.author) if reply_to else None
        if target is None and reply_to is not None:
            target = self._find_any_author(conv, reply_to)
        if target is None:
            return rc.quote_status(quote, author=None, texts=[])
        author = author_of(target, self.me)
        return rc.quote_status(quote, author=author, texts=self._texts(target))

    def _texts(self, m: MessageRecord) -> list[str]:
        texts = [t for _, _, t in self.rs.versions(m.peer, m.id)]
        current = _text_of(m)
        return texts + ([current] if current else [])

    def _find(self, conv: str, msg_id: str, author: str) -> MessageRecord | None:
        m = self.rs.message(row_peer(conv, author, self.me), msg_id)
        if m is None or author_of(m, self.me) != author:
            return None
        return m

    def _find_any_author(self, conv: str, msg_id: str) -> MessageRecord | None:
        if not conv.startswith(GROUP_PREFIX):
            return self.rs.message(conv, msg_id)
        for m in self.rs.conversation_messages(conv):
            if m.id == msg_id:
                return m
        return None

    def outgoing(self, peer: str, msg: ct.Content, now_ms: int) -> None:
        """Our own text/file is about to be sent at ``peer``: its timer starts now."""
        conv = conv_of_peer(peer)
        timer = rc.message_timer(msg)
        expires = now_ms + timer * 1000 if timer else None
        quote = "ok" if "quote" in msg.rich else None
        self.rs.put_row(
            RichRow(peer, msg.id, conv, self.me, now_ms, timer, expires, now_ms, 0, False, quote)
        )
        if not conv.startswith(GROUP_PREFIX) and self.state(conv) in (None, "request"):
            self.accept(conv, now_ms)
        self._index_add(peer, msg.id, conv, self.me, msg.ts, msg.text)

    def quote_for(self, conv: str, reply_to: str) -> rc.Quote:
        """The quote our reply carries: author and text of OUR copy of the target."""
        m = self._find_any_author(conv, reply_to)
        if m is None:
            raise ClientError(f"no message {reply_to} in this conversation to reply to")
        return rc.Quote(author_of(m, self.me), _text_of(m) or "")

    # --- incoming: Part VIII content ------------------------------------------------------

    @staticmethod
    def handles(msg: ct.Content) -> bool:
        """Content this module applies (the rest is Part IV/V/IX business)."""
        if msg.type in ct.RICH_TYPES:
            return True
        return msg.type == "receipt" and ("receipt" in msg.rich or msg.group is not None)

    def apply(
        self,
        sender: str,
        conv: str,
        msg: ct.Content,
        origin_ms: int,
        now_ms: int,
        events: list[Any],
    ) -> None:
        """Apply one Part VIII content from ``sender`` (possibly ourselves, from another
        device) in ``conv``. Refusals become :class:`RichRejected` events; nothing
        raises except store errors."""
        group = group_of(conv)
        try:
            if msg.type == "reaction":
                self._apply_reaction(sender, conv, rc.parse_reaction(msg), msg.ts, events)
            elif msg.type == "edit":
                e = rc.parse_edit(msg)
                self._apply_edit(sender, conv, e, origin_ms, msg.ts, events)
            elif msg.type == "delete":
                self._apply_delete(sender, conv, rc.parse_delete(msg).target, msg.ts, events)
            elif msg.type == "typing":
                if self.accepted(conv) and self.setting("typing") and sender != self.me:
                    started = rc.parse_typing(msg).started
                    events.append(rev.TypingChanged(conv, group, sender, started, msg.ts))
            elif msg.type == "disappear":
                seconds = rc.parse_disappear(msg).seconds
                self.set_timer(conv, seconds, sender, msg.ts, now_ms, events)
            elif msg.type == "receipt":
                self._apply_receipt(sender, conv, msg, now_ms, events)
        except DecodeError as exc:
            events.append(rev.RichRejected(conv, sender, msg.type, None, str(exc)))

    def _target_row(self, conv: str, target: rc.Target) -> tuple[str, MessageRecord] | None:
        peer = row_peer(conv, target.author, self.me)
        m = self.rs.message(peer, target.id)
        if m is None or author_of(m, self.me) != target.author:
            return None
        return peer, m

    def _apply_reaction(
        self, sender: str, conv: str, r: rc.Reaction, ts: int, events: list[Any]
    ) -> None:
        found = self._target_row(conv, r.target)
        if found is None:
            return  # expired, deleted for me, or never had it: nothing to decorate
        peer, _ = found
        row = self.rs.row(peer, r.target.id)
        if row is not None and row.deleted:
            return
        emoji = None if r.remove else r.emoji
        if self.rs.set_reaction(peer, r.target.id, sender, emoji, ts):
            events.append(
                rev.ReactionChanged(
                    conv, group_of(conv), sender, r.target.id, r.target.author, emoji, ts
                )
            )

    def _reject(
        self, events: list[Any], conv: str, sender: str, kind: str, tid: str, why: str
    ) -> None:
        log.info("refused %s of %s by %s: %s", kind, tid, sender, why)
        events.append(rev.RichRejected(conv, sender, kind, tid, why))

    def _apply_edit(
        self, sender: str, conv: str, e: rc.Edit, origin_ms: int, ts: int, events: list[Any]
    ) -> None:
        found = self._target_row(conv, e.target)
        if found is None:
            if e.target.author != sender:
                self._reject(events, conv, sender, "edit", e.target.id, "only the author may edit")
            return
        peer, m = found
        row = self.rs.row(peer, m.id)
        original_ms = row.origin_ms if row is not None else m.ts_ms
        why = rc.edit_allowed(
            editor=sender,
            target_author=e.target.author,
            original_ms=original_ms,
            edit_ms=origin_ms,
        )
        if why is None and row is not None and row.deleted:
            why = "the message was deleted"
        if why is None and row is not None and row.edited >= rc.MAX_EDITS:
            why = f"at most {rc.MAX_EDITS} edits per message"
        if why is not None:
            self._reject(events, conv, sender, "edit", m.id, why)
            return
        body = ct.Content.decode(m.body)
        if body.text == e.text:
            return  # a re-sent edit: nothing new
        version = (row.edited if row is not None else 0) + 1
        if version == 1:
            self.rs.add_version(peer, m.id, 0, body.ts, body.text or "")
        self.rs.add_version(peer, m.id, version, ts, e.text)
        self.rs.replace_body(peer, m.id, replace(body, text=e.text).encode())
        if row is None:
            row = RichRow(peer, m.id, conv, sender, m.ts_ms, None, None, None, 0, False, None)
        self.rs.put_row(replace(row, edited=version))
        self._index_add(peer, m.id, conv, sender, body.ts, e.text)
        events.append(rev.MessageEdited(conv, group_of(conv), sender, m.id, e.text, version, ts))

    def _apply_delete(
        self, sender: str, conv: str, target: rc.Target, ts: int, events: list[Any]
    ) -> None:
        found = self._target_row(conv, target)
        if found is None or target.author != sender:
            if target.author != sender:
                self._reject(
                    events,
                    conv,
                    sender,
                    "delete",
                    target.id,
                    "only the author may delete for everyone",
                )
            return
        peer, m = found
        row = self.rs.row(peer, m.id)
        if row is not None and row.deleted:
            return
        body = ct.Content.decode(m.body)
        tomb = ct.Content(id=body.id, type=body.type, ts=body.ts, group=body.group)
        self.rs.replace_body(peer, m.id, tomb.encode())
        self.rs.drop_versions(peer, m.id)
        self.rs.drop_reactions(peer, m.id)
        self._unlink_files(peer, m.id)
        if row is None:
            row = RichRow(peer, m.id, conv, sender, m.ts_ms, None, None, None, 0, False, None)
        self.rs.put_row(replace(row, deleted=True, edited=0))
        self.index.remove(peer, m.id)
        events.append(rev.MessageDeleted(conv, group_of(conv), sender, m.id, ts))

    def _apply_receipt(
        self, sender: str, conv: str, msg: ct.Content, now_ms: int, events: list[Any]
    ) -> None:
        kind = rc.receipt_kind(msg)
        if kind == "read" and not self.setting("read-receipts"):
            return  # we do not send read receipts, so we do not see them either (§5)
        peer = row_peer(conv, self.me, self.me)
        ids = tuple(
            i for i in msg.receipt_for if self.rs.add_receipt(peer, i, sender, kind, msg.ts)
        )
        if kind == "delivered" and not conv.startswith(GROUP_PREFIX):
            for i in ids:
                self.store.set_message_status(peer, i, "delivered")
        if ids:
            events.append(rev.RichReceipt(conv, group_of(conv), sender, kind, ids, msg.ts))

    # --- disappearing messages (PROTOCOL Part VIII §6) ------------------------------------

    def set_timer(
        self,
        conv: str,
        seconds: int | None,
        by: str,
        ts: int,
        now_ms: int,
        events: list[Any],
    ) -> bool:
        rc.check_timer(seconds)
        row = self.rs.conversation(conv)
        if row is None and not conv.startswith(GROUP_PREFIX) and by != self.me:
            self.rs.set_state(conv, "request", now_ms)
        if not self.rs.set_timer(conv, seconds, ts, now_ms):
            return False
        if row is not None and row.timer_s == seconds:
            return True
        text = (
            f"disappearing messages {'set to ' + rc.format_duration(seconds) if seconds else 'off'}"
        )
        self.rs.add_notice(
            conv,
            ct.new_message_id(),
            ts,
            {"type": "disappear", "by": by, "seconds": seconds, "text": text},
        )
        events.append(rev.TimerChanged(conv, group_of(conv), by, seconds, ts))
        return True

    def mark_read(self, conv: str, now_ms: int) -> list[str]:
        """Mark every unread incoming message of ``conv`` read; their timers start now.
        Read receipts (if on, and the conversation is accepted) are queued per author
        in ``rich_outbox``. Returns the ids marked."""
        done = []
        send = self.setting("read-receipts") and self.accepted(conv)
        for m in self.rs.conversation_messages(conv, direction="in"):
            row = self.rs.row(m.peer, m.id)
            author = author_of(m, self.me)
            if row is None:
                row = RichRow(m.peer, m.id, conv, author, m.ts_ms, None, None, None, 0, False, None)
            if row.read_ms is not None:
                continue
            expires = now_ms + row.timer_s * 1000 if row.timer_s else None
            self.rs.put_row(replace(row, read_ms=now_ms, expires_at=expires))
            if send and not row.deleted:
                self.rs.owe(author, conv, "read", m.id, now_ms)
            done.append(m.id)
        return done

    def expire(self, now_ms: int) -> list[rev.MessagesExpired]:
        """Delete every message whose timer ran out — rows, versions, reactions,
        receipts, saved attachment files, search entries — and checkpoint the WAL."""
        by_conv: dict[str, list[str]] = {}
        due = self.rs.due(now_ms)
        if not due:
            return []
        with self.store.transaction():
            for peer, msg_id, conv in due:
                self._unlink_files(peer, msg_id)
                self.rs.delete_message(peer, msg_id)
                self.index.remove(peer, msg_id)
                by_conv.setdefault(conv, []).append(msg_id)
        self.rs.checkpoint()
        return [rev.MessagesExpired(conv, tuple(ids)) for conv, ids in by_conv.items()]

    def next_expiry(self) -> int | None:
        return self.rs.next_expiry()

    # --- local deletion -------------------------------------------------------------------

    def delete_for_me(self, conv: str, msg_id: str) -> None:
        """Remove one message from this device only (rows and attachment files)."""
        m = self._find_any_author(conv, msg_id)
        if m is None:
            raise ClientError(f"no message {msg_id} in this conversation")
        with self.store.transaction():
            self._unlink_files(m.peer, m.id)
            self.rs.delete_message(m.peer, m.id)
        self.index.remove(m.peer, m.id)
        self.rs.checkpoint()

    def delete_synced(self, conv: str, msg_id: str) -> bool:
        """Our other device deleted this message for itself (PROTOCOL Part VII §5, sync
        kind ``delete``): delete it here too, inside the caller's transaction (the receive
        path's). False if it is not here (already deleted: a redelivery)."""
        m = self._find_any_author(conv, msg_id)
        if m is None:
            return False
        self._unlink_files(m.peer, m.id)
        self.rs.delete_message(m.peer, m.id)
        self.index.remove(m.peer, m.id)
        return True

    def _drop(self, conv: str) -> int:
        with self.store.transaction():
            msgs = self.rs.conversation_messages(conv)
            for m in msgs:
                self._unlink_files(m.peer, m.id)
                self.index.remove(m.peer, m.id)
            gone = self.rs.drop_conversation(conv)
        self.rs.checkpoint()
        return len(gone)

    def record_file(self, peer: str, msg_id: str, path: str) -> None:
        """A received (or sent) attachment was saved at ``path``: deleted with the message."""
        self.rs.put_file(peer, msg_id, path)

    def _unlink_files(self, peer: str, msg_id: str) -> None:
        for path in self.rs.files(peer, msg_id):
            with contextlib.suppress(OSError):
                os.unlink(path)

    # --- changes made on our other devices (PROTOCOL Part VII §5) ---------------------------

    def read_synced(self, conv: str, up_to_ms: int, now_ms: int) -> list[str]:
        """Our other device read ``conv`` up to ``up_to_ms`` (sync kind ``read``): the same
        incoming messages are read here and their timers start now; no receipt goes out
        from here (the reading device sent them). Inside the caller's transaction."""
        done = []
        for m in self.rs.conversation_messages(conv, direction="in"):
            row = self.rs.row(m.peer, m.id)
            if m.ts_ms > up_to_ms or (row is not None and row.read_ms is not None):
                continue
            if row is None:
                author = author_of(m, self.me)
                row = RichRow(m.peer, m.id, conv, author, m.ts_ms, None, None, None, 0, False, None)
            expires = now_ms + row.timer_s * 1000 if row.timer_s else None
            self.rs.put_row(replace(row, read_ms=now_ms, expires_at=expires))
            done.append(m.id)
        return done

    def conversation_synced(self, conv: str, action: str, now_ms: int) -> bool:
        """Our other device accepted a request, blocked, unblocked, or deleted a request
        (sync kind ``conversation``): the same here, inside the caller's transaction, with
        no receipt from here. False if nothing changed (a redelivery, or this device
        already differs: an accepted conversation is not deleted as a request)."""
        state = self.state(conv)
        if action == "accept" and state != "accepted" and not conv.startswith(GROUP_PREFIX):
            self.rs.set_state(conv, "accepted", now_ms)
        elif action == "block" and state != "blocked":
            self.block(conv, now_ms)
        elif action == "unblock" and state == "blocked":
            self.unblock(conv, now_ms)
        elif action == "delete_request" and state == "request":
            for m in self.rs.conversation_messages(conv):
                self._unlink_files(m.peer, m.id)
                self.index.remove(m.peer, m.id)
            self.rs.drop_conversation(conv)
            self.rs.forget_conversation(conv)
            self.store.delete_pending_receipts(conv)
        else:
            return False
        return True

    # --- reading state back ---------------------------------------------------------------

    def own_message(self, conv: str, msg_id: str) -> tuple[str, MessageRecord]:
        """Our message ``msg_id`` in ``conv``, or ClientError (not found / not ours)."""
        peer = row_peer(conv, self.me, self.me)
        m = self.rs.message(peer, msg_id)
        if m is None or m.direction != "out":
            other = self._find_any_author(conv, msg_id)
            if other is not None:
                raise NotAllowed("only the author may edit or delete a message for everyone")
            raise ClientError(f"no message {msg_id} in this conversation")
        return peer, m

    def describe(self, m: MessageRecord, *, members: int | None = None) -> dict[str, Any]:
        """The Part VIII fields of one stored message (the ``--json`` keys)."""
        row = self.rs.row(m.peer, m.id)
        try:
            body: ct.Content | None = ct.Content.decode(m.body)
        except XChatError:
            body = None
        reactions: dict[str, list[str]] = {}
        for reactor, emoji in self.rs.reactions(m.peer, m.id):
            reactions.setdefault(emoji, []).append(reactor)
        quote = self._describe_quote(m.peer, body, row) if body is not None else None
        out: dict[str, Any] = {
            "quote": quote,
            "edited": bool(row and row.edited),
            "deleted": bool(row and row.deleted),
            "reactions": [{"emoji": e, "count": len(by), "by": by} for e, by in reactions.items()],
            "expires_at": row.expires_at if row is not None else None,
            "timer": row.timer_s if row is not None else None,
        }
        if m.direction == "in":
            out["read"] = bool(row and row.read_ms)
        else:
            receipts = self.rs.receipts(m.peer, m.id)
            read = sum(1 for _, _, r in receipts if r)
            delivered = sum(1 for _, d, _ in receipts if d)
            if m.peer.startswith(GROUP_PREFIX):
                n = members if members is not None else len(receipts)
                out["receipts"] = {"delivered": delivered, "read": read, "members": n}
                out["read"] = n > 0 and read >= n
            else:
                out["read"] = read > 0
        return out

    def _describe_quote(
        self, peer: str, body: ct.Content, row: RichRow | None
    ) -> dict[str, Any] | None:
        """What a reply shows: OUR copy of the message it names, and whether the quote
        it carries matches (``ok``), does not (``forged``: sticky once found at arrival),
        or cannot be checked (``missing``; ``deleted``)."""
        if body.reply_to is None:
            return None
        q = rc.parse_quote(body)
        target = self._find_any_author(conv_of_peer(peer), body.reply_to)
        trow = self.rs.row(target.peer, target.id) if target is not None else None
        if row is not None and row.quote == "forged":
            status = "forged"
        elif target is None:
            status = "missing"
        elif trow is not None and trow.deleted:
            status = "deleted"
        elif q is None:
            status = "ok"
        else:
            status = (
                rc.quote_status(q, author=author_of(target, self.me), texts=self._texts(target))
                or "ok"
            )
        out: dict[str, Any] = {"id": body.reply_to, "status": status}
        if target is not None:
            out["author"], out["text"] = author_of(target, self.me), _text_of(target)
        elif q is not None:
            out["author"], out["text"] = q.author, q.text
        else:
            out["author"], out["text"] = None, None
        if status == "forged" and q is not None:
            out["claimed"] = {"author": q.author, "text": q.text}
        return out

    def versions(self, conv: str, msg_id: str) -> list[dict[str, Any]]:
        m = self._find_any_author(conv, msg_id)
        if m is None:
            raise ClientError(f"no message {msg_id} in this conversation")
        return [{"version": v, "ts": ts, "text": t} for v, ts, t in self.rs.versions(m.peer, m.id)]

    def notices(self, conv: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.rs.notices(conv, limit)

    def add_notice(self, conv: str, ts: int, body: dict[str, Any]) -> None:
        self.rs.add_notice(conv, ct.new_message_id(), ts, body)

    # --- search (PROTOCOL Part VIII §8) ---------------------------------------------------

    def _index_add(
        self, peer: str, msg_id: str, conv: str, author: str, ts: int, text: str | None
    ) -> None:
        if self.index.built and text:
            self.index.add(SearchHit(peer, msg_id, conv, author, ts, text))

    def search(
        self, query: str, *, conv: str | None = None, author: str | None = None, limit: int = 50
    ) -> list[SearchHit]:
        if not self.index.built:
            for m in self.rs.all_messages():
                text = _text_of(m)
                if text:
                    hit = SearchHit(
                        m.peer, m.id, conv_of_peer(m.peer), author_of(m, self.me), m.ts_ms, text
                    )
                    self.index.add(hit)
            self.index.built = True
        return self.index.search(query, conv=conv, author=author, limit=limit)


def _text_of(m: MessageRecord) -> str | None:
    try:
        return ct.Content.decode(m.body).text
    except XChatError:
        return None
