"""xchat.fanout."""
