"""atheris target for decoder ``frames_send_fast`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("frames_send_fast")
