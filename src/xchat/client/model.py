"""Plain values and small helpers the client layers share (PROTOCOL.md Part IV).

Kept apart from the layers themselves so that every client module (and
:mod:`xchat.client.groups`) can import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.profile import default_home
from xchat.client.store import MessageRecord
from xchat.clock import now_ms as now_ms  # re-export: the client layers' one clock
from xchat.errors import ProtocolError, XChatError

#: ``messages.peer`` prefix of group rows: ``group:<gid>:<sender address>`` (PROTOCOL Part V §10)
GROUP_PEER_PREFIX = "group:"


@dataclass(frozen=True)
class AccountInfo:
    address: str
    handle: str | None
    server: str
    device_id: int
    recovery_phrase: str | None = None


@dataclass(frozen=True)
class HistoryItem:
    id: str
    direction: str  # "in" | "out"
    peer: str
    text: str | None
    ts_ms: int
    status: str
    reply_to: str | None
    file: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryResult:
    """What :meth:`Client.retry_pending` did (PROTOCOL Part IV §3.8)."""

    #: re-sent with their original content ids and now confirmed by the relay
    sent: tuple[HistoryItem, ...] = ()
    #: still unconfirmed (state 'failed'), with the one-line reason
    failed: tuple[tuple[HistoryItem, str], ...] = ()


@dataclass
class _Batch:
    """What processing one DELIVER frame produced, acted on after the commit."""

    events: list[ev.Event] = field(default_factory=list)
    receipts: dict[str, list[str]] = field(default_factory=dict)
    followups: list[tuple[str, str]] = field(default_factory=list)  # (action, address)
    claims: dict[str, str] = field(default_factory=dict)  # address -> claimed handle
    origin_ms: int = 0  # relay timestamp of the envelope being applied (Part VIII §4)
    #: Envelopes whose certificate no accepted relay key verifies: retried once after the
    #: client checked for a signed relay key rotation (PROTOCOL Part III §3.1).
    cert_retry: list[Any] = field(default_factory=list)
    #: Senders whose claimed handle came with a valid relay handle certificate (IV §3.2).
    certified: set[str] = field(default_factory=set)
    retrying: bool = False


def _history_item(m: MessageRecord) -> HistoryItem:
    try:
        c = ct.Content.decode(m.body)
        text, reply_to, file = c.text, c.reply_to, c.file
    except XChatError:
        text, reply_to, file = None, None, None
    return HistoryItem(m.id, m.direction, m.peer, text, m.ts_ms, m.status, reply_to, file)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"server sent a non-integer {what}")
    return value


def profile_path(path: str | None) -> Path:
    return Path(path).expanduser() if path else default_home()


def _row_key(e: ev.MessageReceived) -> tuple[str, str]:
    """The ``messages`` primary key (peer, id) of a received message."""
    if e.group is not None:
        return f"{GROUP_PEER_PREFIX}{e.group.get('id', '')}:{e.sender}", e.id
    return e.sender, e.id
