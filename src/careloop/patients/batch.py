"""The small indexed reads a 360 is made of, each shaped so that DuckDB answers it from an index.

A `Branch` is one read: some columns of one table where an equality / IN predicate on an indexed
column holds, optionally newest first and cut to a limit, with the total count. Shape rules, each
measured on DuckDB 2.0 (docs/patient-360.md, "Speed"):

- one statement per table. A UNION ALL of all reads in one statement was tried: DuckDB still scans
  each branch's index, but padding every branch to the union's columns and windowing over it cost
  more (≈60 ms at 1M patients) than the separate statements (≈1.3 ms each);
- lists are cut with ``count(*) OVER ()`` in the select list before ``ORDER BY … LIMIT``: a bare
  ``ORDER BY … LIMIT`` becomes a top-N whose dynamic filter on the sort column is pushed into the
  table scan as a second filter, and DuckDB scans an index only when the scan has exactly one filter
  (1.3 ms -> 60 ms on a 7M-row table);
- rows are read as tuples (`WorkspaceStore`'s scoped statement, run with the backend's plain
  `fetch_rows`): on DuckDB 2.0 its relation-to-Arrow path costs ≈3.5 ms more per statement than the
  look-up itself, for results of a few rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from careloop.storage.schema import LogicalType, table
from careloop.storage.workspace import WorkspaceStore


@dataclass(frozen=True)
class Branch:
    """One read: `columns` of `table` where `where` holds; newest first by `order` (ties by
    `tiebreak`) when given, cut to `limit` rows (None: all)."""

    name: str
    table: str
    columns: tuple[str, ...]
    where: str
    order: str | None = None
    tiebreak: str | None = "key"
    limit: int | None = None

    def sql(self) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        sql = f"SELECT {cols}, count(*) OVER () AS _n FROM {self.table} WHERE {self.where}"  # noqa: S608 - fixed names, placeholders
        if self.order:
            sql += f' ORDER BY "{self.order}" DESC' + (f', "{self.tiebreak}"' if self.tiebreak else "")
        if self.limit is not None:
            sql += f" LIMIT {max(int(self.limit), 1)}"  # a 0 limit still reads one row, for the total
        return sql


@dataclass
class Part:
    """The rows one branch returned (cut to its limit) and how many matched in all."""

    total: int
    rows: list[dict[str, Any]]


@lru_cache(maxsize=64)
def json_columns(name: str) -> frozenset[str]:
    """The JSON columns of a table (DuckDB returns them as text, PostgreSQL parsed)."""
    return frozenset(c.name for c in table(name).columns if c.type is LogicalType.JSON)


def fetch(store: WorkspaceStore, branches: Sequence[Branch], params: Mapping[str, Any]) -> dict[str, Part]:
    """Run every branch; each gets a `Part` (empty when nothing matched)."""
    out: dict[str, Part] = {}
    for b in branches:
        json_cols = json_columns(b.table) & set(b.columns)
        rows = store.tuples(b.sql(), params)
        part = Part(int(rows[0][-1]) if rows else 0, [])
        for row in rows[: b.limit]:
            rec = dict(zip(b.columns, row[:-1], strict=True))
            for c in json_cols:
                if isinstance(rec[c], str | bytes):
                    rec[c] = orjson.loads(rec[c])
            part.rows.append(rec)
        out[b.name] = part
    return out
