"""Minimal offline decoding of a loopback packet capture for the privacy scan.

pcap (libpcap format, Ethernet / Linux cooked link types) → IPv4/TCP segments → one byte
stream per direction of each connection (ordered by sequence number, retransmissions
dropped) → HTTP/1.1 messages (Content-Length and chunked bodies) → after a WebSocket
upgrade, WebSocket frames with client masking removed. No third-party dependency: the scan
must see exactly what crossed the wire, so it decodes the layers itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Conn:
    """One TCP connection to the relay: ``client_port`` and both byte streams."""

    client_port: int
    c2s_segments: dict[int, bytes] = field(default_factory=dict)
    s2c_segments: dict[int, bytes] = field(default_factory=dict)

    @property
    def c2s(self) -> bytes:
        return _join(self.c2s_segments)

    @property
    def s2c(self) -> bytes:
        return _join(self.s2c_segments)


def _join(segments: dict[int, bytes]) -> bytes:
    out = bytearray()
    for seq in sorted(segments):  # loopback captures are short: no 2^32 wrap in practice
        out += segments[seq]
    return bytes(out)


def read_pcap(path: Path, server_port: int) -> dict[int, Conn]:
    """Connections to/from ``server_port`` keyed by the client's port."""
    data = path.read_bytes()
    if len(data) < 24:
        return {}
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4}[linktype]
    conns: dict[int, Conn] = {}
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[pos + 8 : pos + 12])[0]
        pkt = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if not payload:
            continue
        if dport == server_port:
            conn = conns.setdefault(sport, Conn(sport))
            conn.c2s_segments.setdefault(seq, payload)
        elif sport == server_port:
            conn = conns.setdefault(dport, Conn(dport))
            conn.s2c_segments.setdefault(seq, payload)
    return conns


@dataclass
class HttpMessage:
    head: bytes
    body: bytes

    @property
    def start_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode("latin-1")
        return None


def split_http(stream: bytes) -> tuple[list[HttpMessage], bytes]:
    """HTTP/1.1 messages at the start of ``stream``; the rest after a ``101`` / upgrade
    request (the WebSocket bytes) is returned separately."""
    msgs: list[HttpMessage] = []
    pos = 0
    while pos < len(stream):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = stream[pos:end]
        pos = end + 4
        msg = HttpMessage(head, b"")
        if msg.header("upgrade") is not None and (
            msg.start_line.startswith("GET ") or " 101 " in msg.start_line + " "
        ):
            msgs.append(msg)
            return msgs, stream[pos:]
        length = msg.header("content-length")
        if length is not None:
            msg.body = stream[pos : pos + int(length)]
            pos += int(length)
        elif (msg.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                eol = stream.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(stream[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                body += stream[pos : pos + size]
                pos += size + 2
                if size == 0:
                    break
            msg.body = bytes(body)
        msgs.append(msg)
    return msgs, stream[pos:]


def ws_messages(data: bytes) -> list[tuple[int, bytes]]:
    """``(opcode, payload)`` of WebSocket messages (RFC 6455; continuation frames joined,
    masking removed). Control frames (opcode ≥ 8) are returned too: they are bytes on the
    wire all the same (a close frame's payload starts with its status code)."""
    out: list[tuple[int, bytes]] = []
    first_opcode = 0
    pos = 0
    partial = bytearray()
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        pos += 2
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", data[pos : pos + 2])[0]
            pos += 2
        elif n == 127:
            n = struct.unpack("!Q", data[pos : pos + 8])[0]
            pos += 8
        key = b""
        if b1 & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + n]
        pos += n
        if key and payload:
            mask = (key * (len(payload) // 4 + 1))[: len(payload)]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
                len(payload), "big"
            )
        opcode = b0 & 0x0F
        if opcode >= 8:
            out.append((opcode, payload))
            continue
        if opcode != 0:
            first_opcode = opcode
        partial += payload
        if b0 & 0x80:
            out.append((first_opcode, bytes(partial)))
            partial = bytearray()
    return out
