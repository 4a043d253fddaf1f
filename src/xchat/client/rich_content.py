"""Rich-messaging content: shapes, limits and rules (PROTOCOL.md Part VIII), sans I/O.

Every Part VIII content is an ordinary end-to-end encrypted content (Part IV §2) whose
extra fields sit in one JSON object per kind (``Content.rich``). This module turns those
objects into typed values (or :class:`~xchat.errors.DecodeError`) and holds the pure rules
both sides apply: who may edit or delete, the 24 h edit window, how a quote is checked
against the message it names, the disappearing-timer bounds, duration syntax. No store,
no clock (``now_ms`` is passed), no network: :mod:`xchat.client.messaging` does the I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from xchat.client import content as ct
from xchat.crypto.keys import is_address
from xchat.errors import DecodeError, TooLarge

# --- limits, each with its reason ---------------------------------------------------------

#: An edit is accepted within 24 h of the original (WhatsApp 15 min, Signal 24 h): long
#: enough to fix a typo found the next morning, short enough that history stays history.
EDIT_WINDOW_MS = 24 * 3600 * 1000
#: Relay timestamps of two envelopes are compared; the author's clock may be this far
#: off the relay's when it checks the window itself before sending.
CLOCK_SKEW_MS = 10 * 60 * 1000
#: Earlier versions kept per message (an author cannot fill a store by editing forever).
MAX_EDITS = 20
#: Disappearing timer bounds (the issue: 5 s to 4 weeks).
TIMER_MIN_S = 5
TIMER_MAX_S = 4 * 7 * 24 * 3600
#: A reaction is one grapheme-ish emoji; 32 UTF-8 bytes hold every RGI emoji sequence
#: (the longest, family/flag ZWJ sequences, are 25-28 bytes).
MAX_EMOJI_BYTES = 32
#: The quote excerpt a reply carries (what the recipient shows if it lacks the original).
MAX_QUOTE_CHARS = 200
#: Typing indicators older than this are stale (the sender repeats "started" every 5 s).
TYPING_TTL_MS = 15_000

RECEIPT_KINDS = ("delivered", "read")
TYPING_STATES = ("started", "stopped")

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_DURATION_RE = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- typed values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The message a reaction/edit/delete names: its content id and author address."""

    id: str
    author: str


@dataclass(frozen=True)
class Reaction:
    target: Target
    emoji: str  # "" when remove
    remove: bool


@dataclass(frozen=True)
class Edit:
    target: Target
    text: str


@dataclass(frozen=True)
class Delete:
    target: Target


@dataclass(frozen=True)
class Typing:
    started: bool


@dataclass(frozen=True)
class Disappear:
    seconds: int | None  # None: off


@dataclass(frozen=True)
class Quote:
    """What a reply claims about the message it answers (checked on receipt)."""

    author: str
    text: str


# --- building -----------------------------------------------------------------------------


def _target_obj(t: Target) -> dict[str, Any]:
    return {"id": t.id, "author": t.author}


def reaction_content(
    target: Target, emoji: str, *, remove: bool, group: str | None, now_ms: int
) -> ct.Content:
    """A ``reaction``: set (or, with ``remove``, clear) the sender's one reaction."""
    if not remove:
        check_emoji(emoji)
    obj: dict[str, Any] = {**_target_obj(target), "emoji": "" if remove else emoji}
    if remove:
        obj["remove"] = True
    return _content("reaction", {"reaction": obj}, group, now_ms)


def edit_content(target: Target, text: str, *, group: str | None, now_ms: int) -> ct.Content:
    check_text(text)
    return _content("edit", {"edit": _target_obj(target)}, group, now_ms, text=text)


def delete_content(target: Target, *, group: str | None, now_ms: int) -> ct.Content:
    return _content("delete", {"delete": _target_obj(target)}, group, now_ms)


def typing_content(started: bool, *, group: str | None, now_ms: int) -> ct.Content:
    state = "started" if started else "stopped"
    return _content("typing", {"typing": {"state": state}}, group, now_ms)


def disappear_content(seconds: int | None, *, group: str | None, now_ms: int) -> ct.Content:
    check_timer(seconds)
    return _content("disappear", {"disappear": {"seconds": seconds or 0}}, group, now_ms)


