# ruff: noqa: S608 - SQL is assembled from fixed field names; every value is a :parameter
"""The golden record: one `person` row per unified person, built from the person's linked records.

Each field survives from one source record, chosen by the field's rule (`survivorship.yaml`):
``trusted`` (the most trusted source; ties to the most recent), ``recent`` (the most recent record;
ties to the more trusted source) or ``frequent`` (the value most records agree on, compared by blind
index for identifiers). `person.provenance` says for every field which record it came from, by which
rule, and that record's time.

The choice is one set-based query per chunk of persons, written once in neutral SQL and run by the
store (DuckDB or PostgreSQL). Identifiers are copied as stored — ciphertext and blind index — never
decrypted: a ciphertext's associated data is its PII kind, the same in `patient` and `person`.
ID numbers are valid by construction: ingestion quarantines any that fails GB 11643.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import yaml

from careloop.clock import Clock
from careloop.errors import ConfigError
from careloop.storage.duckdb_backend import DuckDBBackend
from careloop.storage.workspace import WorkspaceStore


class Rule(StrEnum):
    TRUSTED = "trusted"
    RECENT = "recent"
    FREQUENT = "frequent"


#: golden fields -> the column that tells equal values apart for `frequent` (None: cannot be compared)
GOLDEN_FIELDS: dict[str, str | None] = {
    "name": "name_bidx",
    "sex": "sex",
    "birth_date": "birth_date",
    "id_number": "id_number_bidx",
    "phone": "phone_bidx",
    "address": None,  # encrypted with a fresh nonce and no blind index: equal addresses look different
    "province": "province",
    "city": "city",
    "district": "district",
    "postal_code": "postal_code",
}
#: fields taken from the record the address came from when it has them
ADDRESS_PARTS = frozenset({"province", "city", "district", "postal_code"})
#: encrypted fields whose blind index is copied with them
_BLIND_INDEXED = ("name", "id_number", "phone")
#: persons per query when rebuilding everything (bounds memory at millions of persons)
RANGE_CHUNK = 250_000
#: persons per query when rebuilding a given set (one IN list, padded to this size)
ID_CHUNK = 1_000
DEFAULT_RULES_FILE = "survivorship.yaml"


@dataclass(frozen=True)
class Survivorship:
    """Source trust ranks and the rule of every golden field."""

    trust: tuple[tuple[str, ...], ...]  # ranks of glob patterns, most trusted first
    rules: Mapping[str, Rule]

    def trust_rank(self, source: str) -> int:
        """0 for the most trusted rank; sources matching no pattern rank last."""
        for rank, patterns in enumerate(self.trust):
            if any(fnmatch.fnmatchcase(source, p) for p in patterns):
                return rank
        return len(self.trust)


def parse_survivorship(data: Any, *, origin: str = "survivorship settings") -> Survivorship:
    """Validate survivorship settings (the YAML's content); ConfigError says what to fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with keys trust, default, fields")
    unknown = set(data) - {"trust", "default", "fields"}
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: trust, default, fields"
        )
    trust_raw = data.get("trust")
    if not isinstance(trust_raw, list) or not trust_raw:
        raise ConfigError(f"{origin}: `trust` must be a non-empty list of source names or glob patterns")
    trust: list[tuple[str, ...]] = []
    for entry in trust_raw:
        patterns = entry if isinstance(entry, list) else [entry]
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(
                f"{origin}: trust entry {entry!r} must be a source name, a glob pattern or a list of them"
            )
        trust.append(tuple(patterns))
    default = _rule(data.get("default", Rule.TRUSTED.value), "default", origin)
    fields_raw = data.get("fields") or {}
    if not isinstance(fields_raw, dict):
        raise ConfigError(f"{origin}: `fields` must map field names to a rule")
    unknown = set(fields_raw) - GOLDEN_FIELDS.keys()
    if unknown:
        raise ConfigError(
            f"{origin}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"golden fields are {', '.join(GOLDEN_FIELDS)}"
        )
    rules = {f: _rule(fields_raw.get(f, default.value), f, origin) for f in GOLDEN_FIELDS}
    for f, r in rules.items():
        if r is Rule.FREQUENT and GOLDEN_FIELDS[f] is None:
            raise ConfigError(
                f"{origin}: {f} cannot use `frequent` (its values cannot be compared without decrypting); "
                "use trusted or recent"
            )
    return Survivorship(trust=tuple(trust), rules=rules)


