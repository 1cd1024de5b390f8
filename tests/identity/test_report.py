"""`careloop identity report`: figures from hand-filled identity tables, on DuckDB and PostgreSQL."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.clock import FixedClock
from careloop.errors import ConfigError, NotFoundError
from careloop.identity.matching import splink_settings
from careloop.identity.report import build_report, model_weights
from careloop.storage import Backend, connect
from careloop.storage.workspace import WorkspaceStore

runner = CliRunner()

# (source, patient_key, person_id, rule, match_probability)
LINKS: list[tuple[str, str, str, str, float | None]] = [
    ("his_a", "1", "U1", "id_number", None),
    ("wechat", "w1", "U1", "probabilistic", 0.995),
    ("crm", "c1", "U1", "probabilistic", 0.93),
    ("his_a", "2", "U2", "alone", None),
    ("his_a", "3", "U2", "probabilistic", 0.9),
    ("crm", "c2", "U3", "alone", None),
    ("app", "x1", "U5", "alone", None),
    *[("crm", f"m{i}", "U4", "manual", None) for i in range(11)],
]
# the truth: his_a 2 and 3 are two people (one false merge); crm c2 is the U1 person (three missed links);
# app x1 is not in the truth, app x2 is in the truth but not resolved
TRUTH: list[tuple[str, str, str]] = [
    ("his_a", "1", "T1"),
    ("wechat", "w1", "T1"),
    ("crm", "c1", "T1"),
    ("crm", "c2", "T1"),
    ("his_a", "2", "T2"),
    ("his_a", "3", "T3"),
    ("app", "x2", "T9"),
    *[("crm", f"m{i}", "T4") for i in range(11)],
]


def _model(prior: float) -> dict[str, Any]:
    """A saved Splink model in careloop's real format (the untrained priors of splink_settings)."""
    cols = ["name", "surname", "given_name", "name_pinyin", "name_sorted", "birth_str", "birth_swapped"]
    cols += ["birth_date", "birth_year", "sex", "phone"]
    model: dict[str, Any] = splink_settings(cols).get_settings("duckdb").as_dict()
    model["probability_two_random_records_match"] = prior
    return model


def _fill(store: WorkspaceStore, clock: FixedClock, *, households: bool = True) -> None:
    now = clock.now()
    store.insert(
        "identity_link",
        pa.Table.from_pylist(
            [
                {
                    "source": s,
                    "patient_key": k,
                    "person_id": p,
                    "rule": r,
                    "match_probability": m,
                    "run_id": "r2",
                    "linked_at": now,
                }
                for s, k, p, r, m in LINKS
            ],
            schema=pa.schema(
                [
                    ("source", pa.string()),
                    ("patient_key", pa.string()),
                    ("person_id", pa.string()),
                    ("rule", pa.string()),
                    ("match_probability", pa.float64()),
                    ("run_id", pa.string()),
                    ("linked_at", pa.timestamp("us", tz="UTC")),
                ]
            ),
        ),
    )
    store.insert(
        "identity_run",
        [
            {
                "run_id": run_id,
                "mode": mode,
                "started_at": now - timedelta(hours=age),
                "finished_at": now - timedelta(hours=age) + timedelta(minutes=1),
                "settings": orjson.dumps({"threshold": 0.9}).decode(),
                "model": orjson.dumps(_model(prior)).decode(),
                "summary": orjson.dumps({"records": len(LINKS)}).decode(),
            }
            for run_id, mode, age, prior in (("r1", "full", 5, 0.01), ("r2", "incremental", 1, 0.001))
        ],
    )
    store.insert("person", [{"person_id": p, "record_count": 1} for p in ("U1", "U2", "U3", "U4", "U5")])
    if households:
        store.insert(
            "household_member",
            [
                {"household_id": "H1", "person_id": "U1", "role": "head", "updated_at": now},
                {"household_id": "H1", "person_id": "U3", "role": "child", "updated_at": now},
                {"household_id": "H2", "person_id": "U4", "role": None, "updated_at": now},
            ],
        )


def _truth_file(path: Path, rows: list[tuple[str, str, str]] = TRUTH) -> Path:
    pq.write_table(
        pa.table({k: [r[i] for r in rows] for i, k in enumerate(("source", "patient_key", "person_id"))}),
        path,
    )
    return path


