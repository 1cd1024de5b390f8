"""The identity quality report (`careloop identity report`): how the resolved persons look, what the
model learned, and — given the planted truth of a synthetic network — how right they are.

Everything is computed from the workspace's identity tables (`identity_link`, `identity_run`,
`household_member`, `person`) with aggregate SQL that runs on DuckDB and PostgreSQL; only the scoring
against a truth file reads the link table's (source, patient_key, person_id) into memory. No
personal identifier is read or shown: counts, source names, rule names and model parameters only.
See docs/identity-report.md for how to read it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from careloop.errors import ConfigError, NotFoundError
from careloop.identity.evaluate import pairwise_scores
from careloop.identity.matching import model_parameters
from careloop.storage.workspace import WorkspaceStore

#: cluster sizes get their own bucket up to this size; larger clusters share the last one ("10+")
LARGEST_SIZE_BUCKET = 10
#: edges of the match-probability histogram: most probabilistic links sit above the threshold (0.9 by
#: default), so the bins narrow towards 1 (each bin holds from <= p < to; the last one includes 1)
PROBABILITY_EDGES: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0)
#: the rule name identity resolution gives to links decided by the Splink model
PROBABILISTIC_RULE = "probabilistic"
TRUTH_COLUMNS: tuple[str, ...] = ("source", "patient_key", "person_id")


def build_report(store: WorkspaceStore, truth: Path | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict; raises NotFoundError when no resolution has run yet."""
    run = latest_run(store)
    records = int(store.scalar("SELECT count(*) FROM identity_link") or 0)
    if run is None and records == 0:
        raise NotFoundError(
            f"no identity resolution in workspace {store.workspace!r} yet: "
            f"run `careloop identity resolve --workspace {store.workspace}` first"
        )
    sizes = cluster_sizes(store)
    persons = sum(int(s["persons"]) for s in sizes)
    report: dict[str, Any] = {
        "workspace": store.workspace,
        "run": run,
        "records": records,
        "persons": persons,
        "records_per_person": round(records / persons, 4) if persons else None,
        "golden_records": int(store.scalar("SELECT count(*) FROM person") or 0),
        "largest_cluster": largest_cluster(store),
        "cluster_sizes": sizes,
        "links_by_rule": links_by_rule(store),
        "sources": per_source(store),
        "sources_per_person": sources_per_person(store),
        "source_overlap": source_overlap(store),
        "match_probability": probability_histogram(store),
        "match_weights": match_weights(store),
        "households": households(store),
        "truth": None,
    }
    if truth is not None:
        report["truth"] = truth_scores(store, truth)
    return report


def _json(value: Any) -> Any:
    """A JSON column's value: engines return text (DuckDB) or parsed values (PostgreSQL)."""
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def latest_run(store: WorkspaceStore) -> dict[str, Any] | None:
    """The most recent identity run (id, mode, times, settings, summary), without its model."""
    rows = store.rows(
        "SELECT run_id, mode, started_at, finished_at, CAST(settings AS TEXT) AS settings, "
        "CAST(summary AS TEXT) AS summary FROM identity_run "
        "ORDER BY started_at DESC, run_id DESC LIMIT 1"
    )
    if not rows:
        return None
    run = rows[0]
    run["settings"] = _json(run["settings"])
    run["summary"] = _json(run["summary"])
    return run


def _bucket(size: int) -> str:
    return f"{LARGEST_SIZE_BUCKET}+" if size >= LARGEST_SIZE_BUCKET else str(size)


