"""atheris target for decoder ``sender_key_distribution`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("sender_key_distribution")
