"""atheris target for decoder ``group_welcome`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("group_welcome")
