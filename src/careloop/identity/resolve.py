"""Resolve the store's person records into unified persons: `careloop identity resolve`.

One run: load every source's patient records (decrypted in memory, see `records`), standardise them,
take the deterministic rules' links (`rules`, `evidence`), score the remaining pairs with the Splink
model (`matching`), cluster everything with the constraints (`cluster`: different valid ID numbers,
far birth dates, one family account's profiles and manual splits never join; manual merges always
do), attach records left alone to their only compatible candidate, give every cluster a stable id
(`stable_ids`) and write `identity_link`, `identity_history` and `identity_run`. Golden records and
households are rebuilt for the persons concerned.

Incremental runs (`incremental`) reuse the last full run's model and compare only pairs with at
least one new record; existing persons keep their records and ids.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.identity import incremental, overrides
from careloop.identity.bookings import load_bookings
from careloop.identity.cluster import Clustering, cluster_constrained
from careloop.identity.evidence import (
    Edges,
    attach_edges,
    household_cannot_links,
    rule_edges,
    sparse_records,
    supported_pairs,
)
from careloop.identity.matching import ScoredPairs, score_pairs
from careloop.identity.records import STD_FIELDS, cipher_for, load_identifiers, load_records, record_ref
from careloop.identity.rules import ResolutionRules, load_rules
from careloop.identity.stable_ids import Change, assign_ids, diff
from careloop.identity.standardise import STD_TABLE, standardise
from careloop.privacy.fields import FieldCipher
from careloop.storage.duckdb_backend import DuckDBBackend
from careloop.storage.workspace import WorkspaceStore

RESOLVER = "resolver"
PROBABILISTIC = "probabilistic"
MANUAL = "manual"
ALONE = "alone"


@dataclass
class ResolveSummary:
    """What a resolution run did."""

    run_id: str
    mode: str
    records: int
    new_records: int
    persons: int
    links_by_rule: dict[str, int]
    created: int
    merged: int
    split: int
    retired: int
    pairs_scored: int
    threshold: float
    seconds: float
    mode_reason: str = ""
    golden_records: int | None = None
    households: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.households is not None and hasattr(self.households, "__dataclass_fields__"):
            d["households"] = asdict(self.households)
        return d


@dataclass
class _Linked:
    """The outcome for every record of the run (indexed by unique_id)."""

    person: list[str]
    rule: list[str]
    prob: list[float | None]


def new_run_id(clock: Clock) -> str:
    return f"i{clock.now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"


def resolve(
    store: WorkspaceStore,
    *,
    clock: Clock = SYSTEM_CLOCK,
    rules: ResolutionRules | None = None,
    threshold: float | None = None,
    full: bool = False,
    cipher: FieldCipher | None = None,
    downstream: bool = True,
) -> ResolveSummary:
    """Resolve the workspace's person records; incremental when only new records arrived (unless `full`)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rules = rules or load_rules()
    if threshold is not None:
        rules = ResolutionRules.model_validate({**rules.model_dump(), "threshold": threshold})
    started = clock.now()
    run_id = new_run_id(clock)

    n_records = int(store.scalar("SELECT count(*) FROM patient") or 0)
    n_links = int(store.scalar("SELECT count(*) FROM identity_link") or 0)
    decision = incremental.choose_mode(store, rules, n_records, n_links, force_full=full)
    if decision.mode == "incremental" and n_records == n_links:
        return _nothing_new(store, clock, run_id, started, rules, decision, n_records, t0)
    records = load_records(store, cipher or cipher_for())
    identifiers = load_identifiers(store)
    previous = store.sql(
        "SELECT source, patient_key, person_id, rule, match_probability, run_id, linked_at FROM identity_link"
    )
    timings["load"] = round(time.perf_counter() - t0, 3)

    con = duckdb.connect()
    try:
        t = time.perf_counter()
        columns = _prepare(con, records, identifiers, previous)
        booking_rules = [r for r in rules.attaches() if r.field == "booking"]
        if booking_rules:
            load_bookings(con, store, booking_rules)
        timings["standardise"] = round(time.perf_counter() - t, 3)
        n = records.num_rows
        refs = [
            record_ref(s, k)
            for s, k in zip(
                records.column("source").to_pylist(), records.column("patient_key").to_pylist(), strict=True
            )
        ]
        prev_person: list[str | None] = (
            con.sql(
                "SELECT p.person_id FROM record_meta m LEFT JOIN prev p ON p.unique_id = m.unique_id ORDER BY m.unique_id"
            )
            .to_arrow_table()
            .column(0)
            .to_pylist()
        )
        new_records = sum(p is None for p in prev_person)
        is_incremental = decision.mode == "incremental"
        model = decision.model if is_incremental else None

        t = time.perf_counter()
        must, cannot = overrides.constraints(store, {r: i for i, r in enumerate(refs)})
        cannot += household_cannot_links(con)
        if is_incremental:
            must += _existing_groups(prev_person)
        exclusive = prev_person if is_incremental else None
        joins = rules.joins()
        det = rule_edges(con, joins, set(columns), only_new=is_incremental)
        timings["rules"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        scored: ScoredPairs | None = None
        if rules.probabilistic:
            scored = score_pairs(
                con,
                "person_match",
                columns,
                threshold=rules.threshold,
                seed=rules.seed,
                model=model,
                only_new_column="is_new" if is_incremental else None,
            )
        timings["probabilistic"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        adult_by = started.date().replace(year=started.year - 18, day=min(started.day, 28)).strftime("%Y%m%d")
        linked = _cluster(con, n, columns, rules, det, scored, must, cannot, exclusive, adult_by)
        if is_incremental:  # existing records stay where they were, for the reasons they were there
            kept = con.sql("SELECT unique_id, rule, match_probability FROM prev").fetchall()
            for uid, rule, prob in kept:
                linked.rule[int(uid)] = rule
                linked.prob[int(uid)] = prob
        timings["cluster"] = round(time.perf_counter() - t, 3)
    finally:
        con.close()

    t = time.perf_counter()
    history_ids = set(store.sql("SELECT DISTINCT person_id FROM identity_history").column(0).to_pylist())
    cluster_labels = _labels(linked.person)
    person_ids = assign_ids(cluster_labels, refs, prev_person, history_ids)
    previous_ids = set(previous.column("person_id").to_pylist())
    changes = diff(refs, prev_person, person_ids, linked.rule, linked.prob, previous_ids)
    linked.person = person_ids
    counts = Counter(c.action for c in changes)
    summary = ResolveSummary(
        run_id=run_id,
        mode=decision.mode,
        mode_reason=decision.reason,
        records=n,
        new_records=new_records,
        persons=len(set(person_ids)),
        links_by_rule=dict(sorted(Counter(linked.rule).items())),
        created=counts["created"],
        merged=counts["merged"],
        split=counts["split"],
        retired=counts["retired"],
        pairs_scored=0 if scored is None else len(scored.prob),
        threshold=rules.threshold,
        seconds=0.0,
    )
    affected = _write(
        store,
        clock,
        run_id,
        started,
        decision.mode,
        rules,
        scored,
        records,
        previous,
        linked,
        changes,
        summary,
        fingerprint=incremental.fingerprint(store),
        sequence=decision.sequence,
    )
    timings["write"] = round(time.perf_counter() - t, 3)

    if downstream:
        t = time.perf_counter()
        ids = None if decision.mode == "full" else affected
        summary.golden_records, summary.households = rebuild_downstream(store, clock, ids)
        timings["golden_and_households"] = round(time.perf_counter() - t, 3)
    summary.timings = timings
    summary.seconds = round(time.perf_counter() - t0, 3)
    store.execute(
        "UPDATE identity_run SET summary = :summary WHERE run_id = :run_id",
        {"summary": orjson.dumps(summary.as_dict(), default=str).decode(), "run_id": run_id},
    )
    return summary


def _nothing_new(
    store: WorkspaceStore,
    clock: Clock,
    run_id: str,
    started: datetime,
    rules: ResolutionRules,
    decision: incremental.ModeDecision,
    n_records: int,
    t0: float,
) -> ResolveSummary:
    """Every record is linked and none changed since the last run: record the run, touch nothing else
    (no decryption, no matching — seconds instead of minutes at a million records)."""
    by_rule = store.rows("SELECT rule, count(*) AS n FROM identity_link GROUP BY rule")
    summary = ResolveSummary(
        run_id=run_id,
        mode=decision.mode,
        mode_reason=decision.reason,
        records=n_records,
        new_records=0,
        persons=int(store.scalar("SELECT count(DISTINCT person_id) FROM identity_link") or 0),
        links_by_rule=dict(sorted((str(r["rule"]), int(r["n"])) for r in by_rule)),
        created=0,
        merged=0,
        split=0,
        retired=0,
        pairs_scored=0,
        threshold=rules.threshold,
        seconds=round(time.perf_counter() - t0, 3),
        golden_records=0,
    )
    settings = {
        **rules.as_settings(),
        "records_fingerprint": incremental.fingerprint(store),
        "sequence": decision.sequence,
    }
    store.insert(
        "identity_run",
        [
            {
                "run_id": run_id,
                "mode": decision.mode,
                "started_at": started,
                "finished_at": clock.now(),
                "settings": orjson.dumps(settings).decode(),
                "model": None,
                "summary": orjson.dumps(summary.as_dict(), default=str).decode(),
            }
        ],
    )
    return summary


def rebuild_downstream(
    store: WorkspaceStore, clock: Clock, person_ids: Collection[str] | None
) -> tuple[int, Any]:
    """Golden records (survivorship from `CARELOOP_SURVIVORSHIP_FILE`, else the shipped rules) and
    households of `person_ids` (None: everyone), by their owners' functions."""
    from careloop.config import get_settings
    from careloop.identity.golden import build_golden_records, load_survivorship
    from careloop.identity.households import link_households

    rules = load_survivorship(get_settings().survivorship_file)
    golden = build_golden_records(store, clock=clock, person_ids=person_ids, rules=rules)
    households = link_households(store, clock=clock, person_ids=person_ids)
    return golden, households


def _labels(person: Sequence[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Cluster labels (the smallest member index) from the per-record cluster keys."""
    first: dict[str, int] = {}
    return np.fromiter(
        (first.setdefault(p, i) for i, p in enumerate(person)), dtype=np.int64, count=len(person)
    )


def _prepare(
    con: duckdb.DuckDBPyConnection, records: pa.Table, identifiers: pa.Table, previous: pa.Table
) -> list[str]:
    """Create person_std, record_meta, record_ids, prev and person_match on `con`; return the columns."""
    con.register("_records", records)
    con.execute("CREATE TABLE records AS SELECT * FROM _records")
    con.unregister("_records")
    columns = standardise(con, "records", STD_FIELDS, row_id="unique_id", table=STD_TABLE)
    con.execute("DROP TABLE records")
    con.register("_prev", previous)
    con.register(
        "_meta",
        records.select(
            ["unique_id", "source", "patient_key", "household_key", "relationship", "guardian_key"]
        ),
    )
    con.execute(
        "CREATE TABLE prev AS SELECT m.unique_id, p.person_id, p.rule, p.match_probability FROM _meta m "
        "JOIN _prev p ON p.source = m.source AND p.patient_key = m.patient_key"
    )
    con.execute(
        "CREATE TABLE record_meta AS SELECT m.*, CASE WHEN p.unique_id IS NULL THEN 1 ELSE 0 END AS is_new "
        "FROM _meta m LEFT JOIN prev p ON p.unique_id = m.unique_id ORDER BY m.unique_id"
    )
    con.register("_ids", identifiers)
    con.execute(
        "CREATE TABLE record_ids AS SELECT m.unique_id, i.kind, i.system, i.value_bidx FROM _ids i "
        "JOIN _meta m ON m.source = i.source AND m.patient_key = i.patient_key"
    )
    con.execute(
        f"CREATE TABLE person_match AS SELECT s.*, m.is_new FROM {STD_TABLE} s "  # noqa: S608 - constant
        "JOIN record_meta m ON m.unique_id = s.unique_id ORDER BY s.unique_id"
    )
    for name in ("_prev", "_meta", "_ids"):
        con.unregister(name)
    return columns


def _existing_groups(prev_person: Sequence[str | None]) -> list[tuple[int, int]]:
    """Must-links that keep every existing person together (incremental runs)."""
    first: dict[str, int] = {}
    out: list[tuple[int, int]] = []
    for i, p in enumerate(prev_person):
        if p is None:
            continue
        head = first.setdefault(p, i)
        if head != i:
            out.append((head, i))
    return out


def _column(con: duckdb.DuckDBPyConnection, col: str, columns: Sequence[str], n: int) -> list[str | None]:
    if col not in columns:
        return [None] * n
    values: list[str | None] = (
        con.sql(f'SELECT "{col}" FROM {STD_TABLE} ORDER BY unique_id').to_arrow_table().column(0).to_pylist()  # noqa: S608
    )
    return values


def _cluster(
    con: duckdb.DuckDBPyConnection,
    n: int,
    columns: Sequence[str],
    rules: ResolutionRules,
    det: Edges,
    scored: ScoredPairs | None,
    must: list[tuple[int, int]],
    cannot: list[tuple[int, int]],
    exclusive: Sequence[str | None] | None,
    adult_by: str,
) -> _Linked:
    """Cluster rule and model edges with the constraints, then attach records left alone.

    `adult_by` (YYYYMMDD): people born on or before it are adults; a bare phone never attaches to a
    minor (a child's records carry a guardian's number)."""
    joins = rules.joins()
    ids = _column(con, "id_number", columns, n)
    births = _column(con, "birth_str", columns, n)
    p_left = scored.left if scored is not None else np.zeros(0, np.int64)
    p_right = scored.right if scored is not None else np.zeros(0, np.int64)
    p_prob = scored.prob if scored is not None else np.zeros(0)
    sparse = sparse_records(con, set(columns), n)
    keep = ~(sparse[p_left] | sparse[p_right]) & supported_pairs(con, p_left, p_right, set(columns))
    p_left, p_right, p_prob = p_left[keep], p_right[keep], p_prob[keep]
    left = np.concatenate([det.left, p_left])
    right = np.concatenate([det.right, p_right])
    prob = np.concatenate([np.ones(len(det)), p_prob])
    rank = np.concatenate([det.rule, np.full(len(p_left), len(joins), dtype=np.int64)])
    first = cluster_constrained(
        n, left, right, prob, ids, births, rank=rank, must_link=must, cannot_link=cannot, exclusive=exclusive
    )
    rule: list[str] = []
    probs: list[float | None] = []
    for k in first.first_edge.tolist():
        if k == -2:
            rule.append(MANUAL)
            probs.append(None)
        elif k < 0:
            rule.append(ALONE)
            probs.append(None)
        elif k < len(det):
            rule.append(joins[int(det.rule[k])].name)
            probs.append(1.0)
        else:
            rule.append(PROBABILISTIC)
            probs.append(float(prob[k]))
    cluster = first.cluster
    attaches = rules.attaches()
    if attaches:
        att = attach_edges(
            con, attaches, cluster, set(columns), only_new=exclusive is not None, adult_by=adult_by
        )
        if len(att):
            second = _attach(n, first, att, ids, births, must, cannot, exclusive)
            for i in np.flatnonzero((first.first_edge == -1) & (second.first_edge >= 0)).tolist():
                rule[i] = attaches[int(att.rule[int(second.first_edge[i])])].name
            cluster = second.cluster
    return _Linked(person=[str(c) for c in cluster.tolist()], rule=rule, prob=probs)


def _attach(
    n: int,
    first: Clustering,
    att: Edges,
    ids: list[str | None],
    births: list[str | None],
    must: list[tuple[int, int]],
    cannot: list[tuple[int, int]],
    exclusive: Sequence[str | None] | None,
) -> Clustering:
    """Second pass: the first pass's clusters held together, plus the attach edges (constrained)."""
    members = [(int(c), i) for i, c in enumerate(first.cluster.tolist()) if c != i]
    return cluster_constrained(
        n,
        att.left,
        att.right,
        np.zeros(len(att)),
        ids,
        births,
        rank=att.rule,
        must_link=members + must,
        cannot_link=cannot,
        exclusive=exclusive,
    )


def _write(
    store: WorkspaceStore,
    clock: Clock,
    run_id: str,
    started: Any,
    mode: str,
    rules: ResolutionRules,
    scored: ScoredPairs | None,
    records: pa.Table,
    previous: pa.Table,
    linked: _Linked,
    changes: list[Change],
    summary: ResolveSummary,
    *,
    fingerprint: dict[str, int],
    sequence: int,
) -> set[str]:
    """Write links (changed ones only), history and the run row in one transaction; return the
    person ids whose records changed (for the golden records and households).

    Which links changed is one join of the run's outcome with the previous links (an in-process
    DuckDB over Arrow), not a per-record loop: at millions of records that loop and its dictionary
    cost more than the rest of the write."""
    now = clock.now()
    current = pa.table(
        {
            "i": pa.array(np.arange(records.num_rows, dtype=np.int64)),
            "source": records.column("source").cast(pa.string()),
            "patient_key": records.column("patient_key").cast(pa.string()),
            "person_id": pa.array(linked.person, pa.string()),
            "rule": pa.array(linked.rule, pa.string()),
            "match_probability": pa.array(linked.prob, pa.float64()),
        }
    )
    in_place = isinstance(store.backend, DuckDBBackend)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'").fetchall()
        con.register("cur", current)
        con.register("prev", previous)
        con.execute(
            "CREATE TABLE j AS SELECT c.*, p.person_id AS old_person, p.rule AS old_rule, "
            "p.match_probability AS old_probability, p.run_id AS old_run, p.linked_at AS old_at, "
            "p.person_id IS NULL OR p.person_id IS DISTINCT FROM c.person_id "
            "OR p.rule IS DISTINCT FROM c.rule AS changed "
            "FROM cur c LEFT JOIN prev p ON p.source = c.source AND p.patient_key = c.patient_key"
        )
        con.execute(
            "CREATE TABLE gone AS SELECT p.source, p.patient_key, p.person_id FROM prev p "
            "ANTI JOIN cur c ON c.source = p.source AND c.patient_key = p.patient_key"
        )
        n_changed = _scalar(con, "SELECT count(*) FROM j WHERE changed")
        n_gone = _scalar(con, "SELECT count(*) FROM gone")
        # PostgreSQL, many changes: rewrite every link (unchanged ones keep their run and time) instead
        # of deleting one by one. DuckDB never: a deleted row costs an index update (`_apply_links`).
        rewrite_all = not in_place and n_changed + n_gone > max(50_000, previous.num_rows // 10)
        links = con.sql(
            "SELECT source, patient_key, person_id, "
            "CASE WHEN changed THEN rule ELSE old_rule END AS rule, "
            "CASE WHEN changed THEN match_probability ELSE old_probability END AS match_probability, "
            "CASE WHEN changed THEN $run ELSE old_run END AS run_id, "
            "CASE WHEN changed THEN CAST($now AS TIMESTAMPTZ) ELSE CAST(old_at AS TIMESTAMPTZ) END "
            "AS linked_at, $in_place AND changed AND old_person IS NOT DISTINCT FROM person_id AS retag "
            "FROM j WHERE changed OR $all ORDER BY i",
            params={"run": run_id, "now": now, "all": rewrite_all, "in_place": in_place},
        ).to_arrow_table()
        affected = {
            p
            for (p,) in con.sql(
                "SELECT person_id FROM j WHERE changed UNION SELECT old_person FROM j "
                "WHERE changed AND old_person IS NOT NULL UNION SELECT person_id FROM gone"
            ).fetchall()
        }
        stale = con.sql(
            "SELECT source, patient_key FROM j WHERE changed AND old_person IS NOT NULL "
            "AND NOT ($in_place AND old_person = person_id) UNION ALL SELECT source, patient_key FROM gone",
            params={"in_place": in_place},
        ).to_arrow_table()
    finally:
        con.close()
    retag = links.column("retag")
    links = links.drop(["retag"]).cast(_LINK_SCHEMA)
    retagged, replaced = links.filter(retag), links.filter(pc.invert(retag))
    history = [
        {
            "id": f"{run_id}-{i:07d}",
            "at": now,
            "action": c.action,
            "person_id": c.person_id,
            "other_person_ids": orjson.dumps(c.other_person_ids).decode(),
            "records": orjson.dumps(c.records).decode(),
            "actor": RESOLVER,
            "reason": f"{mode} resolution run",
            "evidence": orjson.dumps(c.evidence).decode(),
            "run_id": run_id,
        }
        for i, c in enumerate(changes)
    ]
    settings = {**rules.as_settings(), "records_fingerprint": fingerprint, "sequence": sequence}
    with store.backend.transaction():
        if rewrite_all:
            store.execute("DELETE FROM identity_link")
        else:
            _apply_links(store, stale, retagged)
        if replaced.num_rows:
            store.insert("identity_link", replaced)
        if history:
            store.insert("identity_history", pa.Table.from_pylist(history))
        store.insert(
            "identity_run",
            [
                {
                    "run_id": run_id,
                    "mode": mode,
                    "started_at": started,
                    "finished_at": clock.now(),
                    "settings": orjson.dumps(settings).decode(),
                    "model": orjson.dumps(scored.model).decode()
                    if scored is not None and scored.model
                    else None,
                    "summary": orjson.dumps(summary.as_dict(), default=str).decode(),
                }
            ],
        )
    return affected


_LINK_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("patient_key", pa.string()),
        ("person_id", pa.string()),
        ("rule", pa.string()),
        ("match_probability", pa.float64()),
        ("run_id", pa.string()),
        ("linked_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.sql(sql).fetchall()[0][0])


def _apply_links(store: WorkspaceStore, stale: pa.Table, retagged: pa.Table) -> None:
    """Delete the links of the `stale` (source, patient_key) records and re-tag the `retagged` links
    (same person; new rule, probability, run and time) in place.

    On DuckDB both are one statement over an Arrow table registered on the store's connection:
    a deleted row costs an index update at commit (about 50 µs a row: minutes for millions), an
    in-place update of unindexed columns almost nothing. PostgreSQL deletes a source and a chunk of
    keys at a time (its re-tagged links are deleted and inserted again).
    """
    if not isinstance(store.backend, DuckDBBackend):
        keys = zip(stale.column("source").to_pylist(), stale.column("patient_key").to_pylist(), strict=True)
        _delete_links(store, list(keys))
        return
    con = store.backend.staging_connection()
    con.register("_identity_stale", stale)
    con.register("_identity_retag", retagged)
    try:
        if stale.num_rows:
            store.execute(
                "DELETE FROM identity_link WHERE EXISTS (SELECT 1 FROM _identity_stale AS s "
                "WHERE s.source = identity_link.source AND s.patient_key = identity_link.patient_key)"
            )
        if retagged.num_rows:
            store.execute(
                "UPDATE identity_link SET rule = r.rule, match_probability = r.match_probability, "
                "run_id = r.run_id, linked_at = r.linked_at FROM _identity_retag AS r "
                "WHERE r.source = identity_link.source AND r.patient_key = identity_link.patient_key"
            )
    finally:
        con.unregister("_identity_stale")
        con.unregister("_identity_retag")


def _delete_links(store: WorkspaceStore, keys: list[tuple[str, str]]) -> None:
    """Delete the links of these (source, patient_key) records, a source and a chunk of keys at a time."""
    by_source: dict[str, list[str]] = {}
    for s, k in keys:
        by_source.setdefault(s, []).append(k)
    for s, ks in by_source.items():
        for start in range(0, len(ks), 500):
            chunk = ks[start : start + 500]
            names = {f"k{i}": v for i, v in enumerate(chunk)}
            store.execute(
                f"DELETE FROM identity_link WHERE source = :src AND patient_key IN ({', '.join(':' + p for p in names)})",  # noqa: S608
                {"src": s, **names},
            )
