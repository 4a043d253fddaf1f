"""``python -m xchat.cli``: the ``xchat`` command."""

from xchat.cli.main import main

main()
