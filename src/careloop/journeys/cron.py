"""Cron schedules (five fields, `croniter`), evaluated in the patients' local time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from careloop.errors import ConfigError


@dataclass(frozen=True)
class Cron:
    expression: str

    @classmethod
    def parse(cls, text: str, where: str = "cron") -> Cron:
        if not isinstance(text, str) or len(text.split()) != 5 or not croniter.is_valid(text):
            raise ConfigError(
                f"{where}: `cron` has five fields, minute hour day month weekday (e.g. '0 9 * * 1')"
            )
        return cls(text)

    def next_after(self, at: datetime, tz: ZoneInfo) -> datetime:
        """The first firing strictly after `at`, in `tz`'s wall-clock time."""
        nxt: datetime = croniter(self.expression, at.astimezone(tz)).get_next(datetime)
        return nxt

    def fired_between(self, after: datetime, until: datetime, tz: ZoneInfo) -> datetime | None:
        """The latest firing in (after, until], if any (a schedule missed during downtime fires once)."""
        last = None
        nxt = self.next_after(after, tz)
        while nxt <= until:
            last = nxt
            nxt = self.next_after(nxt, tz)
        return last
