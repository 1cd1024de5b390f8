"""Churn, no-show and refill risk on the synthetic network, against its planted truth (issue 6).

Done when: the churn and no-show models recover the planted drivers (their reason codes name them) and
beat a recency-only baseline in the same time-split backtest. The network (8,000 patients, seed 7) goes
through the real pipeline: generate -> ingest -> identity resolve; the models read only the store, the
truth files are read only to check them.

The generator plants churn at one date (truth ``cutoff_date``, as-of − 89 days): every churner stops
then. So the backtest windows sit after it — horizon 30 days, training cut-offs cutoff − 1, + 14 and
+ 29 (stacked), test cut-off + 59 — which are exactly the defaults for a 30-day horizon with 15-day
snapshot steps on this data (docs/models.md explains why the 90-day default cannot see planted churn).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.identity.resolve import resolve
from careloop.ingest.pipeline import Ingestor
from careloop.models import churn, noshow, refill
from careloop.models.base import ModelCard
from careloop.models.reasons import reasons
from careloop.models.risk_features import (
    NO_DAY,
    NO_SHOW,
    Activity,
    class_supply,
    from_day,
    load_activity,
    person_features,
    to_day,
)
from careloop.profiles.adherence import Fill, class_adherence
from careloop.storage import connect
from careloop.synth import generate_network

pytestmark = pytest.mark.slow

PATIENTS = 8000
SEED = 7
AS_OF = date(2026, 10, 31)
CHURN_CONFIG: dict[str, Any] = {"horizon_days": 30, "grace_days": 10, "snapshot_step_days": 15}
#: the churn drivers the generator plants (careloop.synth.churn) and the features that measure them
PLANTED_CHURN = {
    "cancellations_180d",
    "ignored_follow_ups_180d",
    "app_activity_trend",
    "satisfaction_change",
    "distance_km",
    "monthly_drug_cost",
    "age",
}
SEED_SIGNALS = ("cancellations_180d", "ignored_follow_ups_180d", "app_activity_trend", "satisfaction_change")
#: the no-show drivers the generator plants (careloop.synth.appointments) that a booking shows
PLANTED_NOSHOW = {
    "lead_days",
    "prior_no_shows",
    "prior_no_show_rate",
    "provider_distance_km",
    "org_level",
    "age",
    "weekday",
    "channel",
    "visit_type",
}


@dataclass
class Net:
    root: Path
    url: str
    key_file: Path

    @property
    def truth(self) -> Path:
        return self.root / "net" / "truth"


@dataclass
class Fitted:
    net: Net
    act: Activity
    churn_card: ModelCard
    churn_model: churn.ChurnModel
    noshow_card: ModelCard
    noshow_model: noshow.NoShowModel
    truth_of: dict[str, str]  # store person -> truth person (the one with most of its records)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("risk-net")
    url = f"duckdb:///{root / 'careloop.duckdb'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARELOOP_KEY_FILE", str(root / "keys.json"))
        mp.setenv("CARELOOP_DATABASE_URL", url)
        mp.setenv("CARELOOP_ENVIRONMENT", "test")
        get_settings.cache_clear()
        generate_network(root / "net", PATIENTS, seed=SEED, as_of=AS_OF)
        backend = connect(url)
        try:
            Ingestor(backend, "default").ingest(root / "net", "parquet")
            resolve(backend.workspace("default"), clock=backend.clock)
        finally:
            backend.close()
    get_settings.cache_clear()
    yield Net(root, url, root / "keys.json")


@pytest.fixture(scope="module")
def fitted(net: Net) -> Fitted:
    backend = connect(net.url)
    try:
        store = backend.workspace("default")
        act = load_activity(store, "Asia/Shanghai")
        churn_card, churn_model = churn.fit(store, config=CHURN_CONFIG, activity=act)
        noshow_card, noshow_model = noshow.fit(store, activity=act)
    finally:
        backend.close()
    con = duckdb.connect(net.url.removeprefix("duckdb:///"), read_only=True)
    try:
        rows = con.execute(
            f"SELECT l.person_id, t.person_id, count(*) FROM read_parquet('{net.truth / 'identity.parquet'}') t "
            "JOIN identity_link l ON l.source = t.source AND l.patient_key = t.patient_key GROUP BY 1, 2 ORDER BY 3"
        ).fetchall()
    finally:
        con.close()
    truth_of = {store_p: truth_p for store_p, truth_p, _ in rows}  # ordered by count: the largest wins
    return Fitted(net, act, churn_card, churn_model, noshow_card, noshow_model, truth_of)


def _truth(net: Net, name: str, key: str) -> dict[Any, dict[str, Any]]:
    """Truth rows by `key` (a column, or an SQL expression aliased as ``k``)."""
    con = duckdb.connect()
    try:
        rel = con.sql(f"SELECT *, {key} AS k FROM read_parquet('{net.truth / name}.parquet')")
        key = "k"
        cols = rel.columns
        return {r[cols.index(key)]: dict(zip(cols, r, strict=True)) for r in rel.fetchall()}
    finally:
        con.close()


def _cutoff(net: Net) -> date:
    """The generator's churn cut-off: the first day of its outcome window."""
    con = duckdb.connect()
    try:
        got = con.execute(
            f"SELECT min(cutoff_date) FROM read_parquet('{net.truth / 'churn.parquet'}')"
        ).fetchall()
    finally:
        con.close()
    value = got[0][0]
    return value.date() if hasattr(value, "date") and callable(value.date) else value  # type: ignore[no-any-return]


