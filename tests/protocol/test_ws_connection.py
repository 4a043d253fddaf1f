"""The sans-I/O RFC 6455 server connection (``xchat.protocol.ws_connection``): one test per
rule it enforces, split reads at every byte boundary, and a differential test against
``websockets``' own sans-I/O ``Protocol`` on generated and on random frames.

Where the two are meant to differ (documented in the module and PROTOCOL Part III §5.1), the
reference model below applies the difference explicitly, so any other disagreement fails:

1. A close frame in the middle of a fragmented message is accepted and echoed (control frames
   may be injected between fragments, RFC 6455 §5.4); ``websockets`` fails it with 1002
   "incomplete fragmented message".
2. A close reason that is not UTF-8 → 1002 (as the fast path always answered, pinned by
   tests/server/test_wsfast.py); ``websockets`` says 1007.
3. Text messages are checked as UTF-8 per fragment → 1007 at the first fragment that breaks
   it; ``websockets``' sans-I/O layer does not look at text (its asyncio layer does, later).
"""

from __future__ import annotations

import codecs
import itertools
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Close
from websockets.protocol import Protocol, Side
from websockets.protocol import State as WsState

from xchat.protocol import ws_connection as W
from xchat.protocol.ws_connection import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

MASK = b"\x11\x22\x33\x44"