def cluster_sizes(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Persons and records per cluster size 1, 2, …, 9, 10+ (every bucket listed, zeros included)."""
    rows = store.rows(
        "SELECT n, count(*) AS persons FROM "
        "(SELECT person_id, count(*) AS n FROM identity_link GROUP BY person_id) AS c GROUP BY n"
    )
    buckets = [_bucket(s) for s in range(1, LARGEST_SIZE_BUCKET + 1)]
    persons = dict.fromkeys(buckets, 0)
    records = dict.fromkeys(buckets, 0)
    for r in rows:
        n, k = int(r["n"]), int(r["persons"])
        persons[_bucket(n)] += k
        records[_bucket(n)] += k * n
    return [{"size": b, "persons": persons[b], "records": records[b]} for b in buckets]


def largest_cluster(store: WorkspaceStore) -> int:
    value = store.scalar(
        "SELECT max(n) FROM (SELECT person_id, count(*) AS n FROM identity_link GROUP BY person_id) AS c"
    )
    return int(value or 0)


def links_by_rule(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Records per rule that put them in their person, with the persons and probabilities involved."""
    rows = store.rows(
        "SELECT rule, count(*) AS records, count(DISTINCT person_id) AS persons, "
        "min(match_probability) AS min_probability, avg(match_probability) AS mean_probability "
        "FROM identity_link GROUP BY rule ORDER BY count(*) DESC, rule"
    )
    for r in rows:
        r["records"], r["persons"] = int(r["records"]), int(r["persons"])
        for k in ("min_probability", "mean_probability"):
            r[k] = None if r[k] is None else round(float(r[k]), 6)
    return rows


def per_source(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Records and persons per source."""
    rows = store.rows(
        "SELECT source, count(*) AS records, count(DISTINCT person_id) AS persons "
        "FROM identity_link GROUP BY source ORDER BY source"
    )
    return [{"source": r["source"], "records": int(r["records"]), "persons": int(r["persons"])} for r in rows]


def sources_per_person(store: WorkspaceStore) -> list[dict[str, Any]]:
    """How many persons are known to 1, 2, 3 … sources."""
    rows = store.rows(
        "SELECT k, count(*) AS persons FROM "
        "(SELECT person_id, count(DISTINCT source) AS k FROM identity_link GROUP BY person_id) AS s "
        "GROUP BY k ORDER BY k"
    )
    return [{"sources": int(r["k"]), "persons": int(r["persons"])} for r in rows]


def source_overlap(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Persons present in both sources, for every pair of sources that share at least one person."""
    rows = store.rows(
        "SELECT a.source AS source_a, b.source AS source_b, count(*) AS persons "
        "FROM (SELECT DISTINCT person_id, source FROM identity_link) AS a "
        "JOIN (SELECT DISTINCT person_id, source FROM identity_link) AS b "
        "ON a.person_id = b.person_id AND a.source < b.source "
        "GROUP BY a.source, b.source ORDER BY a.source, b.source"
    )
    return [{**r, "persons": int(r["persons"])} for r in rows]


def probability_histogram(store: WorkspaceStore) -> dict[str, Any]:
    """Probabilistic links per match-probability bin (PROBABILITY_EDGES)."""
    inner = PROBABILITY_EDGES[1:-1]
    case = (
        "CASE "
        + " ".join(f"WHEN match_probability < {e!r} THEN {i}" for i, e in enumerate(inner))
        + f" ELSE {len(inner)} END"
    )
    rows = store.rows(
        f"SELECT bin, count(*) AS links FROM (SELECT {case} AS bin FROM identity_link "  # noqa: S608 - constants
        "WHERE rule = :rule AND match_probability IS NOT NULL) AS p GROUP BY bin",
        {"rule": PROBABILISTIC_RULE},
    )
    counts = {int(r["bin"]): int(r["links"]) for r in rows}
    bins = [
        {"from": lo, "to": hi, "links": counts.get(i, 0)}
        for i, (lo, hi) in enumerate(itertools.pairwise(PROBABILITY_EDGES))
    ]
    return {"rule": PROBABILISTIC_RULE, "links": sum(counts.values()), "bins": bins}


def match_weights(store: WorkspaceStore) -> dict[str, Any] | None:
    """m, u and match weight per comparison level of the latest run's model, and the prior."""
    rows = store.rows(
        "SELECT run_id, CAST(model AS TEXT) AS model FROM identity_run WHERE model IS NOT NULL "
        "ORDER BY started_at DESC, run_id DESC LIMIT 1"
    )
    if not rows:
        return None
    model = _json(rows[0]["model"])
    if not isinstance(model, dict):
        return None
    return {"run_id": rows[0]["run_id"], **model_weights(model)}


def model_weights(model: dict[str, Any]) -> dict[str, Any]:
    """Chart data of a saved Splink model: the prior and, per comparison level, m, u and log2(m/u)."""
    p = model.get("probability_two_random_records_match")
    prior: dict[str, Any] = {"probability_two_random_records_match": p, "match_weight": None}
    if isinstance(p, int | float) and 0 < p < 1:
        prior["match_weight"] = round(math.log2(p / (1 - p)), 3)
    return {"prior": prior, "comparisons": model_parameters(model)}


def households(store: WorkspaceStore) -> dict[str, Any] | None:
    """Household count, members, size distribution and roles; None when no household is recorded."""
    rows = store.rows(
        "SELECT n, count(*) AS households FROM "
        "(SELECT household_id, count(*) AS n FROM household_member GROUP BY household_id) AS h "
        "GROUP BY n ORDER BY n"
    )
    if not rows:
        return None
    roles = store.rows(
        "SELECT coalesce(role, 'unknown') AS role, count(*) AS persons FROM household_member "
        "GROUP BY coalesce(role, 'unknown') ORDER BY count(*) DESC, coalesce(role, 'unknown')"
    )
    sizes = [{"size": int(r["n"]), "households": int(r["households"])} for r in rows]
    return {
        "households": sum(s["households"] for s in sizes),
        "persons": sum(s["size"] * s["households"] for s in sizes),
        "sizes": sizes,
        "roles": [{"role": r["role"], "persons": int(r["persons"])} for r in roles],
    }


def read_truth(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Load a truth file (Parquet, or CSV with a header) as the table `truth` (all text)."""
    if not path.is_file():
        raise ConfigError(
            f"truth file {path} does not exist; pass truth/identity.parquet of a `careloop synth` network "
            "or a CSV / Parquet file with columns source, patient_key, person_id"
        )
    suffix = path.suffix.lower()
    src = str(path).replace("'", "''")
    if suffix == ".parquet":
        reader = f"read_parquet('{src}')"
    elif suffix in (".csv", ".tsv", ".txt"):
        reader = f"read_csv('{src}', header = true, all_varchar = true)"
    else:
        raise ConfigError(f"cannot read truth file {path.name}: give a .parquet or .csv file")
    try:
        con.execute(f"CREATE TEMP VIEW truth_file AS SELECT * FROM {reader}")  # noqa: S608 - quoted path
        columns = [str(r[0]) for r in con.execute("SELECT * FROM truth_file LIMIT 0").description or []]
    except duckdb.Error as e:
        raise ConfigError(f"cannot read truth file {path}: {e}") from e
    missing = [c for c in TRUTH_COLUMNS if c not in columns]
    if missing:
        raise ConfigError(
            f"truth file {path} lacks column(s) {', '.join(missing)}: it needs source, patient_key and "
            f"person_id (one row per record, e.g. truth/identity.parquet of `careloop synth`); "
            f"it has: {', '.join(columns)}"
        )
    con.execute(
        "CREATE TEMP TABLE truth AS SELECT DISTINCT CAST(source AS VARCHAR) AS source, "
        "CAST(patient_key AS VARCHAR) AS patient_key, CAST(person_id AS VARCHAR) AS person_id "
        "FROM truth_file WHERE person_id IS NOT NULL"
    )
    dup = con.execute(
        "SELECT count(*) FROM (SELECT source, patient_key FROM truth GROUP BY ALL HAVING count(*) > 1)"
    ).fetchall()[0][0]
    if dup:
        raise ConfigError(
            f"truth file {path} gives {dup:,} record(s) more than one person_id; one per (source, patient_key)"
        )


def truth_scores(store: WorkspaceStore, truth: Path) -> dict[str, Any]:
    """Pairwise precision, recall and F1 of the resolved persons against a truth file, with the false
    merges and missed links counted per pair of sources (a pair of records is counted under the pair of
    their sources; two records of one source under (source, source))."""
    con = duckdb.connect()
    try:
        read_truth(con, truth)
        links: pa.Table = store.sql(
            "SELECT source, CAST(patient_key AS TEXT) AS patient_key, person_id FROM identity_link"
        )
        con.register("links_arrow", links)
        con.execute(
            "CREATE TEMP TABLE scored AS SELECT l.source, l.person_id AS predicted, t.person_id AS actual "
            "FROM links_arrow l JOIN truth t ON t.source = l.source AND t.patient_key = l.patient_key"
        )
        scored = int(con.execute("SELECT count(*) FROM scored").fetchall()[0][0])
        truth_rows = int(con.execute("SELECT count(*) FROM truth").fetchall()[0][0])
        codes = con.execute(
            "SELECT dense_rank() OVER (ORDER BY predicted) AS p, dense_rank() OVER (ORDER BY actual) AS a "
            "FROM scored"
        ).fetchnumpy()
        scores = pairwise_scores(codes["p"], codes["a"])
        by_pair = _errors_by_source_pair(con)
    finally:
        con.close()
    return {
        "file": str(truth),
        "records_scored": scored,
        "records_without_truth": links.num_rows - scored,
        "truth_records_not_resolved": truth_rows - scored,
        **scores.as_dict(),
        "false_merge_pairs": scores.predicted_pairs - scores.true_positive_pairs,
        "missed_link_pairs": scores.true_pairs - scores.true_positive_pairs,
        "by_source_pair": by_pair,
    }


def _pair_counts(group: Sequence[str]) -> str:
    """SQL: pairs of records sharing `group`, per (source_a <= source_b)."""
    keys = ", ".join(group)
    on = " AND ".join(f"a.{g} = b.{g}" for g in group)
    return (
        f"(SELECT a.source AS source_a, b.source AS source_b, "  # noqa: S608 - fixed column names
        "sum(CASE WHEN a.source = b.source THEN a.n * (a.n - 1) // 2 ELSE a.n * b.n END) AS pairs "
        f"FROM (SELECT {keys}, source, count(*) AS n FROM scored GROUP BY ALL) a "
        f"JOIN (SELECT {keys}, source, count(*) AS n FROM scored GROUP BY ALL) b "
        f"ON {on} AND a.source <= b.source GROUP BY ALL)"
    )


def _errors_by_source_pair(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """False-merge and missed-link pairs per pair of sources, worst first (pairs with errors only)."""
    predicted = _pair_counts(["predicted"])
    actual = _pair_counts(["actual"])
    both = _pair_counts(["predicted", "actual"])
    rows = con.execute(
        f"""SELECT coalesce(p.source_a, t.source_a) AS source_a, coalesce(p.source_b, t.source_b) AS source_b,
                   coalesce(p.pairs, 0) AS predicted, coalesce(t.pairs, 0) AS actual, coalesce(c.pairs, 0) AS correct
            FROM {predicted} p
            FULL JOIN {actual} t ON t.source_a = p.source_a AND t.source_b = p.source_b
            LEFT JOIN {both} c ON c.source_a = coalesce(p.source_a, t.source_a)
                              AND c.source_b = coalesce(p.source_b, t.source_b)"""  # noqa: S608
    ).fetchall()
    out = []
    for a, b, pred, act, ok in rows:
        false_merges, missed = int(pred) - int(ok), int(act) - int(ok)
        if false_merges or missed:
            out.append(
                {
                    "source_a": a,
                    "source_b": b,
                    "false_merge_pairs": false_merges,
                    "missed_link_pairs": missed,
                    "true_pairs": int(act),
                    "predicted_pairs": int(pred),
                }
            )
    out.sort(key=lambda r: (-(r["false_merge_pairs"] + r["missed_link_pairs"]), r["source_a"], r["source_b"]))
    return out
