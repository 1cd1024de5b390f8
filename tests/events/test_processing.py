"""The stream: live activity per patient and channel, triggers, catch-up from the store, Redis Streams."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from careloop.clock import FixedClock
from careloop.events.metrics import EventMetrics
from careloop.events.processor import StreamProcessor
from careloop.events.sources import create_source, get_source
from careloop.events.spec import parse
from careloop.events.stream import InProcessStream, RedisStream, StoredEvent
from careloop.events.writer import EventWriter
from careloop.identity.records import cipher_for
from careloop.storage import Backend, WorkspaceStore
from tests.events.conftest import seed_patients


def _msgs(n: int, start: int = 0, user: str = "u-1") -> dict[str, object]:
    return {
        "batch": [
            {
                "type": "track",
                "event": f"e{i % 2}",
                "userId": user,
                "messageId": f"m{i}",
                "timestamp": f"2026-11-01T08:{i % 60:02d}:00+00:00",
            }
            for i in range(start, start + n)
        ]
    }


@pytest.fixture
def seeded(backend: Backend, tmp_path: Path, clock: FixedClock) -> Backend:
    seed_patients(backend, tmp_path / "seed", n=5)
    create_source(
        backend.workspace("default"), "careapp", user_id_kind="app_user_id", user_id_system="careapp"
    )
    return backend


def _write(backend: Backend, writer: EventWriter, body: dict[str, object], clock: FixedClock) -> None:
    src = get_source(backend.workspace("default"), "careapp")
    writer.submit(src, parse(body, clock.now())).result(timeout=30)


def test_processor_updates_activity_offers_triggers_and_catches_up(
    seeded: Backend, clock: FixedClock
) -> None:
    stream = InProcessStream()
    writer = EventWriter(seeded, cipher_for(), stream=stream, clock=clock)
    _write(seeded, writer, _msgs(3), clock)  # stored before any processor ran
    proc = StreamProcessor(seeded, stream, clock=clock)
    seen: list[str] = []

    def trigger(store: WorkspaceStore, events: Sequence[StoredEvent]) -> None:
        seen.extend(e.key for e in events)

    proc.subscribe(trigger)
    assert proc.run_once() == 3  # catch-up from the store (checkpoint empty)
    clock.advance(__import__("datetime").timedelta(seconds=5))
    _write(seeded, writer, _msgs(2, start=3), clock)
    assert proc.run_once(timeout=1) == 2
    assert proc.run_once(timeout=0.05) == 0
    store = seeded.workspace("default")
    row = store.rows("SELECT person_id, channel, events, last_event_name FROM live_activity")
    assert row == [{"person_id": "P1", "channel": "app", "events": 5, "last_event_name": "e0"}]
    assert sorted(seen) == [f"m{i}" for i in range(5)]
    # a new processor with the same name resumes after its checkpoint: nothing is counted twice
    again = StreamProcessor(seeded, InProcessStream(), clock=clock)
    assert again.run_once() == 0
    assert store.scalar("SELECT events FROM live_activity") == 5


def test_a_full_in_process_queue_never_blocks_the_writer(seeded: Backend, clock: FixedClock) -> None:
    stream = InProcessStream(capacity=2)
    writer = EventWriter(seeded, cipher_for(), stream=stream, clock=clock)
    proc = StreamProcessor(seeded, stream, clock=clock)
    proc.run_once()
    _write(seeded, writer, _msgs(10), clock)  # 10 notices for a queue of 2: the stream falls behind
    assert stream.behind.is_set()
    proc.run_once()
    assert seeded.workspace("default").scalar("SELECT events FROM live_activity") == 10


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("CARELOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = pytest.importorskip(
        "redis", reason="the Redis stream tests need the redis package (make install-dev installs it)"
    )
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"CI must reach Redis at {url}")
        pytest.skip(f"Redis stream tests need a Redis server at {url} (set CARELOOP_TEST_REDIS_URL)")
    return url


def test_redis_stream_redelivers_what_a_crashed_processor_did_not_acknowledge(
    seeded: Backend, clock: FixedClock, redis_url: str
) -> None:
    key = f"careloop:test:{secrets.token_hex(4)}"
    publisher = RedisStream(redis_url, key=key, consumer="server")
    writer = EventWriter(seeded, cipher_for(), stream=publisher, clock=clock, metrics=EventMetrics())
    try:
        _write(seeded, writer, _msgs(4), clock)
        crashed = RedisStream(redis_url, key=key, consumer="a", claim_idle_ms=0)
        lost = crashed.read(10, timeout=1)  # read, then "die" before processing and acknowledging
        assert lost is not None and len(lost.events) == 4
        survivor = StreamProcessor(
            seeded, RedisStream(redis_url, key=key, consumer="b", claim_idle_ms=0), clock=clock
        )
        assert survivor.run_once(timeout=1) == 4  # claimed from the dead consumer
        assert survivor.run_once(timeout=0.1) == 0
        assert publisher.pending() == 0
        assert seeded.workspace("default").scalar("SELECT events FROM live_activity") == 4
    finally:
        publisher._r.delete(key)
        publisher.close()


def test_running_threads_update_activity_unprompted(seeded: Backend, clock: FixedClock) -> None:
    stream = InProcessStream()
    writer = EventWriter(seeded, cipher_for(), stream=stream, clock=clock)
    proc = StreamProcessor(seeded, stream, clock=clock)
    writer.start()
    proc.start()
    try:
        _write(seeded, writer, _msgs(1), clock)
        deadline = time.monotonic() + 10
        while seeded.workspace("default").scalar("SELECT count(*) FROM live_activity") == 0:
            assert time.monotonic() < deadline, "the processor never updated the activity"
            time.sleep(0.01)
    finally:
        writer.stop()
        proc.stop()


def test_events_follow_identity_merges_and_splits(seeded: Backend, clock: FixedClock) -> None:
    from careloop.events.follow import follow_identity_changes
    from careloop.identity import overrides

    stream = InProcessStream()
    writer = EventWriter(seeded, cipher_for(), stream=stream, clock=clock)
    proc = StreamProcessor(seeded, stream, clock=clock)
    proc.run_once()
    _write(seeded, writer, _msgs(3, user="u-1"), clock)
    _write(seeded, writer, _msgs(2, start=3, user="u-2"), clock)
    proc.run_once(timeout=1)
    store = seeded.workspace("default")

    def persons() -> dict[str, str]:
        return {r["key"]: r["person_id"] for r in store.rows("SELECT key, person_id FROM event")}

    def activity() -> dict[str, int]:
        return {
            r["person_id"]: r["events"] for r in store.rows("SELECT person_id, events FROM live_activity")
        }

    assert activity() == {"P1": 3, "P2": 2}
    follow_identity_changes(store, clock=clock)  # nothing changed yet: nothing moves
    assert activity() == {"P1": 3, "P2": 2}
    overrides.merge(store, "P1", "P2", reason="same person (test)", actor="test", clock=clock)
    assert follow_identity_changes(store, clock=clock).moved == 1
    assert set(persons().values()) == {"P1"} and activity() == {"P1": 5}
    clock.advance(__import__("datetime").timedelta(minutes=1))
    split = overrides.split(store, "P1", ["app_db:p2"], reason="twins (test)", actor="test", clock=clock)
    summary = follow_identity_changes(store, clock=clock)
    new = split["new_person_id"]
    assert summary.released >= 1 and summary.attributed == 5
    assert persons() == {"m0": "P1", "m1": "P1", "m2": "P1", "m3": new, "m4": new}
    assert activity() == {"P1": 3, new: 2}


def test_a_request_the_store_refuses_fails_alone(seeded: Backend, clock: FixedClock) -> None:
    from concurrent.futures import Future

    from careloop.events.writer import _Submission

    writer = EventWriter(seeded, cipher_for(), clock=clock)
    good = get_source(seeded.workspace("default"), "careapp")
    ghost = type(good)("ghost", good.name, good.channel, good.user_id_kind, good.user_id_system, good.plan)
    subs = [
        _Submission(ghost, parse(_msgs(1), clock.now()), "r1", Future()),  # its workspace does not exist
        _Submission(good, parse(_msgs(2, start=5), clock.now()), "r2", Future()),
    ]
    writer._write(subs)
    assert subs[0].future.exception() is not None
    assert subs[1].future.result().stored == 2


def test_events_keep_segment_membership_current(seeded: Backend, clock: FixedClock) -> None:
    from careloop.events.metrics import EventMetrics
    from careloop.profiles.live import SegmentTrigger
    from careloop.profiles.segments import refresh, save_segment

    store = seeded.workspace("default")
    save_segment(store, "活跃", {"event": "e0", "count": 2, "within": "30d"}, clock=clock)
    save_segment(
        store, "活跃且关注", {"all": [{"segment": "活跃"}, {"event": "e1", "count": 1}]}, clock=clock
    )
    save_segment(store, "全体", {"trait": "age", "op": "missing"}, clock=clock)  # events cannot change it
    for name in ("活跃", "活跃且关注"):
        refresh(store, name, clock=clock)
    metrics = EventMetrics()
    stream = InProcessStream()
    writer = EventWriter(seeded, cipher_for(), stream=stream, clock=clock)
    proc = StreamProcessor(seeded, stream, clock=clock, metrics=metrics)
    proc.subscribe(SegmentTrigger(metrics, clock=clock))
    proc.run_once()
    _write(seeded, writer, _msgs(1, user="u-3"), clock)  # e0 once: not yet
    proc.run_once(timeout=1)
    assert store.count("segment_member") == 0
    _write(seeded, writer, _msgs(3, start=1, user="u-3"), clock)  # e1, e0, e1: e0 twice, e1 twice
    proc.run_once(timeout=1)
    members = {
        (r["segment"], r["person_id"]) for r in store.rows("SELECT segment, person_id FROM segment_member")
    }
    assert members == {("活跃", "P3"), ("活跃且关注", "P3")}  # the referenced segment first, then its user
    changes = store.rows("SELECT segment, change, cause FROM segment_change ORDER BY segment")
    assert [(c["segment"], c["change"], c["cause"]) for c in changes] == [
        ("活跃", "entered", "event"),
        ("活跃且关注", "entered", "event"),
    ]
    assert (
        metrics.segment_seconds._sum.get() >= 0
        and store.scalar("SELECT count(*) FROM segment_member WHERE segment = '全体'") == 0
    )


def test_plans_and_definitions_round_trip_on_every_backend(backend: Backend) -> None:
    from careloop.events.plan import TrackingPlan
    from careloop.events.sources import create_source, get_source, list_sources
    from careloop.profiles.segments import get_segment, save_segment

    store = backend.workspace("default")
    plan = TrackingPlan.from_dict(
        {
            "allow_unplanned": False,
            "events": {
                "a": {"properties": {"x": "integer"}},
                "b": {"properties": {"y": {"type": "string", "required": True}}},
            },
        }
    )
    create_source(store, "s1", plan=plan)
    assert get_source(store, "s1").plan == plan and list_sources(store)[0]["plan"] == plan.to_dict()
    d = {"any": [{"trait": "age", "op": ">", "value": 1}, {"event": "x", "count": 2}, {"segment": "s0"}]}
    save_segment(store, "s0", {"trait": "age", "op": "exists"})
    save_segment(store, "s2", d)
    assert get_segment(store, "s2").definition == d