def receipt_content(
    ids: list[str], kind: str, *, group: str | None, now_ms: int, sender: ct.SenderInfo | None
) -> ct.Content:
    """A Part IV §3.6 receipt with its kind (and the group the ids belong to)."""
    if kind not in RECEIPT_KINDS:
        raise ValueError(f"unknown receipt kind {kind!r}")
    rich: dict[str, dict[str, Any]] = {}
    if kind != "delivered" or group is not None:
        rich["receipt"] = {"kind": kind}
    return ct.Content(
        id=ct.new_message_id(),
        type="receipt",
        ts=now_ms,
        receipt_for=tuple(ids),
        sender=sender,
        group={"id": group} if group is not None else None,
        rich=rich,
    )


def text_rich(*, quote: Quote | None, timer_s: int | None) -> dict[str, dict[str, Any]]:
    """The Part VIII fields of a text/file message: its quote and its disappearing timer."""
    rich: dict[str, dict[str, Any]] = {}
    if quote is not None:
        rich["quote"] = {"author": quote.author, "text": quote.text[:MAX_QUOTE_CHARS]}
    if timer_s:
        rich["expires"] = {"seconds": timer_s}
    return rich


def _content(
    ctype: str,
    rich: dict[str, dict[str, Any]],
    group: str | None,
    now_ms: int,
    *,
    text: str | None = None,
) -> ct.Content:
    return ct.Content(
        id=ct.new_message_id(),
        type=ctype,
        ts=now_ms,
        text=text,
        group={"id": group} if group is not None else None,
        rich=rich,
    )


# --- parsing ------------------------------------------------------------------------------


def _target(obj: dict[str, Any]) -> Target:
    tid, author = obj.get("id"), obj.get("author")
    if not isinstance(tid, str) or not _ID_RE.match(tid):
        raise DecodeError("target id must be 32 lower-case hex digits")
    if not isinstance(author, str) or not _canonical_address(author):
        raise DecodeError("target author must be an address")
    return Target(tid, author)


def _obj(msg: ct.Content, key: str) -> dict[str, Any]:
    obj = msg.rich.get(key)
    if obj is None:
        raise DecodeError(f"{msg.type} content has no {key!r} object")
    return obj


def parse_reaction(msg: ct.Content) -> Reaction:
    obj = _obj(msg, "reaction")
    remove = obj.get("remove", False)
    if not isinstance(remove, bool):
        raise DecodeError("reaction remove must be a boolean")
    emoji = obj.get("emoji", "")
    if not isinstance(emoji, str):
        raise DecodeError("reaction emoji must be a string")
    if not remove:
        check_emoji(emoji, error=DecodeError)
    return Reaction(_target(obj), "" if remove else emoji, remove)


def parse_edit(msg: ct.Content) -> Edit:
    if msg.text is None or not msg.text.strip():
        raise DecodeError("edit needs a non-empty text")
    return Edit(_target(_obj(msg, "edit")), msg.text)


def parse_delete(msg: ct.Content) -> Delete:
    return Delete(_target(_obj(msg, "delete")))


def parse_typing(msg: ct.Content) -> Typing:
    state = _obj(msg, "typing").get("state")
    if state not in TYPING_STATES:
        raise DecodeError("typing state must be 'started' or 'stopped'")
    return Typing(state == "started")


def parse_disappear(msg: ct.Content) -> Disappear:
    seconds = _obj(msg, "disappear").get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise DecodeError("disappear seconds must be an integer")
    value = seconds or None
    check_timer(value, error=DecodeError)
    return Disappear(value)


def receipt_kind(msg: ct.Content) -> str:
    """``delivered`` (no ``receipt`` object: Part IV §3.6) or ``read``."""
    kind = msg.rich.get("receipt", {}).get("kind", "delivered")
    if kind not in RECEIPT_KINDS:
        raise DecodeError("receipt kind must be 'delivered' or 'read'")
    return str(kind)


def parse_quote(msg: ct.Content) -> Quote | None:
    """The quote a reply carries; None for no quote (a malformed one is dropped, not the
    message: the reply is still worth showing)."""
    obj = msg.rich.get("quote")
    if obj is None or msg.reply_to is None:
        return None
    author, text = obj.get("author"), obj.get("text")
    if not isinstance(author, str) or not _canonical_address(author):
        return None
    if not isinstance(text, str):
        return None
    return Quote(author, text[:MAX_QUOTE_CHARS])


