"""atheris target for decoder ``prekey_bundle_json`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("prekey_bundle_json")
