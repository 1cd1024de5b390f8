"""Benchmarks run by `careloop bench`: each scenario measures careloop against a baseline measured in
the same run, and the result is written as a row of docs/benchmarks.md."""

from careloop.bench.report import BenchResult, write_results
from careloop.bench.scenarios import SCENARIOS

__all__ = ["SCENARIOS", "BenchResult", "write_results"]
