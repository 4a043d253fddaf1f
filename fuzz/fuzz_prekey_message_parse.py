"""atheris target for decoder ``prekey_message_parse`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("prekey_message_parse")
