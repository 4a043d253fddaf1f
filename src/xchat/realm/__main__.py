"""``python -m xchat.realm serve ...``: the realm on its own, without the rest of the CLI
(the same command as ``xchat realm serve``)."""

from __future__ import annotations

from xchat.realm.cli import realm_group

if __name__ == "__main__":
    realm_group.main(prog_name="xchat realm")
