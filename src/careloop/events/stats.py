"""Per source and call type: events stored, repeats not stored again, quarantined, plan violations,
attributed to a patient — the figures behind `careloop events stats`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from careloop.storage import WorkspaceStore


def event_stats(store: WorkspaceStore, source: str | None = None) -> dict[str, Any]:
    """{"sources": [{source, type, stored, duplicates, quarantined, plan_violations, attributed}], "totals"}."""
    where, params = ("WHERE source = :s", {"s": source}) if source else ("", {})
    and_live = ("AND" if where else "WHERE") + " received_at IS NOT NULL"
    table: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"stored": 0, "duplicates": 0, "quarantined": 0, "plan_violations": 0, "attributed": 0}
    )
    counts = "count(*) AS n, count(person_id) AS attributed, count(plan_violations) AS violations"
    sql = f"SELECT source, event_type AS type, {counts} FROM event {where} {and_live} GROUP BY source, event_type"  # noqa: S608 - fixed text
    for r in store.rows(sql, params):
        t = table[(r["source"], r["type"])]
        t["stored"], t["attributed"], t["plan_violations"] = (
            int(r["n"]),
            int(r["attributed"]),
            int(r["violations"]),
        )
    for r in store.rows(
        f"SELECT source, event_type AS type, count(*) AS n FROM event_duplicate {where} GROUP BY source, event_type",  # noqa: S608
        params,
    ):
        table[(r["source"], r["type"])]["duplicates"] = int(r["n"])
    q_where = "WHERE entity = 'event' AND run_id = 'live'" + (" AND source = :s" if source else "")
    for r in store.rows(
        f"SELECT source, event_type AS type, count(*) AS n FROM quarantine {q_where} GROUP BY source, event_type",  # noqa: S608
        params,
    ):
        table[(r["source"], r["type"] or "unknown")]["quarantined"] = int(r["n"])
    rows = [{"source": s, "type": t, **v} for (s, t), v in sorted(table.items())]
    totals = {
        k: sum(r[k] for r in rows)
        for k in ("stored", "duplicates", "quarantined", "plan_violations", "attributed")
    }
    return {"sources": rows, "totals": totals}
