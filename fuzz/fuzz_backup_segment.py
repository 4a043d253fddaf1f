"""atheris target for decoder ``backup_segment`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("backup_segment")
