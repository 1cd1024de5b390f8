"""Segment, schedule and relative-date triggers enter the right persons once, across ticks and downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from careloop.clock import FixedClock
from careloop.journeys.engine import save_journey, set_status
from careloop.journeys.triggers import tick
from careloop.profiles.segments import refresh, save_segment
from careloop.storage import Backend, WorkspaceStore

START = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    s = backend.workspace("default")
    s.insert("person", [{"person_id": f"P{i}"} for i in range(4)])
    s.insert(
        "trait_value",
        [{"person_id": f"P{i}", "trait": "age", "key": "", "value_num": 60.0 + i * 5} for i in range(4)],
    )
    return s


def _publish(store: WorkspaceStore, name: str, trigger: dict[str, object], clock: FixedClock) -> None:
    spec = {
        "name": name,
        "trigger": trigger,
        "holdout": False,
        "start": "x",
        "nodes": {"x": {"type": "exit"}},
    }
    save_journey(store, spec, clock=clock)
    set_status(store, name, "published", clock=clock)


def _entered(store: WorkspaceStore, journey: str) -> list[str]:
    return [
        r[0]
        for r in store.tuples(
            "SELECT person_id FROM journey_entry WHERE journey = :j ORDER BY person_id", {"j": journey}
        )
    ]


def test_segment_entry_enters_who_entered_since_publishing(store: WorkspaceStore) -> None:
    clock = FixedClock(START)
    save_segment(store, "老年", {"trait": "age", "op": ">=", "value": 65}, clock=clock)
    refresh(store, "老年", clock=clock)  # P1, P2, P3 are in before the journey exists
    _publish(store, "welcome_old", {"type": "segment_entry", "segment": "老年"}, clock)
    tick(store, clock=clock)
    assert _entered(store, "welcome_old") == []  # history does not trigger
    clock.advance(timedelta(minutes=1))
    store.execute("UPDATE trait_value SET value_num = 66 WHERE person_id = 'P0'")
    refresh(store, "老年", clock=clock)
    clock.advance(timedelta(minutes=1))
    assert tick(store, clock=clock)["welcome_old"]["entered"] == 1
    assert tick(store, clock=clock)["welcome_old"]["entered"] == 0
    assert _entered(store, "welcome_old") == ["P0"]


def test_schedule_fires_once_per_firing_even_after_downtime(store: WorkspaceStore) -> None:
    clock = FixedClock(START)
    _publish(store, "monday", {"type": "schedule", "cron": "0 9 * * *"}, clock)
    tick(store, clock=clock)  # 08:30: publishes the checkpoint
    clock.advance(timedelta(minutes=20))  # 08:50
    assert tick(store, clock=clock)["monday"]["entered"] == 0
    clock.advance(timedelta(minutes=20))  # 09:10
    assert tick(store, clock=clock)["monday"]["entered"] == 4
    clock.advance(timedelta(days=3))  # down for three days: one firing, the latest
    out = tick(store, clock=clock)["monday"]
    assert out["fired"].startswith("2026-11-05T09:00") and out["skipped"] == 4  # re-entry: once


def test_relative_dates_enter_on_the_right_day(store: WorkspaceStore) -> None:
    clock = FixedClock(START)
    # run-outs on local days 11-05 (P1) and 11-06 (P2): 3 days before are 11-02 and 11-03
    store.insert(
        "trait_value",
        [
            {
                "person_id": "P1",
                "trait": "pdc_run_out",
                "key": "statin",
                "value_time": datetime(2026, 11, 4, 16, 0, tzinfo=UTC),
            },
            {
                "person_id": "P2",
                "trait": "pdc_run_out",
                "key": "statin",
                "value_time": datetime(2026, 11, 5, 16, 0, tzinfo=UTC),
            },
        ],
    )
    _publish(
        store, "refill", {"type": "relative_date", "trait": "pdc_run_out", "key": "*", "offset": "-3d"}, clock
    )
    assert tick(store, clock=clock)["refill"]["entered"] == 1  # 11-02: P1
    assert tick(store, clock=clock)["refill"]["entered"] == 0  # the same day again: nothing new
    clock.advance(timedelta(days=2))  # 11-04: 11-03 (P2) was missed while down, and is caught up
    assert tick(store, clock=clock)["refill"]["entered"] == 1
    assert _entered(store, "refill") == ["P1", "P2"]