def cframe(
    payload: bytes,
    opcode: int = 2,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    mask: bytes = MASK,
    wide: int = 0,
) -> bytes:
    """A client frame; ``wide`` forces the 16-bit (2) or 64-bit (8) length encoding."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if wide == 8 or (not wide and n >= 65536):
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
    elif wide == 2 or n >= 126:
        head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, mbit | n))
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def drain(conn: W.ServerConnection) -> list[W.Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def feed(data: bytes, max_size: int = 1000, chunks: Sequence[int] = ()) -> tuple[Any, bytes]:
    """Events and output of a fresh connection fed ``data`` (cut at the ``chunks`` offsets)."""
    conn = W.ServerConnection(max_size)
    events: list[W.Event] = []
    cuts = [0, *sorted(chunks), len(data)]
    for a, b in itertools.pairwise(cuts):
        conn.receive_data(data[a:b])
        events += drain(conn)
    return events, conn.data_to_send()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of unmasked, final server frames."""
    out, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0xF0 == 0x80 and not b1 & 0x80, data[pos : pos + 2]
        n, pos = b1, pos + 2
        if n == 126:
            n, pos = struct.unpack(">H", data[pos : pos + 2])[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack(">Q", data[pos : pos + 8])[0], pos + 8
        out.append((b0 & 0x0F, data[pos : pos + n]))
        pos += n
    return out


def close_code(data: bytes) -> int:
    [(op, payload)] = server_frames(data)
    assert op == OP_CLOSE
    return int(struct.unpack(">H", payload[:2])[0])


def failure(data: bytes, max_size: int = 1000) -> tuple[int, int]:
    """(code of the Failure event, code of the close frame sent) for a stream that must fail."""
    events, out = feed(data, max_size)
    assert isinstance(events[-1], W.Failure), events
    return events[-1].code, close_code(out)


# --- data frames ------------------------------------------------------------------------


def test_binary_messages_every_length_encoding() -> None:
    payloads = [b"", b"a", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536]
    stream = b"".join(cframe(p) for p in payloads) + cframe(b"short", wide=8)
    events, out = feed(stream, max_size=1 << 17)
    assert events == [*payloads, b"short"]
    assert out == b""


def test_fragments_are_joined_with_control_frames_between() -> None:
    stream = (
        cframe(b"frag", fin=False)
        + cframe(b"ping!", opcode=OP_PING)
        + cframe(b"ment", opcode=OP_CONT, fin=False)
        + cframe(b"unsolicited", opcode=OP_PONG)
        + cframe(b"ed", opcode=OP_CONT)
    )
    events, out = feed(stream)
    assert events == [
        W.Ping(b"ping!"),
        W.Pong(b"unsolicited"),
        b"fragmented",
    ]
    assert server_frames(out) == [(OP_PONG, b"ping!")]  # a ping is answered with its payload


def test_masking_key_is_applied() -> None:
    payload = bytes(range(256)) * 3
    for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x80\x7f\xfe"):
        assert feed(cframe(payload, mask=mask))[0] == [payload]


def test_text_messages_are_utf8_checked_per_fragment() -> None:
    e_acute = "é".encode()
    stream = cframe(b"caf" + e_acute[:1], opcode=OP_TEXT, fin=False) + cframe(
        e_acute[1:], opcode=OP_CONT
    )
    assert feed(stream)[0] == [W.TextMessage("café")]  # a character may span fragments
    assert feed(cframe("ünï".encode(), opcode=OP_TEXT))[0] == [W.TextMessage("ünï")]
    assert failure(cframe(b"\xff", opcode=OP_TEXT)) == (1007, 1007)
    assert failure(cframe(b"ok\xc3", opcode=OP_TEXT)) == (1007, 1007)  # truncated at the end
    # the first bad fragment fails the connection: the message's end is not waited for
    events, out = feed(cframe(b"a\xc0\xaf", opcode=OP_TEXT, fin=False))
    assert events == [W.Failure(1007, "invalid UTF-8 in a text message")]
    assert close_code(out) == 1007
    bad_cont = cframe(b"ok", opcode=OP_TEXT, fin=False) + cframe(b"\xed\xa0\x80", opcode=OP_CONT)
    assert failure(bad_cont) == (1007, 1007)  # a UTF-16 surrogate is not UTF-8
    cut_at_end = cframe(b"ok", opcode=OP_TEXT, fin=False) + cframe(b"\xc3", opcode=OP_CONT)
    assert failure(cut_at_end) == (1007, 1007)  # the last fragment ends inside a character


def test_binary_payloads_are_not_utf8_checked() -> None:
    assert feed(cframe(b"\xff\xfe"))[0] == [b"\xff\xfe"]


# --- protocol errors ----------------------------------------------------------------------


def test_client_frames_must_be_masked() -> None:
    assert failure(cframe(b"hi", masked=False)) == (1002, 1002)
    assert failure(cframe(b"", opcode=OP_PING, masked=False)) == (1002, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_fail_without_an_extension(rsv: int) -> None:
    assert failure(cframe(b"abc", rsv=rsv)) == (1002, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcodes_fail(opcode: int) -> None:
    assert failure(cframe(b"", opcode=opcode)) == (1002, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frames_are_final_and_short(opcode: int) -> None:
    assert failure(cframe(b"", opcode=opcode, fin=False)) == (1002, 1002)
    assert failure(cframe(b"x" * 126, opcode=opcode)) == (1002, 1002)
    ok = b"\x03\xe8" + b"x" * 123 if opcode == OP_CLOSE else b"x" * 125
    assert not isinstance(feed(cframe(ok, opcode=opcode))[0][-1], W.Failure)


def test_fragment_sequencing() -> None:
    assert failure(cframe(b"x", opcode=OP_CONT)) == (1002, 1002)  # continuation, no start
    for opcode in (OP_BINARY, OP_TEXT):  # a new message before the last one ended
        assert failure(cframe(b"a", fin=False) + cframe(b"b", opcode=opcode)) == (1002, 1002)


def test_size_limit_on_frames_and_messages() -> None:
    assert feed(cframe(b"x" * 100), max_size=100)[0] == [b"x" * 100]
    assert failure(cframe(b"x" * 101), max_size=100) == (1009, 1009)
    # refused from the header alone: the payload is never buffered
    events, out = feed(b"\x82\xff" + struct.pack(">Q", 10**12) + MASK, max_size=100)
    assert events == [W.Failure(1009, "frame too big")] and close_code(out) == 1009
    fragments = cframe(b"x" * 60, fin=False) + cframe(b"x" * 40, opcode=OP_CONT, fin=False)
    events, _ = feed(fragments + cframe(b"", opcode=OP_CONT), max_size=100)
    assert events == [b"x" * 100]
    events, _ = feed(fragments + cframe(b"x", opcode=OP_CONT), max_size=100)
    assert events == [W.Failure(1009, "message too big")]


def test_failure_stops_reading() -> None:
    """RFC 6455 §7.1.7: after failing, not even the peer's close frame is processed."""
    conn = W.ServerConnection(1000)
    conn.receive_data(cframe(b"x", rsv=1) + cframe(b"never seen"))
    assert drain(conn) == [W.Failure(1002, "reserved bits set")]
    conn.receive_data(cframe(b"\x03\xe8", opcode=OP_CLOSE) + cframe(b"more"))
    assert drain(conn) == [] and conn.state is W.State.CLOSED
    conn.send_binary([b"late"])
    conn.send_ping()
    assert close_code(conn.data_to_send()) == 1002  # the failure's close frame, nothing else


# --- the close handshake ----------------------------------------------------------------


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_peer_close_is_echoed_byte_for_byte(code: int) -> None:
    payload = struct.pack(">H", code) + "bye é".encode()
    events, out = feed(cframe(payload, opcode=OP_CLOSE) + cframe(b"after the close"))
    assert events == [W.CloseReceived(code, "bye é")]
    assert server_frames(out) == [(OP_CLOSE, payload)]


def test_empty_close_is_echoed_empty_and_reported_as_1005() -> None:
    conn = W.ServerConnection(1000)
    conn.receive_data(cframe(b"", opcode=OP_CLOSE))
    assert drain(conn) == [W.CloseReceived(1005, "")]
    assert server_frames(conn.data_to_send()) == [(OP_CLOSE, b"")]
    assert conn.state is W.State.CLOSED
    conn.receive_data(cframe(b"ignored"))
    conn.send_binary([b"not sent"])
    assert drain(conn) == [] and conn.data_to_send() == b""


@pytest.mark.parametrize(
    "payload",
    [b"\x03"]
    + [struct.pack(">H", c) for c in INVALID_CODES]
    + [struct.pack(">H", 1000) + b"\xff\xfe", struct.pack(">H", 1000) + b"\xc3"],
)
def test_invalid_close_payloads_fail_1002(payload: bytes) -> None:
    assert failure(cframe(payload, opcode=OP_CLOSE)) == (1002, 1002)


def test_close_in_the_middle_of_a_fragmented_message_abandons_it() -> None:
    stream = cframe(b"half", fin=False) + cframe(b"\x03\xe8", opcode=OP_CLOSE)
    events, out = feed(stream + cframe(b"rest", opcode=OP_CONT))
    assert events == [W.CloseReceived(1000, "")]
    assert server_frames(out) == [(OP_CLOSE, b"\x03\xe8")]


def test_server_close_skips_input_until_the_peers_close() -> None:
    conn = W.ServerConnection(100)
    conn.receive_data(cframe(b"first") + cframe(b"sec"))
    assert conn.next_event() == b"first"
    conn.send_close(4400, "enough")
    assert conn.state is W.State.CLOSING
    # frames already received and frames still arriving are skipped unread, whatever they
    # are (no pong, no 1009 for a frame larger than max_size, no check of its bits) ...
    big = cframe(b"B" * 5000, rsv=3, masked=False)
    conn.receive_data(cframe(b"ping", opcode=OP_PING) + big[:1000])
    assert drain(conn) == []
    for i in range(1000, len(big), 700):
        conn.receive_data(big[i : i + 700])
        assert drain(conn) == []
    conn.send_binary([b"not after a close"])
    conn.send_close(1000, "twice")  # no-op
    # ... until the peer's close frame, which ends the handshake
    conn.receive_data(cframe(b"\x03\xe8ok", opcode=OP_CLOSE)[:3])
    assert drain(conn) == []
    conn.receive_data(cframe(b"\x03\xe8ok", opcode=OP_CLOSE)[3:] + cframe(b"x"))
    assert drain(conn) == [W.CloseReceived(1000, "ok")]
    assert conn.state is W.State.CLOSED
    assert server_frames(conn.data_to_send()) == [(OP_CLOSE, b"\x11\x30enough")]


def test_invalid_close_reply_while_closing_still_ends_it() -> None:
    conn = W.ServerConnection(100)
    conn.send_close(1001, "bye")
    conn.receive_data(cframe(b"\x03", opcode=OP_CLOSE))
    assert drain(conn) == [W.Failure(1002, "invalid close frame")]
    assert conn.state is W.State.CLOSED
    assert close_code(conn.data_to_send()) == 1001  # no second close frame


def test_send_close_reasons_fit_a_control_frame_on_a_character_boundary() -> None:
    conn = W.ServerConnection(100)
    conn.send_close(4400, "é" * 100)  # 200 bytes of UTF-8
    [(op, payload)] = server_frames(conn.data_to_send())
    assert op == OP_CLOSE and len(payload) <= 125
    assert Close.parse(payload) == Close(4400, "é" * 61)
    for code in (999, 1005, 1006, 1015, 5000):
        with pytest.raises(ValueError):
            W.ServerConnection(100).send_close(code, "")


# --- output -------------------------------------------------------------------------------


def test_send_binary_and_ping_serialize_as_websockets_parses() -> None:
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    conn = W.ServerConnection(100)
    conn.send_binary(payloads)
    conn.send_ping()
    conn.send_ping(b"beat")
    data = conn.data_to_send()
    assert conn.data_to_send() == b""
    client = Protocol(Side.CLIENT, state=WsState.OPEN, max_size=None)
    client.receive_data(data)
    got = [(f.opcode, bytes(f.data), f.fin) for f in client.events_received()]
    assert got == [(OP_BINARY, p, True) for p in payloads] + [
        (OP_PING, b"", True),
        (OP_PING, b"beat", True),
    ]
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)


# --- split reads --------------------------------------------------------------------------


STREAM = (
    cframe(b"one")
    + cframe(b"m" * 300, fin=False)
    + cframe(b"pp", opcode=OP_PING)
    + cframe("é".encode()[:1], opcode=OP_CONT, fin=False, wide=8)
    + cframe(b"", opcode=OP_CONT)
    + cframe("té".encode()[:2], opcode=OP_TEXT, fin=False)
    + cframe("é".encode()[1:] + b"!", opcode=OP_CONT)
    + cframe(b"x" * 130, wide=2)
    + cframe(b"\x03\xe8fin", opcode=OP_CLOSE)
)


def test_split_at_every_byte_boundary() -> None:
    whole = feed(STREAM)
    assert [type(e).__name__ for e in whole[0]] == [
        "bytes",
        "Ping",
        "bytes",
        "TextMessage",
        "bytes",
        "CloseReceived",
    ]
    for i in range(len(STREAM) + 1):
        assert feed(STREAM, chunks=[i]) == whole, i
    assert feed(STREAM, chunks=range(1, len(STREAM))) == whole  # one byte at a time


def test_split_errors_at_every_byte_boundary() -> None:
    """A failure is reported at the same point however the bytes arrive."""
    bad = cframe(b"ok") + cframe(b"abc", fin=False) + cframe(b"x", opcode=OP_BINARY)
    whole = feed(bad)
    assert isinstance(whole[0][-1], W.Failure)
    for i in range(len(bad) + 1):
        assert feed(bad, chunks=[i]) == whole, i


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_any_split(cuts: list[int]) -> None:
    assert feed(STREAM, chunks=cuts) == feed(STREAM)


# --- differential: websockets' sans-I/O Protocol as the reference -------------------------


def reference(stream: bytes, max_size: int) -> tuple[list[Any], list[tuple[int, bytes]]]:
    """Events and server frames ServerConnection must produce for ``stream``, as
    ``websockets.protocol.Protocol`` (server side, OPEN) sees it, with the three deviations
    of this module's docstring applied. Events as tuples: ("binary", data), ("text", str),
    ("ping"/"pong", data), ("close", code, reason), ("fail", code)."""
    proto = Protocol(Side.SERVER, state=WsState.OPEN, max_size=max_size)
    proto.receive_data(stream)
    events: list[Any] = []
    out: list[tuple[int, bytes]] = []
    kind: int | None = None  # opcode of the message being assembled
    parts = bytearray()
    decoder: Any = None
    for f in proto.events_received():
        data = bytes(f.data)
        if f.opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if f.opcode != OP_CONT:
                kind, parts = f.opcode, bytearray()
                decoder = codecs.getincrementaldecoder("utf-8")() if kind == OP_TEXT else None
            parts += data
            if decoder is not None:
                try:
                    decoder.decode(data, f.fin)
                except UnicodeDecodeError:  # deviation 3
                    return [*events, ("fail", 1007)], [*out, (OP_CLOSE, b"\x03\xef")]
            if f.fin:
                text = kind == OP_TEXT
                events.append(("text", parts.decode()) if text else ("binary", bytes(parts)))
                kind = None
        elif f.opcode == OP_PING:
            events.append(("ping", data))
            out.append((OP_PONG, data))
        elif f.opcode == OP_PONG:
            events.append(("pong", data))
        else:
            close = Close.parse(data)
            events.append(("close", int(close.code), close.reason))
            out.append((OP_CLOSE, data))
            return events, out
    sent = proto.close_sent
    if sent is not None:
        rcvd = proto.close_rcvd
        if sent.reason == "incomplete fragmented message" and rcvd is not None:  # deviation 1
            echo = b"" if rcvd.code == 1005 else rcvd.serialize()
            return [*events, ("close", int(rcvd.code), rcvd.reason)], [*out, (OP_CLOSE, echo)]
        code = 1002 if sent.code == 1007 else int(sent.code)  # deviation 2
        events.append(("fail", code))
        out.append((OP_CLOSE, struct.pack(">H", code)))
    return events, out


def ours(stream: bytes, max_size: int, cuts: Sequence[int] = ()) -> tuple[list[Any], Any]:
    events, data = feed(stream, max_size, cuts)
    norm: list[Any] = []
    for e in events:
        if isinstance(e, bytes):
            norm.append(("binary", e))
        elif isinstance(e, W.TextMessage):
            norm.append(("text", e.text))
        elif isinstance(e, W.Ping | W.Pong):
            norm.append((type(e).__name__.lower(), e.payload))
        elif isinstance(e, W.CloseReceived):
            norm.append(("close", e.code, e.reason))
        else:
            norm.append(("fail", e.code))
    frames = server_frames(data)
    if norm and norm[-1][0] == "fail":  # a failure's reason is ours to word: compare the code
        frames[-1] = (frames[-1][0], frames[-1][1][:2])
    return norm, frames


utf8ish = st.one_of(
    st.text(max_size=20).map(str.encode),
    st.binary(max_size=20),
    st.text(min_size=1, max_size=8).map(lambda s: s.encode()[:-1]),  # cut inside a character
)
close_payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=3),
    st.builds(
        lambda code, reason: struct.pack(">H", code) + reason,
        st.one_of(st.sampled_from(VALID_CODES + INVALID_CODES), st.integers(0, 65535)),
        utf8ish,
    ),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One client frame, usually well formed, sometimes broken in one of RFC 6455's ways."""
    opcode = draw(
        st.one_of(
            st.sampled_from([OP_BINARY] * 4 + [OP_TEXT, OP_CONT, OP_CONT, OP_PING, OP_PONG]),
            st.just(OP_CLOSE),
            st.integers(0, 15),
        )
    )
    if opcode == OP_CLOSE:
        payload = draw(close_payloads)
    elif opcode in (OP_TEXT, OP_CONT):
        payload = draw(utf8ish)
    else:
        payload = draw(st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=140)))
    control = opcode >= 8
    fin = draw(st.booleans()) if not control else draw(st.sampled_from([True] * 9 + [False]))
    rsv = draw(st.sampled_from([0] * 30 + [1, 2, 4, 7]))
    masked = draw(st.sampled_from([True] * 30 + [False]))
    mask = draw(st.sampled_from([MASK, b"\x00" * 4, b"\xa5\x5a\xff\x01"]))
    wide = draw(st.sampled_from([0] * 8 + [2, 8]))
    return cframe(payload, opcode, fin, masked, rsv, mask, wide)


