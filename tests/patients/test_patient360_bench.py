"""`careloop bench patient360` end to end on a tiny network: prepared once, timed against the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import careloop.bench.patient360_bench as p360
from careloop.bench.scenarios import SCENARIOS
from careloop.config import get_settings


def test_bench_patient360_prepares_once_and_reports_percentiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SCENARIOS["patient360"] is p360.bench_patient360
    monkeypatch.setattr(p360, "SAMPLE", 15)
    result = p360.bench_patient360(150, 3, tmp_path, get_settings(), 1)
    ready = json.loads((tmp_path / "patient360-150-3" / "ready.json").read_text(encoding="utf-8"))
    assert ready["linked"]["person"] > 100 and ready["linked"]["identity_link"] > ready["linked"]["person"]
    assert result.scenario == "patient360" and result.unit == "µs p95"
    details = result.details
    assert isinstance(details["careloop_us"], dict) and isinstance(details["baseline_us"], dict)
    assert 0 < details["careloop_us"]["p50"] <= details["careloop_us"]["p95"] <= details["careloop_us"]["p99"]
    assert round(result.figure) == details["careloop_us"]["p95"] and result.baseline > 0
    again = p360.bench_patient360(150, 3, tmp_path, get_settings(), 1)  # reuses the prepared store
    assert again.details["store"] == result.details["store"]
