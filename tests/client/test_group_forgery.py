"""A group member cannot speak under another member's sender key (PROTOCOL Part V §2, §7).

Sender-key messages carry no signature since version 2: every member holds every chain key,
and what tells members apart is the multi-recipient sealed envelope, whose per-recipient tag
is keyed by the sender's and recipient's static X25519 keys, plus the receiver choosing the
chain by that authenticated sender. These tests perform the attack a malicious member would
try, through a real relay, with nothing but what that member legitimately holds: its own
profile (with its copy of the victim's chain), its own identity, and the victim's sender
certificate (which the member saw in the victim's earlier envelopes).
"""

from __future__ import annotations

import base64
import secrets
import time

import httpx
import pytest
from _crowd import Crowd

from xchat.client import content as ct
from xchat.client import events as ev
from xchat.client.client import Client
from xchat.crypto import padding, sealed
from xchat.crypto.keys import IdentityPublicKey
from xchat.crypto.sender_keys import SEALED_CONTENT_TYPE, SenderKeyRecord
from xchat.testing import ServerProcess


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def trio(crowd: Crowd) -> list[Client]:
    return await crowd.make("sender", "mallory", "reader")


def _forged_group_message(
    mallory: Client, victim: Client, gid: str, text: str, *, certificate: bytes, target: Client
) -> tuple[bytes, bytes]:
    """Encrypt ``text`` under Mallory's copy of the victim's chain and seal it for ``target``
    with Mallory's identity and the given certificate; returns the envelope's shared part +
    header as the relay would store them (shared, header)."""
    raw = mallory.store.get_sender_key(gid, victim.address, 1)
    assert raw is not None, "mallory holds the victim's chain (it is a member)"
    chain = SenderKeyRecord.from_bytes(raw).states[0]
    chain.is_own = True  # Mallory's own code may do anything with its own copy
    content = ct.Content(
        id=ct.new_message_id(),
        type="text",
        ts=int(time.time() * 1000),
        text=text,
        group={"id": gid},
    )
    message = chain.encrypt(padding.pad(content.encode()))
    recipient = (IdentityPublicKey.decode(target.identity.public.encode()), 1)
    shared, headers = sealed.seal_multi(
        mallory.identity, certificate, [recipient], SEALED_CONTENT_TYPE, message
    )
    return shared, headers[recipient]


def _deliver(server: ServerProcess, target: Client, shared: bytes, header: bytes) -> None:
    token = target.store.get_meta("delivery_token")
    body = {
        "shared": _b64(shared),
        "destinations": [
            {
                "address": target.address,
                "delivery_token": None if token is None else _b64(token),
                "pow": None,
                "envelopes": [{"device_id": 1, "id": _b64(secrets.token_bytes(16)),
                               "header": _b64(header)}],
            }
        ],
    }  # fmt: skip
    r = httpx.post(f"{server.url}/api/v1/messages/multi", json=body, timeout=10)
    assert r.status_code == 200, r.text


async def _receive_until(client: Client, text: str) -> list[ev.Event]:
    """Receive until a message with ``text`` arrived (the relay delivers in mailbox order,
    so everything stored before it has been processed by then)."""
    seen: list[ev.Event] = []
    for _ in range(20):
        seen += await client.receive(wait=0.2)
        if any(isinstance(e, ev.MessageReceived) and e.text == text for e in seen):
            return seen
    raise AssertionError(f"{text!r} never arrived: {seen}")


async def test_member_cannot_send_under_anothers_chain(
    trio: list[Client], server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, mallory, reader = trio
    # Mallory's sealing code skips the honest client's "certificate is mine" check.
    monkeypatch.setattr(sealed, "_inner", lambda _s, cert, kind, data: cert + bytes([kind]) + data)
    info = await sender.create_group("club", [mallory.address, reader.address])
    gid = info.id
    for c in (mallory, reader):
        await c.receive()
    await sender.send_group(gid, "genuine")
    for c in (mallory, reader):
        assert "genuine" in [e.text for e in await _receive_until(c, "genuine")
                             if isinstance(e, ev.MessageReceived)]  # fmt: skip
    await mallory.send_group(gid, "mallory speaking")  # reader now holds Mallory's chain
    await _receive_until(reader, "mallory speaking")

    mallory_cert = mallory.store.get_meta("sender_cert")
    victim_cert = sender.store.get_meta("sender_cert")
    assert mallory_cert is not None and victim_cert is not None
    # 1. Under the victim's chain, sealed honestly as Mallory: the reader looks the chain up
    #    by the sealed sender (Mallory), finds no chain with the victim's key id.
    shared, header = _forged_group_message(
        mallory, sender, gid, "forged under own name", certificate=mallory_cert, target=reader
    )
    _deliver(server, reader, shared, header)
    # 2. The same, carrying the victim's certificate: the tag was made with Mallory's static
    #    key, the reader checks it against the victim's, and the envelope fails closed.
    shared, header = _forged_group_message(
        mallory, sender, gid, "forged as the victim", certificate=victim_cert, target=reader
    )
    _deliver(server, reader, shared, header)

    await sender.send_group(gid, "after the attack")  # ordered after both forgeries
    seen = await _receive_until(reader, "after the attack")
    shown = [(e.text, e.sender) for e in seen if isinstance(e, ev.MessageReceived)]
    assert ("after the attack", sender.address) in shown
    assert not [t for t, _ in shown if t.startswith("forged")], shown
    history = [h.text for h in reader.group_history(gid)]
    assert not [t for t in history if t and t.startswith("forged")], history
