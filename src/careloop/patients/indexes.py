"""Look-up indexes the patient 360 reads through, on DuckDB.

PostgreSQL gets every look-up index from the migrations. DuckDB gets none there: ART indexes slow bulk
loads down several times (docs/decisions/0003-duckdb-keys.md). Without them a 360 scans every entity
table — seconds at a million patients. `ensure_lookup_indexes` adds single-column ART indexes (the
only kind DuckDB 2.0 scans) on the columns a 360 or a look-up filters on; run it after a bulk load
(`careloop patient index`), and `drop_lookup_indexes` before the next large one if load speed matters.
"""

from __future__ import annotations

from careloop.storage.base import Backend

#: table -> the columns a 360 or a look-up filters on by equality
LOOKUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "identity_link": ("person_id", "patient_key"),
    "person": ("person_id", "household_id", "phone_bidx", "id_number_bidx"),
    "household_member": ("household_id", "person_id"),
    "identity_history": ("person_id",),
    "patient": ("key", "phone_bidx", "id_number_bidx"),
    "patient_identifier": ("patient_key", "value_bidx"),
    "encounter": ("patient_key",),
    "condition": ("patient_key",),
    "prescription": ("patient_key",),
    "dispense": ("patient_key",),
    "appointment": ("patient_key",),
    "event": ("patient_key", "person_id"),
    "consent": ("patient_key",),
    "message": ("patient_key",),
    "event_identity": ("id_bidx",),
    # incremental segment membership reads a person's traits, events and memberships
    "trait_value": ("person_id",),
    "segment_member": ("person_id",),
}


def index_name(table: str, column: str) -> str:
    return f"ix_p360_{table}_{column}"


def _existing(backend: Backend) -> set[str]:
    return {r[0] for r in backend.fetch_rows("SELECT index_name FROM duckdb_indexes()")}


def ensure_lookup_indexes(backend: Backend) -> list[str]:
    """Create the missing look-up indexes (DuckDB only; a no-op on PostgreSQL); returns those created."""
    if backend.dialect.name != "duckdb":
        return []
    have = _existing(backend)
    created = []
    for table, columns in LOOKUP_COLUMNS.items():
        for column in columns:
            name = index_name(table, column)
            if name in have:
                continue
            q = backend.dialect.quote
            backend.execute(f"CREATE INDEX {q(name)} ON {q(table)} ({q(column)})")
            created.append(name)
    return created


def drop_lookup_indexes(backend: Backend) -> list[str]:
    """Drop the look-up indexes (DuckDB only); returns those dropped."""
    if backend.dialect.name != "duckdb":
        return []
    have = _existing(backend)
    dropped = []
    for table, columns in LOOKUP_COLUMNS.items():
        for column in columns:
            name = index_name(table, column)
            if name in have:
                backend.execute(f"DROP INDEX {backend.dialect.quote(name)}")
                dropped.append(name)
    return dropped


def lookup_indexes_present(backend: Backend) -> bool:
    """True on PostgreSQL, and on DuckDB when every look-up index exists."""
    if backend.dialect.name != "duckdb":
        return True
    have = _existing(backend)
    return all(index_name(t, c) in have for t, cols in LOOKUP_COLUMNS.items() for c in cols)