@settings(max_examples=1500, deadline=None)
@given(st.lists(frames(), max_size=12), st.sampled_from([60, 150, 1000]), st.data())
def test_differential_against_websockets(
    stream_frames: list[bytes], max_size: int, data: st.DataObject
) -> None:
    stream = b"".join(stream_frames)
    expected = reference(stream, max_size)
    assert ours(stream, max_size) == expected
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    assert ours(stream, max_size, cuts) == expected


def complete_frames(stream: bytes, max_size: int) -> bytes:
    """``stream`` up to the last whole frame (or up to a header that is too large for
    ``max_size``), so both parsers see the same thing: websockets checks RSV bits and control
    frames only once the payload is in, this module already at the header."""
    pos = 0
    while len(stream) - pos >= 2:
        b1 = stream[pos + 1]
        n, head = b1 & 0x7F, pos + 2
        if n >= 126:
            width = 2 if n == 126 else 8
            if len(stream) < head + width:
                break
            n = int.from_bytes(stream[head : head + width], "big")
            head += width
        end = head + (4 if b1 & 0x80 else 0) + n
        if n > max_size:
            return stream[:head]
        if end > len(stream):
            break
        pos = end
    return stream[:pos]


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([20, 100]))
def test_differential_on_random_bytes(raw: bytes, max_size: int) -> None:
    stream = complete_frames(raw, max_size)
    assert ours(stream, max_size) == reference(stream, max_size)
    assert ours(raw, max_size)  # and the raw bytes never raise


def test_random_bytes_never_raise() -> None:
    """Every byte value as the first two bytes, then junk: an event or a wait, no exception."""
    for b0 in range(256):
        for b1 in (0x00, 0x7D, 0x7E, 0x7F, 0x80, 0xFD, 0xFE, 0xFF):
            conn = W.ServerConnection(100)
            conn.receive_data(bytes((b0, b1)) + bytes(range(20)))
            drain(conn)
