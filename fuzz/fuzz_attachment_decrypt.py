"""atheris target for decoder ``attachment_decrypt`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("attachment_decrypt")
