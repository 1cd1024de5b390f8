"""``journeys``: N patients through a 5-node journey with the outbox channel, embedded DuckDB.

The store (N persons with identity links and care consents, an approved content item) is built in a
fresh DuckDB file. The journey — send, update a trait, A/B split, a second send on one arm, exit — is
published and everyone entered (API trigger; service messages, which a care consent covers and quiet hours
do not hold, so the figures do not depend on the hour the bench runs); then the worker's loop runs (due entries in batches of
1,000, deliveries through the outbox) until nothing is left. Figures: journey steps per second and
messages delivered per second over that run.

Baseline, measured in the same run on the same store: a bare loop that writes the same rows the run
wrote — the step log, the send ledger, the outbox rows, the trait values and the entries' final state —
with plain Arrow inserts in batches of the same size (no policy, no claiming, no journey logic). The
ratio is careloop's steps/s over the bare loop's rows-equivalent steps/s.

Latency: with the worker running in its thread, K persons get the trigger event one at a time through
the event subscriber (as the stream processor hands it over); the time until that person's message is in
the outbox is the event-to-first-send latency (p95, aim < 1 s). Its baseline is writing that outbox row
directly, one committed insert per event.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from careloop.bench.report import BenchResult
from careloop.channels.outbox import OutboxChannel, OutboxConfig
from careloop.clock import SystemClock
from careloop.config import Settings
from careloop.events.stream import StoredEvent
from careloop.journeys.engine import enter, save_journey, set_status
from careloop.journeys.worker import JourneyEvents, JourneyWorker
from careloop.messaging.content import move, save_content
from careloop.messaging.dispatch import Dispatcher
from careloop.storage import WorkspaceStore, connect

WORKSPACE = "bench"
LATENCY_SAMPLE = 200
BATCH = 1000

JOURNEY = {
    "name": "bench5",
    "trigger": {"type": "api"},
    "holdout": False,
    "start": "first",
    "nodes": {
        "first": {
            "type": "send",
            "channel": "outbox",
            "content": "note",
            "purpose": "service",
            "next": "mark",
        },
        "mark": {"type": "update", "trait": "bench_contacted", "value": 1, "next": "ab"},
        "ab": {
            "type": "split",
            "arms": [
                {"name": "A", "percent": 50, "next": "second"},
                {"name": "B", "percent": 50, "next": "done"},
            ],
        },
        "second": {
            "type": "send",
            "channel": "outbox",
            "content": "note",
            "purpose": "service",
            "next": "done",
        },
        "done": {"type": "exit"},
    },
}
EVENT_JOURNEY = {**JOURNEY, "name": "bench_event", "trigger": {"type": "event", "event": "bench_trigger"}}


def _seed(store: WorkspaceStore, n: int) -> list[str]:
    persons = [f"P{i:07d}" for i in range(n)]
    store.insert("person", pa.table({"person_id": persons}))
    store.insert(
        "identity_link",
        pa.table(
            {"source": ["his"] * n, "patient_key": persons, "person_id": persons, "rule": ["alone"] * n}
        ),
    )
    store.insert(
        "consent",
        pa.table(
            {
                "source": ["his"] * n,
                "key": persons,
                "patient_key": persons,
                "purpose": ["care_follow_up"] * n,
                "status": ["granted"] * n,
                "recorded_at": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
            }
        ),
    )
    save_content(store, "note", kind="outbox", body={"zh": "随访通知"}, purpose="service")
    move(store, "note", 1, "approve", by="bench")
    return persons


def _careloop_run(store: WorkspaceStore, persons: list[str], clock: SystemClock) -> tuple[float, int, int]:
    save_journey(store, JOURNEY, clock=clock)
    pub = set_status(store, "bench5", "published", clock=clock)
    enter(store, pub, persons, "bench", clock=clock)
    outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
    worker = JourneyWorker(
        store.backend,
        clock=clock,
        batch=BATCH,
        deliver=Dispatcher(lambda s, k: outbox, clock=clock, batch=BATCH),
    )
    started = time.perf_counter()
    while True:
        out = worker.tick([WORKSPACE])[WORKSPACE]
        if out["steps"] == 0 and sum(out["delivered"].values()) == 0:
            break
    seconds = time.perf_counter() - started
    steps = int(
        store.scalar("SELECT count(*) FROM journey_step WHERE journey = 'bench5' AND kind <> 'enter'") or 0
    )
    sent = int(store.scalar("SELECT count(*) FROM outbox_message") or 0)
    return seconds, steps, sent


def _bare_loop(store: WorkspaceStore, persons: list[str]) -> float:
    """The same rows, written by a plain loop in batches: steps, ledger, outbox, traits, entry state."""
    backend = store.backend
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(0, len(persons), BATCH):
        chunk = persons[i : i + BATCH]
        n = len(chunk)
        arm_a = [p for j, p in enumerate(chunk) if j % 2 == 0]
        keys = [f"x{p}:first:1" for p in chunk] + [f"x{p}:second:1" for p in arm_a]
        people = chunk + arm_a
        ws = [WORKSPACE] * len(keys)
        with backend.transaction():
            backend.insert_arrow(
                "journey_step",
                pa.table(
                    {
                        "workspace_id": [WORKSPACE] * (4 * n + len(arm_a)),
                        "entry_id": [f"x{p}" for p in chunk] * 4 + [f"x{p}" for p in arm_a],
                        "journey": ["bare"] * (4 * n + len(arm_a)),
                        "node": ["first"] * n
                        + ["mark"] * n
                        + ["ab"] * n
                        + ["done"] * n
                        + ["second"] * len(arm_a),
                        "kind": ["send"] * n
                        + ["update"] * n
                        + ["split"] * n
                        + ["exit"] * n
                        + ["send"] * len(arm_a),
                        "outcome": ["reserved"] * (4 * n + len(arm_a)),
                        "at": [now] * (4 * n + len(arm_a)),
                    }
                ),
            )
            backend.insert_arrow(
                "message_send",
                pa.table(
                    {
                        "workspace_id": ws,
                        "idempotency_key": keys,
                        "person_id": people,
                        "journey": ["bare"] * len(keys),
                        "status": ["sent"] * len(keys),
                        "created_at": [now] * len(keys),
                    }
                ),
            )
            backend.insert_arrow(
                "outbox_message",
                pa.table(
                    {
                        "workspace_id": ws,
                        "idempotency_key": keys,
                        "person_id": people,
                        "channel": ["outbox"] * len(keys),
                        "body": ["随访通知"] * len(keys),
                    }
                ),
            )
            backend.insert_arrow(
                "trait_value",
                pa.table(
                    {
                        "workspace_id": [WORKSPACE] * n,
                        "person_id": chunk,
                        "trait": ["bare_contacted"] * n,
                        "key": [""] * n,
                        "value_num": [1.0] * n,
                    }
                ),
            )
            backend.insert_arrow(
                "journey_entry",
                pa.table(
                    {
                        "workspace_id": [WORKSPACE] * n,
                        "entry_id": [f"x{p}" for p in chunk],
                        "journey": ["bare"] * n,
                        "person_id": chunk,
                        "node": ["done"] * n,
                        "status": ["done"] * n,
                    }
                ),
            )
    return time.perf_counter() - started


def _latency(store: WorkspaceStore, persons: list[str], clock: SystemClock) -> list[float]:
    save_journey(store, EVENT_JOURNEY, clock=clock)
    set_status(store, "bench_event", "published", clock=clock)
    set_status(store, "bench5", "paused", clock=clock)
    outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
    worker = JourneyWorker(
        store.backend,
        clock=clock,
        batch=BATCH,
        interval=1.0,
        deliver=Dispatcher(lambda s, k: outbox, clock=clock),
    )
    events = JourneyEvents(clock=clock, wake=worker.wake)
    worker.start()
    out = []
    try:
        for p in persons[:LATENCY_SAMPLE]:
            now = clock.now()
            started = time.perf_counter()
            events(
                store,
                [StoredEvent(WORKSPACE, "bench", f"ev-{p}", "track", "bench_trigger", "app", p, now, now)],
            )
            while not store.scalar(
                "SELECT count(*) FROM outbox_message WHERE person_id = :p AND idempotency_key LIKE '%:first:1'",
                {"p": p},
            ):
                if time.perf_counter() - started > 10:
                    raise RuntimeError("no send within 10 s of the event")
                time.sleep(0.002)
            out.append(time.perf_counter() - started)
    finally:
        worker.stop()
    return out


def _bare_latency(store: WorkspaceStore, persons: list[str]) -> list[float]:
    out = []
    for p in persons[:LATENCY_SAMPLE]:
        started = time.perf_counter()
        with store.backend.transaction():
            store.backend.insert_arrow(
                "outbox_message",
                pa.table(
                    {
                        "workspace_id": [WORKSPACE],
                        "idempotency_key": [f"bare-{p}"],
                        "person_id": [p],
                        "channel": ["outbox"],
                        "body": ["随访通知"],
                    }
                ),
            )
        out.append(time.perf_counter() - started)
    return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


def bench_journeys(
    patients: int, seed: int, cache: Path, settings: Settings, repeat: int
) -> list[BenchResult]:
    clock = SystemClock()
    best: dict[str, Any] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="careloop-bench-", dir=cache) as tmp:
            backend = connect(f"duckdb:///{Path(tmp) / 'journeys.duckdb'}", clock=clock)
            try:
                store = backend.workspace(WORKSPACE)
                persons = _seed(store, patients)
                seconds, steps, sent = _careloop_run(store, persons, clock)
                bare = _bare_loop(store, persons)
                latencies = _latency(store, persons, clock)
                bare_latencies = _bare_latency(store, persons)
            finally:
                backend.close()
        if not best or seconds < best["seconds"]:
            best = {
                "seconds": seconds,
                "steps": steps,
                "sent": sent,
                "bare": bare,
                "latencies": latencies,
                "bare_lat": bare_latencies,
            }
    lat = sorted(best["latencies"])
    p95 = _p95(lat) * 1000
    bare_p95 = _p95(best["bare_lat"]) * 1000
    command = f"careloop bench journeys --patients {patients}" + (f" --repeat {repeat}" if repeat > 1 else "")
    size = f"{patients:,} patients, 5-node journey, outbox"
    details = {
        "seconds": round(best["seconds"], 3),
        "steps": best["steps"],
        "sent": best["sent"],
        "sends_per_second": round(best["sent"] / best["seconds"], 1),
        "bare_seconds": round(best["bare"], 3),
        "event_to_send_p50_ms": round(statistics.median(lat) * 1000, 1),
        "event_to_send_p95_ms": round(p95, 1),
    }
    return [
        BenchResult(
            scenario="journeys",
            size=size,
            figure=best["steps"] / best["seconds"],
            baseline=best["steps"] / best["bare"],
            unit="steps/s",
            baseline_name="bare loop writing the same rows",
            command=command,
            details=details,
            note=f"{details['sends_per_second']:,} sends/s",
        ),
        BenchResult(
            scenario="journeys-latency",
            size=size,
            figure=p95,
            baseline=bare_p95,
            unit="ms",
            baseline_name="one committed outbox insert per event",
            command=command,
            details=details,
            note=f"p95 event to first send; p50 {details['event_to_send_p50_ms']}",
        ),
    ]
