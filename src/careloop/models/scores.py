"""Model scores written as traits, so segments, tags and journeys can use them like any other trait."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.storage import WorkspaceStore


def write_score_traits(
    store: WorkspaceStore,
    trait: str,
    scores: Iterable[tuple[str, str, float | str | datetime | None]],
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    refresh_segments: bool = True,
) -> dict[str, Any]:
    """Replace every value of `trait` with `scores` — (person_id, key, value): a number, a text or a time;
    key '' for an unkeyed score — then re-evaluate the segments that use the trait."""
    from careloop.profiles.segments import refresh_all, segments_using

    tz = ZoneInfo(get_settings().timezone)
    now = clock.now()
    day = as_of or now.astimezone(tz).date()
    stamp = datetime.combine(day, dtime.max, tzinfo=tz)
    rows = []
    for person, key, value in scores:
        if value is None:
            continue
        row: dict[str, Any] = {
            "person_id": person,
            "trait": trait,
            "key": key,
            "computed_at": now,
            "as_of": stamp,
        }
        if isinstance(value, datetime):
            row["value_time"] = value
        elif isinstance(value, str):
            row["value_text"] = value
        else:
            row["value_num"] = float(value)
        rows.append(row)
    with store.backend.transaction():
        store.execute("DELETE FROM trait_value WHERE trait = :t", {"t": trait})
        for start in range(0, len(rows), 200_000):
            store.insert("trait_value", rows[start : start + 200_000])
    refreshed = (
        refresh_all(store, segments_using(store, [trait]), as_of=day, clock=clock, cause="traits")
        if refresh_segments
        else {}
    )
    return {"trait": trait, "values": len(rows), "segments": refreshed}
