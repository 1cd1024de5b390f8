"""Stable unified person ids, and what changed between two resolutions.

Ids follow the evidence: each cluster takes the previous person id most of its members held (the
larger cluster wins a contested id; ties go to the smaller id, then the cluster with the smaller
first record), so re-running on unchanged data changes no id. A cluster with no previous id gets one
derived from its smallest record reference (``source:patient_key``), so a fresh run is deterministic
too. An id once used is never given to another person.

Both steps are set-based (an in-process DuckDB over Arrow columns): at millions of records, Python
loops and per-record dictionaries would cost more time and memory than the clustering itself. Only
the persons that changed become Python objects.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

ID_PREFIX = "P"

#: a column of strings (None allowed) as a Python sequence or an Arrow array
Strings: TypeAlias = Sequence[str | None] | pa.Array | pa.ChunkedArray


def derived_id(record: str, taken: Collection[str]) -> str:
    """The id derived from a record reference, skipping ids in `taken`."""
    salt = 0
    while True:
        text = record if salt == 0 else f"{record}#{salt}"
        pid = ID_PREFIX + hashlib.sha256(f"careloop-person:{text}".encode()).hexdigest()[:16]
        if pid not in taken:
            return pid
        salt += 1


def _strings(values: Strings) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(pa.string())
    return pa.array(values, pa.string())


def assign_ids(
    cluster: npt.NDArray[np.int64],
    refs: Sequence[str],
    previous: Strings,
    retired: Collection[str] = (),
) -> list[str]:
    """Person id per record: `cluster` labels (the smallest member's index; refs are sorted so the
    smallest index is the smallest reference), `previous` the id each record held (None: new record).
    `retired`: ids used before that must not be handed out again (merged-away persons)."""
    con = duckdb.connect()
    try:
        con.register("t", pa.table({"c": pa.array(cluster, pa.int64()), "p": _strings(previous)}))
        votes = con.sql(
            "SELECT c, p FROM t WHERE p IS NOT NULL GROUP BY c, p ORDER BY count(*) DESC, p, c"
        ).fetchall()
        held = {p for (p,) in con.sql("SELECT DISTINCT p FROM t WHERE p IS NOT NULL").fetchall()}
    finally:
        con.close()
    chosen: dict[int, str] = {}
    used: set[str] = set()
    for c, pid in votes:
        if c in chosen or pid in used:
            continue
        chosen[c] = pid
        used.add(pid)
    taken = used | held | set(retired)
    labels = np.unique(cluster)  # ascending = the order of each cluster's first record
    ids = np.empty(len(labels), dtype=object)
    for j, c in enumerate(labels.tolist()):
        found = chosen.get(c)
        if found is None:
            found = derived_id(refs[c], taken)
            taken.add(found)
        ids[j] = found
    out: list[str] = ids[np.searchsorted(labels, cluster)].tolist()
    return out


@dataclass
class Change:
    """One identity_history row to write."""

    action: str  # created, merged, split, retired
    person_id: str
    other_person_ids: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


def _evidence(rules: list[str], low: float | None, high: float | None) -> dict[str, Any]:
    return {"rules": dict(sorted(Counter(rules).items())), "min_probability": low, "max_probability": high}


def diff(
    refs: Strings,
    previous: Strings,
    current: Strings,
    rules: Strings,
    probs: Sequence[float | None] | pa.Array | pa.ChunkedArray,
    previous_ids: Collection[str],
) -> list[Change]:
    """What a resolution changed: persons created, merged and split (and retired ones).

    `previous_ids`: every person id linked before the run (also those whose records are gone).
    """
    table = pa.table(
        {
            "i": pa.array(np.arange(len(current), dtype=np.int64)),
            "ref": _strings(refs),
            "p": _strings(previous),
            "c": _strings(current),
            "rule": _strings(rules),
            "prob": probs if isinstance(probs, pa.Array | pa.ChunkedArray) else pa.array(probs, pa.float64()),
        }
    )
    con = duckdb.connect()
    try:
        con.register("t", table)
        con.register("k", pa.table({"pid": pa.array(sorted(set(previous_ids)), pa.string())}))
        # a new person (an id not linked before) or one whose records held several previous ids
        persons = con.sql(
            "WITH s AS (SELECT c FROM t GROUP BY c HAVING count(DISTINCT p) >= 2 "
            "OR c NOT IN (SELECT pid FROM k)) "
            "SELECT t.c, c IN (SELECT pid FROM k) AS known, list_sort(list_distinct(list(t.p))), "
            "list(t.ref ORDER BY t.i), list(t.rule ORDER BY t.i), min(t.prob), max(t.prob) "
            "FROM t JOIN s USING (c) GROUP BY t.c ORDER BY t.c"
        ).fetchall()
        # a previous person whose records went to several persons
        splits = con.sql(
            "WITH s AS (SELECT p FROM t WHERE p IS NOT NULL GROUP BY p HAVING count(DISTINCT c) >= 2) "
            "SELECT t.p, list_sort(list_distinct(list(t.c))), list(t.ref ORDER BY t.i) FILTER (WHERE t.c <> t.p), "
            "list(t.rule ORDER BY t.i), min(t.prob), max(t.prob) "
            "FROM t JOIN s USING (p) GROUP BY t.p ORDER BY t.p"
        ).fetchall()
        retired = con.sql(
            "SELECT k.pid, list_sort(list_distinct(list(t.c))) "
            "FROM k LEFT JOIN t ON t.p = k.pid WHERE k.pid NOT IN (SELECT c FROM t) GROUP BY k.pid ORDER BY k.pid"
        ).fetchall()
    finally:
        con.close()
    changes: list[Change] = []
    for pid, known, came_from, recs, rule_list, low, high in persons:
        ev = _evidence(rule_list, low, high)
        if not known:
            changes.append(Change("created", pid, list(came_from), list(recs), ev))
        if len(came_from) >= 2:
            changes.append(Change("merged", pid, [p for p in came_from if p != pid], list(recs), dict(ev)))
    for old, went_to, moved, rule_list, low, high in splits:
        others = [c for c in went_to if c != old]
        changes.append(Change("split", old, others, list(moved or []), _evidence(rule_list, low, high)))
    for old, targets in retired:
        why = "merged into another person" if targets else "its records are no longer in the store"
        changes.append(Change("retired", old, list(targets), [], {"why": why}))
    return changes
