"""The one Backend interface: shared logic here, a few engine hooks in each adapter.

Modelled on Splink's DatabaseAPI: the base class owns migrations, workspaces, introspection and the
ingestion merge protocol; an adapter implements only how to run a statement, fetch Arrow, bulk-load
Arrow and merge staged rows. Errors carry the SQL that failed.

Feature code never holds a Backend directly for reads: it asks for `backend.workspace(name)` and
gets a `WorkspaceStore` whose queries are scoped to that workspace by construction.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import MigrationError, StorageError, WorkspaceError
from careloop.storage.dialects import Dialect
from careloop.storage.migrations import Migration, load_migrations
from careloop.storage.schema import Table

if TYPE_CHECKING:
    from careloop.storage.workspace import WorkspaceStore

Params = Mapping[str, Any] | Sequence[Any] | None

_WORKSPACE_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class MergeResult:
    """What merging one staged batch into an entity table did."""

    inserted: int
    updated: int
    unchanged: int  # same key, same content: a re-ingest


class Backend(ABC):
    """A careloop store on one database engine."""

    dialect: Dialect
    #: True when staging happens in the store's own connection (DuckDB); else each call opens one
    stages_in_store: bool = False

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = url
        self.clock = clock
        self._lock = threading.RLock()

    # ---- engine hooks -------------------------------------------------------------------------
    @abstractmethod
    def _execute(self, sql: str, params: Params) -> None: ...

    @abstractmethod
    def _fetch_arrow(self, sql: str, params: Params) -> pa.Table: ...

    @abstractmethod
    def _fetch_rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the enclosed statements atomically."""
        yield

    @abstractmethod
    def staging_connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection ingestion stages and validates rows in (see docs/decisions)."""

    @abstractmethod
    def merge_staged(
        self,
        table: Table,
        staging: duckdb.DuckDBPyConnection,
        staged: str,
        workspace: str,
        now: datetime,
        *,
        source: str | None = None,
    ) -> MergeResult:
        """Insert new keys and update changed rows of `staged` (a staging table or view of the staging
        connection, keys unique; all rows of `source` when given) into `table`."""

    @abstractmethod
    def insert_arrow(self, table: str, data: pa.Table) -> int:
        """Append rows (columns named like the table's) without key checks; returns rows written."""

    @abstractmethod
    def insert_absent(
        self, table: str, data: pa.Table, key: Sequence[str], *, recent: tuple[str, datetime] | None = None
    ) -> list[tuple[Any, ...]]:
        """Append the rows of `data` (which carries workspace_id) whose (workspace_id, *key) the table does
        not hold yet; returns the keys inserted. `data` must not repeat a key. `recent` = (column, since)
        tells an engine without a unique index that earlier copies can only be in rows with column >= since."""

    @abstractmethod
    def merge_rows(self, table: str, data: pa.Table, key: Sequence[str], update: Mapping[str, str]) -> None:
        """Upsert `data` (which carries workspace_id; keys unique) on (workspace_id, *key): new keys are
        inserted; for existing ones each column in `update` is set to its expression, written with
        ``{t}`` for the stored row and ``{s}`` for the incoming one (e.g. ``{t}.n + {s}.n``)."""

    @abstractmethod
    def existing_columns(self, table: str) -> dict[str, str]:
        """Column name -> engine type name of a table, or {} when it does not exist."""

    @abstractmethod
    def close(self) -> None: ...

    def serve_tuning(self, wal_checkpoint_bytes: int) -> None:  # noqa: B027 - optional hook
        """Settings for a long-running server with many small commits (default: none)."""

    def wal_bytes(self) -> int:
        """Bytes of write-ahead log a `checkpoint` would fold into the database (0: not applicable)."""
        return 0

    def checkpoint(self) -> None:  # noqa: B027 - optional hook
        """Fold the write-ahead log into the database file (engines that need it)."""

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Engine settings for a long load (default: none)."""
        yield

    # ---- shared logic -------------------------------------------------------------------------
    def execute(self, sql: str, params: Params = None) -> None:
        """Run engine SQL (internal: feature code goes through a WorkspaceStore)."""
        try:
            with self._lock:
                self._execute(sql, params)
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"{self.dialect.name} refused a statement: {e}", sql=sql) from e

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        try:
            with self._lock:
                return self._fetch_arrow(sql, params)
        except Exception as e:
            raise StorageError(f"{self.dialect.name} refused a query: {e}", sql=sql) from e

    def fetch_rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._fetch_rows(sql, params)
        except Exception as e:
            raise StorageError(f"{self.dialect.name} refused a query: {e}", sql=sql) from e

    def schema_version(self) -> int:
        if not self.existing_columns("schema_migration"):
            return 0
        rows = self.fetch_rows("SELECT max(version) FROM schema_migration")
        return int(rows[0][0] or 0)

    def migrate(self) -> list[str]:
        """Bring the schema to this careloop's version; returns the migrations applied."""
        migrations = load_migrations()
        latest = migrations[-1].version if migrations else 0
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration "
            "(version BIGINT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = self.schema_version()
        if current > latest:
            raise MigrationError(
                f"the database schema is at version {current} but this careloop knows only up to "
                f"{latest}; upgrade careloop (pip install -U careloop) before using this database"
            )
        applied = []
        for m in migrations:
            if m.version <= current:
                continue
            try:
                with self.transaction():
                    self._apply(m)
                    self.execute(
                        "INSERT INTO schema_migration VALUES (?, ?, ?)"
                        if self.dialect.name == "duckdb"
                        else "INSERT INTO schema_migration VALUES (%s, %s, %s)",
                        [m.version, m.name, self.clock.now().isoformat()],
                    )
            except StorageError as e:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {e}", sql=e.sql) from e
            applied.append(f"{m.version:04d}_{m.name}")
        return applied

    def _apply(self, m: Migration) -> None:
        for t in m.create_tables():
            self.execute(self.dialect.create_table(t))
            for stmt in self.dialect.create_indexes(t):
                self.execute(stmt)
        for tname, col in m.add_columns():
            self.execute(self.dialect.add_column(tname, col))
        for tname, name, cols in m.create_indexes():
            for stmt in self.dialect.create_index(tname, name, cols):
                self.execute(stmt)

    def ensure_workspace(self, workspace: str) -> None:
        check_workspace_id(workspace)
        rows = self.fetch_rows(self._neutral("SELECT 1 FROM workspace WHERE id = ?"), [workspace])
        if not rows:
            self.execute(
                self._neutral("INSERT INTO workspace (id, name, created_at) VALUES (?, ?, ?)"),
                [workspace, workspace, self.clock.now()],
            )

    def workspaces(self) -> list[str]:
        return [r[0] for r in self.fetch_rows("SELECT id FROM workspace ORDER BY id")]

    def workspace(self, workspace: str, *, create: bool = True) -> WorkspaceStore:
        """A store whose every query and write is limited to `workspace`."""
        from careloop.storage.workspace import WorkspaceStore

        check_workspace_id(workspace)
        if create:
            self.ensure_workspace(workspace)
        elif workspace not in self.workspaces():
            raise WorkspaceError(
                f"workspace {workspace!r} does not exist; create it with `careloop workspace create {workspace}`"
            )
        return WorkspaceStore(self, workspace)

    def _neutral(self, sql: str) -> str:
        """Internal statements use `?` placeholders; psycopg wants %s."""
        return sql if self.dialect.name == "duckdb" else sql.replace("?", "%s")

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_workspace_id(workspace: str) -> str:
    if not workspace or len(workspace) > 64 or not set(workspace) <= _WORKSPACE_ID_CHARS:
        raise WorkspaceError(
            f"workspace id {workspace!r} is not valid: use 1-64 lowercase letters, digits, '_' or '-'"
        )
    return workspace
