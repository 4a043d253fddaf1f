"""xchat.ops: running the relay's supporting services (PostgreSQL, Redis, HAProxy, nodes)."""
