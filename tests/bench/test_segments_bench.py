"""`careloop bench segments` at a small size: careloop and the hand-written SQL agree on all 20 segments."""

from __future__ import annotations

from pathlib import Path

from careloop.bench.segments_bench import bench_segments
from careloop.bench.segments_suite import definitions, handwritten
from careloop.config import get_settings


def test_the_suite_has_twenty_segments_each_written_by_hand() -> None:
    from datetime import date

    defs = definitions()
    assert len(defs) == 20 and set(handwritten(date(2026, 10, 31), "Asia/Shanghai")) == set(defs)


def test_segment_bench_runs_and_both_sides_select_the_same_persons(tmp_path: Path) -> None:
    full, incremental = bench_segments(2000, 3, tmp_path, get_settings(), 1)
    # the bench raises when careloop and the hand-written SQL disagree on any segment's members
    members = full.details["members"]
    assert isinstance(members, dict) and len(members) == 20
    assert all(0 < n < 2000 for n in members.values())  # the data exercises every definition
    assert full.figure > 0 and full.baseline > 0 and full.unit == "segments/s"
    assert incremental.unit == "ms" and incremental.figure > 0
    assert "2,000 patients, 60,000 events" in full.size
