"""xchat.crypto."""
