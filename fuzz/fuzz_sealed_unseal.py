"""atheris target for decoder ``sealed_unseal`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("sealed_unseal")