def _flagged_reasons(
    classifier: Any, x: np.ndarray[Any, Any], columns: tuple[str, ...], share: float, levels: Any = None
) -> tuple[np.ndarray[Any, Any], list[list[Any]]]:
    p = classifier.predict(x)
    top = np.argsort(-p, kind="stable")[: max(1, int(len(p) * share))]
    why = reasons(classifier.contributions(x), x, columns, levels=levels)
    return top, why


# ---------------------------------------------------------------- churn


def test_churn_beats_recency_and_its_reasons_name_the_planted_drivers(fitted: Fitted) -> None:
    r = fitted.churn_card.report
    cutoff = _cutoff(fitted.net)
    # the windows are the defaults for this horizon: test = data end - 30, training stacked before it
    assert r["test_cutoff"] == (cutoff + timedelta(days=59)).isoformat()
    assert r["train_cutoffs"] == ", ".join(str(cutoff + timedelta(days=d)) for d in (-1, 14, 29))
    assert r["train_rows"] > 1500 and r["test_rows"] > 400 and r["test_positives"] > 80
    # measured (8,000 patients, seed 7): AUC 0.843 vs recency only 0.791 (+0.052); logistic 0.807
    assert r["auc"] >= 0.78
    assert r["auc_vs_baseline"] is not None and r["auc_vs_baseline"] >= 0.02
    assert r["auc_vs_baseline"] == pytest.approx(r["auc"] - r["baseline_auc"], abs=1e-4)
    assert [m["model"] for m in r["models"]][1].startswith("recency only")
    assert r["ece"] < 0.12 and r["brier"] < r["test_base_rate"] * (1 - r["test_base_rate"])
    assert [row["decile"] for row in r["lift"]] == list(range(1, 11)) and r["lift"][0]["lift"] > 2
    top_features = [d["feature"] for d in r["drivers"][:10]]
    assert len(PLANTED_CHURN & set(top_features)) >= 3, top_features

    # reason codes of the 20 % highest risks in the test window name the planted drivers ...
    model = fitted.churn_model
    tab = churn.table(fitted.act, to_day(date.fromisoformat(r["test_cutoff"])), model.config)
    top, why = _flagged_reasons(model.classifier, tab.frame.values, tab.frame.columns, 0.2)
    named = Counter(reason.feature for i in top for reason in why[i])
    # measured (seed 7): distance 51, cost 25, app trend 23, satisfaction 17, age 9, ignored 7, cancellations 0
    # (which drivers a sample of ~2,000 training rows picks up varies; seeds 3 and 11 name 5-6 of 7 too);
    # after booking evidence linked a few hundred more records (2026-11-26; AUC 0.843 -> 0.840, one test
    # row fewer): distance 56, cost 27, ignored 12, satisfaction 8, app trend 6
    assert len(PLANTED_CHURN & set(named)) >= 5, named
    assert len(set(SEED_SIGNALS) & set(named)) >= 3, named
    assert sum(named[f] for f in PLANTED_CHURN) >= 0.5 * len(top), named
    # ... and they are right about the patient: the truth agrees with what the reason says
    truth = _truth(fitted.net, "churn", "person_id")
    checks = {
        "cancellations_180d": lambda t: t["cancelled_appointments_180d"] >= 1,
        "satisfaction_change": lambda t: (
            t["satisfaction_change"] is not None and t["satisfaction_change"] < 0
        ),
        "distance_km": lambda t: t["distance_km"] >= 15,
    }  # not monthly_drug_cost: ours is the list price, the planted driver the out-of-pocket part
    checked = 0
    for feature, holds in checks.items():
        rows = [
            truth[fitted.truth_of[str(fitted.act.persons[tab.rows[i]])]]
            for i in top
            for reason in why[i]
            if reason.feature == feature
            and fitted.truth_of.get(str(fitted.act.persons[tab.rows[i]])) in truth
        ]
        if len(rows) >= 5:  # features named often enough to judge (satisfaction: 17 or 8 times, see above)
            checked += 1
            assert sum(map(holds, rows)) >= 0.75 * len(rows), (feature, sum(map(holds, rows)), len(rows))
    assert checked >= 2
    texts = [reason.text for i in top for reason in why[i] if reason.feature == "satisfaction_change"]
    assert texts and all("满意度评分下降" in t and "satisfaction down" in t for t in texts)


