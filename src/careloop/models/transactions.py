"""Transaction logs for the value models (RFM, lifetime value): any CSV / TSV / Parquet file with a
customer, a date and (optionally) a value column, or the store's dispenses, turned into purchase days.

A **purchase** is a customer's distinct calendar day with at least one transaction: several transactions
on one day are one purchase whose value is their sum. This is the convention of Fader, Hardie & Lee's
CDNOW analyses and of `lifetimes` / pymc-marketing's ``rfm_summary``; it keeps a basket split over several
tills (or a prescription filled in two dispenses) from counting as repeat buying.

The **day** of a transaction in a file is the calendar date as written (``2024-03-05``, ``2024/3/5``,
``20240305``, optionally followed by a time); the time of day and any UTC offset are ignored, so a file is
read the same way on every machine. ``--date-format`` reads anything else (strftime codes). A Parquet
date / timestamp column is used as typed (zoned timestamps in the configured time zone).

Bad input is refused with the rows named, never dropped: a missing column, an empty customer, a date that
cannot be read, a value that is not a number or is negative. Rows are CSV line numbers (the header is line
1) or Parquet row numbers (from 1). Customer ids are never printed: they may be personal identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from careloop.errors import ConfigError, IngestError, ModelError
from careloop.models.base import check_columns

_SEPARATED = r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T\s].*)?$"
_COMPACT = r"^\s*(\d{4})(\d{2})(\d{2})(?:[T\s].*)?$"
_EPOCH = np.datetime64("1970-01-01", "D")
_EPOCH_DATE = date(1970, 1, 1)
SHOW_ROWS = 5


@dataclass(frozen=True)
class Transactions:
    """Transactions as read: one entry per row of the file (or dispense of the store)."""

    customers: np.ndarray  # customer id per row (str)
    days: np.ndarray  # int64 days since 1970-01-01
    values: np.ndarray | None  # float64 per row, None without a value column
    source: str  # what was read, for messages (a file name or "the store's dispenses")

    @property
    def rows(self) -> int:
        return len(self.days)


@dataclass(frozen=True)
class PurchaseDays:
    """Purchases: one entry per customer and distinct day on or before `end`, sorted by (customer, day)."""

    ids: np.ndarray  # customer id per code
    customer: np.ndarray  # int64 code per purchase day
    day: np.ndarray  # int64 days since 1970-01-01
    value: np.ndarray  # float64 sum of the day's transaction values (0 without values)
    has_value: bool
    end: int  # the last day counted (days since 1970-01-01)
    transactions: int  # rows on or before `end`
    ignored: int  # rows after `end`

    @property
    def customers(self) -> int:
        return len(self.ids)

    def starts(self) -> np.ndarray:
        """Index of each customer's first purchase day."""
        if not len(self.customer):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.r_[True, self.customer[1:] != self.customer[:-1]])

    def histories(self) -> Histories:
        starts = self.starts()
        counts = np.diff(np.r_[starts, len(self.day)])
        last = starts + counts - 1
        total = np.add.reduceat(self.value, starts) if len(starts) else np.zeros(0)
        return Histories(
            ids=self.ids,
            first=self.day[starts],
            last=self.day[last],
            days=counts.astype(np.int64),
            total=total,
            first_value=self.value[starts],
        )


@dataclass(frozen=True)
class Histories:
    """Per customer (in code order): first and last purchase day, purchase days, total and first-day value."""

    ids: np.ndarray
    first: np.ndarray
    last: np.ndarray
    days: np.ndarray
    total: np.ndarray
    first_value: np.ndarray


def to_day(d: date) -> int:
    """Days since 1970-01-01 of a date."""
    return (d - _EPOCH_DATE).days


def from_day(n: int) -> date:
    """The date of a day number."""
    return _EPOCH_DATE + timedelta(days=int(n))


def purchase_days(tx: Transactions, end: int | None = None) -> PurchaseDays:
    """Group transactions into purchase days, ignoring those after `end` (default: the last day read)."""
    if tx.rows == 0:
        raise ModelError(f"{tx.source} has no transactions; nothing to fit or score")
    last = int(tx.days.max())
    end = last if end is None else int(end)
    keep = tx.days <= end
    kept = int(keep.sum())
    if kept == 0:
        raise ModelError(
            f"{tx.source}: no transaction on or before {from_day(end)} (the first is on "
            f"{from_day(int(tx.days.min()))}); move the observation end later"
        )
    customers = tx.customers[keep]
    days = tx.days[keep]
    values = tx.values[keep] if tx.values is not None else np.zeros(kept)
    codes, ids = pd.factorize(pd.Series(customers, dtype=object), sort=False)
    frame = pd.DataFrame({"c": codes.astype(np.int64), "d": days, "v": values})
    grouped = frame.groupby(["c", "d"], sort=True)["v"].sum()
    index = grouped.index
    return PurchaseDays(
        ids=np.asarray(ids, dtype=object),
        customer=index.get_level_values(0).to_numpy(np.int64),
        day=index.get_level_values(1).to_numpy(np.int64),
        value=grouped.to_numpy(np.float64),
        has_value=tx.values is not None,
        end=end,
        transactions=kept,
        ignored=tx.rows - kept,
    )


