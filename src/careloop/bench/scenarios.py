"""Benchmark scenarios.

``ingest``: bulk ingestion of the synthetic network with validation, encryption and de-duplication
on, against the physical ceiling measured in the same run — DuckDB's own ``read_parquet`` of the
same files into bare tables (no validation, no keys) in a DuckDB file on the same disk.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb

from careloop.bench.events_bench import bench_events
from careloop.bench.identity_bench import bench_identity
from careloop.bench.journeys_bench import bench_journeys
from careloop.bench.models_bench import bench_models
from careloop.bench.patient360_bench import bench_patient360
from careloop.bench.privacy_bench import bench_privacy
from careloop.bench.report import BenchResult
from careloop.bench.risk_bench import bench_risk
from careloop.bench.segments_bench import bench_segments
from careloop.clock import SYSTEM_CLOCK
from careloop.config import Settings
from careloop.ingest.pipeline import Ingestor
from careloop.storage import connect


def network(cache: Path, patients: int, seed: int) -> Path:
    """The synthetic network of that size, generated once and cached."""
    from careloop.synth import generate_network

    out = cache / f"network-{patients}-{seed}"
    if not (out / "careloop-mapping.yaml").exists():
        generate_network(out, patients=patients, seed=seed, as_of=date(2026, 10, 31), quiet=True)
    return out


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if "truth" not in p.parts)


def ceiling(files: list[Path], db: Path) -> tuple[int, float]:
    """Rows and seconds for DuckDB reading every file into a bare table."""
    con = duckdb.connect(str(db))
    try:
        started = time.perf_counter()
        rows = 0
        for i, f in enumerate(files):
            con.execute(f"CREATE TABLE t{i} AS SELECT * FROM read_parquet('{f}')").fetchall()
            rows += con.execute(f"SELECT count(*) FROM t{i}").fetchall()[0][0]
        con.execute("CHECKPOINT").fetchall()
        return rows, time.perf_counter() - started
    finally:
        con.close()


def careloop_ingest(root: Path, db: Path, settings: Settings) -> tuple[int, float, dict[str, object]]:
    backend = connect(f"duckdb:///{db}", clock=SYSTEM_CLOCK)
    try:
        started = time.perf_counter()
        summary = Ingestor(backend, "bench", settings=settings).ingest(root, "parquet")
        backend.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        return summary.rows, seconds, {"quarantined": summary.quarantined, "files": summary.files}
    finally:
        backend.close()


def bench_ingest(patients: int, seed: int, cache: Path, settings: Settings, repeat: int) -> BenchResult:
    root = network(cache, patients, seed)
    files = data_files(root)
    best_ceiling = best_ours = 0.0
    rows_ceiling = rows_ours = 0
    details: dict[str, object] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="careloop-bench-", dir=cache) as tmp:
            rows_ceiling, s_ceiling = ceiling(files, Path(tmp) / "ceiling.duckdb")
            best_ceiling = max(best_ceiling, rows_ceiling / s_ceiling)
        with tempfile.TemporaryDirectory(prefix="careloop-bench-", dir=cache) as tmp:
            rows_ours, s_ours, details = careloop_ingest(root, Path(tmp) / "careloop.duckdb", settings)
            best_ours = max(best_ours, rows_ours / s_ours)
    return BenchResult(
        scenario="ingest",
        size=f"{patients:,} patients ({rows_ours:,} rows)",
        figure=best_ours,
        baseline=best_ceiling,
        unit="rows/s",
        baseline_name="DuckDB read_parquet into bare tables",
        command=f"careloop bench ingest --patients {patients}"
        + (f" --repeat {repeat}" if repeat > 1 else ""),
        details={**details, "rows_baseline": rows_ceiling, "rows": rows_ours},
    )


def bench_all_models(
    patients: int, seed: int, cache: Path, settings: Settings, repeat: int
) -> list[BenchResult]:
    """Lifetime value (fit and scoring) and churn (training and scoring), as the issue's `bench models`."""
    return [
        *bench_models(patients, seed, cache, settings, repeat),
        *bench_risk(patients, seed, cache, settings, repeat),
    ]


Scenario = Callable[[int, int, Path, Settings, int], BenchResult | list[BenchResult]]
SCENARIOS: dict[str, Scenario] = {
    "ingest": bench_ingest,
    "identity": bench_identity,
    "patient360": bench_patient360,
    "events": bench_events,
    "segments": bench_segments,
    "journeys": bench_journeys,
    "models": bench_all_models,  # the issue's `bench models`: clv and risk together
    "clv": bench_models,
    "risk": bench_risk,
    "privacy": bench_privacy,
}