def _rule(value: Any, what: str, origin: str) -> Rule:
    try:
        return Rule(value)
    except ValueError:
        raise ConfigError(
            f"{origin}: {what}: unknown rule {value!r}; use one of {', '.join(r.value for r in Rule)}"
        ) from None


def load_survivorship(path: Path | None = None) -> Survivorship:
    """Survivorship settings from a YAML file, or the default shipped with careloop."""
    if path is None:
        text = resources.files("careloop.identity").joinpath(DEFAULT_RULES_FILE).read_text("utf-8")
        return parse_survivorship(yaml.safe_load(text), origin=DEFAULT_RULES_FILE)
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read survivorship file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    return parse_survivorship(data, origin=str(path))


def refresh_statistics(store: WorkspaceStore, tables: Collection[str]) -> None:
    """PostgreSQL: ANALYZE the tables changed by more than a tenth since their last analysis.

    A table bulk-loaded moments ago has no planner statistics yet (autovacuum analyses it within a
    minute or so); without them the planner takes a few thousand rows for millions and picks
    nested loops that run for minutes. DuckDB needs nothing. No rows are read or returned.
    """
    if store.backend.dialect.name != "postgres":
        return
    names = ", ".join(f"'{t}'" for t in sorted(tables) if t.isidentifier())
    stale = store.backend.fetch_rows(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
        f"AND relname IN ({names}) AND (coalesce(last_analyze, last_autoanalyze) IS NULL "
        "OR n_mod_since_analyze > 0.1 * greatest(n_live_tup, 1000))"
    )
    for (name,) in stale:
        store.backend.execute(f'ANALYZE "{name}"')


# ---- the query --------------------------------------------------------------------------------------


def _record_sql(trust: Mapping[str, int], person_filter: str) -> str:
    """Every linked record with its trust rank and time (`at`)."""
    ranks = " ".join(f"WHEN :src{i} THEN {rank}" for i, rank in enumerate(trust.values()))
    trust_sql = f"CASE p.source {ranks} ELSE {len(trust) + 1000} END" if trust else "0"
    fields = ", ".join(
        f"p.{c}" for f in GOLDEN_FIELDS for c in (f, f"{f}_bidx") if c == f or f in _BLIND_INDEXED
    )
    return (
        f"SELECT l.person_id, p.source, p.key AS patient_key, {fields}, {trust_sql} AS trust, "
        "CASE WHEN p._updated_at > p._ingested_at THEN p._updated_at "
        "ELSE coalesce(p.registered_at, p._ingested_at) END AS at, "
        "coalesce(p.registered_at, p._ingested_at) AS seen_at "
        "FROM identity_link AS l JOIN patient AS p ON p.source = l.source AND p.key = l.patient_key"
        + (f" WHERE {person_filter}" if person_filter else "")
    )


