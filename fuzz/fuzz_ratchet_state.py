"""atheris target for decoder ``ratchet_state`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("ratchet_state")