def test_report_figures(backend: Backend, clock: FixedClock, tmp_path: Path) -> None:
    store = backend.workspace("default")
    _fill(store, clock)
    r = build_report(store, _truth_file(tmp_path / "identity.parquet"))

    assert r["run"]["run_id"] == "r2" and r["run"]["mode"] == "incremental"
    assert r["run"]["settings"] == {"threshold": 0.9}
    assert (r["records"], r["persons"], r["golden_records"], r["largest_cluster"]) == (18, 5, 5, 11)
    assert r["records_per_person"] == pytest.approx(3.6)
    sizes = {s["size"]: (s["persons"], s["records"]) for s in r["cluster_sizes"]}
    assert list(sizes) == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10+"]
    assert sizes["1"] == (2, 2) and sizes["2"] == (1, 2) and sizes["3"] == (1, 3) and sizes["10+"] == (1, 11)
    assert sizes["4"] == (0, 0)

    rules = {x["rule"]: x for x in r["links_by_rule"]}
    assert rules["manual"]["records"] == 11 and rules["alone"]["records"] == 3
    assert rules["probabilistic"]["records"] == 3 and rules["probabilistic"]["persons"] == 2
    assert rules["probabilistic"]["min_probability"] == pytest.approx(0.9)
    assert rules["id_number"]["mean_probability"] is None

    assert {s["source"]: (s["records"], s["persons"]) for s in r["sources"]} == {
        "app": (1, 1),
        "crm": (13, 3),
        "his_a": (3, 2),
        "wechat": (1, 1),
    }
    assert r["sources_per_person"] == [{"sources": 1, "persons": 4}, {"sources": 3, "persons": 1}]
    assert r["source_overlap"] == [
        {"source_a": "crm", "source_b": "his_a", "persons": 1},
        {"source_a": "crm", "source_b": "wechat", "persons": 1},
        {"source_a": "his_a", "source_b": "wechat", "persons": 1},
    ]

    hist = r["match_probability"]
    assert hist["links"] == 3
    counts = {(b["from"], b["to"]): b["links"] for b in hist["bins"]}
    assert counts[(0.9, 0.95)] == 2 and counts[(0.99, 0.999)] == 1 and sum(counts.values()) == 3

    w = r["match_weights"]
    assert w["run_id"] == "r2"  # the latest run's model
    assert w["prior"]["probability_two_random_records_match"] == 0.001
    assert w["prior"]["match_weight"] == pytest.approx(math.log2(0.001 / 0.999), abs=1e-3)
    comps = {c["comparison"]: c["levels"] for c in w["comparisons"]}
    assert {"name", "birth_date", "sex", "phone"} <= comps.keys()
    exact_name = comps["name"][0]
    assert exact_name["m"] == 0.85 and exact_name["u"] == 4e-4
    assert exact_name["match_weight"] == pytest.approx(math.log2(0.85 / 4e-4), abs=1e-3)
    assert all(lvl["match_weight"] < 0 for lvl in (comps["name"][-1], comps["birth_date"][-1]))

    hh = r["households"]
    assert (hh["households"], hh["persons"]) == (2, 3)
    assert hh["sizes"] == [{"size": 1, "households": 1}, {"size": 2, "households": 1}]
    assert {x["role"]: x["persons"] for x in hh["roles"]} == {"head": 1, "child": 1, "unknown": 1}

    t = r["truth"]
    # predicted pairs: U1 3 + U2 1 + U4 55 = 59; true pairs: T1 6 + T4 55 = 61; correct: 3 + 55 = 58
    assert (t["predicted_pairs"], t["true_pairs"], t["true_positive_pairs"]) == (59, 61, 58)
    assert t["precision"] == pytest.approx(58 / 59) and t["recall"] == pytest.approx(58 / 61)
    assert t["f1"] == pytest.approx(2 * 58 / (59 + 61))
    assert (t["false_merge_pairs"], t["missed_link_pairs"]) == (1, 3)
    assert (t["records_scored"], t["records_without_truth"], t["truth_records_not_resolved"]) == (17, 1, 1)
    pairs = {
        (p["source_a"], p["source_b"]): (p["false_merge_pairs"], p["missed_link_pairs"])
        for p in t["by_source_pair"]
    }
    assert pairs == {
        ("his_a", "his_a"): (1, 0),
        ("crm", "crm"): (0, 1),
        ("crm", "his_a"): (0, 1),
        ("crm", "wechat"): (0, 1),
    }


