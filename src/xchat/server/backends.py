"""Choose the relay's storage and fan-out backends from its configuration (docs/deployment.md).

One machine (the default): SQLite in ``<data>/xchat.db``, in-process fan-out, blob index in
``<data>/blobs``. Scaled out (``database = "postgresql://..."``, ``redis = "redis://..."``):
every durable table — blob metadata included — in PostgreSQL, routing between nodes in
Redis, blob bytes in ``<data>/blobs``, a directory every node mounts (as Synapse's media
store). Several nodes without Redis would not see each other's sockets, so ``redis``
requires ``database`` and a PostgreSQL database shared by several nodes needs ``redis``.
"""

from __future__ import annotations

from xchat.fanout.base import Fanout
from xchat.fanout.local import LocalFanout
from xchat.server.config import ServerConfig
from xchat.storage.blobs import BlobStore
from xchat.storage.postgres import PostgresStore
from xchat.storage.sqlite import SqliteStore

AnyStore = SqliteStore | PostgresStore


class BackendError(ValueError):
    """A configuration that cannot work (``xchat serve`` prints it, exit status 2)."""


def check(config: ServerConfig) -> None:
    db = config.database
    if db and not db.startswith(("postgresql://", "postgres://")):
        raise BackendError(f"--database must be a postgresql:// URL, not {db.split(':')[0]!r}")
    if config.redis and not db:
        raise BackendError("--redis needs --database postgresql://... (nodes share the store)")
    if config.redis and not config.redis.startswith(("redis://", "rediss://", "unix://")):
        raise BackendError("--redis must be a redis:// URL")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise BackendError("--tls-cert and --tls-key go together")


def make_store(config: ServerConfig) -> AnyStore:
    if config.database:
        return PostgresStore(config.database)
    return SqliteStore(config.data / "xchat.db", config.delivery_hold_ms / 1000)


def make_fanout(config: ServerConfig, store: AnyStore) -> Fanout:
    if config.redis and isinstance(store, PostgresStore):
        from xchat.fanout.redis import RedisFanout

        return RedisFanout(config.redis, store, config.resync_seconds)
    return LocalFanout()


def make_blob_store(config: ServerConfig) -> BlobStore | None:
    """The scaled-out blob store (index in PostgreSQL), or None for the default one."""
    if not config.database:
        return None
    from xchat.storage.pg_blobs import PostgresBlobStore

    return PostgresBlobStore.from_env(config.data / "blobs", config.database)
