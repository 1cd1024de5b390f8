"""Retention: the dry-run plan counts exactly what the purge deletes, by rule and cut-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.privacy.retention import Rule, load_rules, plan, purge
from careloop.storage import Backend

RULES = [Rule("outbox_message", "created_at", "1y"), Rule("segment_change", "at", "90d")]


def _fill(backend: Backend, now: datetime) -> None:
    s = backend.workspace("default")
    s.insert(
        "outbox_message",
        [
            {"idempotency_key": f"k{i}", "person_id": f"P{i}", "created_at": now - timedelta(days=d)}
            for i, d in enumerate([10, 200, 364, 366, 400, 800, 1200])
        ],
    )
    s.insert(
        "segment_change",
        [
            {"segment": "s", "person_id": f"P{i}", "change": "entered", "at": now - timedelta(days=d)}
            for i, d in enumerate([1, 89, 91, 500])
        ],
    )


def test_plan_equals_purge(backend: Backend, clock: FixedClock) -> None:
    _fill(backend, clock.now())
    store = backend.workspace("default")
    planned = {ln.table: ln.rows for ln in plan(store, rules=RULES, clock=clock)}
    assert planned == {"outbox_message": 4, "segment_change": 2}
    assert store.count("outbox_message") == 7  # the plan changed nothing
    done = {ln.table: ln.rows for ln in purge(store, rules=RULES, clock=clock)}
    assert done == planned
    assert store.count("outbox_message") == 3 and store.count("segment_change") == 2
    assert {ln.table: ln.rows for ln in plan(store, rules=RULES, clock=clock)} == {
        "outbox_message": 0,
        "segment_change": 0,
    }
    # time passes (injectable clock): more rows fall due
    clock.advance(timedelta(days=200))
    assert {ln.table: ln.rows for ln in plan(store, rules=RULES, clock=clock)}["outbox_message"] == 2


def test_shipped_rules_load_and_bad_rules_are_refused(tmp_path: Path) -> None:
    rules = {r.table: r for r in load_rules()}
    assert (
        rules["event"].keep == "3y"
        and rules["consultation"].keep == "15y"
        and rules["outbox_message"].keep == "1y"
    )
    bad = tmp_path / "r.yaml"
    bad.write_text("rules: [{table: event, column: name, keep: 3y}]\n")
    with pytest.raises(ConfigError, match="not a date"):
        load_rules(bad)
    bad.write_text("rules: [{table: event, column: occurred_at, keep: forever}]\n")
    with pytest.raises(ConfigError, match="3y or 90d"):
        load_rules(bad)


def test_plan_line_carries_class_and_level(backend: Backend) -> None:
    line = plan(
        backend.workspace("default"),
        rules=[Rule("outbox_message", "created_at", "1y")],
        clock=FixedClock(datetime(2030, 1, 1, tzinfo=UTC)),
    )[0]
    assert (line.data_class, line.level) == ("health", 3)


def test_trait_history_is_purged_by_its_day(backend: Backend, clock: FixedClock) -> None:
    """trait_history's time is a DATE (the snapshot's local day): the plan counts what the purge deletes."""
    rule = next(r for r in load_rules() if r.table == "trait_history")
    assert (rule.column, rule.keep) == ("as_of", "3y")
    today = clock.now().date()
    s = backend.workspace("default")
    s.insert(
        "trait_history",
        [
            {
                "person_id": "P1",
                "trait": "stage_5a",
                "key": "",
                "as_of": today - timedelta(days=d),
                "value_text": "Act",
            }
            for d in (1, 400, 1094, 1100, 1500)
        ],
    )
    assert {ln.table: ln.rows for ln in plan(s, rules=[rule], clock=clock)} == {"trait_history": 2}
    assert {ln.table: ln.rows for ln in purge(s, rules=[rule], clock=clock)} == {"trait_history": 2}
    assert s.count("trait_history") == 3
