"""Benchmark results and the docs/benchmarks.md table they are written to."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

HEADER = """# Benchmarks

Written by `careloop bench` (see docs/benchmarks-guide.md). Each row compares careloop with a baseline
measured in the same run on the same machine; the ratio is careloop / baseline (higher is better for
throughput in rows/s, records/s or events/s, lower is better for latency in µs or ms). Rows are replaced when a scenario is re-run at the same size.

| scenario | size | careloop | baseline | ratio | machine | date | command |
| --- | --- | --- | --- | --- | --- | --- | --- |
"""


@dataclass
class BenchResult:
    scenario: str
    size: str
    figure: float
    baseline: float
    unit: str
    baseline_name: str
    command: str
    details: dict[str, object] = field(default_factory=dict)
    note: str = ""  # shown after careloop's figure (e.g. its p50)
    baseline_note: str = ""  # shown after the baseline's figure

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")

    def row(self, machine: str, when: datetime) -> str:
        ratio = f"{self.ratio:.2f}" if self.ratio >= 0.01 else f"{self.ratio:.4f}"  # small latency ratios
        return (
            f"| {self.scenario} | {self.size} | {_num(self.figure)} {self.unit}{_paren(self.note)} | "
            f"{_num(self.baseline)} {self.unit}{_paren(self.baseline_note)} ({self.baseline_name}) | "
            f"{ratio} | {machine} | "
            f"{when:%Y-%m-%d} | `{self.command}` |"
        )


def _paren(note: str) -> str:
    return f" ({note})" if note else ""


def _num(x: float) -> str:
    return f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"


def machine_description() -> str:
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return (
        f"{os.cpu_count()} cores{mem}, {platform.machine()}, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}"
    )


def write_results(path: Path, results: list[BenchResult], when: datetime) -> None:
    """Insert or replace the rows of `results` in the markdown table at `path`."""
    machine = machine_description()
    existing: list[str] = []
    if path.exists():
        existing = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| (?!scenario|---)", line)
        ]
    keep = [
        line for line in existing if not any(line.startswith(f"| {r.scenario} | {r.size} |") for r in results)
    ]
    rows = keep + [r.row(machine, when) for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "\n".join(sorted(rows)) + "\n", encoding="utf-8")
