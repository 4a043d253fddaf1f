"""XChat group messages (sender keys) vs vodozemac Megolm, and the cost of a group send.

Usage: ``.venv/bin/python bench/group_bench.py [--quick] [--runs N] [--out PATH]``

Workloads (each run timed separately; median and spread over runs, runs interleaved so a
load spike hits both sides):

- sender-key pairs: one member encrypts a 256-byte message with its sender key
  (HMAC chain step, HKDF, AES-256-GCM, Ed25519 sign), another verifies and decrypts it.
  vodozemac: ``GroupSession.encrypt`` + ``InboundGroupSession.decrypt`` (Megolm: AES-CBC,
  HMAC, Ed25519 sign/verify, in Rust). Unit: encrypt+decrypt pairs per second.
- component costs: pyca Ed25519 sign and verify, our encrypt and decrypt alone (µs).
- group send for 100 and 1,000 members (one device each): pad the 256-byte message, encrypt
  once with the sender key, then ``xchat.crypto.sealed.seal_multi`` (one shared ciphertext
  plus one sealed per-recipient-device header). Client CPU time per group message
  (``time.process_time``, including encoding the frame), and bytes uploaded: the length of
  the real ``SEND_MULTI`` frame (PROTOCOL Part III §5.2: shared once, a 49-byte header plus routing
  per device, delivery-token access) and, for comparison, of the PROTOCOL Part III §5 SEND frame
  that repeats ``header || shared`` per envelope. Receiver CPU: ``unseal_multi`` +
  sender-key decrypt for one member. Relay: CPU to parse and expand the SEND_MULTI.

Results go to stdout as a table and to ``bench/results/groups.json``. The machine is shared
with other work: the load average at start and end is recorded next to the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import vodozemac  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

import common  # noqa: E402
from xchat.crypto.certificate import issue_sender_certificate  # noqa: E402
from xchat.crypto.keys import IdentityKeyPair, decode_address  # noqa: E402
from xchat.crypto.padding import pad  # noqa: E402
from xchat.crypto.sealed import seal_multi, unseal_multi  # noqa: E402
from xchat.crypto.sender_keys import (  # noqa: E402
    SEALED_CONTENT_TYPE,
    SenderKeyRecord,
    SenderKeyState,
)
from xchat.protocol import frames as fr  # noqa: E402

MESSAGE = bytes(range(256))
GROUP_ID = bytes(16)
NOW_MS = 1_700_000_000_000
#: PROTOCOL Part III §5 SEND, per destination: addr_len u8, access_kind u8, access_len u16,
#: delivery token (16), n_env u16, and per envelope device_id u32, envelope_id (16),
#: content_len u32 (the address itself is added with its real length).
ROUTING_FIXED = 1 + 1 + 2 + 16 + 2 + 4 + 16 + 4


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "median": common.median(samples),
        "spread_pct": round(100 * common.spread(samples), 1),
        "min": min(samples),
        "max": max(samples),
        "runs": samples,
    }


# --- sender keys vs Megolm ------------------------------------------------------------


def xchat_pairs(n: int) -> tuple[float, float]:
    sender = SenderKeyState.generate(GROUP_ID)
    receiver = SenderKeyState.from_distribution(sender.distribution_message())
    encrypt, decrypt = sender.encrypt, receiver.decrypt
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        decrypt(encrypt(MESSAGE))
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def megolm_pairs(n: int) -> tuple[float, float]:
    outbound = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(outbound.session_key)
    encrypt, decrypt = outbound.encrypt, inbound.decrypt
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        decrypt(encrypt(MESSAGE))
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def micro(fn: Callable[[], object], n: int) -> float:
    """Mean µs per call of ``fn`` over ``n`` calls."""
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def components(n: int) -> dict[str, float]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    data = MESSAGE + bytes(80)
    signature = key.sign(data)
    sender = SenderKeyState.generate(GROUP_ID)
    receiver = SenderKeyState.from_distribution(sender.distribution_message())
    messages = [sender.encrypt(MESSAGE) for _ in range(n + 1)]
    it = iter(messages)
    return {
        "ed25519_sign_us": micro(lambda: key.sign(data), n),
        "ed25519_verify_us": micro(lambda: public.verify(signature, data), n),
        "sender_key_decrypt_us": micro(lambda: receiver.decrypt(next(it)), n),
        "sender_key_encrypt_us": micro(lambda: sender.encrypt(MESSAGE), n),
    }


# --- group send -----------------------------------------------------------------------


def group_send(members: int, messages: int, runs: int) -> dict[str, Any]:
    server_key = Ed25519PrivateKey.generate()
    sender = IdentityKeyPair.generate()
    certificate = issue_sender_certificate(server_key, sender.public, 1, NOW_MS + 86_400_000)
    others = [IdentityKeyPair.generate() for _ in range(members - 1)]
    recipients = [(o.public, 1) for o in others]
    chain = SenderKeyState.generate(GROUP_ID)
    record = SenderKeyRecord([SenderKeyState.from_distribution(chain.distribution_message())])

    hashes = [decode_address(o.public.address()) for o in others]
    cpu_ms: list[float] = []
    shared, headers, frame = b"", {}, b""
    for _ in range(runs):
        start = time.process_time()
        for _ in range(messages):
            group_message = chain.encrypt(pad(MESSAGE))
            shared, headers = seal_multi(
                sender, certificate, recipients, SEALED_CONTENT_TYPE, group_message
            )
            frame = fr.encode_send_multi(
                fr.SendMulti(
                    1,
                    shared,
                    tuple(
                        fr.MultiDestination(
                            hashes[i],
                            fr.TokenAccess(bytes(16)),
                            (fr.MultiEnvelope(1, bytes(16), headers[r]),),
                        )
                        for i, r in enumerate(recipients)
                    ),
                )
            )
        cpu_ms.append((time.process_time() - start) / messages * 1000)
    # the relay's side of the same frame: parse and expand to per-device rows
    start = time.process_time()
    expanded = fr.expand_send_multi(fr.decode_send_multi(frame))
    server_expand_ms = (time.process_time() - start) * 1000
    assert len(expanded) == len(recipients)
    v1_frame = fr.encode_frame(
        fr.Send(
            1,
            tuple(
                fr.Destination(
                    o.public.address(),
                    fr.TokenAccess(bytes(16)),
                    (fr.OutEnvelope(1, bytes(16), headers[r] + shared),),
                )
                for o, r in zip(others, recipients, strict=True)
            ),
        )
    )

    # receiver side: the last message, as member 0 sees it (fresh record per run)
    header = headers[recipients[0]]
    server_pub = server_key.public_key().public_bytes_raw()
    recv_ms: list[float] = []
    for _ in range(runs):
        fresh = SenderKeyRecord.from_bytes(record.to_bytes())
        start = time.process_time()
        opened = unseal_multi(others[0], header, shared, server_pub, NOW_MS)
        fresh.decrypt(opened.content)
        recv_ms.append((time.process_time() - start) * 1000)

    header_bytes = sum(len(h) for h in headers.values())
    routing = sum(ROUTING_FIXED + len(o.public.address()) for o in others)
    return {
        "members": members,
        "recipient_devices": len(recipients),
        "client_cpu_ms_per_message": summarize(cpu_ms),
        "receiver_cpu_ms_per_message": summarize(recv_ms),
        "shared_bytes": len(shared),
        "header_bytes_each": len(next(iter(headers.values()))),
        "crypto_upload_bytes": len(shared) + header_bytes,
        "upload_bytes_multi_send": len(frame),
        "upload_bytes_estimated_before": len(shared) + header_bytes + routing,
        "upload_bytes_contract_v1_frame": len(v1_frame),
        "server_parse_expand_ms": server_expand_ms,
    }


# --- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 3 runs")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "groups.json")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    pairs_n = 2000 if args.quick else 10000

    doc = common.new_result("groups", sys.argv)
    doc["message_bytes"] = len(MESSAGE)

    xs, vs = [], []
    for _ in range(runs):
        xs.append(xchat_pairs(pairs_n))
        vs.append(megolm_pairs(pairs_n))
    x, v = summarize([w for w, _ in xs]), summarize([w for w, _ in vs])
    xc, vc = summarize([c for _, c in xs]), summarize([c for _, c in vs])
    doc["sender-key-pairs"] = {
        "unit": "pairs/s (wall clock)",
        "xchat": x,
        "vodozemac": v,
        "ratio": x["median"] / v["median"],
    }
    # CPU-time rate: less distorted than wall clock when other processes share the cores
    doc["sender-key-pairs-cpu"] = {
        "unit": "pairs per CPU second",
        "xchat": xc,
        "vodozemac": vc,
        "ratio": xc["median"] / vc["median"],
    }
    comp_runs = [components(1000 if args.quick else 4000) for _ in range(runs)]
    doc["components_us"] = {k: statistics.median(c[k] for c in comp_runs) for k in comp_runs[0]}

    sizes = []
    for members, messages in ((100, 10 if args.quick else 40), (1000, 2 if args.quick else 6)):
        sizes.append(group_send(members, messages, runs))
    doc["group_send"] = sizes
    targets = {
        "megolm_ratio_min": 1.0,
        "cpu_ms_1000_max": 200.0,
        "upload_kb_1000_max": 120.0,
    }
    big = sizes[-1]
    doc["targets"] = targets
    doc["summary"] = {
        "sender-key pairs/s (median)": x["median"],
        "Megolm pairs/s (median)": v["median"],
        "ratio (target >= 1.0)": x["median"] / v["median"],
        "ratio on CPU time": xc["median"] / vc["median"],
        "1,000-member send CPU ms (target <= 200)": big["client_cpu_ms_per_message"]["median"],
        "1,000-member crypto upload KB (target <= 120)": big["crypto_upload_bytes"] / 1000,
        "1,000-member upload incl. routing KB": big["upload_bytes_multi_send"] / 1000,
    }
    common.finish_result(doc)

    print(f"machine: {common.machine_line(doc['machine'])}")
    print(f"{'workload':<22}{'xchat':>12}{'±%':>7}{'megolm':>12}{'±%':>7}{'ratio':>8}")
    print(
        f"{'pairs/s (256 B)':<22}{x['median']:>12,.0f}{x['spread_pct']:>7.1f}"
        f"{v['median']:>12,.0f}{v['spread_pct']:>7.1f}{x['median'] / v['median']:>8.2f}"
    )
    print(
        f"{'pairs/CPU-s (256 B)':<22}{xc['median']:>12,.0f}{xc['spread_pct']:>7.1f}"
        f"{vc['median']:>12,.0f}{vc['spread_pct']:>7.1f}{xc['median'] / vc['median']:>8.2f}"
    )
    print(
        "components (µs): " + ", ".join(f"{k}={val:.1f}" for k, val in doc["components_us"].items())
    )
    print(
        f"{'members':>8}{'send CPU ms':>13}{'±%':>7}{'recv CPU ms':>13}{'shared B':>10}"
        f"{'hdr B':>7}{'crypto KB':>11}{'+routing KB':>13}{'v1 frame KB':>13}"
    )
    for row in sizes:
        cpu, recv = row["client_cpu_ms_per_message"], row["receiver_cpu_ms_per_message"]
        print(
            f"{row['members']:>8}{cpu['median']:>13.1f}{cpu['spread_pct']:>7.1f}"
            f"{recv['median']:>13.2f}{row['shared_bytes']:>10}{row['header_bytes_each']:>7}"
            f"{row['crypto_upload_bytes'] / 1000:>11.1f}"
            f"{row['upload_bytes_multi_send'] / 1000:>13.1f}"
            f"{row['upload_bytes_contract_v1_frame'] / 1000:>13.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
