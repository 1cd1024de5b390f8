"""Dialect objects: what differs between engines in how SQL is written, kept apart from the backends.

Feature code writes dialect-neutral SQL with named parameters (``:name``); the workspace store
scopes it and `Dialect.render` transpiles it (sqlglot) for the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp

from careloop.storage.schema import Column, LogicalType, Table


@dataclass(frozen=True)
class Dialect:
    name: str  # sqlglot dialect name
    types: dict[LogicalType, str]

    def column_type(self, column: Column) -> str:
        return self.types[column.type]

    def quote(self, ident: str) -> str:
        return '"' + ident.replace('"', '""') + '"'

    def create_table(self, table: Table, *, if_not_exists: bool = True) -> str:
        cols = ",\n  ".join(
            f"{self.quote(c.name)} {self.column_type(c)}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
        )
        ine = "IF NOT EXISTS " if if_not_exists else ""
        return f"CREATE TABLE {ine}{self.quote(table.name)} (\n  {cols}\n)"

    def create_indexes(self, table: Table) -> list[str]:
        """Unique key and look-up indexes. Engines that enforce keys elsewhere override this."""
        stmts = []
        if table.unique:
            cols = ", ".join(self.quote(c) for c in table.unique)
            stmts.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.quote('ux_' + table.name)} "
                f"ON {self.quote(table.name)} ({cols})"
            )
        for i, idx in enumerate(table.indexes):
            cols = ", ".join(self.quote(c) for c in idx)
            stmts.append(
                f"CREATE INDEX IF NOT EXISTS {self.quote(f'ix_{table.name}_{i}')} "
                f"ON {self.quote(table.name)} ({cols})"
            )
        return stmts

    def add_column(self, table: str, column: Column) -> str:
        return (
            f"ALTER TABLE {self.quote(table)} ADD COLUMN {self.quote(column.name)} {self.column_type(column)}"
        )

    def create_index(self, table: str, name: str, columns: Sequence[str]) -> list[str]:
        """One look-up index added by a migration to an existing table."""
        cols = ", ".join(self.quote(c) for c in columns)
        return [f"CREATE INDEX IF NOT EXISTS {self.quote(name)} ON {self.quote(table)} ({cols})"]

    def render(self, tree: exp.Expression) -> str:
        return tree.sql(dialect=self.name)

    def transpile(self, sql: str) -> str:
        """Neutral SQL (sqlglot's default dialect) to this engine's SQL."""
        return _transpile(sql, self.name)


@lru_cache(maxsize=2048)
def _transpile(sql: str, dialect: str) -> str:
    return ";\n".join(sqlglot.transpile(sql, write=dialect))


class DuckDBDialect(Dialect):
    def create_indexes(self, table: Table) -> list[str]:
        # DuckDB's ART indexes make bulk loads slow and memory-hungry; the loader enforces the
        # (workspace_id, source, key) key itself (see docs/decisions/0003-duckdb-keys.md).
        return []

    def create_index(self, table: str, name: str, columns: Sequence[str]) -> list[str]:
        return []


DUCKDB = DuckDBDialect(
    name="duckdb",
    types={
        LogicalType.TEXT: "VARCHAR",
        LogicalType.BIGINT: "BIGINT",
        LogicalType.DOUBLE: "DOUBLE",
        LogicalType.DECIMAL: "DECIMAL(18,2)",
        LogicalType.BOOLEAN: "BOOLEAN",
        LogicalType.DATE: "DATE",
        LogicalType.TIMESTAMPTZ: "TIMESTAMPTZ",
        LogicalType.JSON: "JSON",
    },
)

POSTGRES = Dialect(
    name="postgres",
    types={
        LogicalType.TEXT: "TEXT",
        LogicalType.BIGINT: "BIGINT",
        LogicalType.DOUBLE: "DOUBLE PRECISION",
        LogicalType.DECIMAL: "NUMERIC(18,2)",
        LogicalType.BOOLEAN: "BOOLEAN",
        LogicalType.DATE: "DATE",
        LogicalType.TIMESTAMPTZ: "TIMESTAMPTZ",
        LogicalType.JSON: "JSONB",
    },
)
