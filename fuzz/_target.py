"""Shared atheris (libFuzzer) driver: ``fuzz/fuzz_<name>.py`` calls :func:`main` with a
decoder name from ``xchat_decoders.DECODERS``.

Property checked (RELIABILITY.md §1): any input yields a value or an
:class:`xchat.errors.XChatError`; anything else propagates and libFuzzer records a crash
file (``-artifact_prefix``). Valid seeds are written into the corpus directory first.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _seed_bytes(kind: str, seed: Any) -> bytes:
    if kind == "bytes":
        return bytes(seed)
    if kind == "text":
        return str(seed).encode("utf-8")
    return json.dumps(seed).encode("utf-8")


def main(name: str) -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris (see fuzz/run.sh)")

    with atheris.instrument_imports(include=["xchat", "xchat_decoders"]):
        import xchat_decoders as D

        from xchat.errors import XChatError

        decoder = D.BY_NAME[name]
        seeds = decoder.seeds()  # builds the sample world: imports every module it touches

    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        out = Path(corpus[0])
        out.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds):
            (out / f"seed-{i}").write_bytes(_seed_bytes(decoder.kind, seed))

    def test_one(data: bytes) -> None:
        value = D.as_input(decoder, data)
        if value is None and decoder.kind == "json":
            return
        with contextlib.suppress(XChatError):
            decoder.run(value)

    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
