"""xchat.protocol."""
