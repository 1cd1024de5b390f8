"""Physical tables, derived from the domain model plus careloop's operational tables.

Entity tables get, besides the entity's fields:
- ``workspace_id`` — the tenant; every read and write is scoped to one (see `workspace.py`);
- for each personal identifier, the ciphertext in the field's own column and, for look-up kinds,
  a keyed blind index in ``<field>_bidx`` (see `careloop.privacy.fields`);
- ``_run_id``, ``_row_hash`` (63-bit keyed hash of the normalised input, to tell changed rows from repeats),
  ``_ingested_at`` and ``_updated_at``.
The unique key of every entity table is (workspace_id, source, key).

Column types are logical (`LogicalType`); each dialect names them. Migrations freeze a snapshot of
these specs; `tests/backends/test_schema.py` fails when the domain changes without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from careloop.domain import entities, field_specs
from careloop.domain.fields import INDEXED_PII, DataClass


class LogicalType(StrEnum):
    TEXT = "text"
    BIGINT = "bigint"
    DOUBLE = "double"
    DECIMAL = "decimal"  # DECIMAL(18, 2): money in yuan
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMPTZ = "timestamptz"
    JSON = "json"


_PY_TO_LOGICAL: dict[type, LogicalType] = {
    str: LogicalType.TEXT,
    int: LogicalType.BIGINT,
    float: LogicalType.DOUBLE,
    Decimal: LogicalType.DECIMAL,
    bool: LogicalType.BOOLEAN,
    date: LogicalType.DATE,
    datetime: LogicalType.TIMESTAMPTZ,
    dict: LogicalType.JSON,
    list: LogicalType.JSON,
}


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = True
    data_class: str = DataClass.OPERATIONAL.value
    level: int = 2
    pii: str | None = None  # PiiKind of an encrypted column
    blind_index_of: str | None = None  # set on `<field>_bidx` columns


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()
    scoped: bool = True  # has workspace_id and is only reachable through a workspace
    entity: str | None = None
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


WORKSPACE = Column("workspace_id", LogicalType.TEXT, nullable=False)
AUDIT_COLUMNS = (
    Column("_run_id", LogicalType.TEXT),
    Column("_row_hash", LogicalType.BIGINT),
    Column("_ingested_at", LogicalType.TIMESTAMPTZ),
    Column("_updated_at", LogicalType.TIMESTAMPTZ),
)


def entity_table(name: str) -> Table:
    """The physical table of one domain entity."""
    model = entities()[name]
    cols: list[Column] = [WORKSPACE]
    indexes: list[tuple[str, ...]] = []
    for spec in field_specs(model):
        cols.append(
            Column(
                spec.name,
                LogicalType.TEXT if spec.pii else _PY_TO_LOGICAL[spec.py_type],
                nullable=not spec.required,
                data_class=spec.data_class.value,
                level=spec.level,
                pii=spec.pii.value if spec.pii else None,
            )
        )
        if spec.pii and spec.pii in INDEXED_PII:
            bidx = f"{spec.name}_bidx"
            cols.append(
                Column(
                    bidx, LogicalType.TEXT, data_class=DataClass.OPERATIONAL.value, blind_index_of=spec.name
                )
            )
            indexes.append(("workspace_id", bidx))
        if spec.ref == "patient" and spec.name == "patient_key":
            indexes.append(("workspace_id", "source", "patient_key"))
    cols.extend(AUDIT_COLUMNS)
    return Table(
        name=name,
        columns=tuple(cols),
        unique=("workspace_id", "source", "key"),
        entity=name,
        indexes=tuple(indexes),
    )


def _op(name: str, typ: LogicalType, nullable: bool = True) -> Column:
    return Column(name, typ, nullable=nullable)


T, BI, TS, J = LogicalType.TEXT, LogicalType.BIGINT, LogicalType.TIMESTAMPTZ, LogicalType.JSON

OPERATIONAL_TABLES: tuple[Table, ...] = (
    Table(
        "workspace",
        (_op("id", T, False), _op("name", T), _op("created_at", TS)),
        unique=("id",),
        scoped=False,
    ),
    Table(
        "ingest_run",
        (
            WORKSPACE,
            _op("run_id", T, False),
            _op("source", T),
            _op("path", T),
            _op("format", T),
            _op("mapping", T),
            _op("status", T),
            _op("started_at", TS),
            _op("finished_at", TS),
            _op("summary", J),
        ),
        unique=("workspace_id", "run_id"),
    ),
    Table(
        "quarantine",
        (
            WORKSPACE,
            _op("id", T, False),
            _op("run_id", T),
            _op("source", T),
            _op("entity", T),
            _op("file", T),
            _op("line", BI),
            _op("field", T),
            _op("reason", T),
            Column("raw", T, data_class=DataClass.IDENTIFIER.value, level=4, pii="raw"),
            _op("created_at", TS),
        ),
        unique=("workspace_id", "id"),
        indexes=(("workspace_id", "run_id"),),
    ),
)


def entity_tables() -> tuple[Table, ...]:
    return tuple(entity_table(n) for n in entities())


def all_tables() -> tuple[Table, ...]:
    """Every table careloop's current code expects, in creation order."""
    return OPERATIONAL_TABLES + entity_tables()


def table(name: str) -> Table:
    for t in all_tables():
        if t.name == name:
            return t
    raise KeyError(f"no table {name!r}")


def scoped_table_names() -> frozenset[str]:
    return frozenset(t.name for t in all_tables() if t.scoped)
