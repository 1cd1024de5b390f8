"""Versioned schema migrations, one chain for every engine.

A migration is a JSON file ``NNNN_name.json`` holding engine-neutral operations:
``create_tables`` (full table specs with logical types), ``add_columns`` and ``create_indexes`` (look-up
indexes on columns added to existing tables; engines that keep no secondary indexes skip them). The snapshot in a
migration never changes once released; `python -m careloop.storage.migrations new NAME` writes the
operations that bring the previous snapshot to what the domain now declares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from careloop.storage.schema import Column, LogicalType, Table


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    operations: dict[str, Any]

    def create_tables(self) -> list[Table]:
        return [table_from_json(t) for t in self.operations.get("create_tables", [])]

    def add_columns(self) -> list[tuple[str, Column]]:
        return [
            (op["table"], Column(op["name"], LogicalType(op["type"]), nullable=op.get("nullable", True)))
            for op in self.operations.get("add_columns", [])
        ]

    def create_indexes(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(table, index name, columns) of each index added to an existing table."""
        return [
            (op["table"], op["name"], tuple(op["columns"]))
            for op in self.operations.get("create_indexes", [])
        ]


def table_to_json(t: Table) -> dict[str, Any]:
    return {
        "name": t.name,
        "scoped": t.scoped,
        "columns": [[c.name, c.type.value, c.nullable] for c in t.columns],
        "unique": list(t.unique),
        "indexes": [list(i) for i in t.indexes],
    }


def table_from_json(d: dict[str, Any]) -> Table:
    return Table(
        name=d["name"],
        columns=tuple(Column(n, LogicalType(ty), nullable=nl) for n, ty, nl in d["columns"]),
        unique=tuple(d["unique"]),
        scoped=d["scoped"],
        indexes=tuple(tuple(i) for i in d["indexes"]),
    )


def load_migrations() -> list[Migration]:
    """All migrations shipped with this careloop, in version order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".json") and entry.name[:4].isdigit():
            version, _, name = entry.name[:-5].partition("_")
            found.append(Migration(int(version), name, json.loads(entry.read_text(encoding="utf-8"))))
    return sorted(found, key=lambda m: m.version)


def snapshot(migrations: list[Migration]) -> dict[str, dict[str, tuple[LogicalType, bool]]]:
    """The tables and columns the chain of migrations produces: {table: {column: (type, nullable)}}."""
    tables: dict[str, dict[str, tuple[LogicalType, bool]]] = {}
    for m in migrations:
        for t in m.create_tables():
            tables[t.name] = {c.name: (c.type, c.nullable) for c in t.columns}
        for tname, col in m.add_columns():
            tables[tname][col.name] = (col.type, col.nullable)
    return tables


LATEST_VERSION = max((m.version for m in load_migrations()), default=0)
