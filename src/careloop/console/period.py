"""Reporting periods: the last N local days up to an end day, and the period just before it.

Dashboards compare a period with the previous one of the same length. Days are the patients' local days
(`CARELOOP_TIMEZONE`); SQL gets the period as half-open UTC-aware bounds ``[start, end)`` so no engine's
session time zone matters. The default end day is the store's *data date*: the as-of day of the stored
traits (the demo's history ends on 2026-10-31, weeks before today), or today when no traits exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from careloop.clock import Clock
from careloop.storage import WorkspaceStore

#: the period lengths the console offers (days)
PERIOD_DAYS = (30, 90, 180, 365)
DEFAULT_DAYS = 90


@dataclass(frozen=True)
class Period:
    """`days` local days ending on `end` (inclusive)."""

    end: date
    days: int
    tz: ZoneInfo

    @property
    def start(self) -> date:
        return self.end - timedelta(days=self.days - 1)

    @property
    def lo(self) -> datetime:
        """Inclusive lower bound: local midnight starting the first day."""
        return datetime.combine(self.start, time(), tzinfo=self.tz)

    @property
    def hi(self) -> datetime:
        """Exclusive upper bound: local midnight after the last day."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=self.tz)

    @property
    def previous(self) -> Period:
        return Period(self.start - timedelta(days=1), self.days, self.tz)

    def shifted(self, periods: int) -> Period:
        """The period `periods` lengths earlier (1: the previous one)."""
        return Period(self.end - timedelta(days=self.days * periods), self.days, self.tz)

    def query(self) -> dict[str, str]:
        """The URL parameters naming this period."""
        return {"end": self.end.isoformat(), "days": str(self.days)}


def data_date(store: WorkspaceStore, tz: ZoneInfo, clock: Clock) -> date:
    """The day the store's traits describe, else today (local)."""
    as_of = store.scalar("SELECT max(as_of) FROM trait_value")
    if isinstance(as_of, datetime):
        return as_of.astimezone(tz).date()
    return clock.now().astimezone(tz).date()


def parse_period(params: Mapping[str, str], default_end: date, tz: ZoneInfo) -> Period:
    """The period named by ``end`` and ``days`` query parameters; anything unusable falls back to the
    defaults (a dashboard link is never an error)."""
    try:
        end = date.fromisoformat(params.get("end", "")) if params.get("end") else default_end
    except ValueError:
        end = default_end
    try:
        days = int(params.get("days", DEFAULT_DAYS))
    except ValueError:
        days = DEFAULT_DAYS
    if days not in PERIOD_DAYS:
        days = DEFAULT_DAYS
    return Period(end, days, tz)


def month_starts(end: date, months: int, tz: ZoneInfo) -> list[datetime]:
    """Local midnights starting the `months` calendar months up to and including `end`'s month, plus
    the start of the month after (``months + 1`` boundaries)."""
    base = end.year * 12 + end.month - 1
    firsts = [date((base - i) // 12, (base - i) % 12 + 1, 1) for i in range(months - 1, -2, -1)]
    return [datetime.combine(d, time(), tzinfo=tz) for d in firsts]