def _field_sql(field: str, rule: Rule) -> str:
    """The records holding `field`, ranked by `rule` (rn = 1 survives).

    An address part (district, postcode ...) comes first from the record the address came from, so
    the two stay consistent; `follows` says when it did.
    """
    carried = f", {field}_bidx" if field in _BLIND_INDEXED else ""
    extra, join, first = "", "", ""
    if rule is Rule.FREQUENT:
        extra = f", count(*) OVER (PARTITION BY rec.person_id, rec.{GOLDEN_FIELDS[field]}) AS freq"
    if field in ADDRESS_PARTS:
        extra += ", CASE WHEN w.person_id IS NULL THEN 0 ELSE 1 END AS follows"
        join = (
            " LEFT JOIN f_address AS w ON w.person_id = rec.person_id AND w.rn = 1 "
            "AND w.source = rec.source AND w.patient_key = rec.patient_key"
        )
        first = "follows DESC, "
    else:
        extra += ", 0 AS follows"
    order = {
        Rule.TRUSTED: "trust, at DESC NULLS LAST",
        Rule.RECENT: "at DESC NULLS LAST, trust",
        Rule.FREQUENT: "freq DESC, trust, at DESC NULLS LAST",
    }[rule]
    base = f"SELECT rec.*{extra} FROM rec{join} WHERE rec.{field} IS NOT NULL"
    return (
        f"f_{field} AS (SELECT person_id, {field}{carried}, source, patient_key, at, follows, "
        f"row_number() OVER (PARTITION BY person_id ORDER BY {first}{order}, source, patient_key) AS rn "
        f"FROM ({base}) AS b)"
    )


def golden_sql(rules: Survivorship, trust: Mapping[str, int], person_filter: str) -> str:
    """One neutral query: per person the surviving value of every field and where it came from."""
    ctes = [f"rec AS ({_record_sql(trust, person_filter)})"]
    ctes += [_field_sql(f, rules.rules[f]) for f in GOLDEN_FIELDS]
    cols = ["a.person_id", "a.record_count", "a.first_seen_at", "hm.household_id"]
    joins = []
    for f in GOLDEN_FIELDS:
        cols.append(f"f_{f}.{f}")
        if f in _BLIND_INDEXED:
            cols.append(f"f_{f}.{f}_bidx")
        cols += [
            f"f_{f}.source AS {f}__source",
            f"f_{f}.patient_key AS {f}__key",
            f"f_{f}.at AS {f}__at",
            f"f_{f}.follows AS {f}__follows",
        ]
        joins.append(f"LEFT JOIN f_{f} ON f_{f}.person_id = a.person_id AND f_{f}.rn = 1")
    return (
        f"WITH {', '.join(ctes)} "
        f"SELECT {', '.join(cols)} FROM (SELECT person_id, count(*) AS record_count, "
        "min(seen_at) AS first_seen_at FROM rec GROUP BY person_id) AS a "
        + " ".join(joins)
        + " LEFT JOIN household_member AS hm ON hm.person_id = a.person_id"
    )


def _sources_sql(person_filter: str) -> str:
    return (
        "SELECT DISTINCT l.person_id, l.source FROM identity_link AS l "
        "JOIN patient AS p ON p.source = l.source AND p.key = l.patient_key"
        + (f" WHERE {person_filter}" if person_filter else "")
    )


@dataclass(frozen=True)
class _Chunk:
    filter: str  # condition on l.person_id
    delete: str  # condition on person_id for the DELETE
    params: dict[str, Any]


def _chunks(store: WorkspaceStore, person_ids: Collection[str] | None) -> Iterator[_Chunk]:
    if person_ids is None:
        ids = store.sql("SELECT DISTINCT person_id FROM identity_link ORDER BY person_id").column(0)
        bounds = [ids[i].as_py() for i in range(RANGE_CHUNK, len(ids), RANGE_CHUNK)]
        edges: list[str | None] = [None, *bounds, None]
        for lo, hi in itertools.pairwise(edges):
            conds, params = [], {}
            if lo is not None:
                conds.append("{c} >= :lo")
                params["lo"] = lo
            if hi is not None:
                conds.append("{c} < :hi")
                params["hi"] = hi
            cond = " AND ".join(conds)
            yield _Chunk(cond.format(c="l.person_id"), cond.format(c="person_id"), params)
        return
    wanted = sorted(set(person_ids))
    names = ", ".join(f":p{i}" for i in range(ID_CHUNK))
    for start in range(0, len(wanted), ID_CHUNK):
        part = wanted[start : start + ID_CHUNK]
        part += [part[-1]] * (ID_CHUNK - len(part))
        params = {f"p{i}": v for i, v in enumerate(part)}
        yield _Chunk(f"l.person_id IN ({names})", f"person_id IN ({names})", params)


