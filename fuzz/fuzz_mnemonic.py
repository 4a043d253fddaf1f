"""atheris target for decoder ``mnemonic`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("mnemonic")
