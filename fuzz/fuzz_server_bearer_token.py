"""atheris target for decoder ``server_bearer_token`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("server_bearer_token")
