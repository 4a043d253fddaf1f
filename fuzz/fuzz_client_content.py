"""atheris target for decoder ``client_content`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("client_content")