def test_churn_signals_measure_what_the_generator_planted(fitted: Fitted) -> None:
    """At the planted cut-off (the day before it), the four signals match the truth's driver values."""
    truth = _truth(fitted.net, "churn", "person_id")
    cutoff = _cutoff(fitted.net)
    frame = person_features(fitted.act, to_day(cutoff) - 1)
    by_truth = {t: s for s, t in fitted.truth_of.items()}
    rows = [(t, by_truth[p]) for p, t in truth.items() if t["active_at_cutoff"] and p in by_truth]
    idx = fitted.act.index_of([s for _, s in rows])

    def corr(feature: str, column: str, transform: Any = lambda v: v) -> float:
        ours = transform(frame.col(feature)[idx])
        theirs = transform(np.array([np.nan if t[column] is None else float(t[column]) for t, _ in rows]))
        ok = ~np.isnan(ours) & ~np.isnan(theirs)
        return float(np.corrcoef(ours[ok], theirs[ok])[0, 1])

    # measured: 0.96, 0.76, 0.77 (log ratio), 0.997, 0.88
    assert corr("cancellations_180d", "cancelled_appointments_180d") > 0.9
    assert corr("ignored_follow_ups_180d", "ignored_follow_ups_180d") > 0.6
    assert corr("app_activity_trend", "app_activity_ratio", np.log) > 0.65
    assert corr("satisfaction_change", "satisfaction_change") > 0.95
    assert corr("distance_km", "distance_km") > 0.8


def test_churn_windows_refuse_leaking_or_incomplete_labels(fitted: Fitted) -> None:
    end = from_day(fitted.act.data_end)
    cfg = {**churn.DEFAULTS, **CHURN_CONFIG}
    with pytest.raises(ConfigError, match="would reach past the test cut-off"):
        churn.windows(fitted.act, cfg, [end - timedelta(days=50)], end - timedelta(days=40))
    with pytest.raises(ConfigError, match="store's data ends"):
        churn.windows(fitted.act, cfg, None, end - timedelta(days=10))
    t1s, t2 = churn.windows(fitted.act, cfg, None, None)
    assert t2 == fitted.act.data_end - 30 and t1s == [t2 - 30 - 30, t2 - 30 - 15, t2 - 30]


