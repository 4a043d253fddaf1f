"""atheris target for decoder ``server_challenge`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("server_challenge")
