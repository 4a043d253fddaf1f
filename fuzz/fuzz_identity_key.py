"""atheris target for decoder ``identity_key`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("identity_key")