def _truncated(act: Activity, t: int) -> Activity:
    """The activity as it was known at the end of day t."""
    from dataclasses import replace

    f = act.fill_day <= t
    v = act.visit_day <= t
    c = act.care_day <= t
    a = act.appt_known_day <= t
    e = act.event_day <= t
    fb = act.fb_day <= t
    fu = act.fu_day <= t
    return replace(
        act,
        fill_person=act.fill_person[f],
        fill_day=act.fill_day[f],
        fill_supply=act.fill_supply[f],
        fill_drug=act.fill_drug[f],
        fill_class=act.fill_class[f],
        fill_retail=act.fill_retail[f],
        fill_amount=act.fill_amount[f],
        visit_person=act.visit_person[v],
        visit_day=act.visit_day[v],
        visit_chronic=act.visit_chronic[v],
        visit_org=act.visit_org[v],
        care_person=act.care_person[c],
        care_day=act.care_day[c],
        appt_person=act.appt_person[a],
        appt_key=act.appt_key[a],
        appt_at=act.appt_at[a],
        appt_day=act.appt_day[a],
        appt_booked_day=act.appt_booked_day[a],
        appt_known_day=act.appt_known_day[a],
        appt_status=act.appt_status[a],
        appt_channel=act.appt_channel[a],
        appt_org=act.appt_org[a],
        appt_specialty=act.appt_specialty[a],
        event_person=act.event_person[e],
        event_day=act.event_day[e],
        fb_person=act.fb_person[fb],
        fb_day=act.fb_day[fb],
        fb_score=act.fb_score[fb],
        fu_person=act.fu_person[fu],
        fu_day=act.fu_day[fu],
        fu_engaged_day=np.where(act.fu_engaged_day <= t, act.fu_engaged_day, -NO_DAY)[fu],
    )


def test_features_read_nothing_after_the_cutoff(fitted: Fitted) -> None:
    """Leakage: the features as of T are the same whether or not the store holds later data."""
    t = fitted.act.data_end - 75
    full = person_features(fitted.act, t)
    cut = person_features(_truncated(fitted.act, t), t)
    np.testing.assert_array_equal(np.isnan(full.values), np.isnan(cut.values))
    np.testing.assert_allclose(np.nan_to_num(full.values), np.nan_to_num(cut.values))
    # appointments: features as of the booking day, whatever happened later
    rows = noshow.outcome_rows(fitted.act, t - 30, t)
    later = noshow.appointment_features(fitted.act, rows)
    small = _truncated(fitted.act, t)
    keep = noshow.outcome_rows(small, t - 30, t)
    np.testing.assert_allclose(
        np.nan_to_num(later.values), np.nan_to_num(noshow.appointment_features(small, keep).values)
    )


def test_supply_per_class_matches_the_pqa_reference(fitted: Fitted) -> None:
    act, t = fitted.act, fitted.act.data_end - 40
    cs = class_supply(act, t)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(cs.person), size=min(300, len(cs.person)), replace=False):
        sel = (act.fill_person == cs.person[i]) & (act.fill_class == cs.klass[i]) & (act.fill_day <= t)
        sel &= act.fill_day > t - 730
        fills = [
            Fill("p", str(d), str(cs.klass[i]), from_day(int(day)), int(s))
            for d, day, s in zip(act.fill_drug[sel], act.fill_day[sel], act.fill_supply[sel], strict=True)
        ]
        ref = class_adherence("p", str(cs.klass[i]), fills, from_day(t - 364), from_day(t))
        assert ref.run_out_date is not None and to_day(ref.run_out_date) == cs.run_out[i]
        assert ref.fills == cs.fills[i]
        if ref.pdc is None:
            assert math.isnan(cs.pdc[i])
        else:
            assert cs.pdc[i] == pytest.approx(ref.pdc)


def test_churn_scores_are_written_as_traits_and_feed_segments(fitted: Fitted, tmp_path: Path) -> None:
    from careloop.profiles.segments import save_segment, stored_members

    backend = connect(fitted.net.url)
    try:
        store = backend.workspace("default")
        save_segment(
            store, "流失高风险", {"trait": "churn_risk", "op": ">=", "value": 0.5}, clock=backend.clock
        )
        scores, act, t = churn.score(store, fitted.churn_model, as_of=AS_OF, activity=fitted.act)
        written = churn.write(store, scores, act, t, clock=backend.clock)
        assert written["churn_risk"] == len(scores) > 300
        assert written["churn_reasons"] >= len(scores)
        high = sum(s.risk >= 0.5 for s in scores)
        assert stored_members(store, "流失高风险")[0] == high > 0
        got = dict(
            store.tuples(
                "SELECT key, value_text FROM trait_value WHERE trait = 'churn_reasons' AND person_id = :p",
                {"p": scores[0].person_id},
            )
        )
        assert got == {str(i + 1): r.text for i, r in enumerate(scores[0].reasons)}
        for trait in churn.SIGNAL_TRAITS:
            assert store.scalar("SELECT count(*) FROM trait_value WHERE trait = :t", {"t": trait}) > 0
    finally:
        backend.close()