def read_transactions(
    path: Path,
    *,
    customer_col: str,
    date_col: str,
    value_col: str | None = None,
    date_format: str | None = None,
    timezone: str = "Asia/Shanghai",
) -> Transactions:
    """The transactions of a CSV / TSV / Parquet file; refuses bad rows with their line numbers."""
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelError(f"{path.name} is empty; give a transaction file with a header and rows")
    suffix = path.suffix.lower()
    parquet = suffix in (".parquet", ".pq")
    if not parquet and suffix not in (".csv", ".tsv", ".txt"):
        raise ConfigError(f"{path.name}: give a .csv, .tsv or .parquet transaction file")
    needed = {"--customer-col": customer_col, "--date-col": date_col}
    if value_col:
        needed["--value-col"] = value_col
    con = duckdb.connect()
    try:
        rel = (
            con.read_parquet(str(path)) if parquet else con.read_csv(str(path), all_varchar=True, header=True)
        )
        check_columns(rel.columns, needed, path.name)
        wanted = list(dict.fromkeys(needed.values()))
        table = rel.select(*[duckdb.ColumnExpression(c) for c in wanted]).arrow()
    except duckdb.Error as e:
        raise IngestError(f"cannot read {path}: {e}") from e
    finally:
        con.close()
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    if table.num_rows == 0:
        raise ModelError(f"{path.name} has no transactions (only a header)")
    where = _Rows(path.name, first_line=1 if parquet else 2, unit="row" if parquet else "line")
    customers = _customers(table.column(customer_col), where, customer_col)
    days = _days(table.column(date_col), where, date_col, date_format, timezone)
    values = _values(table.column(value_col), where, value_col) if value_col else None
    return Transactions(customers, days, values, path.name)


@dataclass(frozen=True)
class _Rows:
    name: str
    first_line: int
    unit: str

    def refuse(self, bad: np.ndarray, what: str, examples: list[str] | None = None, hint: str = "") -> None:
        lines = ", ".join(str(int(i) + self.first_line) for i in bad[:SHOW_ROWS])
        more = f" and {len(bad) - SHOW_ROWS:,} more" if len(bad) > SHOW_ROWS else ""
        shown = f" (e.g. {', '.join(repr(e) for e in examples[:3])})" if examples else ""
        raise ModelError(
            f"{self.name}: {len(bad):,} row(s) {what}{shown}: {self.unit}{'s' if len(bad) > 1 else ''} "
            f"{lines}{more}{hint}"
        )


def _customers(col: pa.ChunkedArray, where: _Rows, name: str) -> np.ndarray:
    text = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    empty = pc.or_kleene(pc.is_null(text), pc.equal(text, "")).to_numpy(zero_copy_only=False)
    empty = np.asarray(empty, dtype=bool)
    if empty.any():
        where.refuse(np.flatnonzero(empty), f"have no customer in column {name!r}")
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _days(
    col: pa.ChunkedArray, where: _Rows, name: str, date_format: str | None, timezone: str
) -> np.ndarray:
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        series = col.to_pandas()
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            series = series.dt.tz_convert(ZoneInfo(timezone)).dt.tz_localize(None)
        stamps = pd.to_datetime(series)
        missing = stamps.isna().to_numpy()
        if missing.any():
            where.refuse(np.flatnonzero(missing), f"have no date in column {name!r}")
        return day_numbers(stamps)
    text = pd.Series(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    if date_format:
        stamps = pd.to_datetime(text, format=date_format, errors="coerce")
        if getattr(stamps.dt, "tz", None) is not None:  # a %z format: keep the wall-clock date as written
            stamps = stamps.dt.tz_localize(None)
        hint = f"; they do not match --date-format {date_format!r}"
    else:
        stamps = _parse_written_dates(text)
        hint = (
            "; write dates as YYYY-MM-DD (or YYYY/MM/DD, YYYYMMDD, optionally with a time) "
            "or give --date-format, e.g. '%d/%m/%Y'"
        )
    bad = stamps.isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        examples = [str(text.iloc[i]) for i in rows[:3] if text.iloc[i] is not None]
        where.refuse(rows, f"have a date in column {name!r} that cannot be read", examples, hint)
    return day_numbers(stamps)


def _parse_written_dates(text: pd.Series) -> pd.Series:
    """The calendar date written at the start of each text (NaT where there is none or it is invalid)."""
    parts = text.astype("string").str.extract(_SEPARATED)
    compact = text.astype("string").str.extract(_COMPACT)
    parts = parts.where(parts[0].notna(), compact)
    ymd = pd.DataFrame(
        {
            "year": pd.to_numeric(parts[0], errors="coerce"),
            "month": pd.to_numeric(parts[1], errors="coerce"),
            "day": pd.to_numeric(parts[2], errors="coerce"),
        }
    )
    ok = ymd.notna().all(axis=1)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[s]")
    if ok.any():
        out[ok] = pd.to_datetime(ymd[ok].astype(np.int64), errors="coerce")
    return out


def day_numbers(stamps: pd.Series) -> np.ndarray:
    days = np.asarray(stamps.to_numpy(dtype="datetime64[ns]")).astype("datetime64[D]")
    return np.asarray((days - _EPOCH).astype(np.int64), dtype=np.int64)


def _values(col: pa.ChunkedArray, where: _Rows, name: str) -> np.ndarray:
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        numbers = pd.Series(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
        text = numbers.astype(str)
    else:
        text = pd.Series(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        numbers = pd.to_numeric(text.astype("string").str.strip(), errors="coerce").astype(float)
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy())
    if bad.any():
        rows = np.flatnonzero(bad)
        examples = [str(text.iloc[i]) for i in rows[:3] if text.iloc[i] is not None]
        where.refuse(rows, f"have a value in column {name!r} that is not a number", examples)
    negative = numbers.to_numpy() < 0
    if negative.any():
        where.refuse(
            np.flatnonzero(negative),
            f"have a negative value in column {name!r}",
            hint="; net refunds out of the purchases they refund before fitting",
        )
    return np.asarray(numbers.to_numpy(np.float64), dtype=np.float64)
