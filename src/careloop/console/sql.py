# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""SQL fragments the dashboards share, in the neutral dialect `WorkspaceStore` renders for each engine.

Every dashboard number is one set-based statement over the whole workspace (no per-person loops): a
person's records reach their unified person through `identity_link`; live events carry their person.
Time windows arrive as parameters (aware datetimes), so neither engine's session time zone matters, and
calendar months are bucketed with a CASE over month boundaries computed in the patients' time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

#: receipt events careloop writes itself (a provider said it delivered / failed): not patient activity
RECEIPT_ONLY = ("message_delivered", "message_failed")

#: (table, time column) of every record that shows a patient was active
_ACTIVITY_RECORDS = (
    ("encounter", "start"),
    ("dispense", "dispensed_at"),
    ("consultation", "started_at"),
    ("appointment", "booked_at"),
)


def _window(column: str, lo: str | None, hi: str) -> str:
    cond = f"{column} < :{hi}"
    return f"{cond} AND {column} >= :{lo}" if lo else cond


def linked(table: str, alias: str, at: str, lo: str | None, hi: str, extra: str = "", cols: str = "") -> str:
    """(pid, at[, cols]) of a record table's rows whose time expression `at` falls in the window, through
    the records' identity links."""
    where = _window(at, lo, hi) + (f" AND {extra}" if extra else "")
    more = f", {cols}" if cols else ""
    return (
        f"SELECT l.person_id AS pid, {at} AS at{more} FROM {table} {alias} "
        f"JOIN identity_link l ON l.source = {alias}.source AND l.patient_key = {alias}.patient_key "
        f"WHERE {where}"
    )


def activity_mask(
    families: Sequence[Sequence[str]], lo: str | None, hi: str, *, first: bool = False
) -> tuple[str, list[list[int]]]:
    """One row per person with activity in the window — visits, fills, online consultations, bookings
    and events (not careloop's own delivery receipts) — and ``mask``, the bits of the intervals the
    person was active in; with `first`, also ``first_at``, the earliest activity time.

    A family is a list of boundary parameters b0 < b1 < … naming consecutive intervals [b0, b1),
    [b1, b2), …; each interval gets a bit (returned per family, in order). Every table is aggregated per
    record key (one CASE per family and row, OR-ed with ``bit_or``) before a single join with
    `identity_link`, and live events per person: far cheaper than joining every row."""
    bits: list[list[int]] = []
    offset = 0
    for fam in families:
        bits.append([1 << (offset + i) for i in range(len(fam) - 1)])
        offset += len(fam) - 1
    if offset > 62:
        raise ValueError("at most 62 intervals fit in one activity mask")

    def mask(at: str) -> str:
        terms = []
        for fam, fam_bits in zip(families, bits, strict=True):
            whens = " ".join(f"WHEN {at} < :{b} THEN {bit}" for b, bit in zip(fam[1:], fam_bits, strict=True))
            terms.append(f"(CASE WHEN {at} < :{fam[0]} THEN 0 {whens} ELSE 0 END)")
        out = f"bit_or(CAST({' + '.join(terms)} AS BIGINT)) AS mask"
        return out + (f", min({at}) AS first_at" if first else "")

    keyed = []
    for table, col in _ACTIVITY_RECORDS:
        at = f'r."{col}"'
        keyed.append(
            f"SELECT r.source, r.patient_key, {mask(at)} FROM {table} r WHERE {_window(at, lo, hi)} "
            "GROUP BY r.source, r.patient_key"
        )
    at = "v.occurred_at"
    ev = f"v.name NOT IN ('message_delivered', 'message_failed') AND {_window(at, lo, hi)}"
    keyed.append(
        f"SELECT v.source, v.patient_key, {mask(at)} FROM event v WHERE v.person_id IS NULL AND {ev} "
        "GROUP BY v.source, v.patient_key"
    )
    live = f"SELECT v.person_id AS pid, {mask(at)} FROM event v WHERE v.person_id IS NOT NULL AND {ev} GROUP BY v.person_id"
    extra = ", k.first_at" if first else ""
    union = (
        f"SELECT l.person_id AS pid, k.mask{extra} FROM ({' UNION ALL '.join(keyed)}) k "
        f"JOIN identity_link l ON l.source = k.source AND l.patient_key = k.patient_key UNION ALL {live}"
    )
    outer = "bit_or(mask) AS mask" + (", min(first_at) AS first_at" if first else "")
    return f"SELECT pid, {outer} FROM ({union}) u GROUP BY pid", bits


def has(bit: int, column: str = "mask") -> str:
    """1 when the mask holds the bit, else 0."""
    return f"(CASE WHEN ({column} & {bit}) <> 0 THEN 1 ELSE 0 END)"


def boundaries(values: Sequence[datetime], prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Parameter names and values of a family of interval boundaries (for `activity_mask`)."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    return names, dict(zip(names, values, strict=True))


def bucket(column: str, boundaries: Sequence[datetime], prefix: str) -> tuple[str, dict[str, Any]]:
    """A CASE giving the index i of the bucket [b_i, b_i+1) a time falls in (-1 before the first
    boundary, NULL from the last one on), and its parameters."""
    params = {f"{prefix}{i}": b for i, b in enumerate(boundaries)}
    whens = " ".join(f"WHEN {column} < :{prefix}{i + 1} THEN {i}" for i in range(len(boundaries) - 1))
    return f"CASE WHEN {column} < :{prefix}0 THEN -1 {whens} ELSE NULL END", params


def latest(value: str, at: str, dialect: str, where: str | None = None) -> str:
    """The aggregate `value` of the row with the greatest `at` in a group — written per engine, as the
    segment compiler writes conditions: DuckDB's ``arg_max`` (a single hash aggregate, ~8x faster than a
    window) and PostgreSQL's ordered ``array_agg`` (index 0 in the neutral dialect is element 1). With
    `where`, only the group's rows where it holds count (an aggregate ``FILTER``)."""
    only = f" FILTER (WHERE {where})" if where else ""
    if dialect == "duckdb":
        return f"arg_max({value}, {at}){only}"
    return f"(ARRAY_AGG({value} ORDER BY {at} DESC){only})[0]"


def num(value: Any) -> float | None:
    """A SQL number (int, float, Decimal) as a float; NULL stays None."""
    return None if value is None else float(value)


def ratio(part: float | int | None, whole: float | int | None) -> float | None:
    """part / whole, or None when there is nothing to divide by (an empty state, never 0 %)."""
    if part is None or not whole:
        return None
    return float(part) / float(whole)