# ---------------------------------------------------------------- no-show


def test_noshow_beats_recency_and_its_reasons_name_the_planted_drivers(fitted: Fitted) -> None:
    r = fitted.noshow_card.report
    assert r["train_rows"] > 10_000 and r["test_rows"] > 2_000
    # measured (8,000 patients, seed 7): AUC 0.784 vs recency only 0.611 (+0.17); earlier no-shows 0.729
    assert r["auc_vs_baseline"] is not None and r["auc_vs_baseline"] >= 0.08
    models = {m["model"]: m["auc"] for m in r["models"]}
    assert r["auc"] > models["earlier no-shows only"]
    top_features = [d["feature"] for d in r["drivers"][:6]]
    # the three strongest planted drivers rank near the top; their exact places move with any change
    # to the data (measured 2026-11-26: booking evidence linked a few hundred more records, AUC stayed
    # 0.784, and age went from 4th to 7th behind weekday and org_level, both planted too)
    top8 = [d["feature"] for d in r["drivers"][:8]]
    assert {"lead_days", "provider_distance_km", "age"} <= set(top8), top8
    assert {"prior_no_shows", "prior_no_show_rate"} & set(top_features)
    assert len(PLANTED_NOSHOW & set(top_features)) >= 5

    act = fitted.act
    split = to_day(date.fromisoformat(r["split"]))
    rows = noshow.outcome_rows(act, split, split + 89)
    frame = noshow.appointment_features(act, rows, fitted.noshow_model.columns)
    y = (act.appt_status[rows] == NO_SHOW).astype(float)
    truth = _truth(fitted.net, "no_show", "source || ':' || appointment_key")
    keys = [str(k) for k in act.appt_key[rows]]
    p_true = np.array([truth[k]["p_no_show"] for k in keys], dtype=float)
    # no leakage: the model does not beat the generator's own probabilities
    from careloop.models.evaluation import auc

    ceiling = auc(y, p_true)
    assert ceiling is not None and r["auc"] <= ceiling + 0.01, (r["auc"], ceiling)

    top, why = _flagged_reasons(
        fitted.noshow_model.classifier, frame.values, frame.columns, 0.1, noshow.LEVELS
    )
    named = Counter(reason.feature for i in top for reason in why[i])
    assert {"lead_days", "provider_distance_km"} <= set(named) and (
        {"prior_no_shows", "prior_no_show_rate"} & set(named)
    ), named
    checks = {
        "prior_no_shows": lambda t: t["prior_no_shows"] >= 1,
        "lead_days": lambda t: t["lead_time_days"] >= 10,
        "provider_distance_km": lambda t: t["distance_km"] >= 15,
    }
    for feature, holds in checks.items():
        got = [truth[keys[i]] for i in top for reason in why[i] if reason.feature == feature]
        assert got and sum(map(holds, got)) >= 0.85 * len(got), (feature, sum(map(holds, got)), len(got))


def test_noshow_scores_next_appointments(fitted: Fitted) -> None:
    backend = connect(fitted.net.url)
    try:
        store = backend.workspace("default")
        scores = noshow.score(store, fitted.noshow_model, as_of=AS_OF, activity=fitted.act)
        assert scores and all(s.scheduled_at.date() > AS_OF for s in scores)
        assert [s.scheduled_at for s in scores] == sorted(s.scheduled_at for s in scores)
        written = noshow.write(store, scores, AS_OF, clock=backend.clock)
        assert written["noshow_risk"] == len({s.person_id for s in scores})
        first = scores[0]
        got = store.scalar(
            "SELECT value_num FROM trait_value WHERE trait = 'noshow_risk' AND person_id = :p",
            {"p": first.person_id},
        )
        assert got == pytest.approx(first.risk)
    finally:
        backend.close()


# ---------------------------------------------------------------- refill


