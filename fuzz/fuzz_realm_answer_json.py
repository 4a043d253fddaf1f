"""atheris target for decoder ``realm_answer_json`` (fuzz/xchat_decoders.py)."""

from _target import main

if __name__ == "__main__":
    main("realm_answer_json")
