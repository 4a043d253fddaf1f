"""xchat.server."""