# ---- shaping the rows (in-process DuckDB over Arrow, the same for every store engine) -------------------

_PERSON_TYPES: dict[str, pa.DataType] = {
    "person_id": pa.string(),
    "name": pa.string(),
    "name_bidx": pa.string(),
    "sex": pa.string(),
    "birth_date": pa.date32(),
    "id_number": pa.string(),
    "id_number_bidx": pa.string(),
    "phone": pa.string(),
    "phone_bidx": pa.string(),
    "address": pa.string(),
    "province": pa.string(),
    "city": pa.string(),
    "district": pa.string(),
    "postal_code": pa.string(),
    "household_id": pa.string(),
    "record_count": pa.int64(),
    "sources": pa.string(),
    "provenance": pa.string(),
    "first_seen_at": pa.timestamp("us", tz="UTC"),
    "updated_at": pa.timestamp("us", tz="UTC"),
}


def _shape(survivors: pa.Table, sources: pa.Table, rules: Survivorship, now: Any) -> pa.Table:
    """Survivor rows -> `person` rows: JSON `sources` and `provenance`, typed columns."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'").fetchall()
        con.register("g", survivors)
        con.register("s", sources)
        prov = ", ".join(
            f"CASE WHEN CAST({f}__source AS VARCHAR) IS NOT NULL THEN '\"{f}\":' || to_json({{"
            f"'source': CAST({f}__source AS VARCHAR), 'patient_key': CAST({f}__key AS VARCHAR), "
            f"'rule': CASE WHEN {f}__follows = 1 THEN 'follows_address' ELSE '{rules.rules[f].value}' END, "
            f"'at': strftime(CAST({f}__at AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%SZ')}}) END"
            for f in GOLDEN_FIELDS
        )
        plain = ", ".join(
            f"CAST(g.{c} AS {'DATE' if c == 'birth_date' else 'VARCHAR'}) AS {c}"
            for c in _PERSON_TYPES
            if c in survivors.column_names and c not in ("person_id", "record_count", "first_seen_at")
        )
        table = con.sql(
            f"SELECT CAST(g.person_id AS VARCHAR) AS person_id, {plain}, "
            "CAST(g.record_count AS BIGINT) AS record_count, "
            "coalesce(CAST(src.sources AS VARCHAR), '[]') AS sources, "
            f"'{{' || concat_ws(',', {prov}) || '}}' AS provenance, "
            "CAST(g.first_seen_at AS TIMESTAMPTZ) AS first_seen_at, $now AS updated_at "
            "FROM g LEFT JOIN (SELECT CAST(person_id AS VARCHAR) AS person_id, "
            "to_json(list(CAST(source AS VARCHAR) ORDER BY CAST(source AS VARCHAR))) AS sources "
            "FROM s GROUP BY 1) AS src ON src.person_id = CAST(g.person_id AS VARCHAR) "
            "ORDER BY 1",
            params={"now": now},
        ).to_arrow_table()
    finally:
        con.close()
    return table.select(list(_PERSON_TYPES)).cast(pa.schema([(c, t) for c, t in _PERSON_TYPES.items()]))


def build_golden_records(
    store: WorkspaceStore,
    *,
    clock: Clock,
    person_ids: Collection[str] | None = None,
    rules: Survivorship | None = None,
) -> int:
    """(Re)write the `person` rows of `person_ids` (None: every person) from their linked records.

    A person whose records are no longer linked to it (or no longer exist) loses its row. The
    household of a person (`household_member`) is kept. Returns the rows written.
    """
    rules = rules or load_survivorship()
    if person_ids is not None and not person_ids:
        return 0
    refresh_statistics(store, ("patient", "identity_link", "person", "household_member"))
    linked_sources = [r["source"] for r in store.rows("SELECT DISTINCT source FROM identity_link ORDER BY 1")]
    trust = {s: rules.trust_rank(s) for s in linked_sources}
    trust_params = {f"src{i}": s for i, s in enumerate(trust)}
    now = clock.now()
    written = 0
    with store.backend.transaction():
        for chunk in _chunks(store, person_ids):
            params = {**chunk.params, **trust_params}
            survivors = store.sql(golden_sql(rules, trust, chunk.filter), params)
            sources = store.sql(_sources_sql(chunk.filter), chunk.params)
            shaped = (
                _shape(survivors, sources, rules, now)
                if survivors.num_rows
                else pa.schema(list(_PERSON_TYPES.items())).empty_table()
            )
            sync_rows(store, "person", "person_id", shaped, chunk.delete, chunk.params)
            written += shaped.num_rows
    return written


# ---- writing only what changed ---------------------------------------------------------------------


def sync_rows(
    store: WorkspaceStore,
    table: str,
    key: str,
    rows: pa.Table,
    where: str = "",
    params: Mapping[str, Any] | None = None,
    *,
    ignore: Collection[str] = ("updated_at",),
) -> int:
    """Make the rows of `table` that match `where` (all when empty) equal to `rows`, keyed by `key`.

    Rows equal to their stored version (`ignore` columns aside) are left alone; changed and new rows
    are written, stored rows missing from `rows` deleted. A re-run that changes little writes
    little: on DuckDB every deleted row costs an index update at commit (about 50 µs a row, minutes
    for a million). PostgreSQL returns JSON columns parsed (as structs), so its rows are not compared:
    they are all replaced, which costs it little. Returns the rows written.
    """
    if not isinstance(store.backend, DuckDBBackend):
        store.execute(f"DELETE FROM {table}" + (f" WHERE {where}" if where else ""), params)
        return store.insert(table, rows) if rows.num_rows else 0
    cols = rows.column_names
    existing = store.sql(
        f"SELECT {', '.join(cols)} FROM {table}" + (f" WHERE {where}" if where else ""), params
    )
    compared = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in cols if c not in ignore)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'").fetchall()
        con.register("new_rows", rows)
        con.register("old_rows", existing)
        con.execute(
            f"CREATE TABLE changed AS SELECT CAST({key} AS VARCHAR) AS k FROM (SELECT {compared} FROM new_rows "
            f"EXCEPT SELECT {compared} FROM old_rows)"
        )
        drop = con.sql(
            f"SELECT k FROM changed WHERE k IN (SELECT CAST({key} AS VARCHAR) FROM old_rows) UNION ALL "
            f"SELECT CAST({key} AS VARCHAR) FROM old_rows WHERE CAST({key} AS VARCHAR) NOT IN "
            f"(SELECT CAST({key} AS VARCHAR) FROM new_rows)"
        ).to_arrow_table()
        write = con.sql(
            f"SELECT n.* FROM new_rows AS n WHERE CAST(n.{key} AS VARCHAR) IN (SELECT k FROM changed)"
        ).to_arrow_table()
    finally:
        con.close()
    delete_keys(store, table, key, drop.column(0).cast(pa.string()).to_pylist())
    if write.num_rows:
        store.insert(table, write.cast(rows.schema))
    return int(write.num_rows)


def delete_keys(store: WorkspaceStore, table: str, key: str, keys: list[str]) -> None:
    """Delete the rows of `table` whose `key` is one of `keys`: on DuckDB one statement over an Arrow
    table registered on the store's connection, elsewhere chunks of a fixed-size IN list."""
    if not keys:
        return
    backend = store.backend
    if isinstance(backend, DuckDBBackend):
        con = backend.staging_connection()
        con.register("_delete_keys", pa.table({"k": pa.array(keys, pa.string())}))
        try:
            store.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT k FROM _delete_keys)")
        finally:
            con.unregister("_delete_keys")
        return
    names = ", ".join(f":k{i}" for i in range(ID_CHUNK))
    for start in range(0, len(keys), ID_CHUNK):
        part = keys[start : start + ID_CHUNK]
        part += [part[-1]] * (ID_CHUNK - len(part))
        store.execute(
            f"DELETE FROM {table} WHERE {key} IN ({names})", {f"k{i}": v for i, v in enumerate(part)}
        )
