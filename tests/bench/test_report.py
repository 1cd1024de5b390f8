"""Benchmark rows in docs/benchmarks.md are replaced per scenario and size, never duplicated."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from careloop.bench.report import BenchResult, write_results


def _result(size: str, figure: float) -> BenchResult:
    return BenchResult(
        "ingest", size, figure, 1000.0, "rows/s", "DuckDB read_parquet", "careloop bench ingest"
    )


def test_rows_replaced_not_duplicated(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    when = datetime(2026, 11, 23, tzinfo=UTC)
    write_results(out, [_result("1,000 patients", 500.0)], when)
    write_results(out, [_result("100,000 patients", 400.0)], when)
    write_results(out, [_result("1,000 patients", 600.0)], when)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ingest")]
    assert len(rows) == 2
    assert any("600 rows/s" in r and "| 0.60 |" in r for r in rows)
    assert any("| 0.40 |" in r for r in rows)
