"""Simulation: run a journey against the store's history with a simulated clock, and undo everything.

`simulate` opens one transaction, saves and publishes the journey inside it, then walks a `FixedClock`
from the start to the end in steps (default one hour). At each step it replays the historical events of
that step that the journey listens to (its trigger, its goal, its waits — live events by their person,
ingested ones through their record's identity link), runs the time- and segment-based triggers, the
due entries and delivery through the outbox channel, all under the real send-time policy (consents as
recorded at the simulated time, quiet hours, caps, content approval). The report is the journey's stats
at the end; then the transaction is rolled back, so nothing of the simulation remains.

Limits: traits are the stored ones (computed as of their own day, not re-computed for each simulated
day), and segment changes are those the store recorded.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from careloop.channels.outbox import OutboxChannel, OutboxConfig
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.journeys import engine, triggers
from careloop.journeys.stats import journey_stats
from careloop.messaging.dispatch import Dispatcher
from careloop.storage import WorkspaceStore


class _Rollback(Exception):
    """Raised to undo the simulation's transaction."""


def simulate(
    store: WorkspaceStore, spec: Any, start: date, end: date, *, step: timedelta = timedelta(hours=1)
) -> dict[str, Any]:
    if end < start:
        raise ConfigError("--to must not be before --from")
    tz = ZoneInfo(get_settings().timezone)
    clock = FixedClock(datetime.combine(start, time.min, tzinfo=tz))
    finish = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz)
    report: dict[str, Any] = {}
    try:
        with store.backend.transaction():
            pub = engine.save_journey(store, spec, clock=clock)
            pub = engine.set_status(store, pub.name, "published", clock=clock)
            others = [n for n in engine.published(store) if n != pub.name]
            for name in others:  # only the simulated journey runs
                engine.set_status(store, name, "paused", clock=clock)
            names = sorted(pub.journey.events_listened())
            outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
            deliver = Dispatcher(lambda s, kind: outbox, clock=clock)
            replayed = steps = 0
            while clock.now() < finish:
                window_end = min(clock.now() + step, finish)
                events = _history(store, names, clock.now(), window_end)
                clock.set(window_end)
                if events:
                    engine.on_events(store, events, clock=clock)
                    replayed += len(events)
                triggers.tick(store, clock=clock)
                while True:
                    out = engine.run_due(store, clock=clock, limit=5000)
                    steps += out.steps
                    if out.claimed < 5000:
                        break
                deliver(store)
            report = {
                **journey_stats(store, pub.name),
                "simulated": {
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "step_hours": step.total_seconds() / 3600,
                },
                "events_replayed": replayed,
                "arms": dict(
                    store.tuples(
                        "SELECT arm, count(*) FROM journey_entry WHERE journey = :j AND arm IS NOT NULL GROUP BY arm",
                        {"j": pub.name},
                    )
                ),
                "outbox": int(
                    store.scalar(
                        "SELECT count(*) FROM message_send WHERE journey = :j AND status = 'sent'",
                        {"j": pub.name},
                    )
                    or 0
                ),
            }
            raise _Rollback
    except _Rollback:
        pass
    return report


def _history(
    store: WorkspaceStore, names: list[str], after: datetime, until: datetime
) -> list[tuple[str, str, datetime]]:
    """(person, event, time) of the events with these names in (after, until]."""
    if not names:
        return []
    params = {"n": names, "a": after, "u": until}
    live = store.tuples(
        "SELECT person_id, name, occurred_at FROM event WHERE person_id IS NOT NULL AND name = ANY(:n) "
        "AND occurred_at > :a AND occurred_at <= :u",
        params,
    )
    ingested = store.tuples(
        "SELECT l.person_id, e.name, e.occurred_at FROM event e JOIN identity_link l ON l.source = e.source "
        "AND l.patient_key = e.patient_key WHERE e.person_id IS NULL AND e.name = ANY(:n) "
        "AND e.occurred_at > :a AND e.occurred_at <= :u",
        params,
    )
    return sorted([*live, *ingested], key=lambda r: r[2])
