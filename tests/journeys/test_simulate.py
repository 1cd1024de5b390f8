"""Simulation replays history under the real policy and leaves nothing behind."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from careloop.journeys.simulate import simulate
from careloop.messaging.content import move, save_content
from careloop.storage import Backend
from tests.journeys.test_engine import _people

SPEC = {
    "name": "remind",
    "trigger": {"type": "event", "event": "appointment_booked"},
    "re_entry": {"policy": "always"},
    "goal": {"event": "appointment_attended", "within": "7d"},
    "holdout": {"percent": 25},
    "start": "s",
    "nodes": {
        "s": {"type": "send", "channel": "outbox", "content": "confirm", "purpose": "marketing", "next": "w"},
        "w": {"type": "wait", "duration": "1d", "next": "again"},
        "again": {"type": "send", "channel": "outbox", "content": "confirm", "purpose": "marketing"},
    },
}


def test_simulation_replays_history_and_rolls_back(backend: Backend) -> None:
    store = backend.workspace("default")
    persons = _people(store, 40, consent=set(range(30)))
    save_content(store, "confirm", kind="outbox", body={"zh": "预约成功"})
    move(store, "confirm", 1, "approve", by="reviewer")
    day = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)  # 10:00 local
    events = []
    for i, p in enumerate(persons):
        at = day + timedelta(days=i % 10, hours=i % 5)
        events.append(
            {
                "source": "app",
                "key": f"b{i}",
                "event_type": "track",
                "name": "appointment_booked",
                "occurred_at": at,
                "channel": "app",
                "person_id": p,
            }
        )
        if i % 4 == 0:
            events.append(
                {
                    "source": "app",
                    "key": f"a{i}",
                    "event_type": "track",
                    "name": "appointment_attended",
                    "occurred_at": at + timedelta(hours=5),
                    "channel": "app",
                    "person_id": p,
                }
            )
    store.insert("event", events)
    out = simulate(store, SPEC, date(2026, 9, 1), date(2026, 9, 15), step=timedelta(hours=2))
    assert out["entries"] == 40 and out["events_replayed"] == 50
    held = out["conversion"]["holdout"]
    treated = out["conversion"]["treated"]
    assert treated + held == 40 and 0 < held < 20
    blocked = {r["reason"]: r["count"] for r in out["sends"] if r["status"] == "blocked"}
    assert blocked.get("no_consent", 0) > 0  # ten persons have no consent
    assert (
        out["outbox"] > 0
        and out["conversion"]["treated_converted"] + out["conversion"]["holdout_converted"] > 0
    )
    # nothing of the simulation is left
    for table in ("journey", "journey_entry", "journey_step", "message_send", "outbox_message"):
        assert store.count(table) == 0, table
