"""atheris target for decoder ``bundle_response_json`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("bundle_response_json")
