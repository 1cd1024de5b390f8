"""Read models shared by the CLI, the API and the console."""

from __future__ import annotations

from typing import Any

import orjson

from careloop.domain import entities
from careloop.errors import NotFoundError
from careloop.storage.schema import entity_table
from careloop.storage.workspace import WorkspaceStore


def entity_counts(store: WorkspaceStore) -> dict[str, int]:
    """Rows per entity table in the workspace (one query)."""
    names = list(entities())
    union = " UNION ALL ".join(f"SELECT '{n}' AS entity, count(*) AS n FROM {n}" for n in names)
    return {r["entity"]: int(r["n"]) for r in store.rows(union)}


def ingest_runs(store: WorkspaceStore, limit: int = 20) -> list[dict[str, Any]]:
    """Recent ingest runs, newest first, with their summary counts."""
    rows = store.rows(
        "SELECT run_id, source, path, format, status, started_at, finished_at, summary "
        f"FROM ingest_run ORDER BY started_at DESC LIMIT {int(limit)}"
    )
    for r in rows:
        summary = r.pop("summary")
        s = summary if isinstance(summary, dict) else (orjson.loads(summary) if summary else {})
        r["rows"] = s.get("rows")
        r["quarantined"] = s.get("quarantined")
        r["seconds"] = s.get("seconds")
        r["entities"] = s.get("entities")
    return rows


def data_dictionary(entity: str) -> dict[str, Any]:
    """One entity's columns with type, data class, sensitivity level and personal-data kind."""
    if entity not in entities():
        raise NotFoundError(f"no entity {entity!r}; known: {', '.join(entities())}")
    return {
        "description": entities()[entity].entity_description,
        "columns": [
            {
                "name": c.name,
                "type": c.type.value,
                "required": not c.nullable,
                "class": c.data_class,
                "level": c.level,
                "pii": c.pii,
                "encrypted": bool(c.pii),
                "blind_index_of": c.blind_index_of,
            }
            for c in entity_table(entity).columns
        ],
    }
