"""atheris target for decoder ``group_history`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("group_history")
