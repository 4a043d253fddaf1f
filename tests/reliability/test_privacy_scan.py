"""Privacy scan: what does the relay (and the wire) see of a real session? (reliability §8)

One scripted session through a real relay subprocess with three SDK clients A, B, C:
1:1 text both ways, an encrypted file (distinctive name and content), a group (create, a
message from A and from C). Then, byte for byte, we search:

* every file in the relay's data directory (SQLite DB + WAL + SHM, blob files, the log),
* the relay's stdout and stderr,
* a tcpdump capture of its loopback port (raw pcap bytes, and decoded: TCP streams, HTTP
  bodies, unmasked WebSocket frames — client frames are XOR-masked on the wire, so only
  the decoded form shows what a passive observer of plain ``ws://`` learns).

Needles are searched raw, as hex (both cases), and as standard and URL-safe base64 in all
three alignments (so a needle embedded anywhere inside a larger base64 field is found).

What must NOT appear (anywhere): message texts, the file name, the file content marker,
the group name and the group id. Sender identities (address text, 20-byte address hash,
65-byte identity key, its Ed25519 and X25519 halves) are legitimately known to the relay
for the account's OWN requests (registration, auth, key upload, blob accounting), so they
are checked where a sealed-sender relay must not see them: in stored mailbox rows, in blob
files, in the logs, in the SEND/SEND_MULTI connections (unauthenticated sockets: only the
destinations may appear there) and in DELIVER frames on the recipients' sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _pcap import Conn, read_pcap, split_http, ws_messages

from xchat.client import events as ev
from xchat.client import files as xf
from xchat.client.client import Client
from xchat.crypto.keys import IdentityPublicKey, decode_address
from xchat.protocol import frames as fr
from xchat.testing import ServerProcess, running_server

# --- needles ---------------------------------------------------------------------------


def b64_cores(data: bytes) -> set[bytes]:
    """Base64 substrings that occur whenever ``data`` is embedded, at any offset, in a
    base64 text (std and URL-safe): the stable middle of each of the 3 alignments."""
    out: set[bytes] = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data)
        start = (k * 4 + 2) // 3 + (1 if k else 0)  # skip chars touched by the prefix
        tail = len(data) + k
        stop = (tail // 3) * 4  # drop the last partial group
        core = enc[start:stop]
        if len(core) >= 8:
            out.add(core)
            out.add(core.translate(bytes.maketrans(b"+/", b"-_")))
    return out


def forms(data: bytes) -> set[bytes]:
    """Raw, hex (lower/upper) and base64 (std/url, any alignment) forms of ``data``."""
    return {data, data.hex().encode(), data.hex().upper().encode()} | b64_cores(data)


@dataclass
class Needle:
    label: str
    forms: set[bytes]

    def find(self, hay: bytes) -> bytes | None:
        for f in self.forms:
            if f in hay:
                return f
        return None


def identity_needles(name: str, ik: IdentityPublicKey) -> list[Needle]:
    address = ik.address()
    return [
        Needle(f"{name}.address", {address.encode(), address.upper().encode()}),
        Needle(f"{name}.address_hash", forms(decode_address(address))),
        Needle(f"{name}.identity_key", forms(ik.encode())),
        Needle(f"{name}.ed25519", forms(ik.ed25519)),
        Needle(f"{name}.x25519", forms(ik.x25519)),
    ]


# --- the scripted session --------------------------------------------------------------


@dataclass
class Session:
    data_dir: Path
    port: int
    stdout: bytes
    metrics: bytes
    pcap: Path | None
    pcap_skip: str
    canaries: list[Needle]
    identities: dict[str, list[Needle]]  # client name -> needles
    hashes: dict[str, bytes]  # client name -> 20-byte address hash
    addresses: dict[str, str]  # client name -> address
    group_id: str | None
    events: dict[str, list[ev.Event]] = field(default_factory=dict)


def _start_capture(port: int, out: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    exe = shutil.which("tcpdump")
    if exe is None:
        return None, "tcpdump not installed (apt-get install -y tcpdump)"
    # -Z root: do not drop to the tcpdump user, who cannot write into pytest's tmp dirs.
    # -B 65536: a 64 MiB kernel buffer, so a loaded machine does not drop packets (a gap
    # in a TCP stream would make the decoders below misread everything after it).
    cmd = [exe, "-i", "lo", "-U", "-B", "65536", "-s", "0", "-Z", "root", "-w", str(out)]
    cmd.append(f"tcp port {port}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode(errors="replace")
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        return None, f"tcpdump cannot capture on lo (needs root/CAP_NET_RAW): {line.strip()}"
    return proc, ""


async def _script(srv: ServerProcess, work: Path, canary: dict[str, str]) -> dict[str, object]:
    a, b, c = (Client(work / n) for n in "abc")
    for cl in (a, b, c):
        await cl.create_account(srv.url, use_keyring=False)
    out: dict[str, object] = {"a": a.identity.public, "b": b.identity.public}
    out["c"] = c.identity.public
    events: dict[str, list[ev.Event]] = {"a": [], "b": [], "c": []}
    # 1:1 text both ways
    await a.send_text(b.address, canary["text_ab"])
    events["b"] += await b.receive()
    await b.send_text(a.address, canary["text_ba"])
    events["a"] += await a.receive()
    # a file A -> B, fetched by B
    src = work / canary["file_name"]
    src.write_bytes((canary["file_marker"] + "\n").encode() * 300 + os.urandom(1000))
    async with xf.BlobClient.from_api(a.api) as blobs:
        manifest = await xf.send_file(blobs, src)
    await xf.send_manifest(a, b.address, manifest)
    got = await b.receive()
    events["b"] += got
    files = [e.file for e in got if isinstance(e, ev.MessageReceived) and e.file]
    assert files, "B did not get the file message"
    m = xf.FileManifest.from_json(files[0])
    async with xf.BlobClient.from_api(b.api) as blobs:
        saved = await xf.receive_file(blobs, m, work / "dl")
    assert saved.read_bytes() == src.read_bytes()
    # a group
    info = await a.create_group(canary["group_name"], [b.address, c.address])
    gid = info.id
    await a.send_group(gid, canary["group_text_a"])
    events["b"] += await b.receive()
    events["c"] += await c.receive()
    await c.send_group(gid, canary["group_text_c"])
    events["a"] += await a.receive()
    events["b"] += await b.receive()
    # Left queued (never received): live mailbox rows for the row-by-row check.
    await a.send_text(b.address, canary["text_queued"])
    await c.send_text(b.address, canary["text_queued_c"])
    await c.send_group(gid, canary["group_text_queued"])
    out["gid"] = gid
    out["events"] = events
    for cl in (a, b, c):
        await cl.close()
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    os.environ.setdefault("XCHAT_NO_KEYRING", "1")
    work = tmp_path_factory.mktemp("privacy")
    tag = os.urandom(6).hex()
    canary = {
        "text_ab": f"CANARY-TEXT-AB-{tag}-{os.urandom(8).hex()}",
        "text_ba": f"CANARY-TEXT-BA-{tag}-{os.urandom(8).hex()}",
        "file_name": f"canary-file-name-{tag}.txt",
        "file_marker": f"CANARY-FILE-CONTENT-{tag}-{os.urandom(8).hex()}",
        "group_name": f"canary-group-{tag}",
        "group_text_a": f"CANARY-GROUP-A-{tag}-{os.urandom(8).hex()}",
        "group_text_c": f"CANARY-GROUP-C-{tag}-{os.urandom(8).hex()}",
        "text_queued": f"CANARY-QUEUED-AB-{tag}-{os.urandom(8).hex()}",
        "text_queued_c": f"CANARY-QUEUED-CB-{tag}-{os.urandom(8).hex()}",
        "group_text_queued": f"CANARY-GROUP-QUEUED-{tag}-{os.urandom(8).hex()}",
    }
    # log_level=debug: the most the relay ever writes is what gets scanned.
    with running_server(work / "relay", pow_bits=4, log_level="debug") as srv:
        pcap = work / "relay.pcap"
        cap, skip = _start_capture(srv.port, pcap)
        try:
            res = asyncio.run(_script(srv, work, canary))
        finally:
            if cap is not None:
                time.sleep(0.3)
                cap.send_signal(signal.SIGINT)
                cap.wait(10)
                assert cap.stderr is not None
                summary = cap.stderr.read().decode(errors="replace")
                cap.stderr.close()
                dropped = re.search(r"(\d+) packets? dropped by kernel", summary)
                assert dropped is None or dropped.group(1) == "0", (
                    f"capture lost packets: {summary}"
                )
        metrics = httpx.get(srv.url + "/metrics", timeout=10, headers=srv.metrics_headers).content
        # A copy of the live files (the WAL before the shutdown checkpoint truncates it).
        shutil.copytree(work / "relay", work / "relay-live")
        # Graceful stop, keeping what the relay wrote to stdout after its ready line.
        stdout = srv.stop_reading_stdout().encode()
    canaries = [Needle(k, forms(v.encode())) for k, v in canary.items()]
    gid = res["gid"]
    assert isinstance(gid, str)
    canaries.append(Needle("group_id", forms(bytes.fromhex(gid)) | forms(gid.encode())))
    ids = {n: identity_needles(n, res[n]) for n in "abc"}  # type: ignore[arg-type]
    addresses = {n: res[n].address() for n in "abc"}  # type: ignore[union-attr]
    hashes = {n: decode_address(a) for n, a in addresses.items()}
    yield Session(
        work / "relay",
        srv.port,
        stdout,
        metrics,
        pcap if cap is not None else None,
        skip,
        canaries,
        ids,
        hashes,
        addresses,
        gid,
        res["events"],  # type: ignore[arg-type]
    )


def _all_identities(s: Session) -> list[Needle]:
    return [n for ns in s.identities.values() for n in ns]


def _hits(needles: list[Needle], hay: bytes, where: str) -> list[str]:
    return [f"{n.label} in {where} ({f[:24]!r})" for n in needles if (f := n.find(hay))]


# --- the session really happened -------------------------------------------------------


def test_session_delivered_everything(session: Session) -> None:
    texts = {
        n: [e.text for e in evs if isinstance(e, ev.MessageReceived)]
        for n, evs in session.events.items()
    }
    assert any(t.startswith("CANARY-TEXT-AB-") for t in texts["b"])
    assert any(t.startswith("CANARY-TEXT-BA-") for t in texts["a"])
    if session.group_id is not None:
        assert any(t.startswith("CANARY-GROUP-A-") for t in texts["b"] + texts["c"])
        assert any(t.startswith("CANARY-GROUP-C-") for t in texts["a"])


def test_group_was_part_of_the_scan(session: Session) -> None:
    """The session ran a group, so its name, texts and id are among the needles above."""
    assert session.group_id is not None
    assert any(n.label == "group_id" for n in session.canaries)


# --- data directory and logs -----------------------------------------------------------


def _data_files(s: Session, live: bool = True) -> list[Path]:
    """Every file of the data directory after the stop, plus (``live``) the copy taken
    while the relay was running (its WAL still holds recently written pages)."""
    dirs = [s.data_dir] + ([s.data_dir.parent / "relay-live"] if live else [])
    return sorted(p for d in dirs for p in d.rglob("*") if p.is_file())


def test_data_dir_and_logs_hold_no_plaintext(session: Session) -> None:
    files = _data_files(session)
    names = {p.name for p in files}
    assert any(n.endswith(".log") for n in names) and any("wal" in n or "db" in n for n in names)
    hits: list[str] = []
    for p in files:
        hits += _hits(session.canaries, p.read_bytes(), str(p.relative_to(session.data_dir.parent)))
        hits += _hits(session.canaries, p.name.encode(), f"file name {p.name}")
    hits += _hits(session.canaries, session.stdout, "relay stdout")
    hits += _hits(session.canaries, session.metrics, "/metrics")
    assert not hits, hits


def test_logs_and_blob_files_name_no_identity(session: Session) -> None:
    """Logs (stderr file + stdout) and blob files: no identity of any client, in any form."""
    ids = _all_identities(session)
    hits = _hits(ids, session.stdout, "relay stdout") + _hits(ids, session.metrics, "/metrics")
    assert b"# TYPE" in session.metrics
    for p in _data_files(session):
        if p.suffix in (".db", ".sqlite", ".sqlite3") or p.name.endswith(("-wal", "-shm")):
            continue  # the databases are checked row by row below
        hits += _hits(ids, p.read_bytes(), str(p.relative_to(session.data_dir.parent)))
    assert not hits, hits


def test_client_profiles_hold_no_plaintext(session: Session) -> None:
    """Client profiles at rest (store DB + WAL, config): message texts, the file name and
    content, and the group name appear only sealed (the store encrypts values). Row KEYS
    are cleartext by design (contact addresses, group ids: `group:<gid>:<sender>`), so the
    group id is not checked here. The downloaded file is saved outside the profiles."""
    work = session.data_dir.parent
    hits: list[str] = []
    canaries = [n for n in session.canaries if n.label != "group_id"]
    files = [p for n in "abc" for p in (work / n).rglob("*") if p.is_file()]
    assert any(p.name.startswith("store") for p in files)
    for p in files:
        hits += _hits(canaries, p.read_bytes(), str(p.relative_to(work)))
    assert not hits, hits


def _sqlite_files(s: Session) -> list[Path]:
    out = []
    for p in _data_files(s, live=False):
        with p.open("rb") as fh:
            if fh.read(16) == b"SQLite format 3\0":
                out.append(p)
    return out


def test_stored_rows_name_no_sender(session: Session) -> None:
    """Every row of every relay table: an identity may appear only in a row ABOUT that
    account (accounts/devices/one-time keys of its device, blobs it uploaded). Mailbox rows
    (the sealed envelopes and their routing) must name nobody."""
    dbs = _sqlite_files(session)
    assert dbs
    name_of = {address: name for name, address in session.addresses.items()}
    hits: list[str] = []
    rows_checked = 0
    mailbox_rows = 0
    legit = 0
    for db in dbs:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            device_owner = {}
            if "devices" in tables:
                device_owner = dict(conn.execute("SELECT ref, address FROM devices").fetchall())
            for table in tables:
                cur = conn.execute(f'SELECT * FROM "{table}"')
                cols = [d[0] for d in cur.description]
                for row in cur:
                    rows_checked += 1
                    rec = dict(zip(cols, row, strict=True))
                    subject = None
                    if table in ("accounts", "devices"):
                        subject = rec.get("address")
                    elif table in ("otk_ec", "otk_kem"):
                        subject = device_owner.get(rec.get("device_ref"))
                    elif table == "blobs":
                        subject = rec.get("owner")
                    if table == "mailbox":
                        mailbox_rows += 1
                    allowed = name_of.get(str(subject)) if subject is not None else None
                    blob = b"|".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
                    for name, ns in session.identities.items():
                        found = _hits(ns, blob, f"{db.name}:{table} row {rec.get('seq', '')}")
                        if name == allowed:
                            legit += bool(found)  # positive control: the scanner sees it
                        else:
                            hits += found
        finally:
            conn.close()
    print(f"rows checked: {rows_checked} (mailbox rows: {mailbox_rows}, legit: {legit})")
    assert mailbox_rows >= 3  # the queued messages (1:1 from A and C, group from C)
    assert legit >= 3  # each account's own row names it
    assert not hits, hits[:10]


# --- packet capture --------------------------------------------------------------------


@dataclass
class Wire:
    conns: dict[int, Conn]
    send_conns: list[tuple[Conn, list[bytes], set[bytes]]]  # conn, c2s frames, dest hashes
    recv_conns: list[tuple[Conn, list[bytes]]]  # conn, s2c frames (DELIVER...)
    http: list[tuple[Conn, bytes]]  # decoded HTTP bodies and heads, both directions


@pytest.fixture(scope="module")
def wire(session: Session) -> Wire:
    if session.pcap is None:
        pytest.skip(session.pcap_skip)
    conns = read_pcap(session.pcap, session.port)
    w = Wire(conns, [], [], [])
    for conn in conns.values():
        req, c_rest = split_http(conn.c2s)
        resp, s_rest = split_http(conn.s2c)
        for m in req + resp:
            w.http.append((conn, m.head + b"\r\n\r\n" + m.body))
        if not req or not req[-1].start_line.startswith("GET /api/v1/ws"):
            continue
        up = resp[-1] if resp else None
        assert up is None or "permessage-deflate" not in (
            up.header("sec-websocket-extensions") or ""
        ), "compressed WebSocket: decode it before scanning"
        c_msgs, s_msgs = ws_messages(c_rest), ws_messages(s_rest)
        c_frames = [
            p for op, p in c_msgs if op == 2
        ]  # binary = XChat frames (PROTOCOL Part III §5)
        s_frames = [p for op, p in s_msgs if op == 2]
        control = [p for op, p in c_msgs + s_msgs if op != 2]
        if req[-1].header("authorization") is None:
            dests: set[bytes] = set()
            for data in c_frames:
                if data[:1] == bytes([fr.SEND_MULTI]):
                    dests |= {d.address_hash for d in fr.decode_send_multi(data).destinations}
                elif data[:1] == bytes([fr.SEND]):
                    frame = fr.decode_frame(data)
                    assert isinstance(frame, fr.Send)
                    dests |= {decode_address(d.address) for d in frame.destinations}
            w.send_conns.append((conn, c_frames + s_frames + control, dests))
        else:
            w.recv_conns.append((conn, s_frames + c_frames + control))
    return w


def test_capture_holds_no_plaintext(session: Session, wire: Wire) -> None:
    """Loopback has no TLS: plaintext must not cross the wire in any layer."""
    assert session.pcap is not None
    hits = _hits(session.canaries, session.pcap.read_bytes(), "raw pcap")
    for conn in wire.conns.values():
        hits += _hits(session.canaries, conn.c2s + conn.s2c, f"stream :{conn.client_port}")
    for conn, frames, _ in wire.send_conns:
        for f in frames:
            hits += _hits(session.canaries, f, f"send socket :{conn.client_port}")
    for conn, frames in wire.recv_conns:
        for f in frames:
            hits += _hits(session.canaries, f, f"receive socket :{conn.client_port}")
    for conn, body in wire.http:
        hits += _hits(session.canaries, body, f"HTTP :{conn.client_port}")
    print(
        f"capture: {len(wire.conns)} connections, {len(wire.send_conns)} send sockets, "
        f"{len(wire.recv_conns)} receive sockets, {len(wire.http)} HTTP messages, "
        f"{session.pcap.stat().st_size} bytes"
    )
    assert not hits, hits


def test_capture_sealed_sends_name_only_destinations(session: Session, wire: Wire) -> None:
    """On every unauthenticated (sealed-sender) socket, the only identities on the wire are
    the destinations of its SEND / SEND_MULTI frames — never the sender."""
    assert wire.send_conns, "no sealed-sender socket in the capture"
    hits: list[str] = []
    for conn, body in wire.http:  # the HTTP fallback of a sealed send, if anything used it
        if body.startswith(b"POST /api/v1/messages "):
            assert b"\r\nauthorization:" not in body.lower()
            json_body = json.loads(body.split(b"\r\n\r\n", 1)[1])
            dests = {decode_address(d["address"]) for d in json_body["destinations"]}
            for name, h in session.hashes.items():
                if h not in dests:
                    hits += _hits(session.identities[name], body, f"POST :{conn.client_port}")
    n_frames = 0
    assert any(dests for _, _, dests in wire.send_conns), "no decodable SEND in the capture"
    for conn, frames, dests in wire.send_conns:
        # A send socket that carried no SEND (opened, then closed by a reconnect) may name
        # nobody at all; the others may name their destinations only.
        others = {n for n, h in session.hashes.items() if h not in dests}
        assert others, "every client is a destination: nothing to check"
        blob = conn.c2s + conn.s2c
        for name in others:
            hits += _hits(session.identities[name], blob, f"send socket :{conn.client_port}")
            for f in frames:
                n_frames += 1
                hits += _hits(session.identities[name], f, f"send frame :{conn.client_port}")
    assert not hits, hits


def test_capture_deliveries_name_no_sender(session: Session, wire: Wire) -> None:
    """DELIVER frames (and ACKs) on the recipients' authenticated sockets carry no client
    identity: the sender is only inside the sealed envelope."""
    assert wire.recv_conns
    hits: list[str] = []
    delivers = 0
    for conn, frames in wire.recv_conns:
        for f in frames:
            if f[:1] in (bytes([0x11]), bytes([0x02])):
                delivers += f[:1] == bytes([0x11])
                hits += _hits(_all_identities(session), f, f"deliver :{conn.client_port}")
    assert delivers > 0
    assert not hits, hits


def test_capture_scanner_sees_identities(session: Session, wire: Wire) -> None:
    """Positive control: the same scanner DOES find what legitimately crosses the wire (the
    destination's address in SEND frames (as text) or SEND_MULTI frames (as its 20-byte hash),
    A's identity key in its registration) — so the negative results above are meaningful."""
    found_dest = any(
        session.identities[n][0].find(f) or session.identities[n][1].find(f)
        for conn, frames, dests in wire.send_conns
        for f in frames
        for n, h in session.hashes.items()
        if h in dests
    )
    assert found_dest
    assert any(session.identities["a"][2].find(body) for _, body in wire.http)


def test_needle_forms_find_embedded_encodings() -> None:
    """The encodings the scan looks for really match a needle embedded at any offset of a
    larger hex / base64 / base64url field (and do not match unrelated data)."""
    rng = random.Random(5)
    for _ in range(200):
        needle = rng.randbytes(rng.choice([16, 20, 32, 65]))
        n = Needle("x", forms(needle))
        blob = rng.randbytes(rng.randrange(0, 40)) + needle + rng.randbytes(rng.randrange(0, 40))
        for enc in (
            base64.b64encode(blob),
            base64.urlsafe_b64encode(blob).rstrip(b"="),
            blob.hex().encode(),
            blob.hex().upper().encode(),
            blob,
        ):
            assert n.find(b'{"content": "' + enc + b'"}') is not None
        assert n.find(base64.b64encode(rng.randbytes(200))) is None
