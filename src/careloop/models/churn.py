"""Churn (lapse) risk of chronic patients: LightGBM on point-in-time features, a time-split backtest,
calibrated probabilities and reason codes (docs/models.md, decision 0015).

**Label** at cut-off day T, horizon H and grace G (defaults 90 and 30 days):

- *population* — chronic patients on maintenance medication: a fill of a chronic drug class in the
  365 days up to T whose supply (run-out + 1, PQA shifting) is not more than G days overdue at T
  ("current" classes); the patient's next refill falls **due** by T + H − G (the earliest due day of the
  current classes), so a refill is expected inside the horizon with at least G days to spare;
- *lapse* (label 1) — no chronic-care activity in (T, T + H]: no fill of a chronic class, no visit for a
  chronic condition, no follow-up consultation. So a lapse is a refill or follow-up at least G days
  later than expected, as the data shows it.

**Backtest**: train on features as of T1 with labels from (T1, T1 + H]; test on features as of
T2 ≥ T1 + H with labels from (T2, T2 + H], T2 + H ≤ the last day of data. Defaults: T2 = data end − H,
T1 = T2 − H. The saved model is the one trained at T1 and measured at T2 (what is reported is what is
scored). Baselines in the same run: recency only (days since the last refill or follow-up) and a
logistic regression on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, ModelError
from careloop.models.base import ModelCard, data_hash, merge_config
from careloop.models.classifier import (
    FIT_DEFAULTS,
    CalibratedBooster,
    backtest,
    backtest_summary,
    fit_baseline,
    fit_calibrated,
)
from careloop.models.reasons import Reason, reasons
from careloop.models.risk_features import (
    FEATURE_DEFAULTS,
    NO_DAY,
    PERSON_FEATURES,
    SIGNALS,
    Activity,
    FeatureFrame,
    IntArray,
    class_supply,
    first_after,
    from_day,
    load_activity,
    person_features,
    to_day,
)
from careloop.storage import WorkspaceStore

FAMILY = "churn"
VERSION = "1"
DEFAULT_NAME = "churn"
RECENCY = "days_since_chronic_care"
DEFAULTS: dict[str, Any] = {
    "horizon_days": 90,
    "grace_days": 30,
    "snapshots": 3,  # training cut-offs stacked: T2-H, T2-H-step, ... (a person may appear at each)
    "snapshot_step_days": 30,
    "features": FEATURE_DEFAULTS,
    "exclude_features": [],
    "fit": FIT_DEFAULTS,
    "reasons": {"top": 3, "min_contribution": 0.05},
}
LABEL = (
    "lapse: a chronic patient on maintenance medication whose next refill falls due by T+H-G does not "
    "refill a chronic drug, visit for a chronic condition or have a follow-up consultation in (T, T+H]"
)


@dataclass
class ChurnModel:
    """What `careloop models churn fit` saves: the calibrated booster and how its inputs were built."""

    classifier: CalibratedBooster
    columns: tuple[str, ...]
    config: dict[str, Any]


@dataclass
class Table:
    """A population at one cut-off: persons (indices into the activity), features, labels (or None)."""

    cutoff: int
    rows: IntArray
    frame: FeatureFrame
    y: np.ndarray[Any, np.dtype[np.float64]] | None


def next_due(act: Activity, t: int, grace: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per person, the earliest due day (run-out + 1) of the current classes as of `t` (inf: none)."""
    cs = class_supply(act, t)
    due = cs.run_out + 1
    current = due > t - grace
    first_due = np.full(act.n, np.inf)
    np.minimum.at(first_due, cs.person[current], due[current].astype(np.float64))
    return first_due


def population(act: Activity, t: int, horizon: int, grace: int) -> IntArray:
    """Persons in the population at day `t` (see the module docstring)."""
    out: IntArray = np.flatnonzero(next_due(act, t, grace) <= t + horizon - grace).astype(np.int64)
    return out


