"""XChat pairwise sessions vs vodozemac (Olm), on identical 256-byte messages.

Usage: ``.venv/bin/python bench/crypto_bench.py [--quick] [--runs N] [--out PATH]``

Workloads (each run is timed separately; we report median and spread over runs):

- one-direction: Alice encrypts, Bob decrypts, repeated on one chain (symmetric ratchet
  only). Unit: encrypt+decrypt pairs per second.
- ping-pong: Alice and Bob alternate; every message crosses a DH ratchet step. Unit:
  messages per second (each = one encrypt + one decrypt).
- setup: a complete session start. XChat: bundle signature checks + PQXDH (X25519 x4 +
  ML-KEM-1024 encaps/decaps) + ratchet init on both sides + first message encrypted and
  decrypted. vodozemac: Olm 3DH outbound + inbound session incl. first message (no
  signature checks, no post-quantum KEM). Unit: setups per second.

Results go to stdout as a table and to ``bench/results/crypto.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import vodozemac  # noqa: E402

from xchat.crypto.keys import IdentityKeyPair  # noqa: E402
from xchat.crypto.prekeys import (  # noqa: E402
    InMemoryPreKeyStore,
    KemPreKeyRecord,
    OneTimePreKeyRecord,
    PreKeyBundle,
    SignedPreKeyRecord,
)
from xchat.crypto.session import Session  # noqa: E402

MESSAGE = bytes(range(256))


# --- XChat ---------------------------------------------------------------------------------


class XChatPair:
    def __init__(self) -> None:
        self.alice_id = IdentityKeyPair.generate()
        self.bob_id = IdentityKeyPair.generate()
        self.spk = SignedPreKeyRecord.generate(self.bob_id, 1)
        self.kem = KemPreKeyRecord.generate(self.bob_id, 1, last_resort=True)
        self.store = InMemoryPreKeyStore([self.spk], [], [self.kem])
        self.bundle = PreKeyBundle.from_records(self.bob_id.public, 1, self.spk, self.kem)

    def setup(self) -> tuple[Session, Session]:
        alice = Session.initiate(self.alice_id, self.bundle)
        bob, _, _ = Session.respond(self.bob_id, self.store, alice.encrypt(MESSAGE))
        alice.decrypt(bob.encrypt(MESSAGE))  # settle: both sides on normal messages
        return alice, bob


def xchat_one_direction(n: int) -> float:
    alice, bob = XChatPair().setup()
    enc, dec = alice.encrypt, bob.decrypt
    t = time.perf_counter()
    for _ in range(n):
        dec(enc(MESSAGE))
    return n / (time.perf_counter() - t)


def xchat_ping_pong(n: int) -> float:
    alice, bob = XChatPair().setup()
    a_enc, a_dec, b_enc, b_dec = alice.encrypt, alice.decrypt, bob.encrypt, bob.decrypt
    t = time.perf_counter()
    for _ in range(n // 2):
        b_dec(a_enc(MESSAGE))
        a_dec(b_enc(MESSAGE))
    return (n // 2) * 2 / (time.perf_counter() - t)


def xchat_setup(n: int) -> float:
    pair = XChatPair()
    alice_id, bob_id, bundle, store = pair.alice_id, pair.bob_id, pair.bundle, pair.store
    t = time.perf_counter()
    for _ in range(n):
        alice = Session.initiate(alice_id, bundle)
        Session.respond(bob_id, store, alice.encrypt(MESSAGE))
    return n / (time.perf_counter() - t)


def xchat_setup_with_one_time_key(n: int) -> float:
    """Setup including DH4 (one-time EC prekey) — the common case when keys are stocked."""
    pair = XChatPair()
    otks = [OneTimePreKeyRecord.generate(i) for i in range(n)]
    store = InMemoryPreKeyStore([pair.spk], otks, [pair.kem])
    bundles = [
        PreKeyBundle.from_records(pair.bob_id.public, 1, pair.spk, pair.kem, k) for k in otks
    ]
    alice_id, bob_id = pair.alice_id, pair.bob_id
    t = time.perf_counter()
    for bundle in bundles:
        alice = Session.initiate(alice_id, bundle)
        Session.respond(bob_id, store, alice.encrypt(MESSAGE))
    return n / (time.perf_counter() - t)


# --- vodozemac -----------------------------------------------------------------------------


def _vz_pair() -> tuple[Any, Any]:
    a, b = vodozemac.Account(), vodozemac.Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys.values()))
    b.mark_keys_as_published()
    alice = a.create_outbound_session(b.curve25519_key, otk)
    bob, _ = b.create_inbound_session(a.curve25519_key, alice.encrypt(MESSAGE).to_pre_key())
    alice.decrypt(bob.encrypt(MESSAGE))
    return alice, bob


def vz_one_direction(n: int) -> float:
    alice, bob = _vz_pair()
    enc, dec = alice.encrypt, bob.decrypt
    t = time.perf_counter()
    for _ in range(n):
        dec(enc(MESSAGE))
    return n / (time.perf_counter() - t)


def vz_ping_pong(n: int) -> float:
    alice, bob = _vz_pair()
    a_enc, a_dec, b_enc, b_dec = alice.encrypt, alice.decrypt, bob.encrypt, bob.decrypt
    t = time.perf_counter()
    for _ in range(n // 2):
        b_dec(a_enc(MESSAGE))
        a_dec(b_enc(MESSAGE))
    return (n // 2) * 2 / (time.perf_counter() - t)


def vz_setup(n: int) -> float:
    a, b = vodozemac.Account(), vodozemac.Account()
    b.generate_one_time_keys(n)
    otks = list(b.one_time_keys.values())
    b.mark_keys_as_published()
    a_key, b_key = a.curve25519_key, b.curve25519_key
    t = time.perf_counter()
    for otk in otks:
        alice = a.create_outbound_session(b_key, otk)
        b.create_inbound_session(a_key, alice.encrypt(MESSAGE).to_pre_key())
    return n / (time.perf_counter() - t)


# --- harness -------------------------------------------------------------------------------


def measure(fn: Callable[[int], float], n: int, runs: int) -> dict[str, Any]:
    fn(max(n // 10, 10))  # warm-up
    rates = [fn(n) for _ in range(runs)]
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "spread_pct": 100 * (max(rates) - min(rates)) / statistics.median(rates),
        "runs": [round(r, 1) for r in rates],
        "n_per_run": n,
    }


def machine_info() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cryptography": version("cryptography"),
        "vodozemac": version("vodozemac"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 3 runs")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "crypto.json")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    scale = 0.1 if args.quick else 1.0

    workloads = [
        ("one-direction", "pairs/s", xchat_one_direction, vz_one_direction, 20000),
        ("ping-pong", "msgs/s", xchat_ping_pong, vz_ping_pong, 6000),
        ("setup", "setups/s", xchat_setup, vz_setup, 1000),
    ]
    results: dict[str, Any] = {"machine": machine_info(), "message_bytes": len(MESSAGE)}
    rows = []
    for name, unit, ours, theirs, n in workloads:
        count = max(int(n * scale), 20)
        x = measure(ours, count, runs)
        v = measure(theirs, count, runs)
        ratio = x["median"] / v["median"]
        results[name] = {"unit": unit, "xchat": x, "vodozemac": v, "ratio": ratio}
        rows.append((name, unit, x, v, ratio))
    extra = measure(xchat_setup_with_one_time_key, max(int(1000 * scale), 20), runs)
    results["setup-with-one-time-ec"] = {"unit": "setups/s", "xchat": extra}

    print(f"machine: {results['machine']}")
    print(
        f"{'workload':<16}{'unit':<10}{'xchat':>12}{'±%':>6}{'vodozemac':>12}{'±%':>6}{'ratio':>8}"
    )
    for name, unit, x, v, ratio in rows:
        print(
            f"{name:<16}{unit:<10}{x['median']:>12,.0f}{x['spread_pct']:>6.1f}"
            f"{v['median']:>12,.0f}{v['spread_pct']:>6.1f}{ratio:>8.2f}"
        )
    print(f"{'setup+OPK':<16}{'setups/s':<10}{extra['median']:>12,.0f}{extra['spread_pct']:>6.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
