"""careloop storage: one Backend interface, DuckDB (embedded default) and PostgreSQL adapters.

backend = connect()                  # CARELOOP_DATABASE_URL, default duckdb:///careloop.duckdb
backend.migrate()
store = backend.workspace("default") # every read and write scoped to the workspace
store.rows("SELECT sex, count(*) AS n FROM patient GROUP BY sex")
"""

from __future__ import annotations

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.storage.base import Backend, MergeResult
from careloop.storage.workspace import WorkspaceStore

__all__ = ["Backend", "MergeResult", "WorkspaceStore", "connect"]


def connect(url: str | None = None, *, clock: Clock = SYSTEM_CLOCK, migrate: bool = True) -> Backend:
    """Open the store named by `url` (default: settings) and bring its schema up to date."""
    settings = get_settings()
    url = url or settings.database_url
    backend: Backend
    if url.startswith("duckdb://"):
        from careloop.storage.duckdb_backend import DuckDBBackend

        backend = DuckDBBackend(url, clock=clock, timezone=settings.timezone)
    elif url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from careloop.storage.postgres_backend import PostgresBackend

        backend = PostgresBackend(url, clock=clock, timezone=settings.timezone)
    else:
        raise ConfigError(
            f"unsupported database URL scheme {url.split(':')[0]!r}: use duckdb:// or postgresql://"
        )
    if migrate:
        backend.migrate()
    return backend
