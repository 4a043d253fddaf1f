"""xchat.cli."""
