"""Lookalikes on DuckDB and PostgreSQL: planted look-alikes of a seed outrank everyone else, a band-shaped
seed (age 45–65) finds the band's near misses, the held-out AUC is reported, errors say what to do."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import orjson
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from careloop.clock import FixedClock
from careloop.errors import ConfigError, NotFoundError
from careloop.profiles.lookalike import lookalike
from careloop.profiles.segments import refresh, save_segment
from careloop.storage import Backend, WorkspaceStore
from tests.profiles.planted import plant, trait_row

AS_OF = date(2026, 10, 31)
SEED = "应答者"


def plant_responders(store: WorkspaceStore, clock: FixedClock) -> dict[str, str]:
    """The planted groups; half of the chronic group responded to a campaign (a trait the persona features
    do not use): they are the seed, the other half its planted look-alikes."""
    truth = plant(store)
    chronic = sorted(p for p, g in truth.items() if g == "chronic")
    store.insert("trait_value", [trait_row(p, "responded", num=1.0) for p in chronic[::2]])
    save_segment(store, SEED, {"trait": "responded", "op": "=", "value": 1}, clock=clock)
    assert refresh(store, SEED, as_of=AS_OF, clock=clock)["members"] == 20
    return truth


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


def test_planted_lookalikes_rank_first(store: WorkspaceStore, clock: FixedClock) -> None:
    truth = plant_responders(store, clock)
    result = lookalike(store, SEED, top=200, clock=clock)
    assert result.seed_members == 20 and result.candidates == 100 and len(result.top) == 100
    seed = set(sorted(p for p, g in truth.items() if g == "chronic")[::2])
    ranked = [r["person_id"] for r in result.top]
    assert not seed & set(ranked)  # members are never ranked
    planted = [truth[p] == "chronic" for p in ranked]
    assert all(planted[:20]) and not any(planted[20:])  # the 20 look-alikes first, then everyone else
    scores = [r["score"] for r in result.top]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in result.top] == list(range(1, 101))
    assert roc_auc_score(planted, scores) == 1.0
    # held out: 4 of the seed and 20 of the others (some of them planted look-alikes, which score high)
    assert result.holdout == {"seed": 4, "others": 20}
    assert result.auc is not None and 0.75 <= result.auc <= 1.0
    # why: each lookalike's reasons name the traits the seed shares, in both languages
    reasons = result.top[0]["because"]
    assert reasons and all(b["weight"] > 0 for b in reasons)
    assert {b["feature"] for b in reasons} & {"pdc_min", "decision_type", "spend_365d", "stage_5a"}
    assert all("：" in b["text_zh"] and ": " in b["text_en"] for b in reasons)
    assert {d["feature"] for d in result.distinguishing} & {"pdc_min", "decision_type", "spend_365d"}
    assert "logistic regression" in result.method


def test_a_band_shaped_seed_finds_its_near_misses(store: WorkspaceStore, clock: FixedClock) -> None:
    """A linear score would push everyone towards one end of the age range; the splines learn the band."""
    store.insert("person", [{"person_id": f"A{age}"} for age in range(20, 91)])
    store.insert("trait_value", [trait_row(f"A{age}", "age", num=float(age)) for age in range(20, 91)])
    save_segment(store, "中年", {"trait": "age", "op": "between", "value": [45, 65]}, clock=clock)
    refresh(store, "中年", as_of=AS_OF, clock=clock)
    result = lookalike(store, "中年", top=4, clock=clock)
    ages = sorted(int(r["person_id"][1:]) for r in result.top)
    assert all(40 <= a <= 70 for a in ages), ages
    assert result.top[0]["because"][0]["text_zh"].startswith("年龄：")
    assert result.top[0]["because"][0]["text_en"].startswith("age: ")


def test_lookalike_errors_say_what_to_do(store: WorkspaceStore, clock: FixedClock) -> None:
    plant(store)
    with pytest.raises(NotFoundError, match="no segment 'nope'"):
        lookalike(store, "nope", clock=clock)
    save_segment(store, "老年", {"trait": "age", "op": ">=", "value": 65}, clock=clock)
    with pytest.raises(ConfigError, match="run `careloop segment refresh 老年` first"):
        lookalike(store, "老年", clock=clock)
    save_segment(store, "最老", {"trait": "age", "op": ">=", "value": 84}, clock=clock)
    refresh(store, "最老", as_of=AS_OF, clock=clock)
    with pytest.raises(ConfigError, match="needs at least 10"):
        lookalike(store, "最老", clock=clock)
    save_segment(store, "所有人", {"trait": "age", "op": ">=", "value": 0}, clock=clock)
    refresh(store, "所有人", as_of=AS_OF, clock=clock)
    with pytest.raises(ConfigError, match="nobody is left to rank"):
        lookalike(store, "所有人", clock=clock)
    with pytest.raises(ConfigError, match="at least 1"):
        lookalike(store, "所有人", top=0, clock=clock)


def test_lookalike_cli(tmp_path: Path) -> None:
    from careloop.cli import app
    from careloop.storage import connect

    backend = connect()
    try:
        plant_responders(backend.workspace("default"), FixedClock(backend.clock.now()))
    finally:
        backend.close()
    runner = CliRunner()
    out = orjson.loads(runner.invoke(app, ["lookalike", SEED, "--top", "5", "--json"]).stdout)
    assert out["seed_members"] == 20 and len(out["top"]) == 5 and out["auc"] is not None
    r = runner.invoke(app, ["lookalike", SEED, "--top", "3", "--output", str(tmp_path / "l.csv")])
    assert r.exit_code == 0 and "held-out AUC" in r.output and "依据" in r.output, r.output
    with (tmp_path / "l.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [x["person_id"] for x in rows] == [x["person_id"] for x in out["top"][:3]]
    r = runner.invoke(app, ["lookalike", "nope"])
    assert r.exit_code == 1 and "careloop segment list" in r.output
