"""Personas on DuckDB and PostgreSQL: planted groups are recovered with k chosen by the silhouette, the
descriptions name the defining traits in Chinese and English, runs are stored and deterministic; the
feature matrix imputes and scales as documented; the seed personas are segments."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from careloop.clock import FixedClock
from careloop.errors import ConfigError, NotFoundError
from careloop.profiles.features import build_features, load_feature_config, split_label
from careloop.profiles.personas import (
    assignments,
    build_personas,
    get_run,
    list_runs,
    load_seed_personas,
    person_persona,
    seed_personas,
)
from careloop.profiles.segments import count, get_segment, stored_members
from careloop.storage import Backend, WorkspaceStore
from tests.profiles.planted import GROUPS, plant, trait_row

AS_OF = date(2026, 10, 31)


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


def test_planted_groups_are_recovered_and_described(store: WorkspaceStore, clock: FixedClock) -> None:
    truth = plant(store)
    run = build_personas(store, clock=clock)
    assert run.k == 3, run.scores
    assert set(run.scores) == set(range(3, 9)) and run.scores[3] == max(run.scores.values())
    assert run.scores[3] - sorted(run.scores.values())[-2] > 0.05  # a clear winner, not the tie rule
    assert run.criterion.startswith("silhouette")
    got = assignments(store)
    persons = sorted(truth)
    assert adjusted_rand_score([truth[p] for p in persons], [got[p] for p in persons]) > 0.9
    # clusters are numbered by size: 50 young, 40 chronic, 30 elderly
    assert [c["size"] for c in run.clusters] == [g[0] for g in GROUPS.values()]
    assert sum(c["share"] for c in run.clusters) == pytest.approx(1.0, abs=1e-3)
    young, chronic, elderly = run.clusters
    assert "5A阶段多为「吸引 Appeal」（100%，总体42%）" in young["description_zh"]
    assert "5A stage mostly Appeal (100% vs 42% overall)" in young["description_en"]
    assert "年龄偏高" in elderly["description_zh"] and "age above average" in elderly["description_en"]
    assert young["description_zh"].startswith("约42%的患者（50人）：")
    assert young["description_en"].startswith("About 42% of patients (50): ")
    # the chronic group is the one with a PDC: a defining trait, with the cluster's and everyone's share
    pdc = next(d for d in chronic["defining"] if d["feature"] == "pdc_min")
    assert (
        pdc["kind"] == "has"
        and pdc["cluster_value"] == 1.0
        and pdc["population_value"] == pytest.approx(40 / 120, abs=1e-4)
    )
    assert "有慢病用药依从性PDC的比例较高（100%，总体33%）" in chronic["description_zh"]
    assert "more with a PDC (100% vs 33% overall)" in chronic["description_en"]
    age = next(d for d in elderly["defining"] if d["feature"] == "age")
    assert age["effect"] > 1 and 75 <= age["cluster_value"] <= 85 and age["population_value"] < 60
    assert f"均值{age['cluster_value']:.0f}岁" in elderly["description_zh"]
    # unused features say why; the as-of day is the traits'
    skipped = {f["skipped"]: f["reason"] for f in run.features if "skipped" in f}
    assert "careloop traits compute --trait app_events_30d" in skipped["app_events_30d"]
    assert run.as_of is not None and run.as_of.date() == AS_OF


def test_runs_are_stored_deterministic_and_readable(store: WorkspaceStore, clock: FixedClock) -> None:
    plant(store)
    first = build_personas(store, clock=clock)
    before = assignments(store)
    stored = get_run(store)
    assert stored.run_id == first.run_id and stored.k == first.k and stored.scores == first.scores
    assert stored.clusters == first.clusters
    second = build_personas(store, clock=clock)
    assert second.run_id != first.run_id and assignments(store) == before
    assert second.clusters == first.clusters
    assert store.scalar("SELECT count(*) FROM persona_member") == 120  # the latest run's only
    assert len(list_runs(store)) == 2 and get_run(store, first.run_id).k == first.k
    mine = person_persona(store, "P0000")
    assert mine["cluster"] == 1 and mine["description_zh"] == first.clusters[0]["description_zh"]
    forced = build_personas(store, k=4, clock=clock)
    assert forced.k == 4 and forced.scores == {} and len(forced.clusters) == 4
    with pytest.raises(NotFoundError, match="no persona run 'nope'"):
        get_run(store, "nope")
    with pytest.raises(ConfigError, match="k must be between"):
        build_personas(store, k=1, clock=clock)


def test_nothing_to_cluster_says_what_to_do(store: WorkspaceStore, clock: FixedClock) -> None:
    with pytest.raises(NotFoundError, match="run `careloop persona build` first"):
        get_run(store)
    store.insert("person", [{"person_id": "P1"}])
    with pytest.raises(NotFoundError, match="no traits computed; run `careloop traits compute` first"):
        build_personas(store, clock=clock)
    store.insert("trait_value", [trait_row("P1", "age", num=40.0)])
    with pytest.raises(ConfigError, match="at least 3 persons with different traits"):
        build_personas(store, clock=clock)


def test_feature_matrix_imputes_and_scales_as_documented(store: WorkspaceStore, clock: FixedClock) -> None:
    from tests.profiles.planted import AS_OF_END

    store.insert("person", [{"person_id": p} for p in ("A", "B", "C", "D")])
    t = AS_OF_END
    store.insert(
        "trait_value",
        [
            trait_row("A", "age", num=30.0),
            trait_row("B", "age", num=50.0),
            trait_row("C", "age", num=70.0),  # D has no age: the median (50), and has:age = 0
            trait_row("A", "visits_365d", num=3.0),  # the others have no visits: 0
            trait_row("A", "pdc", "CCB", num=0.9),
            trait_row("A", "pdc", "statin", num=0.4),  # pdc_min takes the lowest class
            trait_row("B", "pdc", "ARB", num=0.7),
            trait_row("A", "fills_365d", num=5.0),
            trait_row("A", "last_visit_at", time=t.replace(day=21)),  # 10 days before the as-of day
            trait_row("B", "last_visit_at", time=t.replace(year=2020)),  # over the cap: 730
            trait_row("A", "stage_5a", text="Act"),
            trait_row("B", "stage_5a", text="Aware"),  # C and D: no stage
        ],
    )
    fm = build_features(store, clock=clock)
    assert fm.persons == ["A", "B", "C", "D"]
    cols = {c.name: j for j, c in enumerate(fm.columns)}
    assert {"age", "has:age", "visits_365d", "pdc_min", "has:pdc_min", "fills_365d"} <= cols.keys()
    assert {"stage_5a=Act", "stage_5a=Aware", "stage_5a=(none)", "days_since_last_visit"} <= cols.keys()
    assert fm.x[:, cols["has:age"]].tolist() == [1, 1, 1, 0]
    assert np.isnan(fm.display["age"][3]) and fm.display["visits_365d"].tolist() == [3, 0, 0, 0]
    assert fm.display["pdc_min"][0] == 0.4 and fm.display["fills_365d"][0] == 5
    days = fm.display["days_since_last_visit"]
    assert days[0] == pytest.approx(10) and days[1] == 730 and np.isnan(days[2])
    assert fm.x[:, cols["stage_5a=(none)"]].tolist() == [0, 0, 1, 1]
    transform = {t["column"]: t for t in fm.transform}
    assert transform["age"]["fill"] == 50 and not transform["age"]["log1p"]
    assert transform["visits_365d"]["log1p"] and transform["visits_365d"]["fill"] == 0
    assert transform["days_since_last_visit"]["fill"] == 730
    for name in ("visits_365d", "fills_365d", "days_since_last_visit"):  # z-scores over everyone
        assert fm.x[:, cols[name]].mean() == pytest.approx(0) and fm.x[:, cols[name]].std() == pytest.approx(
            1
        )
    # median imputation: z-scores over the recorded values (30, 50, 70); D gets the median's (0)
    assert fm.x[:, cols["age"]].tolist() == pytest.approx([-1.2247, 0, 1.2247, 0], abs=1e-4)
    assert {s["feature"] for s in fm.skipped} >= {"no_shows_365d", "decision_type", "preferred_channel"}


def test_feature_definitions_are_checked(tmp_path: Path) -> None:
    assert split_label("偏好渠道（近90天事件最多）/ preferred channel (most events)") == (
        "偏好渠道",
        "preferred channel",
    )
    assert split_label("近一年药费 / pharmacy spend in the last 365 days (yuan)") == (
        "近一年药费",
        "pharmacy spend in the last 365 days",
    )
    config = load_feature_config()
    f = {x.name: x for x in config.features}
    assert f["visits_365d"].missing == "zero" and f["visits_365d"].log
    assert f["age"].missing == "median" and not f["age"].log and f["pdc_min"].missing == "median"
    assert (
        f["visits_365d"].label_zh == "近一年就诊次数"
        and f["visits_365d"].label_en == "visits in the last 365 days"
    )
    assert f["decision_type"].level_label("中度", "en") == "chronic maintenance"
    bad = {
        "nope": "`trait:`",
        "{trait: nope}": "not a trait",
        "{trait: pdc}": "one value per key",
        "{trait: age, how: days_since}": "needs a time trait",
        "{trait: stage_5a}": "text trait",
        "{trait: age, how: guess}": "`how` is one of",
        "{trait: age, missing: cap}": "`missing`",
        "{trait: age, colour: red}": "unknown field",
    }
    for spec, message in bad.items():
        path = tmp_path / "f.yaml"
        path.write_text(f"features:\n  x: {spec}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_feature_config(path)
    path.write_text("k_min: 5\nk_max: 3\nfeatures:\n  age: {trait: age}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="k_min <= k_max"):
        load_feature_config(path)


def _seed_population(store: WorkspaceStore) -> None:
    rows, persons = [], []
    ages = [10, 25, 30, 35, 36, 44, 45, 50, 60, 65, 66, 70, 90, 2]
    female = {1, 3, 4}  # 25, 35 and 36
    for i, age in enumerate(ages):
        pid = f"S{i:02d}"
        persons.append({"person_id": pid})
        rows.append(trait_row(pid, "age", num=float(age)))
        rows.append(trait_row(pid, "sex", text="female" if i in female else "male"))
        if i % 2 == 0:  # even persons fill chronic medication (decision type 中度)
            rows.append(trait_row(pid, "decision_type", text="中度"))
        elif i % 3 == 0:  # some odd ones have a PDC for a chronic class without the decision type
            rows.append(trait_row(pid, "pdc", "statin", num=0.8))
            rows.append(trait_row(pid, "decision_type", text="重度"))
    store.insert("person", persons)
    store.insert("trait_value", rows)
    store.insert(  # the 44-year-old father of the 2-year-old
        "household_member",
        [{"household_id": "H1", "person_id": "S05"}, {"household_id": "H1", "person_id": "S13"}],
    )


def test_seed_personas_are_segments_counted_correctly(
    store: WorkspaceStore, clock: FixedClock, tmp_path: Path
) -> None:
    _seed_population(store)
    out = seed_personas(store, refresh=True, as_of=AS_OF, clock=clock)
    assert [r["name"] for r in out] == ["慢病管理", "母婴", "老年"]
    assert all(r["status"] == "created" and r["version"] == 1 for r in out)
    members = {r["name"]: r["members"] for r in out}
    # ages 45..65 inclusive: 45 (i=6, even), 50 (i=7, odd, not %3), 60 (i=8, even), 65 (i=9, %3 statin)
    # 母婴: the women of 25 and 35 (not the man of 30, not the woman of 36) and the 44-year-old father of a
    # 2-year-old; 老年: 65, 66, 70, 90 (65 is in both 慢病管理 and 老年)
    assert members == {"慢病管理": 3, "母婴": 3, "老年": 4}
    assert [p["person_id"] for p in stored_members(store, "慢病管理")[1]] == ["S06", "S08", "S09"]
    assert count(store, get_segment(store, "老年").definition, as_of=AS_OF) == 4
    assert "45–65" in get_segment(store, "慢病管理").description
    again = seed_personas(store, clock=clock)
    assert all(r["status"] == "unchanged" and r["version"] == 1 for r in again)
    changed = tmp_path / "seeds.yaml"
    changed.write_text(
        "personas:\n  老年:\n    en: older adults\n    definition: {trait: age, op: '>=', value: 70}\n",
        encoding="utf-8",
    )
    assert seed_personas(store, changed, clock=clock) == [
        {"name": "老年", "en": "older adults", "version": 2, "status": "updated"}
    ]
    assert len(load_seed_personas()) == 3
    changed.write_text(
        "personas:\n  老年:\n    definition: {trait: age, op: '~', value: 70}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="`op` is one of"):
        load_seed_personas(changed)


def test_persona_cli(tmp_path: Path) -> None:
    from careloop.cli import app
    from careloop.storage import connect

    runner = CliRunner()
    r = runner.invoke(app, ["persona", "show"])
    assert r.exit_code == 1 and "careloop persona build" in r.output
    backend = connect()
    try:
        plant(backend.workspace("default"))
    finally:
        backend.close()
    out = orjson.loads(runner.invoke(app, ["persona", "build", "--json"]).stdout)
    assert out["k"] == 3 and [c["size"] for c in out["clusters"]] == [50, 40, 30]
    r = runner.invoke(app, ["persona", "show"])
    assert r.exit_code == 0 and "年龄偏高" in r.output and "age above average" in r.output, r.output
    shown = orjson.loads(runner.invoke(app, ["persona", "show", out["run_id"], "--json"]).stdout)
    assert shown["clusters"] == out["clusters"]
    mine = orjson.loads(runner.invoke(app, ["persona", "show", "--person", "P0119", "--json"]).stdout)
    assert mine["cluster"] == 3
    runs = orjson.loads(runner.invoke(app, ["persona", "runs", "--json"]).stdout)
    assert [x["run_id"] for x in runs] == [out["run_id"]]
    seeded = orjson.loads(
        runner.invoke(app, ["persona", "seed", "--refresh", "--as-of", "2026-10-31", "--json"]).stdout
    )
    assert {r["name"]: r["members"] for r in seeded} == {"慢病管理": 40, "母婴": 50, "老年": 30}
    r = runner.invoke(app, ["persona", "seed"])
    assert r.exit_code == 0 and "unchanged" in r.output
    r = runner.invoke(app, ["persona", "build", "--k", "1"])
    assert r.exit_code == 2 and "k must be between" in r.output
    bad = tmp_path / "f.yaml"
    bad.write_text("features:\n  x: {trait: nope}\n", encoding="utf-8")
    r = runner.invoke(app, ["persona", "build", "--features", str(bad)])
    assert r.exit_code == 2 and "not a trait" in r.output


def test_keyed_traits_aggregate_over_their_keys(
    store: WorkspaceStore, clock: FixedClock, tmp_path: Path
) -> None:
    store.insert("person", [{"person_id": p} for p in ("A", "B")])
    store.insert(
        "trait_value",
        [
            trait_row("A", "fills_365d_by_channel", "retail", num=2.0),
            trait_row("A", "fills_365d_by_channel", "hospital", num=3.0),
            trait_row("B", "fills_365d_by_channel", "online", num=1.0),
        ],
    )
    path = tmp_path / "f.yaml"
    path.write_text(
        "features:\n  fills: {trait: fills_365d_by_channel, how: sum}\n"
        "  most: {trait: fills_365d_by_channel, how: max}\n",
        encoding="utf-8",
    )
    fm = build_features(store, load_feature_config(path), clock=clock)
    assert fm.display["fills"].tolist() == [5, 1] and fm.display["most"].tolist() == [3, 1]
