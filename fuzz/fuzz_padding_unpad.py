"""atheris target for decoder ``padding_unpad`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("padding_unpad")
