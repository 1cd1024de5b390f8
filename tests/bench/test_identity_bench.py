"""`careloop bench identity`: careloop's dedupe against bare Splink on a small synthetic network."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest
from typer.testing import CliRunner

from careloop.bench.identity_bench import bench_identity, patient_union, prepare
from careloop.bench.scenarios import SCENARIOS, network
from careloop.cli import app


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


def test_union_holds_every_patient_record_with_its_truth(cache: Path, tmp_path: Path) -> None:
    root = network(cache, 1500, 3)
    n = patient_union(root, tmp_path / "u.parquet")
    truth = duckdb.sql(f"SELECT count(*) FROM '{root / 'truth' / 'identity.parquet'}'").fetchall()[0][0]
    assert n == truth
    sources = duckdb.sql(f"SELECT count(DISTINCT source) FROM '{tmp_path / 'u.parquet'}'").fetchall()[0][0]
    assert sources == len(list(root.glob("*/patient.parquet")))
    inp = prepare(root, tmp_path)
    assert inp.records == n and not any(str(v).startswith("unknown-") for v in inp.labels)
    assert {"name", "name_pinyin", "birth_str", "phone", "id_number", "address", "postcode"} <= set(
        inp.columns
    )


@pytest.mark.slow
def test_bench_identity_against_bare_splink_writes_its_row(cache: Path, tmp_path: Path) -> None:
    assert SCENARIOS["identity"] is bench_identity
    out = tmp_path / "benchmarks.md"
    args = [
        "bench",
        "identity",
        "--patients",
        "1500",
        "--seed",
        "3",
        "--cache",
        str(cache),
        "--output",
        str(out),
    ]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    (r,) = orjson.loads(res.stdout)
    assert r["scenario"] == "identity" and r["unit"] == "records/s"
    assert r["figure"] > 0 and r["baseline"] > 0 and r["ratio"] == pytest.approx(r["figure"] / r["baseline"])
    d = r["details"]
    assert r["size"] == f"1,500 patients ({d['records']:,} records)"
    # careloop's constrained clustering keeps precision; Splink's connected components may chain families
    assert d["careloop"]["precision"] >= 0.99 and d["careloop"]["f1"] >= 0.88
    assert 0.5 < d["baseline_scores"]["f1"] <= 1.0
    assert d["seconds"] > 0 and d["seconds_baseline"] > 0
    assert not list(cache.glob("careloop-bench-identity-*"))  # the work directory is removed
    row = next(
        line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| identity |")
    )
    assert "records/s" in row and "bare Splink" in row and "`careloop bench identity --patients 1500`" in row
