"""The journey engine on DuckDB and PostgreSQL: waits, branches, splits, holdouts, goals, and the
send-time policy — no send without consent, none in quiet hours, caps hold across journeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.journeys.definition import parse_journey
from careloop.journeys.engine import enter, get_journey, on_events, run_due, save_journey, set_status
from careloop.messaging.content import move, save_content
from careloop.storage import Backend, WorkspaceStore

# 10:00 in Shanghai (UTC+8): outside quiet hours
MORNING = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def _people(
    store: WorkspaceStore, n: int, *, consent: set[int] | None = None, purpose: str = "marketing"
) -> list[str]:
    consent = set(range(n)) if consent is None else consent
    persons = [f"P{i:03d}" for i in range(n)]
    store.insert("person", [{"person_id": p} for p in persons])
    store.insert(
        "identity_link",
        [
            {"source": "his", "patient_key": f"k{i}", "person_id": p, "rule": "alone"}
            for i, p in enumerate(persons)
        ],
    )
    store.insert(
        "consent",
        [
            {
                "source": "his",
                "key": f"c{i}",
                "patient_key": f"k{i}",
                "purpose": purpose,
                "status": "granted",
                "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
                "data_category": "health",
            }
            for i in sorted(consent)
        ],
    )
    return persons


def _content(
    store: WorkspaceStore, cid: str = "refill_sms", kind: str = "outbox", clock: FixedClock | None = None
) -> None:
    save_content(store, cid, kind=kind, body={"zh": "您好，该取药了"}, purpose="marketing")
    move(store, cid, 1, "approve", by="reviewer")


def _journey(name: str = "refill", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "trigger": {"type": "api"},
        "holdout": {"percent": 0},
        "start": "w",
        "nodes": {
            "w": {"type": "wait", "duration": "1h", "next": "s"},
            "s": {
                "type": "send",
                "channel": "outbox",
                "content": "refill_sms",
                "purpose": "marketing",
                "next": "x",
            },
            "x": {"type": "exit"},
        },
    }
    spec.update(over)
    return spec


def _publish(store: WorkspaceStore, spec: dict[str, Any], clock: FixedClock) -> Any:
    save_journey(store, spec, clock=clock)
    return set_status(store, spec["name"], "published", clock=clock)


def _sends(store: WorkspaceStore) -> list[tuple[Any, ...]]:
    return store.tuples("SELECT person_id, status, reason FROM message_send ORDER BY person_id, created_at")


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


def test_definitions_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"cycle .* has no wait"):
        parse_journey(
            _journey(
                nodes={
                    "a": {"type": "update", "trait": "t", "value": 1, "next": "b"},
                    "b": {"type": "update", "trait": "t", "value": 2, "next": "a"},
                },
                start="a",
            )
        )
    with pytest.raises(ConfigError, match="not a node"):
        parse_journey(_journey(nodes={"a": {"type": "wait", "duration": "1d", "next": "zz"}}, start="a"))
    with pytest.raises(ConfigError, match="cannot be reached"):
        parse_journey(_journey(nodes={"a": {"type": "exit"}, "b": {"type": "exit"}}, start="a"))
    with pytest.raises(ConfigError, match="add up to 90"):
        parse_journey(
            _journey(
                nodes={
                    "a": {
                        "type": "split",
                        "arms": [{"name": "A", "percent": 50}, {"name": "B", "percent": 40}],
                    }
                },
                start="a",
            )
        )
    with pytest.raises(ConfigError, match="needs a `timeout`"):
        parse_journey(_journey(nodes={"a": {"type": "wait", "event": "x"}}, start="a"))
    with pytest.raises(ConfigError, match="trigger: `type`"):
        parse_journey(_journey(trigger={"type": "telepathy"}))
    # a cycle through a wait is fine; a missing edge exits
    ok = parse_journey(
        _journey(
            nodes={
                "a": {"type": "wait", "duration": "1d", "next": "b"},
                "b": {"type": "update", "trait": "t", "value": 1, "next": "a"},
            },
            start="a",
        )
    )
    assert ok.nodes["b"].targets() == ["a"]


def test_wait_send_exit_and_the_step_log(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 3)
    _content(store)
    pub = _publish(store, _journey(), clock)
    assert enter(store, pub, persons, "api:1", clock=clock) == {"entered": 3, "holdout": 0, "skipped": 0}
    assert enter(store, pub, persons, "api:1", clock=clock)["entered"] == 0  # the same trigger: nobody twice
    first = run_due(store, clock=clock)
    assert first.claimed == 3 and first.sends == 0  # all waiting an hour
    assert run_due(store, clock=clock).claimed == 0
    clock.advance(timedelta(minutes=61))
    second = run_due(store, clock=clock)
    assert second.sends == 3 and second.finished == 3
    assert [s[1] for s in _sends(store)] == ["pending"] * 3
    steps = store.tuples(
        "SELECT node, kind, outcome FROM journey_step WHERE entry_id = (SELECT min(entry_id) FROM journey_entry) ORDER BY at, kind"
    )
    assert ("s", "send", "reserved") in steps and ("x", "exit", "exit") in steps
    assert store.scalar("SELECT count(*) FROM journey_entry WHERE status = 'done'") == 3
    assert enter(store, pub, persons, "api:2", clock=clock)["skipped"] == 3  # re-entry: once


def test_no_send_without_consent_or_approved_content(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 4, consent={0, 1})
    store.insert(
        "contact_optout",
        [{"person_id": "P001", "scope": "marketing", "channel": "*", "source": "sms_reply", "at": MORNING}],
    )
    _content(store)
    pub = _publish(
        store,
        _journey(nodes={"s": {"type": "send", "channel": "outbox", "content": "refill_sms"}}, start="s"),
        clock,
    )
    enter(store, pub, persons, "api", clock=clock)
    run_due(store, clock=clock)
    assert _sends(store) == [
        ("P000", "pending", None),
        ("P001", "blocked", "unsubscribed"),
        ("P002", "blocked", "no_consent"),
        ("P003", "blocked", "no_consent"),
    ]
    # a draft never sends; an expired approval stops sending
    save_content(store, "draft_sms", kind="outbox", body={"zh": "草稿"})
    save_content(store, "old_sms", kind="outbox", body={"zh": "旧"})
    move(store, "old_sms", 1, "approve", by="reviewer", expires_at=MORNING + timedelta(hours=1), clock=clock)
    for name, content in (("d", "draft_sms"), ("o", "old_sms")):
        p = _publish(
            store,
            _journey(
                name=name, nodes={"s": {"type": "send", "channel": "outbox", "content": content}}, start="s"
            ),
            clock,
        )
        enter(store, p, ["P000"], "api", clock=clock)
    clock.advance(timedelta(hours=2))
    run_due(store, clock=clock)
    reasons = dict(store.tuples("SELECT journey, reason FROM message_send WHERE journey IN ('d', 'o')"))
    assert reasons == {"d": "content_not_approved", "o": "content_expired"}


def test_quiet_hours_hold_marketing_until_morning(store: WorkspaceStore) -> None:
    night = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    clock = FixedClock(night)
    persons = _people(store, 2)
    _content(store)
    pub = _publish(
        store,
        _journey(nodes={"s": {"type": "send", "channel": "outbox", "content": "refill_sms"}}, start="s"),
        clock,
    )
    enter(store, pub, persons, "api", clock=clock)
    out = run_due(store, clock=clock)
    assert out.sends == 0 and _sends(store) == []
    wake = store.scalar("SELECT min(wake_at) FROM journey_entry")
    assert wake == datetime(2026, 11, 3, 0, 0, tzinfo=UTC)  # 08:00 local
    clock.set(datetime(2026, 11, 2, 23, 59, tzinfo=UTC))  # 07:59 local: still quiet
    assert run_due(store, clock=clock).sends == 0
    clock.set(datetime(2026, 11, 3, 0, 0, tzinfo=UTC))
    assert run_due(store, clock=clock).sends == 2
    keys = [r[0] for r in store.tuples("SELECT idempotency_key FROM message_send")]
    assert all(k.endswith(":s:1") for k in keys)  # the deferred send is the same send, not a second one


def test_caps_hold_across_journeys(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 5)
    _content(store)
    for n in range(4):  # four journeys each send once to everyone; the cap is 2 per day
        pub = _publish(
            store,
            _journey(
                name=f"j{n}",
                nodes={"s": {"type": "send", "channel": "outbox", "content": "refill_sms"}},
                start="s",
            ),
            clock,
        )
        enter(store, pub, persons, "api", clock=clock)
        run_due(store, clock=clock, limit=3)  # several batches
    run_due(store, clock=clock)
    per_person = dict(
        store.tuples(
            "SELECT person_id, count(*) FROM message_send WHERE status = 'pending' GROUP BY person_id"
        )
    )
    assert per_person == dict.fromkeys(persons, 2)
    assert store.scalar("SELECT count(*) FROM message_send WHERE reason = 'cap_day'") == 10


def test_branches_splits_holdout_tasks_updates_and_goals(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 40)
    store.insert(
        "trait_value",
        [
            {"person_id": p, "trait": "age", "key": "", "value_num": 70.0 if i % 2 else 40.0}
            for i, p in enumerate(persons)
        ],
    )
    _content(store)
    spec = _journey(
        name="mix",
        holdout={"percent": 20},
        goal={"event": "refill_dispensed", "within": "7d"},
        start="b",
        nodes={
            "b": {
                "type": "branch",
                "branches": [
                    {"name": "old", "when": {"trait": "age", "op": ">=", "value": 65}, "next": "call"}
                ],
                "default": "ab",
            },
            "call": {
                "type": "task",
                "task": "follow_up_call",
                "title": "电话随访",
                "assignee": "nurses",
                "due": "1d",
                "next": "mark",
            },
            "mark": {"type": "update", "trait": "journey_called", "value": 1},
            "ab": {
                "type": "split",
                "arms": [
                    {"name": "A", "percent": 50, "next": "wait"},
                    {"name": "B", "percent": 50, "next": "wait"},
                ],
            },
            "wait": {
                "type": "wait",
                "event": "app_opened",
                "timeout": "2d",
                "next": "s",
                "timeout_next": "x",
            },
            "s": {"type": "send", "channel": "outbox", "content": "refill_sms"},
            "x": {"type": "exit"},
        },
    )
    pub = _publish(store, spec, clock)
    out = enter(store, pub, persons, "api", clock=clock)
    assert out["holdout"] + out["entered"] == 40 and 2 <= out["holdout"] <= 16
    run_due(store, clock=clock)
    tasks = store.tuples("SELECT person_id, kind, status FROM staff_task ORDER BY person_id")
    old = {p for i, p in enumerate(persons) if i % 2}
    held = {r[0] for r in store.tuples("SELECT person_id FROM journey_entry WHERE arm = 'holdout'")}
    assert {t[0] for t in tasks} == old - held and all(t[1:] == ("follow_up_call", "open") for t in tasks)
    assert {
        r[0] for r in store.tuples("SELECT person_id FROM trait_value WHERE trait = 'journey_called'")
    } == old - held
    arms = dict(store.tuples("SELECT arm, count(*) FROM journey_entry WHERE arm IN ('A', 'B') GROUP BY arm"))
    assert sum(arms.values()) == len(set(persons) - old - held) and set(arms) == {"A", "B"}
    waiting = [
        r[0]
        for r in store.tuples(
            "SELECT person_id FROM journey_entry WHERE status = 'waiting' ORDER BY person_id"
        )
    ]
    # one opens the app (the wait ends: send), one converts (goal), the rest time out after 2 days
    on_events(
        store, [(waiting[0], "app_opened", MORNING), (waiting[1], "refill_dispensed", MORNING)], clock=clock
    )
    assert run_due(store, clock=clock).sends == 1
    assert store.tuples("SELECT exit_reason FROM journey_entry WHERE person_id = :p", {"p": waiting[1]}) == [
        ("goal",)
    ]
    clock.advance(timedelta(days=2, minutes=1))
    run_due(store, clock=clock)
    timed_out = store.scalar("SELECT count(*) FROM journey_step WHERE node = 'wait' AND outcome = 'timeout'")
    assert timed_out == len(waiting) - 2
    assert get_journey(store, "mix").status == "published"


def test_event_triggers_enter_once_per_event(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 2)
    _content(store)
    spec = _journey(
        name="welcome", trigger={"type": "event", "event": "app_installed"}, re_entry={"policy": "always"}
    )
    _publish(store, spec, clock)
    events = [(persons[0], "app_installed", MORNING), (persons[1], "page_viewed", MORNING)]
    assert on_events(store, events, clock=clock)["entered"] == 1
    assert on_events(store, events, clock=clock)["entered"] == 0  # the same event delivered again


def test_personalisation_refusal_and_service_messages(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 2, purpose="care_follow_up")
    store.insert(
        "consent",
        [
            {
                "source": "his",
                "key": "refuse",
                "patient_key": "k0",
                "purpose": "personalisation",
                "status": "refused",
                "recorded_at": datetime(2026, 2, 1, tzinfo=UTC),
            }
        ],
    )
    save_content(store, "confirm", kind="outbox", body={"zh": "预约成功"}, purpose="service")
    move(store, "confirm", 1, "approve", by="reviewer")
    for name, personalised in (("tailored", True), ("plain", False)):
        node = {
            "type": "send",
            "channel": "outbox",
            "content": "confirm",
            "purpose": "service",
            "personalised": personalised,
        }
        pub = _publish(store, _journey(name=name, nodes={"s": node}, start="s"), clock)
        enter(store, pub, persons, "api", clock=clock)
    run_due(store, clock=clock)
    got = {
        (j, p): (s, r)
        for j, p, s, r in store.tuples("SELECT journey, person_id, status, reason FROM message_send")
    }
    # a care consent covers a service message; P000 refused personalisation: only the plain one reaches them
    assert got[("tailored", "P000")] == ("blocked", "personalisation_opt_out")
    assert got[("plain", "P000")] == ("pending", None)
    assert got[("tailored", "P001")] == ("pending", None)


def test_catch_up_after_downtime_runs_or_skips_late_sends(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)
    persons = _people(store, 2)
    _content(store)
    nodes = {
        "w": {"type": "wait", "duration": "1h", "next": "s"},
        "s": {"type": "send", "channel": "outbox", "content": "refill_sms", "next": "x"},
        "x": {"type": "exit"},
    }
    for name, catch_up in (("late_ok", None), ("late_skip", {"policy": "skip", "max_late": "6h"})):
        spec = _journey(name=name, nodes=nodes, start="w", **({"catch_up": catch_up} if catch_up else {}))
        enter(store, _publish(store, spec, clock), persons, "api", clock=clock)
    run_due(store, clock=clock)  # both wait an hour
    clock.advance(timedelta(hours=9))  # the worker was down: the timers fire 8 hours late
    run_due(store, clock=clock)
    got = dict(store.tuples("SELECT journey, count(*) FROM message_send GROUP BY journey"))
    assert got == {"late_ok": 2}
    skipped = store.scalar(
        "SELECT count(*) FROM journey_step WHERE journey = 'late_skip' AND outcome = 'skipped_late'"
    )
    assert skipped == 2 and store.scalar("SELECT count(*) FROM journey_entry WHERE status = 'done'") == 4
    with pytest.raises(ConfigError, match="catch_up"):
        parse_journey(_journey(catch_up={"policy": "maybe"}))


def test_staff_tasks_record_outcomes_and_wake_the_journey(store: WorkspaceStore) -> None:
    from careloop.journeys.tasks import complete_task, list_tasks

    clock = FixedClock(MORNING)
    persons = _people(store, 2)
    _content(store)
    nodes = {
        "call": {
            "type": "task",
            "task": "follow_up_call",
            "title": "电话随访",
            "assignee": "nurses",
            "due": "1d",
            "next": "w",
        },
        "w": {
            "type": "wait",
            "event": "task_completed",
            "timeout": "3d",
            "next": "thanks",
            "timeout_next": "x",
        },
        "thanks": {"type": "send", "channel": "outbox", "content": "refill_sms"},
        "x": {"type": "exit"},
    }
    enter(
        store,
        _publish(store, _journey(name="calls", nodes=nodes, start="call"), clock),
        persons,
        "api",
        clock=clock,
    )
    run_due(store, clock=clock)
    open_tasks = sorted(list_tasks(store, assignee="nurses"), key=lambda t: t["person_id"])
    assert [t["person_id"] for t in open_tasks] == persons and all(t["status"] == "open" for t in open_tasks)
    done = complete_task(
        store, open_tasks[0]["task_id"], "reached; will refill Friday", by="王护士", clock=clock
    )
    assert done["status"] == "done"
    with pytest.raises(ConfigError, match="already done"):
        complete_task(store, open_tasks[0]["task_id"], "again", by="王护士", clock=clock)
    run_due(store, clock=clock)
    assert _sends(store) == [("P000", "pending", None)]  # the completed call moved P000 on
    assert store.tuples("SELECT outcome FROM staff_task WHERE status = 'done'") == [
        ("reached; will refill Friday",)
    ]
    assert [t["person_id"] for t in list_tasks(store)] == ["P001"]


def test_held_out_patients_conversions_are_counted_for_uplift(store: WorkspaceStore) -> None:
    from careloop.journeys.stats import journey_stats

    clock = FixedClock(MORNING)
    persons = _people(store, 30)
    _content(store)
    spec = _journey(
        name="uplift",
        holdout={"percent": 30},
        goal={"event": "refill_dispensed", "within": "7d"},
        nodes={
            "w": {"type": "wait", "duration": "3d", "next": "s"},
            "s": {"type": "send", "channel": "outbox", "content": "refill_sms"},
        },
        start="w",
    )
    enter(store, _publish(store, spec, clock), persons, "api", clock=clock)
    held = [
        r[0]
        for r in store.tuples("SELECT person_id FROM journey_entry WHERE arm = 'holdout' ORDER BY person_id")
    ]
    treated = [p for p in persons if p not in held]
    assert held and treated
    run_due(store, clock=clock)
    on_events(
        store,
        [
            (held[0], "refill_dispensed", MORNING),
            (treated[0], "refill_dispensed", MORNING),
            (treated[1], "refill_dispensed", MORNING),
        ],
        clock=clock,
    )
    c = journey_stats(store, "uplift")["conversion"]
    assert (c["holdout"], c["holdout_converted"], c["treated"], c["treated_converted"]) == (
        len(held),
        1,
        len(treated),
        2,
    )
    assert (
        store.scalar("SELECT count(*) FROM journey_entry WHERE arm = 'holdout' AND status <> 'exited'") == 0
    )
