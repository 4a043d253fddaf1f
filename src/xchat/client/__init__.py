"""xchat.client."""
