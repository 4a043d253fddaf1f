"""atheris target for decoder ``session_record`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("session_record")
