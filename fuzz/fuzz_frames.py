"""atheris target for decoder ``frames`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("frames")