def test_report_without_households_model_or_truth(backend: Backend, clock: FixedClock) -> None:
    store = backend.workspace("default")
    store.insert(
        "identity_link",
        [{"source": "a", "patient_key": "1", "person_id": "U1", "rule": "alone", "run_id": "r1"}],
    )
    r = build_report(store)
    assert r["run"] is None and r["match_weights"] is None and r["households"] is None and r["truth"] is None
    assert r["match_probability"]["links"] == 0 and r["source_overlap"] == []
    assert (r["records"], r["persons"], r["golden_records"]) == (1, 1, 0)


def test_no_resolution_yet_says_what_to_run(backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="run `careloop identity resolve"):
        build_report(backend.workspace("default"))


def test_truth_file_errors_name_the_missing_columns(
    backend: Backend, clock: FixedClock, tmp_path: Path
) -> None:
    store = backend.workspace("default")
    _fill(store, clock, households=False)
    bad = tmp_path / "truth.csv"
    bad.write_text("source,key,person\nhis_a,1,T1\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"lacks column\(s\) patient_key, person_id.*it has: source, key, person"
    ):
        build_report(store, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(store, tmp_path / "nope.parquet")
    dup = _truth_file(tmp_path / "dup.parquet", [*TRUTH, ("his_a", "1", "T7")])
    with pytest.raises(ConfigError, match="more than one person_id"):
        build_report(store, dup)


def test_truth_from_csv_scores_like_parquet(backend: Backend, clock: FixedClock, tmp_path: Path) -> None:
    store = backend.workspace("default")
    _fill(store, clock, households=False)
    csv_path = tmp_path / "truth.csv"
    duckdb.sql(f"COPY (SELECT * FROM '{_truth_file(tmp_path / 't.parquet')}') TO '{csv_path}' (HEADER)")
    assert build_report(store, csv_path)["truth"]["f1"] == pytest.approx(2 * 58 / 120)


def test_model_weights_ignores_a_degenerate_prior() -> None:
    out = model_weights({"probability_two_random_records_match": 1.0, "comparisons": []})
    assert out["prior"]["match_weight"] is None and out["comparisons"] == []


def _cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FixedClock) -> None:
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    monkeypatch.setenv("CARELOOP_DATABASE_URL", url)
    from careloop.config import get_settings

    get_settings.cache_clear()
    b = connect(url, clock=clock)
    try:
        _fill(b.workspace("default"), clock)
    finally:
        b.close()


def test_cli_report_json_and_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
) -> None:
    _cli_store(tmp_path, monkeypatch, clock)
    truth = _truth_file(tmp_path / "identity.parquet")
    res = runner.invoke(app, ["identity", "report", "--truth", str(truth), "--json"])
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.stdout)
    assert data["persons"] == 5 and data["truth"]["false_merge_pairs"] == 1
    res = runner.invoke(app, ["identity", "report", "--workspace", "default", "--truth", str(truth)])
    assert res.exit_code == 0, res.output
    for heading in (
        "cluster sizes",
        "links by rule",
        "source overlap",
        "match weights",
        "household sizes",
        "F1",
    ):
        assert heading in res.stdout
    assert "0.9831" in res.stdout  # precision 58/59


def test_cli_report_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FixedClock) -> None:
    res = runner.invoke(app, ["identity", "report", "--workspace", "nowhere"])
    assert res.exit_code != 0 and "workspace 'nowhere' does not exist" in res.output
    assert runner.invoke(app, ["workspace", "create", "default"]).exit_code == 0
    res = runner.invoke(app, ["identity", "report"])
    assert res.exit_code != 0 and "run `careloop identity resolve --workspace default` first" in res.output
    _cli_store(tmp_path, monkeypatch, clock)
    bad = tmp_path / "t.csv"
    bad.write_text("source,patient_key\na,1\n", encoding="utf-8")
    res = runner.invoke(app, ["identity", "report", "--truth", str(bad)])
    assert res.exit_code == 2 and "person_id" in res.output
