"""atheris target for decoder ``file_manifest_json`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("file_manifest_json")
