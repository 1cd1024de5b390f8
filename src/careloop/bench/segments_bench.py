"""``segments``: full evaluation of 20 segments, and incremental updates of one person's memberships.

The store (`segments_data`: N persons, their traits, 30 x N live events) is generated once into
``CACHE/segments-N-SEED.duckdb`` with the look-up indexes `careloop patient index` creates. Each run
starts from no stored segments, saves the 20 definitions of `segments_suite` and refreshes them all once
(the first refresh writes every member; its time is a detail).

- **Full evaluation**: `refresh_all` of the 20 segments in steady state — every definition evaluated over
  everyone, the differences from the stored members computed in the database and written — against the
  20 hand-written DuckDB queries of `segments_suite.handwritten` on the same file, run through the plain
  connection (no workspace rewrite, no parameters, results fetched). Both sides are checked to select the
  same persons. Figures are segments per second (higher is better).
- **Incremental**: for K persons, one new live event is written and `update_memberships` re-evaluates all
  20 segments for that person (facts read through the indexes, evaluated in Python, changes written).
  The figure is its p95 in ms; the baseline is what a batch system does instead — the steady-state full
  refresh of the 20 segments, in ms (lower is better; the ratio is how small a fraction of it one update costs).
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from careloop.bench.report import BenchResult
from careloop.bench.segments_data import WORKSPACE, build_segment_store
from careloop.bench.segments_suite import definitions, handwritten
from careloop.clock import FixedClock
from careloop.config import Settings
from careloop.patients.indexes import ensure_lookup_indexes
from careloop.profiles import segments as seg
from careloop.storage import WorkspaceStore, connect

AS_OF = date(2026, 10, 31)
EVENTS_PER_PERSON = 30
SAMPLE = 200


def _store_file(cache: Path, persons: int, seed: int, tz: str) -> Path:
    path = cache / f"segments-{persons}-{seed}.duckdb"
    if not path.exists():
        tmp = path.with_suffix(".building")
        tmp.unlink(missing_ok=True)
        backend = connect(f"duckdb:///{tmp}")
        try:
            build_segment_store(backend, persons, persons * EVENTS_PER_PERSON, seed, AS_OF, tz)
            ensure_lookup_indexes(backend)
            backend.execute("CHECKPOINT")
        finally:
            backend.close()
        tmp.rename(path)
    return path


def bench_segments(
    patients: int, seed: int, cache: Path, settings: Settings, repeat: int
) -> list[BenchResult]:
    tz = settings.timezone
    path = _store_file(cache, patients, seed, tz)
    clock = FixedClock(datetime(2026, 10, 31, 4, 0, tzinfo=UTC))
    backend = connect(f"duckdb:///{path}", clock=clock)
    try:
        store = backend.workspace(WORKSPACE)
        with backend.transaction():
            for table in ("segment_change", "segment_member", "segment"):
                store.execute(f"DELETE FROM {table}")
            store.execute("DELETE FROM event WHERE source = 'bench-live'")
        defs = definitions()
        for name, d in defs.items():
            seg.save_segment(store, name, d, clock=clock)
        started = time.perf_counter()
        first = seg.refresh_all(store, as_of=AS_OF, clock=clock)
        first_s = time.perf_counter() - started
        ours = base = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            steady = seg.refresh_all(store, as_of=AS_OF, clock=clock)
            ours = min(ours, time.perf_counter() - started)
            assert all(o["entered"] == o["left"] == 0 for o in steady.values())
            started = time.perf_counter()
            hand = {name: backend.fetch_rows(sql) for name, sql in handwritten(AS_OF, tz).items()}
            base = min(base, time.perf_counter() - started)
        for name in defs:
            stored = {
                r[0]
                for r in store.tuples("SELECT person_id FROM segment_member WHERE segment = :s", {"s": name})
            }
            if stored != {r[0] for r in hand[name]}:
                raise AssertionError(f"segment {name}: careloop and the hand-written SQL disagree")
        latencies = _incremental(store, patients, seed, clock)
        p95 = statistics.quantiles(latencies, n=20)[18] * 1000
        p50 = statistics.median(latencies) * 1000
        size = f"{patients:,} patients, {patients * EVENTS_PER_PERSON:,} events, {len(defs)} segments"
        command = f"careloop bench segments --patients {patients}" + (
            f" --repeat {repeat}" if repeat > 1 else ""
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        details = {
            "careloop_seconds": round(ours, 3),
            "handwritten_seconds": round(base, 3),
            "first_refresh_seconds": round(first_s, 3),
            "members": {n: o["members"] for n, o in first.items()},
            "incremental_p50_ms": round(p50, 2),
            "incremental_p95_ms": round(p95, 2),
            "peak_rss_mb": round(peak),
        }
        return [
            BenchResult(
                scenario="segments",
                size=size,
                figure=len(defs) / ours,
                baseline=len(defs) / base,
                unit="segments/s",
                baseline_name="hand-written DuckDB SQL of the same 20 segments",
                command=command,
                details=details,
                note=f"{ours:.1f} s for all",
                baseline_note=f"{base:.1f} s",
            ),
            BenchResult(
                scenario="segments-incremental",
                size=size,
                figure=p95,
                baseline=ours * 1000,
                unit="ms",
                baseline_name="full re-evaluation of the 20 segments",
                command=command,
                details=details,
                note=f"p95 of one person's 20 memberships after a new event; p50 {p50:.1f}",
            ),
        ]
    finally:
        backend.close()


def _incremental(store: WorkspaceStore, persons: int, seed: int, clock: FixedClock) -> list[float]:
    """Seconds per update of one person's memberships after one new live event, for SAMPLE persons."""
    rng = random.Random(seed)
    names = [
        "refill_reminder_clicked",
        "appointment_booked",
        "question_asked",
        "report_viewed",
        "unsubscribe",
    ]
    segments = seg.all_segments(store)
    at = datetime(2026, 10, 31, 2, 0, tzinfo=UTC)
    out = []
    for i in range(SAMPLE):
        pid = f"P{rng.randrange(persons):08d}"
        store.insert(
            "event",
            [
                {
                    "source": "bench-live",
                    "key": f"live-{i}",
                    "event_type": "track",
                    "name": rng.choice(names),
                    "occurred_at": at - timedelta(minutes=i),
                    "channel": "app",
                    "person_id": pid,
                    "received_at": at,
                }
            ],
        )
        started = time.perf_counter()
        seg.update_memberships(store, [pid], segments, as_of=AS_OF, clock=clock, cause="event")
        out.append(time.perf_counter() - started)
    return out
