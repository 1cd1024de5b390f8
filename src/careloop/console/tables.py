"""Tables as the console shows and exports them: named columns with a kind (how a value is formatted),
rows of plain values; CSV (UTF-8 with BOM, so Excel opens Chinese text correctly) and Excel (openpyxl).

A table is `person_level` when its rows are about one person each (a patient's visits, quarantined rows):
exporting those needs the ``export:person_level`` permission; aggregate tables need ``export:aggregate``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

Kind = Literal["text", "int", "num", "pct", "pp", "money", "date", "datetime", "json"]

#: cells a spreadsheet would run as a formula (CSV / formula injection): prefixed with a quote
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Col:
    key: str
    label: str  # an i18n key, or the literal header when `literal`
    kind: Kind = "text"
    literal: bool = False
    translate: str | None = None  # i18n group the cell values are labels of (channel, reason, ...)


@dataclass
class DataTable:
    id: str
    title: str  # i18n key
    columns: list[Col]
    rows: list[dict[str, Any]]
    person_level: bool = False
    empty: str = "empty.no_rows"  # i18n key of the empty state
    note: str | None = None  # i18n key of a note under the table
    link: Callable[[dict[str, Any]], str | None] | None = field(default=None, repr=False)
    link_col: str | None = None

    def href(self, row: dict[str, Any]) -> str | None:
        return self.link(row) if self.link is not None else None


def plain(value: Any) -> Any:
    """A value as a spreadsheet cell: numbers stay numbers, times lose nothing, JSON becomes text."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return orjson.dumps(value, default=str).decode()


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def headers(table: DataTable, t: Callable[[str], str]) -> list[str]:
    return [c.label if c.literal else t(c.label) for c in table.columns]


def cell(table_col: Col, row: dict[str, Any], label: Callable[[str, Any], str]) -> Any:
    value = row.get(table_col.key)
    if table_col.translate and value is not None:
        return label(table_col.translate, value)
    return plain(value)


def to_csv(table: DataTable, t: Callable[[str], str], label: Callable[[str, Any], str]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(headers(table, t))
    for row in table.rows:
        w.writerow(["" if (v := _safe(cell(c, row, label))) is None else v for c in table.columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(table: DataTable, t: Callable[[str], str], label: Callable[[str, Any], str], title: str) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(_sheet_name(title))
    ws.append(headers(table, t))
    for row in table.rows:
        ws.append([_safe(cell(c, row, label)) for c in table.columns])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _sheet_name(title: str) -> str:
    bad = set("[]:*?/\\")
    return "".join("_" if ch in bad else ch for ch in title)[:31] or "table"


def columns_of(rows: Sequence[dict[str, Any]], skip: Sequence[str] = ()) -> list[Col]:
    """Columns for rows whose keys are not known in advance (a 360 section): every key, in first-seen
    order, headed by the key itself."""
    keys: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in skip:
                keys.setdefault(k, None)
    return [Col(k, k, _kind(rows, k), literal=True) for k in keys]


def _kind(rows: Sequence[dict[str, Any]], key: str) -> Kind:
    for r in rows:
        v = r.get(key)
        if v is None:
            continue
        if isinstance(v, bool):
            return "text"
        if isinstance(v, datetime):
            return "datetime"
        if isinstance(v, date):
            return "date"
        if isinstance(v, int):
            return "int"
        if isinstance(v, float | Decimal):
            return "num"
        if isinstance(v, dict | list):
            return "json"
        return "text"
    return "text"