def lapsed(act: Activity, rows: IntArray, t: int, horizon: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """1.0 when a person has no chronic-care activity in (t, t + horizon]."""
    nxt = first_after(act.care_person, act.care_day, t, act.n)[rows]
    out: np.ndarray[Any, np.dtype[np.float64]] = (nxt > t + horizon).astype(np.float64)
    return out


def columns_of(config: dict[str, Any]) -> tuple[str, ...]:
    exclude = set(config.get("exclude_features") or [])
    unknown = exclude - set(PERSON_FEATURES)
    if unknown:
        raise ConfigError(f"exclude_features: unknown feature(s) {', '.join(sorted(unknown))}")
    return tuple(c for c in PERSON_FEATURES if c not in exclude)


def table(act: Activity, t: int, config: dict[str, Any], labels: bool = True) -> Table:
    horizon, grace = int(config["horizon_days"]), int(config["grace_days"])
    rows = population(act, t, horizon, grace)
    frame = person_features(act, t, rows)
    cols = columns_of(config)
    idx = [frame.columns.index(c) for c in cols]
    frame = FeatureFrame(cols, frame.values[:, idx])
    return Table(t, rows, frame, lapsed(act, rows, t, horizon) if labels else None)


def check_config(config: dict[str, Any]) -> None:
    h, g = config["horizon_days"], config["grace_days"]
    if not isinstance(h, int) or not isinstance(g, int) or h < 7 or not 0 <= g < h:
        raise ConfigError(
            "horizon_days must be a whole number >= 7 and grace_days a whole number in [0, horizon)"
        )


def windows(
    act: Activity, config: dict[str, Any], train: Sequence[date] | None, test: date | None
) -> tuple[list[int], int]:
    """The backtest cut-offs ([T1, ...], T2), checked: no training label may fall after T2, and the
    test labels must lie inside the data."""
    horizon = int(config["horizon_days"])
    end = act.data_end
    t2 = to_day(test) if test else end - horizon
    if train:
        t1s = sorted(to_day(d) for d in train)
    else:
        step, k = int(config["snapshot_step_days"]), int(config["snapshots"])
        if k < 1 or step < 1:
            raise ConfigError("snapshots and snapshot_step_days must be whole numbers >= 1")
        t1s = sorted(t2 - horizon - i * step for i in range(k))
    if t1s[-1] + horizon > t2:
        raise ConfigError(
            f"the training labels ({from_day(t1s[-1])} + {horizon} days) would reach past the test cut-off "
            f"{from_day(t2)}: choose train cut-offs at least {horizon} days before the test cut-off"
        )
    if t2 + horizon > end:
        raise ConfigError(
            f"the test labels need data until {from_day(t2 + horizon)} but the store's data ends "
            f"{from_day(end)}: choose a test cut-off on or before {from_day(end - horizon)}"
        )
    return t1s, t2


def fit(
    store: WorkspaceStore,
    name: str = DEFAULT_NAME,
    *,
    train_cutoffs: Sequence[date] | None = None,
    test_cutoff: date | None = None,
    config: dict[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    activity: Activity | None = None,
) -> tuple[ModelCard, ChurnModel]:
    """Backtest and fit (see the module docstring); returns the card (with the report) and the model."""
    cfg = merge_config(DEFAULTS, config, "churn config")
    check_config(cfg)
    act = activity or load_activity(store, get_settings().timezone, cfg["features"])
    horizon = int(cfg["horizon_days"])
    t1s, t2 = windows(act, cfg, train_cutoffs, test_cutoff)
    parts = [table(act, t1, cfg) for t1 in t1s]
    test = table(act, t2, cfg)
    cols = test.frame.columns
    x_train = np.vstack([t.frame.values for t in parts])
    y_train = np.concatenate([t.y for t in parts if t.y is not None])
    groups = np.concatenate([t.rows for t in parts])
    assert test.y is not None
    if not test.y.any():
        raise ModelError(
            f"no lapse in the test window after {from_day(t2)}: the backtest cannot measure the model"
        )
    model = fit_calibrated(x_train, y_train, cols, cfg["fit"], groups=groups)
    baselines = [
        fit_baseline(
            "recency only (days since the last refill or follow-up)", x_train, y_train, cols, [RECENCY]
        ),
        fit_baseline("logistic regression, same features", x_train, y_train, cols, list(cols)),
    ]
    rep = backtest(model, baselines, test.frame.values, test.y, cols)
    recency = rep["models"][1]
    report: dict[str, Any] = {
        "label": LABEL,
        "horizon_days": horizon,
        "grace_days": int(cfg["grace_days"]),
        "train_cutoffs": ", ".join(from_day(t).isoformat() for t in t1s),
        "train_labels": "; ".join(f"({from_day(t)}, {from_day(t + horizon)}]" for t in t1s),
        "test_cutoff": from_day(t2).isoformat(),
        "test_labels": f"({from_day(t2)}, {from_day(t2 + horizon)}]",
        "data_end": from_day(act.data_end).isoformat(),
        "train_rows": len(y_train),
        "train_persons": len(np.unique(groups)),
        **backtest_summary(model, rep, recency, y_train),
    }
    ids = act.persons[np.concatenate([groups, test.rows])].tolist()
    both = FeatureFrame(cols, np.vstack([x_train, test.frame.values]))
    card = ModelCard(name, FAMILY, VERSION, cfg, data_hash(both.table(ids)), clock.now(), report)
    return card, ChurnModel(model, cols, cfg)


@dataclass
class Score:
    person_id: str
    risk: float
    reasons: list[Reason]
    due: date  # the next refill's due day


def score(
    store: WorkspaceStore,
    model: ChurnModel,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    activity: Activity | None = None,
) -> tuple[list[Score], Activity, int]:
    """Risk and reasons of every person in the population as of `as_of` (default: today by `clock`)."""
    tz = ZoneInfo(get_settings().timezone)
    day = as_of or clock.now().astimezone(tz).date()
    act = activity or load_activity(store, str(tz), model.config["features"])
    t = to_day(day)
    tab = table(act, t, model.config, labels=False)
    x = tab.frame.values
    p = model.classifier.predict(x)
    top = model.config["reasons"]
    why = reasons(
        model.classifier.contributions(x),
        x,
        tab.frame.columns,
        top=int(top["top"]),
        min_contribution=float(top["min_contribution"]),
    )
    first_due = next_due(act, t, int(model.config["grace_days"]))
    out = [
        Score(str(act.persons[r]), float(p[i]), why[i], from_day(int(first_due[r])))
        for i, r in enumerate(tab.rows)
    ]
    return out, act, t


def signal_values(act: Activity, t: int) -> dict[str, list[tuple[str, str, float | str | None]]]:
    """The early-warning signals of every person with a value, as (person, key, value) per trait."""
    frame = person_features(act, t)
    out: dict[str, list[tuple[str, str, float | str | None]]] = {}
    for name in SIGNALS:
        col = frame.col(name)
        ok = ~np.isnan(col)
        if name in ("cancellations_180d", "ignored_follow_ups_180d"):
            ok &= col > 0  # counts: like aggregate traits, no row for zero
        out[name] = [(str(pid), "", float(v)) for pid, v in zip(act.persons[ok], col[ok], strict=True)]
    return out


#: signals written as traits by `churn score` (cancellations_180d is a traits.yaml aggregate)
SIGNAL_TRAITS = ("ignored_follow_ups_180d", "app_activity_trend", "satisfaction_change")


def write(
    store: WorkspaceStore,
    scores: list[Score],
    act: Activity,
    t: int,
    *,
    clock: Clock = SYSTEM_CLOCK,
    refresh_segments: bool = True,
) -> dict[str, Any]:
    """Scores as traits: churn_risk, churn_reasons (key = rank), churn_due (next refill due day), and the
    signals that traits.yaml cannot express (SIGNAL_TRAITS)."""
    from datetime import datetime
    from datetime import time as dtime

    from careloop.models.scores import write_score_traits

    tz = ZoneInfo(get_settings().timezone)
    day = from_day(t)
    written: dict[str, Any] = {}
    written["churn_risk"] = write_score_traits(
        store,
        "churn_risk",
        [(s.person_id, "", s.risk) for s in scores],
        as_of=day,
        clock=clock,
        refresh_segments=refresh_segments,
    )
    written["churn_reasons"] = write_score_traits(
        store,
        "churn_reasons",
        [(s.person_id, str(i + 1), r.text) for s in scores for i, r in enumerate(s.reasons)],
        as_of=day,
        clock=clock,
        refresh_segments=refresh_segments,
    )
    written["churn_due"] = write_score_traits(
        store,
        "churn_due",
        [
            (s.person_id, "", datetime.combine(s.due, dtime.min, tzinfo=tz))
            for s in scores
            if s.due.year > 1900
        ],
        as_of=day,
        clock=clock,
        refresh_segments=refresh_segments,
    )
    signals = signal_values(act, t)
    for name in SIGNAL_TRAITS:
        written[name] = write_score_traits(
            store, name, signals[name], as_of=day, clock=clock, refresh_segments=refresh_segments
        )
    return {k: v["values"] for k, v in written.items()}


__all__ = [
    "DEFAULTS",
    "FAMILY",
    "LABEL",
    "NO_DAY",
    "VERSION",
    "ChurnModel",
    "Score",
    "fit",
    "lapsed",
    "population",
    "score",
    "signal_values",
    "table",
    "write",
]
