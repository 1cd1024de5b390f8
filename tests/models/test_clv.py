"""Lifetime value: the CDNOW benchmark (Fader, Hardie & Lee 2005) reproduced through the CLI, the summary
rules (distinct days, calibration end, weeks = days / 7), bad input, predictions and the store.

The CDNOW data (tests/fixtures/cdnow, see its README) is the 1/10 sample of CDNOW's 1997 cohort used in the
papers: 2,357 customers, 6,919 transactions to June 1998; calibration ends 1997-09-30 (week 39).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from careloop.bench.models_bench import baseline_score
from careloop.cli import app
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.errors import ConfigError, IngestError, ModelError, ModelMismatchError
from careloop.models.clv import ClvRun, config_for, fit_transactions, load_model, score_store, summarise
from careloop.models.rfm import rfm_from_transactions, save_rfm
from careloop.models.transactions import Transactions, purchase_days, read_transactions, to_day
from careloop.storage import Backend, WorkspaceStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cdnow"
LOG = FIXTURES / "cdnow_sample.csv"
CALIBRATION_END = "1997-09-30"
#: Fader, Hardie & Lee (2005), Marketing Science 24(2): BG/NBD on CDNOW, weeks; LL -9582.4
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
#: Fader, Hardie & Lee (2005), JMR 42(4): Gamma-Gamma on the 946 repeat customers
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}

CLV_FIT = (
    *("models", "clv", "fit", "--transactions", str(LOG), "--customer-col", "customer", "--date-col", "date"),
    *("--observation-end", CALIBRATION_END),
)

runner = CliRunner()


def _within(got: dict[str, float], published: dict[str, float], tolerance: float) -> dict[str, float]:
    """Relative differences; asserts each is within `tolerance`."""
    diffs = {k: abs(got[k] - v) / v for k, v in published.items()}
    assert all(d <= tolerance for d in diffs.values()), (got, published, diffs)
    return diffs


def _cdnow() -> Transactions:
    return read_transactions(LOG, customer_col="customer", date_col="date", value_col="dollars")


def test_the_cdnow_log_reproduces_the_published_summary_exactly() -> None:
    days = purchase_days(_cdnow(), to_day(date(1997, 9, 30)))
    summary = summarise(days, "week")
    summary.index = pd.Index(days.ids.astype(int), name="ID")
    published = pd.read_csv(FIXTURES / "cdnow_customers_summary.csv", index_col="ID")
    assert len(summary) == len(published) == 2357
    got = summary.loc[published.index]
    assert (got["frequency"] == published["frequency"]).all()
    assert np.abs(got["recency"].round(2) - published["recency"]).max() < 1e-9
    assert np.abs(got["T"].round(2) - published["T"]).max() < 1e-9
    # 146 transactions share a day with another of the same customer: counted once
    assert days.transactions - len(days.day) == 146
    assert days.ignored == 6919 - 4960  # after the calibration end


def test_clv_fit_cli_reproduces_the_published_bgnbd_and_gamma_gamma() -> None:
    result = runner.invoke(
        app,
        [*CLV_FIT, "--value-col", "dollars", "--time-unit", "week", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["model"] == "bgnbd" and report["method"] == "map" and report["customers"] == 2357
    assert report["repeat_customers"] == 946 and report["ignored_after_observation_end"] == 1959
    _within(report["params"], PUBLISHED_BGNBD, 0.02)
    assert report["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)
    _within(report["spend"]["params"], PUBLISHED_GG, 0.02)
    assert report["spend"]["customers"] == 946
    # the model's calibration-period repeat purchases track the observed total (2,457)
    assert abs(report["expected_repeat_purchases"] - 2457) / 2457 < 0.05
    human = runner.invoke(
        app,
        [*CLV_FIT, "--time-unit", "week"],
    )
    assert human.exit_code == 0 and "0.2426" in human.stdout and "4.4136" in human.stdout


def test_a_typed_parquet_log_gives_the_same_summary(tmp_path: Path) -> None:
    frame = pd.read_csv(LOG, dtype={"customer": str, "date": str})
    typed = pd.DataFrame(
        {
            "patient": frame["customer"].astype(int),  # ids as numbers
            "when": pd.to_datetime(frame["date"], format="%Y%m%d").dt.tz_localize("Asia/Shanghai"),
            "paid": frame["dollars"],
        }
    )
    path = tmp_path / "cdnow.parquet"
    typed.to_parquet(path, index=False)
    tx = read_transactions(path, customer_col="patient", date_col="when", value_col="paid")
    end = to_day(date(1997, 9, 30))
    from_csv = summarise(purchase_days(_cdnow(), end), "week")
    from_parquet = summarise(purchase_days(tx, end), "week")
    pd.testing.assert_frame_equal(from_csv, from_parquet)


def test_bench_scenario_agrees_with_its_closed_form_baseline(tmp_path: Path) -> None:
    from careloop.bench.models_bench import bench_models

    fit, score = bench_models(1_500, 5, tmp_path, get_settings(), 1)
    assert (fit.scenario, fit.unit, score.scenario, score.unit) == (
        "models-clv-fit",
        "s",
        "models-clv-score",
        "ms",
    )
    assert fit.figure > 0 and fit.baseline > 0 and score.figure > 0
    details = fit.details
    difference = details["max_relative_difference_of_scores"]
    assert isinstance(difference, float) and difference < 1e-9
    ours, theirs = details["careloop_bgnbd"], details["baseline_bgnbd"]
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    assert all(abs(ours[k] - theirs[k]) / theirs[k] < 1e-3 for k in ("r", "alpha", "a", "b"))


def test_time_unit_and_calibration_rules_on_a_small_log(tmp_path: Path) -> None:
    rows = [
        ("a", "2024-01-01", 10),
        ("a", "2024-01-01", 30),  # same day: one purchase of 40
        ("a", "2024-01-08", 20),
        ("a", "2024-01-15", 60),
        ("a", "2024-03-01", 999),  # after the observation end: ignored
        ("b", "2024-01-10", 5),
        ("c", "2024-02-01", 7),  # first purchase after the end: not a customer yet
    ]
    tx = Transactions(
        np.array([r[0] for r in rows], dtype=object),
        np.array([to_day(date.fromisoformat(r[1])) for r in rows]),
        np.array([r[2] for r in rows], dtype=float),
        "small",
    )
    days = purchase_days(tx, to_day(date(2024, 1, 29)))
    assert days.ignored == 2 and days.customers == 2
    weeks = summarise(days, "week").set_index(pd.Index(days.ids))
    assert weeks.loc["a"].tolist() == [0, 2.0, 2.0, 4.0, 40.0]  # x, t_x, T (weeks = days / 7), mean repeat
    assert weeks.loc["b", "T"] == pytest.approx(19 / 7)  # continuous time, not calendar weeks
    in_days = summarise(days, "day").set_index(pd.Index(days.ids))
    assert in_days.loc["a", "recency"] == 14 and in_days.loc["a", "T"] == 28


def test_bad_input_is_refused_with_the_rows(tmp_path: Path) -> None:
    def fit(name: str, text: str, *extra: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = runner.invoke(
            app,
            [
                *("models", "clv", "fit", "--transactions", str(path)),
                *("--customer-col", "c", "--date-col", "d"),
                *("--value-col", "v", *extra),
            ],
        )
        assert result.exit_code != 0, result.output
        return " ".join(result.output.split())

    assert "'d' (--date-col) not found; the file has c, dt, v" in fit("cols.csv", "c,dt,v\na,2024-01-01,1\n")
    msg = fit("dates.csv", "c,d,v\na,2024-01-01,1\na,2024-31-01,2\nb,03/04/2024,1\nb,2024-02-01,1\n")
    assert "2 row(s) have a date in column 'd' that cannot be read" in msg and "lines 3, 4" in msg
    assert "'2024-31-01'" in msg and "--date-format" in msg
    assert "cannot be read" not in fit(
        "dmy.csv", "c,d,v\na,03/04/2024,1\na,05/04/2024,x\n", "--date-format", "%d/%m/%Y"
    )
    msg = fit("neg.csv", "c,d,v\na,2024-01-01,1\na,2024-01-02,-3\n")
    assert "1 row(s) have a negative value in column 'v': line 3" in msg
    assert "is empty" in fit("empty.csv", "")
    assert "no transactions (only a header)" in fit("header.csv", "c,d,v\n")
    assert "no customer bought on two different days" in fit(
        "once.csv", "c,d,v\na,2024-01-01,1\nb,2024-01-02,1\n"
    )
    msg = fit("late.csv", "c,d,v\na,2024-01-01,1\na,2024-01-02,1\n", "--observation-end", "2023-01-01")
    assert "no transaction on or before 2023-01-01" in msg
    assert "time_unit is day or week" in fit("unit.csv", "c,d,v\na,2024-01-01,1\n", "--time-unit", "month")
    with pytest.raises(IngestError, match="does not exist"):
        read_transactions(tmp_path / "nope.csv", customer_col="c", date_col="d")
    with pytest.raises(ConfigError, match="unknown setting 'horizon'"):
        config_for({"horizon": 30})
    with pytest.raises(ConfigError, match=r"priors\.bgnbd\.a and \.b"):
        config_for({"priors": {"bgnbd": {"a": "library"}}})


@pytest.fixture(scope="module")
def cdnow_saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClvRun, Path]:
    """The default fit on CDNOW, saved as model 'cdnow' in a models folder of its own (fitted once)."""
    models = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARELOOP_MODELS_DIR", str(models))
        get_settings.cache_clear()
        run = fit_transactions(
            _cdnow(),
            {"time_unit": "week"},
            observation_end=date(1997, 9, 30),
            save="cdnow",
            clock=FixedClock(datetime(2026, 11, 1, tzinfo=UTC)),
        )
    get_settings.cache_clear()
    return run, models


def test_predictions_match_the_closed_form_and_discounting_lowers_value(
    cdnow_saved: tuple[ClvRun, Path],
) -> None:
    run = cdnow_saved[0]
    pred = run.model.predict(run.summary, 364)
    expected = baseline_score(run.summary, run.model.params(), run.model.spend_params() or {}, 52.0)
    for col in ("expected_purchases", "p_alive", "expected_spend", "value"):
        np.testing.assert_allclose(pred[col].to_numpy(), expected[col], rtol=1e-9)
    frame = run.frame().set_index("customer")
    first = frame.loc["0001"]  # 2 repeat purchases, the last at week 30.43
    assert first["frequency"] == 2 and first["recency"] == pytest.approx(30.43, abs=0.005)
    assert 0 < first["p_alive"] < 1 and first["value"] > 0
    assert (frame.loc[frame["frequency"] == 0, "p_alive"] == 1).all()  # a BG/NBD property
    discounted = run.model.predict(run.summary, 364, discount_rate=0.1)
    ratio = discounted["value"].sum() / pred["value"].sum()
    assert 0.9 < ratio < 0.97  # a year at 10%: between 1/1.1 and 1


def _at(d: date, hour: int = 2) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


@pytest.fixture
def pharmacy(backend: Backend) -> WorkspaceStore:
    """40 persons with dispenses (patterns repeat), two without, one dispense after the as-of day."""
    store = backend.workspace("default")
    links, dispenses = [], []
    rng = np.random.default_rng(11)
    start = date(2025, 1, 1)
    for i in range(42):
        pid, key = f"P{i:02d}", f"r{i}"
        links.append({"source": "pharmacy", "patient_key": key, "person_id": pid, "rule": "alone"})
        if i >= 40:
            continue
        n = int(rng.integers(1, 12))
        first = start + timedelta(days=int(rng.integers(0, 200)))
        gaps = np.cumsum(rng.integers(5, 60, n)) - 5
        for j, gap in enumerate(gaps):
            day = first + timedelta(days=int(gap))
            if day > date(2026, 6, 30):
                break
            dispenses.append(
                {
                    "source": "pharmacy",
                    "key": f"d{i}-{j}",
                    "patient_key": key,
                    "drug_code": "metformin",
                    "dispensed_at": _at(day),
                    "days_supply": 30,
                    "amount": float(rng.gamma(4.0, 20.0)),
                }
            )
    dispenses.append(
        {
            "source": "pharmacy",
            "key": "late",
            "patient_key": "r0",
            "drug_code": "metformin",
            "dispensed_at": _at(date(2026, 9, 1)),
            "days_supply": 30,
            "amount": 10.0,
        }
    )
    store.insert("identity_link", links)
    store.insert("person", [{"person_id": f"P{i:02d}"} for i in range(42)])
    store.insert("dispense", dispenses)
    return store


def test_store_scores_are_written_as_traits(pharmacy: WorkspaceStore, clock: FixedClock) -> None:
    run = score_store(
        pharmacy, {"time_unit": "week", "horizon_days": 180}, as_of=date(2026, 7, 31), clock=clock
    )
    assert run.report["observation_end"] == "2026-07-31" and run.report["customers"] == 40
    assert run.report["transactions"] == run.report["purchase_days"]  # one dispense a day here
    got = {
        (p, t): v
        for p, t, v in pharmacy.tuples(
            "SELECT person_id, trait, value_num FROM trait_value WHERE trait LIKE 'clv_%'"
        )
    }
    assert {t for _, t in got} == {"clv_expected_purchases", "clv_p_alive", "clv_value"}
    assert len({p for p, _ in got}) == 40 and ("P40", "clv_value") not in got  # no dispense: no score
    assert all(0 <= v <= 1 for (_, t), v in got.items() if t == "clv_p_alive")
    assert all(v >= 0 for (_, t), v in got.items() if t != "clv_p_alive")
    # the dispense of 2026-09-01 is after the calibration end: P00's history is the same without it
    earlier = score_store(pharmacy, {"time_unit": "week"}, as_of=date(2026, 8, 31), clock=clock, write=False)
    assert earlier.report["transactions"] == run.report["transactions"]


def test_saved_models_score_the_store_and_refuse_other_families(
    pharmacy: WorkspaceStore,
    clock: FixedClock,
    cdnow_saved: tuple[ClvRun, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted, models = cdnow_saved
    monkeypatch.setenv("CARELOOP_MODELS_DIR", str(models))
    get_settings.cache_clear()
    assert fitted.card is not None and fitted.card.family == "clv"
    card, model = load_model("cdnow", "default")
    assert model.params() == pytest.approx(fitted.model.params())
    assert card.report["params"]["r"] == pytest.approx(0.2426, abs=1e-4)
    run = score_store(pharmacy, as_of=date(2026, 7, 31), model_name="cdnow", clock=clock, write=False)
    assert run.report["loaded"] == "cdnow" and run.report["params"] == fitted.report["params"]
    assert run.report["time_unit"] == "week"  # the saved model's unit, whatever the config says
    rfm = rfm_from_transactions(_cdnow(), as_of=date(1997, 9, 30))
    save_rfm(rfm, "cdnow-rfm", "default", clock=clock)
    with pytest.raises(ModelMismatchError, match="it is a rfm model, not clv"):
        load_model("cdnow-rfm", "default")
    with pytest.raises(ConfigError, match="nothing to save"):
        score_store(pharmacy, model_name="cdnow", save="again", clock=clock)
    with pytest.raises(ModelError, match="no dispense of a unified person on or before 2024-01-01"):
        score_store(pharmacy, as_of=date(2024, 1, 1), clock=clock)
