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

Runs of XChat and vodozemac are interleaved so background load hits both alike; each
figure is reported by wall clock and by process CPU time (steadier on a shared machine), and
each ratio is the median of per-run ratios. Results go to stdout as a table and to
``bench/results/crypto.json``.
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


class Clock:
    """Wall and process-CPU time together: on a shared machine CPU time is the steadier
    figure (other processes inflate wall time but not our CPU time)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self, n: int) -> tuple[float, float]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return n / wall, n / max(cpu, 1e-9)


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


def xchat_one_direction(n: int) -> tuple[float, float]:
    alice, bob = XChatPair().setup()
    enc, dec = alice.encrypt, bob.decrypt
    t = Clock()
    for _ in range(n):
        dec(enc(MESSAGE))
    return t.stop(n)


def xchat_ping_pong(n: int) -> tuple[float, float]:
    alice, bob = XChatPair().setup()
    a_enc, a_dec, b_enc, b_dec = alice.encrypt, alice.decrypt, bob.encrypt, bob.decrypt
    t = Clock()
    for _ in range(n // 2):
        b_dec(a_enc(MESSAGE))
        a_dec(b_enc(MESSAGE))
    return t.stop((n // 2) * 2)


def xchat_setup(n: int) -> tuple[float, float]:
    pair = XChatPair()
    alice_id, bob_id, bundle, store = pair.alice_id, pair.bob_id, pair.bundle, pair.store
    t = Clock()
    for _ in range(n):
        alice = Session.initiate(alice_id, bundle)
        Session.respond(bob_id, store, alice.encrypt(MESSAGE))
    return t.stop(n)


def xchat_setup_with_one_time_key(n: int) -> tuple[float, float]:
    """Setup including DH4 (one-time EC prekey) — the common case when keys are stocked."""
    pair = XChatPair()
    otks = [OneTimePreKeyRecord.generate(i) for i in range(n)]
    store = InMemoryPreKeyStore([pair.spk], otks, [pair.kem])
    bundles = [
        PreKeyBundle.from_records(pair.bob_id.public, 1, pair.spk, pair.kem, k) for k in otks
    ]
    alice_id, bob_id = pair.alice_id, pair.bob_id
    t = Clock()
    for bundle in bundles:
        alice = Session.initiate(alice_id, bundle)
        Session.respond(bob_id, store, alice.encrypt(MESSAGE))
    return t.stop(n)


def setup_breakdown(n: int) -> dict[str, float]:
    """Microseconds per primitive inside one XChat setup, to explain the setup figure."""
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pair = XChatPair()
    bundle, kem = pair.bundle, pair.kem
    x = X25519PrivateKey.generate()
    peer = X25519PrivateKey.generate().public_key()
    ct = MLKEM1024PublicKey.from_public_bytes(kem.public).encapsulate()[1]

    def per_call(fn: Callable[[], object]) -> float:
        t = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - t) / n * 1e6

    return {
        "bundle_verify_2_ed25519": per_call(bundle.verify),
        "x25519_exchange": per_call(lambda: x.exchange(peer)),
        "x25519_keygen": per_call(lambda: X25519PrivateKey.from_private_bytes(os.urandom(32))),
        "mlkem1024_parse_and_encaps": per_call(
            lambda: MLKEM1024PublicKey.from_public_bytes(kem.public).encapsulate()
        ),
        "mlkem1024_decaps": per_call(lambda: kem.private_key.decapsulate(ct)),
    }


# --- vodozemac -----------------------------------------------------------------------------


def _pre_key(message: Any) -> Any:
    pre_key = message.to_pre_key()
    assert pre_key is not None, "first Olm message must be a PreKey message"
    return pre_key


def _vz_pair() -> tuple[Any, Any]:
    a, b = vodozemac.Account(), vodozemac.Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys.values()))
    b.mark_keys_as_published()
    alice = a.create_outbound_session(b.curve25519_key, otk)
    bob, _ = b.create_inbound_session(a.curve25519_key, _pre_key(alice.encrypt(MESSAGE)))
    alice.decrypt(bob.encrypt(MESSAGE))
    return alice, bob


def vz_one_direction(n: int) -> tuple[float, float]:
    alice, bob = _vz_pair()
    enc, dec = alice.encrypt, bob.decrypt
    t = Clock()
    for _ in range(n):
        dec(enc(MESSAGE))
    return t.stop(n)


def vz_ping_pong(n: int) -> tuple[float, float]:
    alice, bob = _vz_pair()
    a_enc, a_dec, b_enc, b_dec = alice.encrypt, alice.decrypt, bob.encrypt, bob.decrypt
    t = Clock()
    for _ in range(n // 2):
        b_dec(a_enc(MESSAGE))
        a_dec(b_enc(MESSAGE))
    return t.stop((n // 2) * 2)


def vz_setup(n: int) -> tuple[float, float]:
    a, b = vodozemac.Account(), vodozemac.Account()
    b.generate_one_time_keys(n)
    otks = list(b.one_time_keys.values())
    b.mark_keys_as_published()
    a_key, b_key = a.curve25519_key, b.curve25519_key
    t = Clock()
    for otk in otks:
        alice = a.create_outbound_session(b_key, otk)
        b.create_inbound_session(a_key, _pre_key(alice.encrypt(MESSAGE)))
    return t.stop(n)


# --- harness -------------------------------------------------------------------------------

Timed = Callable[[int], tuple[float, float]]


def _summary(rates: list[float]) -> dict[str, Any]:
    med = statistics.median(rates)
    return {
        "median": med,
        "min": min(rates),
        "max": max(rates),
        "spread_pct": 100 * (max(rates) - min(rates)) / med,
        "runs": [round(r, 1) for r in rates],
    }


def compare(ours: Timed, theirs: Timed | None, n: int, runs: int) -> dict[str, Any]:
    """Interleave runs (ours, theirs, ours, ...) so background load hits both alike."""
    ours(max(n // 10, 10))  # warm-up
    if theirs is not None:
        theirs(max(n // 10, 10))
    x_wall, x_cpu, v_wall, v_cpu = [], [], [], []
    for _ in range(runs):
        w, c = ours(n)
        x_wall.append(w)
        x_cpu.append(c)
        if theirs is not None:
            w, c = theirs(n)
            v_wall.append(w)
            v_cpu.append(c)
    out: dict[str, Any] = {
        "n_per_run": n,
        "xchat": {"wall": _summary(x_wall), "cpu": _summary(x_cpu)},
    }
    if theirs is not None:
        out["vodozemac"] = {"wall": _summary(v_wall), "cpu": _summary(v_cpu)}
        out["ratio_wall"] = statistics.median(a / b for a, b in zip(x_wall, v_wall, strict=True))
        out["ratio_cpu"] = statistics.median(a / b for a, b in zip(x_cpu, v_cpu, strict=True))
    return out


def machine_info() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cryptography": version("cryptography"),
        "vodozemac": version("vodozemac"),
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 3 runs")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "crypto.json")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    scale = 0.1 if args.quick else 1.0

    workloads: list[tuple[str, str, Timed, Timed | None, int]] = [
        ("one-direction", "pairs/s", xchat_one_direction, vz_one_direction, 20000),
        ("ping-pong", "msgs/s", xchat_ping_pong, vz_ping_pong, 4000),
        ("setup", "setups/s", xchat_setup, vz_setup, 400),
        ("setup+OPK", "setups/s", xchat_setup_with_one_time_key, None, 400),
    ]
    results: dict[str, Any] = {"machine": machine_info(), "message_bytes": len(MESSAGE)}
    print(f"machine: {results['machine']}")
    head = (
        f"{'workload':<15}{'unit':<10}{'clock':<6}{'xchat':>10}{'±%':>6}{'vodozemac':>11}{'±%':>6}"
    )
    print(head + f"{'ratio':>7}")
    for name, unit, ours, theirs, n in workloads:
        r = compare(ours, theirs, max(int(n * scale), 20), runs)
        r["unit"] = unit
        results[name] = r
        for clock in ("wall", "cpu"):
            x = r["xchat"][clock]
            line = f"{name:<15}{unit:<10}{clock:<6}{x['median']:>10,.0f}{x['spread_pct']:>6.1f}"
            if theirs is not None:
                v = r["vodozemac"][clock]
                line += f"{v['median']:>11,.0f}{v['spread_pct']:>6.1f}{r['ratio_' + clock]:>7.2f}"
            print(line)
    breakdown = setup_breakdown(max(int(500 * scale), 50))
    # per setup without OPK: Alice 4 exchanges + 2 keygens, Bob 5 exchanges + 1 keygen
    breakdown["x25519_exchanges_per_setup"] = 9
    breakdown["x25519_keygens_per_setup"] = 3
    results["xchat_setup_breakdown_us_cpu"] = breakdown
    print("xchat setup breakdown (us CPU):", {k: round(v, 1) for k, v in breakdown.items()})
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
