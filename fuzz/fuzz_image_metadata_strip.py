"""atheris target for decoder ``image_metadata_strip`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("image_metadata_strip")
