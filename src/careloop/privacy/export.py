"""Safe export: a recorded purpose for person-level exports, k-anonymity for aggregate ones.

Aggregate exports group persons by quasi-identifiers (age band, sex, province / city / district, or any
scalar trait) and suppress every cell with fewer than k persons (default `CARELOOP_EXPORT_K` = 10): its
count and measure are written as ``"<k"``. No totals or margins are written, so a suppressed cell cannot be
recovered by subtraction from them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError
from careloop.storage.workspace import WorkspaceStore

#: dimensions taken from the golden record (person); anything else must be a scalar trait
PERSON_DIMENSIONS = ("sex", "province", "city", "district")
#: age bands (years): children under 14 are one band (PIPL Art 31), then 15-year bands, 75 and over
AGE_BANDS = (
    (0, 14, "0-13"),
    (14, 18, "14-17"),
    (18, 30, "18-29"),
    (30, 45, "30-44"),
    (45, 60, "45-59"),
    (60, 75, "60-74"),
    (75, 200, "75+"),
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PURPOSE = re.compile(r"^[\w\- .:/]{3,100}$")


def check_purpose(purpose: str | None) -> str:
    """A person-level export needs a recorded purpose (PIPL Art 6 purpose limitation)."""
    text = (purpose or "").strip()
    if not text:
        raise ConfigError(
            "a person-level export needs a purpose (--purpose / ?purpose=), recorded in the audit log"
        )
    if not _PURPOSE.match(text):
        raise ConfigError("the purpose must be 3-100 letters, digits, spaces or - _ . : /")
    return text


@dataclass(frozen=True)
class Measure:
    kind: str  # count | mean | sum
    trait: str | None = None

    @classmethod
    def parse(cls, text: str) -> Measure:
        if text == "count":
            return cls("count")
        kind, _, trait = text.partition(":")
        if kind not in ("mean", "sum") or not _NAME.match(trait):
            raise ConfigError(f"measure {text!r}: use count, mean:TRAIT or sum:TRAIT")
        return cls(kind, trait)

    @property
    def label(self) -> str:
        return self.kind if self.trait is None else f"{self.kind}_{self.trait}"


def _age_band_sql(as_of: datetime) -> str:
    age = f"date_diff('year', birth_date, DATE '{as_of.date().isoformat()}')"
    cases = " ".join(f"WHEN {age} >= {lo} AND {age} < {hi} THEN '{label}'" for lo, hi, label in AGE_BANDS)
    return f"CASE {cases} END"


def aggregate(
    store: WorkspaceStore,
    by: list[str],
    measure: str = "count",
    *,
    k: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Persons grouped by `by`, cells under k persons suppressed; returns {columns, rows, suppressed, k}."""
    if k is None:
        from careloop.config import get_settings

        k = get_settings().export_k
    if k < 2:
        raise ConfigError("k must be at least 2")
    if not by:
        raise ConfigError("--by needs at least one dimension (age_band, sex, city, ... or a trait)")
    for d in by:
        if not _NAME.match(d):
            raise ConfigError(f"dimension {d!r} is not a valid name")
    m = Measure.parse(measure)
    con = duckdb.connect()
    try:
        con.register(
            "person", store.sql("SELECT person_id, sex, province, city, district, birth_date FROM person")
        )
        traits = sorted(
            {d for d in by if d not in PERSON_DIMENSIONS and d != "age_band"}
            | ({m.trait} if m.trait else set())
        )
        known = {r[0] for r in store.tuples("SELECT DISTINCT trait FROM trait_value WHERE key = ''")}
        missing = [t for t in traits if t not in known]
        if missing:
            raise ConfigError(
                f"unknown dimension or trait: {', '.join(missing)}; use age_band, {', '.join(PERSON_DIMENSIONS)} "
                "or a computed scalar trait (`careloop traits list`)"
            )
        joins = []
        for i, t in enumerate(traits):
            con.register(
                f"t{i}",
                store.sql(
                    "SELECT person_id, coalesce(value_text, CAST(value_num AS TEXT)) AS v, value_num AS n "
                    "FROM trait_value WHERE trait = :t AND key = ''",
                    {"t": t},
                ),
            )
            joins.append(f"LEFT JOIN t{i} ON t{i}.person_id = p.person_id")
        trait_index = {t: i for i, t in enumerate(traits)}
        dims = []
        for d in by:
            if d == "age_band":
                dims.append(f"{_age_band_sql(clock.now())} AS age_band")
            elif d in PERSON_DIMENSIONS:
                dims.append(f"p.{d} AS {d}")
            else:
                dims.append(f"t{trait_index[d]}.v AS {d}")
        value = "count(*)" if m.trait is None else f"{m.kind}(t{trait_index[m.trait]}.n)"
        sql = (
            f"SELECT {', '.join(dims)}, count(*) AS persons, {value} AS measure FROM person p {' '.join(joins)} "  # noqa: S608
            "GROUP BY ALL ORDER BY ALL"
        )
        rel = con.sql(sql)
        names = rel.columns
        raw = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.close()
    rows, suppressed = [], 0
    small = f"<{k}"
    for r in raw:
        cell: dict[str, Any] = {d: r[d] for d in by}
        if r["persons"] < k:
            suppressed += 1
            cell["persons"] = small
            cell[m.label] = small
        else:
            cell["persons"] = r["persons"]
            cell[m.label] = round(r["measure"], 4) if isinstance(r["measure"], float) else r["measure"]
        rows.append(cell)
    columns = [*by, "persons"] + ([m.label] if m.label != "count" else [])
    if m.label == "count":
        for cell in rows:
            cell.pop("count", None)
    return {"columns": columns, "rows": rows, "k": k, "cells": len(rows), "suppressed": suppressed}


def write_aggregate(result: dict[str, Any], output: Path) -> None:
    """CSV, or JSON when `output` ends in .json."""
    if output.suffix == ".json":
        import orjson

        output.write_bytes(orjson.dumps(result, default=str, option=orjson.OPT_INDENT_2))
        return
    with output.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=result["columns"])
        w.writeheader()
        w.writerows(result["rows"])
