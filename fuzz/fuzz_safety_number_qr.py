"""atheris target for decoder ``safety_number_qr`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("safety_number_qr")