def message_timer(msg: ct.Content) -> int | None:
    """The disappearing timer (seconds) a text/file was sent under; None for none."""
    obj = msg.rich.get("expires")
    if obj is None:
        return None
    seconds = obj.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds == 0:
        return None
    try:
        check_timer(seconds, error=DecodeError)
    except DecodeError:
        # Out of bounds: clamp rather than keep a message forever that was meant to go.
        return min(max(seconds, TIMER_MIN_S), TIMER_MAX_S)
    return seconds


def _canonical_address(value: object) -> bool:
    return isinstance(value, str) and value == value.lower() and is_address(value)


# --- rules --------------------------------------------------------------------------------


def check_emoji(emoji: str, *, error: type[Exception] = TooLarge) -> None:
    """A reaction is a short, printable string (no controls, no whitespace, no markup
    needs escaping because every app renders it as text)."""
    raw = emoji.encode("utf-8")
    if not emoji or len(raw) > MAX_EMOJI_BYTES:
        raise error(f"a reaction must be 1 to {MAX_EMOJI_BYTES} bytes of UTF-8")
    for ch in emoji:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp", "Zs") or (cat == "Cf" and ch not in "\u200d\ufe0f\ufe0e"):
            raise error("a reaction may not contain control or space characters")


def check_text(text: str) -> None:
    if not text.strip():
        raise TooLarge("refusing an empty text")
    if len(text) > ct.MAX_TEXT_CHARS:
        raise TooLarge(f"text is longer than {ct.MAX_TEXT_CHARS} characters")


def check_timer(seconds: int | None, *, error: type[Exception] = TooLarge) -> None:
    if seconds is None:
        return
    if not TIMER_MIN_S <= seconds <= TIMER_MAX_S:
        raise error(f"a disappearing timer must be {TIMER_MIN_S} s to 4 weeks")


def edit_allowed(*, editor: str, target_author: str, original_ms: int, edit_ms: int) -> str | None:
    """Why an edit (or a delete for everyone, with ``original_ms = edit_ms``) must be
    refused, or None. Only the author may; an edit must reach the relay within
    EDIT_WINDOW_MS of the original (both relay timestamps, so neither clock can stretch
    it; a local edit uses our clock and the original's send time)."""
    if editor != target_author:
        return "only the author may change a message"
    if edit_ms - original_ms > EDIT_WINDOW_MS + CLOCK_SKEW_MS:
        return "the 24 h edit window has passed"
    return None


def quote_status(quote: Quote | None, *, author: str | None, texts: list[str]) -> str | None:
    """Check a reply's quote against the message it names (PROTOCOL Part VIII §3):

    * ``None``: the reply carries no quote;
    * ``"missing"``: we do not hold the named message (deleted, expired, never had it);
      the recipient shows the claimed excerpt marked as unverified;
    * ``"forged"``: the named message exists but has another author, or none of its
      versions (original and edits) starts with the quoted text: shown as forged;
    * ``"ok"``: author and text agree (the app shows OUR copy, never the claimed one).
    """
    if quote is None:
        return None
    if author is None:
        return "missing"
    if quote.author != author:
        return "forged"
    wanted = _norm(quote.text)
    for text in texts:
        have = _norm(text)
        if have[:MAX_QUOTE_CHARS] == wanted or (wanted and have.startswith(wanted)):
            return "ok"
    return "forged"


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text)[:MAX_QUOTE_CHARS]


def parse_duration(value: str) -> int | None:
    """``30s``, ``5m``, ``1h``, ``7d``, ``4w`` (or plain seconds) -> seconds; ``off`` -> None.
    Raises ValueError outside 5 s .. 4 weeks."""
    v = value.strip().lower()
    if v in ("off", "0", "none"):
        return None
    m = _DURATION_RE.match(v)
    if m is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 1h, 7d, or off)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not TIMER_MIN_S <= seconds <= TIMER_MAX_S:
        raise ValueError("a disappearing timer must be between 5s and 4w (28d)")
    return seconds


def format_duration(seconds: int | None) -> str:
    """The shortest exact spelling: 30s, 5m, 1h, 7d, 2w; ``off`` for None."""
    if not seconds:
        return "off"
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
