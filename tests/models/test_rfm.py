"""RFM: quantile scores with deterministic ties, the eight segments, transaction files and the store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.clock import FixedClock
from careloop.errors import ConfigError, ModelError
from careloop.models.rfm import (
    DEFAULTS,
    config_for,
    quantile_scores,
    rfm_from_store,
    rfm_from_transactions,
    score_rfm,
    write_rfm_traits,
)
from careloop.models.transactions import read_transactions
from careloop.profiles.segments import refresh_all, save_segment, stored_members
from careloop.storage import Backend

runner = CliRunner()
AS_OF = date(2026, 10, 31)


def test_distinct_values_fill_equal_quintiles_and_direction_flips_them() -> None:
    values = np.arange(10, dtype=float)
    assert quantile_scores(values, 5, True).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quantile_scores(values, 5, False).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert quantile_scores(np.arange(12, dtype=float), 3, True).tolist() == [1] * 4 + [2] * 4 + [3] * 4


def test_ties_share_a_score_whatever_the_row_order() -> None:
    values = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 7], dtype=float)  # 60% tied at 0
    scores = quantile_scores(values, 5, True)
    # mid-ranks: 0 -> 3.5, 1 -> 7.5, 2 -> 9, 7 -> 10; score = floor(5 * (mid - 0.5) / 10) + 1
    assert scores.tolist() == [2, 2, 2, 2, 2, 2, 4, 4, 5, 5]
    rng = np.random.default_rng(3)
    for _ in range(5):
        order = rng.permutation(len(values))
        shuffled = quantile_scores(values[order], 5, True)
        assert dict(zip(values[order], shuffled, strict=True)) == dict(zip(values, scores, strict=True))


def test_segments_follow_the_eight_cell_model() -> None:
    # eight persons, one per cell: R from recency (lower is better), F, M in halves; split at the mean score
    cells = ["HHH", "HLH", "LHH", "LLH", "HHL", "HLL", "LHL", "LLL"]
    recency = np.array([1.0 if c[0] == "H" else 100.0 for c in cells]) + np.arange(8) * 0.01
    frequency = np.array([10.0 if c[1] == "H" else 1.0 for c in cells]) + np.arange(8) * 0.01
    monetary = np.array([500.0 if c[2] == "H" else 5.0 for c in cells]) + np.arange(8) * 0.01
    result = score_rfm(
        np.array(cells, dtype=object), recency, frequency, monetary, {"bins": 2}, as_of=AS_OF, source="t"
    )
    assert result.pattern.tolist() == cells
    assert result.labels("zh").tolist() == [
        "重要价值",
        "重要发展",
        "重要保持",
        "重要挽留",
        "一般价值",
        "一般发展",
        "一般保持",
        "一般挽留",
    ]
    assert result.labels("en")[3] == "important to win back"
    sizes = {s["zh"]: s["count"] for s in result.segments()}
    assert set(sizes.values()) == {1}


def test_the_mapping_and_the_split_are_configuration() -> None:
    # the coarser scheme: 核心价值 / 潜力 / 流失风险 / 一般
    coarse = {
        "HHH": {"code": "core", "zh": "核心价值", "en": "core value"},
        "HLH": {"code": "potential", "zh": "潜力", "en": "potential"},
        "HHL": {"code": "potential", "zh": "潜力", "en": "potential"},
        "HLL": {"code": "potential", "zh": "潜力", "en": "potential"},
        "LHH": {"code": "at_risk", "zh": "流失风险", "en": "at risk"},
        "LLH": {"code": "at_risk", "zh": "流失风险", "en": "at risk"},
        "LHL": {"code": "at_risk", "zh": "流失风险", "en": "at risk"},
        "LLL": {"code": "ordinary", "zh": "一般", "en": "ordinary"},
    }
    values = np.arange(1, 11, dtype=float)
    result = score_rfm(
        np.arange(10).astype(object),
        values[::-1],  # the last has the lowest recency: most recent
        values,
        values,
        {"segments": coarse, "split": 3, "label": "code"},
        as_of=AS_OF,
        source="t",
    )
    # split 3: scores 4 and 5 are high; the top four persons score 4-5 on all three
    assert result.labels().tolist() == ["ordinary"] * 6 + ["core"] * 4
    sizes = {s["code"]: (s["pattern"], s["count"]) for s in result.segments()}
    assert sizes == {
        "core": ("HHH", 4),
        "potential": ("HLH HHL HLL", 0),
        "at_risk": ("LHH LLH LHL", 0),
        "ordinary": ("LLL", 6),
    }
    with pytest.raises(ConfigError, match="bins must be"):
        config_for({"bins": 1})
    with pytest.raises(ConfigError, match=r"direction\.recency"):
        config_for({"direction": {"recency": "up"}})
    with pytest.raises(ConfigError, match="unknown setting 'bin'"):
        config_for({"bin": 4})
    with pytest.raises(ConfigError, match=r"segments\.HHH needs"):
        config_for({"segments": {"HHH": {"zh": 5}}})
    assert DEFAULTS["bins"] == 5  # defaults untouched by merging


def _log(tmp_path: Path) -> Path:
    rows = [
        "customer_id,date,amount",
        "a,2026-10-30,100",
        "a,2026-10-30 18:00,50",  # same day: one purchase of 150
        "a,2026-09-01,20",
        "b,2026-01-05,10",
        "c,2026/10/01,400",
        "c,20261020,5",
        "d,2026-11-20,999",  # after the as-of day: ignored
        "d,2025-01-01,1",
    ]
    path = tmp_path / "tx.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_rfm_of_a_transaction_file_counts_purchase_days(tmp_path: Path) -> None:
    tx = read_transactions(_log(tmp_path), customer_col="customer_id", date_col="date", value_col="amount")
    result = rfm_from_transactions(tx, as_of=AS_OF)
    frame = result.frame().set_index("customer")
    assert frame.loc["a", "recency_days"] == 1 and frame.loc["a", "frequency"] == 2
    assert frame.loc["a", "monetary"] == 170
    assert frame.loc["c", "recency_days"] == 11 and frame.loc["c", "monetary"] == 405
    assert (
        frame.loc["d", "frequency"] == 1 and frame.loc["d", "recency_days"] == (AS_OF - date(2025, 1, 1)).days
    )
    assert frame.loc["a", "r"] == 5 and frame.loc["d", "r"] == 1
    # a window: frequency and monetary over the last 60 days only, recency from all history
    windowed = rfm_from_transactions(tx, {"window_days": 60}, as_of=AS_OF).frame().set_index("customer")
    assert windowed.loc["b", "frequency"] == 0 and windowed.loc["b", "monetary"] == 0
    assert windowed.loc["b", "recency_days"] == (AS_OF - date(2026, 1, 5)).days
    # without --as-of the as-of day is the log's last day (d's purchase on 2026-11-20)
    assert rfm_from_transactions(tx).as_of == date(2026, 11, 20)
    no_value = read_transactions(_log(tmp_path), customer_col="customer_id", date_col="date")
    with pytest.raises(ConfigError, match="value column"):
        rfm_from_transactions(no_value)


def test_cli_scores_a_file_and_refuses_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        app,
        [
            *("models", "rfm", "score", "--transactions", str(_log(tmp_path))),
            *("--as-of", "2026-10-31", "--output", str(out), "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["scored"] == 4 and report["as_of"] == "2026-10-31"
    assert sum(s["count"] for s in report["segments"]) == 4
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("customer,recency_days,frequency")
    human = runner.invoke(app, ["models", "rfm", "score", "--transactions", str(_log(tmp_path))])
    assert human.exit_code == 0 and "重要价值" in human.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "customer_id,date,amount\na,2026-10-01,5\na,yesterday,5\nb,2026-02-30,1\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["models", "rfm", "score", "--transactions", str(bad)])
    assert result.exit_code != 0
    assert "2 row(s) have a date in column 'date' that cannot be read" in result.output
    assert "lines 3, 4" in result.output
    result = runner.invoke(
        app, ["models", "rfm", "score", "--transactions", str(bad), "--value-col", "spend"]
    )
    assert result.exit_code == 2 and "'spend' (--value-col) not found" in result.output


def _trait(pid: str, trait: str, **v: object) -> dict[str, object]:
    stamp = datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC)  # end of 2026-10-31 in Asia/Shanghai
    return {
        "person_id": pid,
        "trait": trait,
        "key": "",
        "value_num": v.get("num"),
        "value_time": v.get("time"),
        "value_text": None,
        "as_of": stamp,
        "computed_at": stamp,
    }


def test_store_scores_are_written_as_traits_and_refresh_segments(backend: Backend, clock: FixedClock) -> None:
    store = backend.workspace("default")
    persons = [f"P{i:02d}" for i in range(20)]
    store.insert("person", [{"person_id": p} for p in persons])
    rows = []
    for i, p in enumerate(persons[:15]):  # five persons never filled: not scored
        last = datetime(2026, 10, 30, 2, 0, tzinfo=UTC) - timedelta(days=20 * i)
        rows.append(_trait(p, "last_fill_at", time=last))
        if i < 12:  # the three oldest fills fall outside the 365-day windows: F = M = 0
            rows.append(_trait(p, "fills_365d", num=float(12 - i)))
            rows.append(_trait(p, "spend_365d", num=float(100 * (12 - i))))
    store.insert("trait_value", rows)
    save_segment(store, "rfm_core", {"trait": "rfm_segment", "op": "=", "value": "重要价值"}, clock=clock)
    refresh_all(store, clock=clock)
    result = rfm_from_store(store, clock=clock)
    assert result.as_of == AS_OF  # the traits' as-of day
    assert result.size == 15 and result.not_scored == 5
    frame = result.frame().set_index("customer")
    assert frame.loc["P00", "recency_days"] == 1
    assert frame.loc["P14", "frequency"] == 0 and frame.loc["P14", "monetary"] == 0
    assert frame.loc["P00", "segment_zh"] == "重要价值" and frame.loc["P14", "segment_zh"] == "一般挽留"
    written = write_rfm_traits(store, result, clock=clock)
    assert {k: v["values"] for k, v in written.items()} == dict.fromkeys(
        ["rfm_r", "rfm_f", "rfm_m", "rfm_segment"], 15
    )
    stored = dict(store.tuples("SELECT person_id, value_text FROM trait_value WHERE trait = 'rfm_segment'"))
    assert stored["P00"] == "重要价值"
    core = {p for p, s in stored.items() if s == "重要价值"}
    total, members = stored_members(store, "rfm_core")
    assert total == len(core) > 0 and {m["person_id"] for m in members} == core
    # traits from a later day than --as-of are refused, not turned into negative recency
    with pytest.raises(ModelError, match="after the as-of day"):
        rfm_from_store(store, as_of=date(2026, 1, 1), clock=clock)


def test_store_without_traits_says_what_to_run(backend: Backend, clock: FixedClock) -> None:
    with pytest.raises(ModelError, match="careloop traits compute"):
        rfm_from_store(backend.workspace("default"), clock=clock)
