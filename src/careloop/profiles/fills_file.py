"""Reading a pharmacy fills file (CSV, TSV, Parquet) for `careloop adherence pdc`.

Columns are named by options or found by common names; a row whose date or days' supply cannot be read
is rejected with its line and reason (and written to ``--rejects`` when given), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from careloop.errors import ConfigError, IngestError
from careloop.profiles.adherence import Fill

#: role -> names tried, in order, when the option is not given (compared case-insensitively)
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "patient": ("patient_id", "patient", "patient_key", "member_id", "person_id", "患者id", "患者"),
    "drug": ("drug", "drug_code", "drug_name", "ndc", "code", "药品", "药品编码"),
    "class": ("drug_class", "class", "atc_class", "therapeutic_class", "药品类别"),
    "date": ("fill_date", "date", "dispensed_on", "dispense_date", "filled_on", "发药日期"),
    "days": ("days_supply", "days", "supply_days", "days_supplied", "供药天数"),
}


@dataclass
class Rejected:
    line: int
    reason: str


@dataclass
class FillsFile:
    fills: list[Fill] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)


def read_fills(path: Path, columns: dict[str, str | None]) -> FillsFile:
    """The fills of a file; `columns` maps role (patient, drug, class, date, days) to a column or None."""
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    con = duckdb.connect()
    try:
        if path.suffix.lower() == ".parquet":
            rel = con.read_parquet(str(path))
        elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
            rel = con.read_csv(str(path), all_varchar=True, header=True)
        else:
            raise ConfigError(f"{path.name}: give a .csv, .tsv or .parquet fills file")
        names = list(rel.columns)
        chosen = {role: _column(role, columns.get(role), names) for role in COMMON_NAMES}
        rows = rel.fetchall()
    except duckdb.Error as e:
        raise IngestError(f"cannot read {path}: {e}") from e
    finally:
        con.close()
    idx = {role: names.index(col) for role, col in chosen.items()}
    out = FillsFile(columns=chosen)
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        fill, reason = _fill(row, idx)
        if fill is None:
            out.rejected.append(Rejected(n, reason))
        else:
            out.fills.append(fill)
    return out


def _column(role: str, given: str | None, names: list[str]) -> str:
    if given:
        if given not in names:
            raise ConfigError(f"--{role}-col {given!r} is not a column; the file has: {', '.join(names)}")
        return given
    lower = {n.lower(): n for n in names}
    for candidate in COMMON_NAMES[role]:
        if candidate.lower() in lower:
            return lower[candidate.lower()]
    raise ConfigError(
        f"no {role} column found (tried {', '.join(COMMON_NAMES[role])}); name it with --{role}-col. "
        f"The file has: {', '.join(names)}"
    )


def _fill(row: tuple[Any, ...], idx: dict[str, int]) -> tuple[Fill | None, str]:
    patient, drug, cls = (_text(row[idx[r]]) for r in ("patient", "drug", "class"))
    if not patient:
        return None, "patient is empty"
    if not drug:
        return None, "drug is empty"
    filled = _date(row[idx["date"]])
    if filled is None:
        return None, f"fill date {row[idx['date']]!r} is not a date (YYYY-MM-DD)"
    days = _int(row[idx["days"]])
    if days is None or days <= 0 or days > 3650:
        return None, f"days' supply {row[idx['days']]!r} is not a whole number of days between 1 and 3650"
    return Fill(patient, drug, cls or drug, filled, days), ""


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _date(v: Any) -> date | None:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    text = _text(v)
    for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text[: len(datetime(2000, 1, 1).strftime(fmt))], fmt).date()
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _int(v: Any) -> int | None:
    try:
        f = float(_text(v)) if not isinstance(v, int | float) else float(v)
    except ValueError:
        return None
    return int(f) if f == int(f) else None
