"""Journey triggers that come from time and from segments (events enter through `engine.on_events`).

`tick` is called by the worker every few seconds. For each published journey:

- ``segment_entry`` / ``segment_exit``: the `segment_change` rows of its segment since the journey's
  checkpoint enter the persons who entered / left (keyed by the change, so none enters twice);
- ``schedule``: when its cron fired since the last tick (a schedule missed during downtime fires once,
  at the latest firing), everyone in its segment (or every person) enters, keyed by the firing time;
- ``relative_date``: once per local day, the persons whose time trait (e.g. ``pdc_run_out``) plus the
  offset falls on that day enter, keyed by the day ("3 days before the refill runs out").

Checkpoints live in `stream_checkpoint` (consumer ``journey:NAME``), so a restart resumes where it was.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.journeys.cron import Cron
from careloop.journeys.engine import Published, enter, published
from careloop.storage import WorkspaceStore


def _checkpoint(store: WorkspaceStore, name: str) -> datetime | None:
    value: datetime | None = store.scalar(
        "SELECT position FROM stream_checkpoint WHERE consumer = :c", {"c": f"journey:{name}"}
    )
    return value


def _save_checkpoint(store: WorkspaceStore, name: str, at: datetime, now: datetime) -> None:
    store.merge(
        "stream_checkpoint",
        [{"consumer": f"journey:{name}", "position": at, "updated_at": now}],
        ["consumer"],
        {"position": "{s}.position", "updated_at": "{s}.updated_at"},
    )


def tick(store: WorkspaceStore, *, clock: Clock = SYSTEM_CLOCK) -> dict[str, dict[str, Any]]:
    """Enter whoever the time- and segment-based triggers of the published journeys select now."""
    now = clock.now()
    out = {}
    for name, pub in published(store).items():
        kind = pub.journey.trigger.type
        if kind in ("segment_entry", "segment_exit"):
            out[name] = _segment_changes(store, pub, now, clock)
        elif kind == "schedule":
            out[name] = _schedule(store, pub, now, clock)
        elif kind == "relative_date":
            out[name] = _relative(store, pub, now, clock)
    return out


def _segment_changes(store: WorkspaceStore, pub: Published, now: datetime, clock: Clock) -> dict[str, Any]:
    t = pub.journey.trigger
    since = _checkpoint(store, pub.name)
    if since is None:  # published now: changes from now on (not the segment's whole history)
        _save_checkpoint(store, pub.name, now, now)
        return {"entered": 0}
    change = "entered" if t.type == "segment_entry" else "left"
    rows = store.tuples(
        "SELECT person_id, at FROM segment_change WHERE segment = :s AND change = :c AND at > :since AND at <= :now",
        {"s": t.segment, "c": change, "since": since, "now": now},
    )
    entered = 0
    by_time: dict[datetime, list[str]] = {}
    for pid, at in rows:
        by_time.setdefault(at, []).append(pid)
    for at, persons in sorted(by_time.items()):
        entered += enter(store, pub, persons, f"{t.type}:{t.segment}:{at.isoformat()}", clock=clock)[
            "entered"
        ]
    if rows:
        _save_checkpoint(store, pub.name, max(at for _, at in rows), now)
    return {"entered": entered, "changes": len(rows)}


def _audience(store: WorkspaceStore, segment: str | None) -> list[str]:
    if segment:
        return [
            r[0]
            for r in store.tuples("SELECT person_id FROM segment_member WHERE segment = :s", {"s": segment})
        ]
    return [r[0] for r in store.tuples("SELECT person_id FROM person")]


def _schedule(store: WorkspaceStore, pub: Published, now: datetime, clock: Clock) -> dict[str, Any]:
    t = pub.journey.trigger
    assert t.cron is not None
    tz = ZoneInfo(get_settings().timezone)
    since = _checkpoint(store, pub.name)
    if since is None:
        _save_checkpoint(store, pub.name, now, now)
        return {"entered": 0}
    fired = Cron.parse(t.cron).fired_between(since, now, tz)
    if fired is None:
        return {"entered": 0}
    got = enter(store, pub, _audience(store, t.segment), f"schedule:{fired.isoformat()}", clock=clock)
    _save_checkpoint(store, pub.name, now, now)
    return {**got, "fired": fired.isoformat()}


def _relative(store: WorkspaceStore, pub: Published, now: datetime, clock: Clock) -> dict[str, Any]:
    tz = ZoneInfo(get_settings().timezone)
    today = now.astimezone(tz).date()
    since = _checkpoint(store, pub.name)
    last_day = since.astimezone(tz).date() if since else today - timedelta(days=1)
    entered = 0
    day = last_day + timedelta(days=1)
    while day <= today:  # every day since the last tick, so downtime skips nobody
        entered += _relative_day(store, pub, day, tz, clock)
        day += timedelta(days=1)
    if last_day < today:
        _save_checkpoint(store, pub.name, datetime.combine(today, time.min, tzinfo=tz), now)
    return {"entered": entered}


def _relative_day(store: WorkspaceStore, pub: Published, day: date, tz: ZoneInfo, clock: Clock) -> int:
    """Enter the persons whose trait date + offset is `day`."""
    t = pub.journey.trigger
    target = day - timedelta(days=t.offset_days)  # the trait's date that puts someone in today
    lo = datetime.combine(target, time.min, tzinfo=tz)
    hi = lo + timedelta(days=1)
    params: dict[str, Any] = {"t": t.trait, "lo": lo, "hi": hi}
    key = ""
    if t.key not in (None, "*"):
        key, params["k"] = " AND key = :k", t.key
    rows = store.tuples(
        f"SELECT DISTINCT person_id FROM trait_value WHERE trait = :t{key} AND value_time >= :lo AND value_time < :hi",  # noqa: S608 - fixed fragment
        params,
    )
    persons = [r[0] for r in rows]
    if t.segment:
        members = set(_audience(store, t.segment))
        persons = [p for p in persons if p in members]
    return enter(store, pub, persons, f"relative:{day.isoformat()}", clock=clock)["entered"]