def test_refill_backtest_run_out_dates_and_traits(fitted: Fitted) -> None:
    backend = connect(fitted.net.url)
    try:
        store = backend.workspace("default")
        card, model = refill.fit(store, activity=fitted.act)
        r = card.report
        # measured (seed 7): AUC ~0.85 vs recency only ~0.66
        assert r["auc"] >= 0.75 and r["auc_vs_baseline"] >= 0.05
        assert r["test_cutoff"] == from_day(fitted.act.data_end - 37).isoformat()
        scores = refill.score(store, model, as_of=AS_OF, activity=fitted.act)
        due = [s for s in scores if s.late_risk is not None]
        assert due and len(due) < len(scores)
        t = to_day(AS_OF)
        assert all(t < to_day(s.run_out) + 1 <= t + 30 for s in due)
        written = refill.write(store, scores, AS_OF, clock=backend.clock)
        assert written["refill_run_out"] == len(scores) and written["refill_late_risk"] == len(due)
        s = due[0]
        got = store.scalar(
            "SELECT value_num FROM trait_value WHERE trait = 'refill_late_risk' AND person_id = :p AND key = :k",
            {"p": s.person_id, "k": s.drug_class},
        )
        assert got == pytest.approx(s.late_risk)
    finally:
        backend.close()


# ---------------------------------------------------------------- the CLI


def test_cli_fit_score_report_and_highvalue(
    net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", net.url)
    monkeypatch.setenv("CARELOOP_KEY_FILE", str(net.key_file))
    monkeypatch.setenv("CARELOOP_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return orjson.loads(result.stdout)

    config = tmp_path / "churn.yaml"
    config.write_text("snapshot_step_days: 15\n", encoding="utf-8")
    card = run("models", "churn", "fit", "--horizon", "30", "--grace", "10", "--config", str(config))
    assert card["family"] == "churn" and card["report"]["auc_vs_baseline"] >= 0.02
    scored = run("models", "churn", "score", "--as-of", "2026-10-31", "--top", "3")
    assert (
        scored["scored"] > 0
        and len(scored["top"]) == 3
        and scored["traits"]["churn_risk"] == scored["scored"]
    )
    report = run("models", "report", "churn")
    assert report["report"]["auc"] == card["report"]["auc"]
    assert run("models", "noshow", "fit", "--test-days", "60")["report"]["test_window"].startswith("[2026-09")
    assert run("models", "noshow", "score", "--as-of", "2026-10-31")["appointments"] > 0
    assert run("models", "refill", "fit")["family"] == "refill"
    fits = run("audit", "show", "--action", "model.fit")  # each fit on person-level data is audited
    assert sorted(e["target_id"] for e in fits) == ["churn", "noshow", "refill"]
    assert run("models", "refill", "score", "--as-of", "2026-10-31")["due_soon"] > 0
    bad = runner.invoke(app, ["models", "churn", "fit", "--test-cutoff", "2026-10-20"])
    assert bad.exit_code != 0 and "data ends" in bad.output
    assert runner.invoke(app, ["traits", "compute", "--as-of", "2026-10-31", "--json"]).exit_code == 0
    hv = run("models", "highvalue", "--top-share", "0.2")
    r = hv["report"]
    assert r["value_trait"] == "spend_365d" and r["high_value_persons"] > 0
    acquisition = {c["condition"]: c for c in r["acquisition"]}
    assert all(
        c["lift"] >= acquisition_c["lift"]
        for c, acquisition_c in zip(r["acquisition"], r["acquisition"][1:], strict=False)
    )
    assert acquisition["conditions: I10"]["lift"] > 2  # hypertension patients buy maintenance drugs
    assert {c["use"] for c in r["behaviour"]} == {"behaviour"}
    listed = run("models", "list")
    assert {c["name"] for c in listed} == {"churn", "noshow", "refill", "highvalue"}
    fits = run("audit", "show", "--action", "model.fit")
    assert sorted(e["target_id"] for e in fits) == ["churn", "highvalue", "noshow", "refill"]
    runs = {e["detail"]["family"]: e for e in run("audit", "show", "--action", "model.score")}
    assert set(runs) == {"churn", "noshow", "refill"}  # every scoring run, with counts only
    assert runs["churn"]["detail"]["persons"] == scored["scored"]
    assert "churn_risk" in runs["churn"]["detail"]["traits"]
    get_settings.cache_clear()
