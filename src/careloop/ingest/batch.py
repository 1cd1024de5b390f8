"""What connectors hand to the ingestion pipeline.

A connector reads a source and yields `StagedBatch`es (rows already named after the entity's canonical
fields, values still raw) and `Rejection`s (records it could not even turn into rows: unparseable JSON,
a FHIR resource that fails its structure or value-set checks). The pipeline validates, types,
normalises, protects and writes the batches, and quarantines every rejection with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass
class StagedBatch:
    """Rows of one entity from one source.

    `table` has one column per canonical field of the entity (a subset is fine; missing ones are null)
    plus ``_line`` (int64: line / record number in the file, 1-based) and ``_file`` (string). Values may
    be strings or already typed; the pipeline casts and validates them.
    `sql` may replace `table`: a SELECT on the pipeline's staging DuckDB connection producing the same
    columns (the tabular connector uses it so that large files never pass through Python).
    """

    entity: str
    source: str
    table: pa.Table | None = None
    sql: str | None = None
    timezone: str | None = None  # for naive timestamps; defaults to settings.timezone
    date_formats: dict[str, str] = field(default_factory=dict)  # field -> strptime format

    def __post_init__(self) -> None:
        if (self.table is None) == (self.sql is None):
            raise ValueError("StagedBatch needs exactly one of table or sql")


@dataclass
class Rejection:
    """A record the connector could not turn into a row; it goes to quarantine as it is."""

    entity: str  # canonical entity, or e.g. "fhir:Claim" when there is none
    source: str
    file: str
    line: int | None
    field: str | None
    reason: str
    raw: Any  # the record as read (dict, str or bytes); stored encrypted
