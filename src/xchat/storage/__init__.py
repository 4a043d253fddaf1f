"""xchat.storage."""
