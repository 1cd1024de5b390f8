"""Refill and adherence risk per patient and drug class: the predicted run-out date and the probability of
a late refill (docs/models.md, decision 0015).

**Run-out date**: the last day of the latest supply of the class, refills of the same drug shifted to
start after the previous supply ends (PQA, as the ``pdc_run_out`` trait). It is a computation, not a
guess: what the fills on record cover.

**Late refill** (label 1) for a class whose supply runs out within `due_days` after the cut-off T
(run-out + 1 in (T, T + due_days]): no fill of the class by the day after the run-out + `late_days`
(default 7). Features: the class's supply and refill history (PDC over 365 days, fills, the last
supply's length and channel, late refills and the mean delay of past refills) and the patient's
features (careloop.models.risk_features.PERSON_FEATURES), all as of T.

**Backtest**: as churn — training cut-offs T1 (stacked snapshots) with labels complete by T2, the test
cut-off; defaults T2 = data end − (due_days + late_days). Baselines in the same run: recency only
(days since the last refill or follow-up), refill history only (late refills and mean delay) and a
logistic regression on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
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
    PERSON_FEATURES,
    Activity,
    FeatureFrame,
    FloatArray,
    IntArray,
    ObjArray,
    class_supply,
    from_day,
    load_activity,
    person_features,
    to_day,
)
from careloop.storage import WorkspaceStore

FAMILY = "refill"
VERSION = "1"
DEFAULT_NAME = "refill"
CLASS_FEATURES = (
    "class_days_to_run_out",
    "class_pdc_365d",
    "class_fills_365d",
    "last_supply_days",
    "last_fill_retail",
    "late_refills_365d",
    "mean_refill_delay",
)
#: the person's days_to_run_out is the earliest of all classes: the class's own replaces it here
COLUMNS = CLASS_FEATURES + tuple(c for c in PERSON_FEATURES if c != "days_to_run_out")
DEFAULTS: dict[str, Any] = {
    "due_days": 30,
    "late_days": 7,
    "snapshots": 3,
    "snapshot_step_days": 30,
    "features": FEATURE_DEFAULTS,
    "fit": FIT_DEFAULTS,
    "reasons": {"top": 3, "min_contribution": 0.05},
}
LABEL = (
    "late refill: a drug class whose supply runs out within due_days after T is not refilled by "
    "run-out + 1 + late_days"
)


@dataclass
class RefillModel:
    classifier: CalibratedBooster
    columns: tuple[str, ...]
    config: dict[str, Any]


@dataclass
class Units:
    """(person, class) rows at one cut-off with their features and (when known) labels."""

    cutoff: int
    person: IntArray
    klass: ObjArray
    run_out: IntArray
    mean_delay: FloatArray
    frame: FeatureFrame
    y: FloatArray | None


def units(
    act: Activity, t: int, due_days: int, late_days: int, labels: bool = True, due_only: bool = True
) -> Units:
    """Every (person, class) with a fill in the year whose supply runs out within `due_days` after `t`
    (all current classes with ``due_only=False``: run-out no more than 90 days before `t`)."""
    cs = class_supply(act, t, late_days)
    due = cs.run_out + 1
    keep = (due > t) & (due <= t + due_days) if due_only else due > t - 90
    sel = np.flatnonzero(keep)
    person = cs.person[sel]
    pf = person_features(act, t, person)
    cls_values = (
        np.column_stack(
            [
                (cs.run_out[sel] - t).astype(np.float64),
                cs.pdc[sel],
                cs.fills[sel].astype(np.float64),
                cs.last_supply[sel].astype(np.float64),
                cs.last_retail[sel].astype(np.float64),
                cs.late_refills[sel].astype(np.float64),
                cs.mean_delay[sel],
            ]
        )
        if len(sel)
        else np.empty((0, len(CLASS_FEATURES)))
    )
    keep_cols = [pf.columns.index(c) for c in COLUMNS[len(CLASS_FEATURES) :]]
    frame = FeatureFrame(COLUMNS, np.hstack([cls_values, pf.values[:, keep_cols]]))
    y = None
    if labels:
        y = _late(act, person, cs.klass[sel], t, cs.run_out[sel] + 1 + late_days)
    return Units(t, person, cs.klass[sel], cs.run_out[sel], cs.mean_delay[sel], frame, y)


def _late(act: Activity, person: IntArray, klass: ObjArray, t: int, deadline: IntArray) -> FloatArray:
    """1.0 when the class has no fill in (t, deadline]."""
    after = np.flatnonzero(act.fill_day > t)
    first: dict[tuple[int, str], int] = {}
    for i in after[np.argsort(act.fill_day[after], kind="stable")]:
        first.setdefault((int(act.fill_person[i]), str(act.fill_class[i])), int(act.fill_day[i]))
    nxt = np.array(
        [first.get((int(p), str(k)), 10**9) for p, k in zip(person, klass, strict=True)], dtype=np.int64
    )
    out: FloatArray = (nxt > deadline).astype(np.float64)
    return out


def windows(
    act: Activity, config: dict[str, Any], train: Sequence[date] | None, test: date | None
) -> tuple[list[int], int]:
    span = int(config["due_days"]) + int(config["late_days"])
    end = act.data_end
    t2 = to_day(test) if test else end - span
    if train:
        t1s = sorted(to_day(d) for d in train)
    else:
        step, k = int(config["snapshot_step_days"]), int(config["snapshots"])
        if k < 1 or step < 1:
            raise ConfigError("snapshots and snapshot_step_days must be whole numbers >= 1")
        t1s = sorted(t2 - span - i * step for i in range(k))
    if t1s[-1] + span > t2:
        raise ConfigError(
            f"the training labels ({from_day(t1s[-1])} + {span} days) would reach past the test cut-off "
            f"{from_day(t2)}: choose train cut-offs at least {span} days before it"
        )
    if t2 + span > end:
        raise ConfigError(
            f"the test labels need data until {from_day(t2 + span)} but the store's data ends {from_day(end)}: "
            f"choose a test cut-off on or before {from_day(end - span)}"
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
) -> tuple[ModelCard, RefillModel]:
    cfg = merge_config(DEFAULTS, config, "refill config")
    due_days, late_days = cfg["due_days"], cfg["late_days"]
    if not isinstance(due_days, int) or not isinstance(late_days, int) or due_days < 1 or late_days < 0:
        raise ConfigError("due_days must be a whole number >= 1 and late_days >= 0")
    act = activity or load_activity(store, get_settings().timezone, cfg["features"])
    t1s, t2 = windows(act, cfg, train_cutoffs, test_cutoff)
    parts = [units(act, t, due_days, late_days) for t in t1s]
    test = units(act, t2, due_days, late_days)
    x_train = np.vstack([u.frame.values for u in parts])
    y_train = np.concatenate([u.y for u in parts if u.y is not None])
    groups = np.concatenate([u.person for u in parts])
    assert test.y is not None
    if not test.y.any():
        raise ModelError(
            f"no late refill in the test window after {from_day(t2)}: the backtest cannot measure the model"
        )
    cols = COLUMNS
    model = fit_calibrated(x_train, y_train, cols, cfg["fit"], groups=groups)
    baselines = [
        fit_baseline(
            "recency only (days since the last refill or follow-up)",
            x_train,
            y_train,
            cols,
            ["days_since_chronic_care"],
        ),
        fit_baseline(
            "refill history only (late refills, mean delay)",
            x_train,
            y_train,
            cols,
            ["late_refills_365d", "mean_refill_delay"],
        ),
        fit_baseline("logistic regression, same features", x_train, y_train, cols, list(cols)),
    ]
    rep = backtest(model, baselines, test.frame.values, test.y, cols)
    recency = rep["models"][1]
    span = due_days + late_days
    report: dict[str, Any] = {
        "label": LABEL,
        "due_days": due_days,
        "late_days": late_days,
        "train_cutoffs": ", ".join(from_day(t).isoformat() for t in t1s),
        "train_labels": "; ".join(f"({from_day(t)}, {from_day(t + span)}]" for t in t1s),
        "test_cutoff": from_day(t2).isoformat(),
        "test_labels": f"({from_day(t2)}, {from_day(t2 + span)}]",
        "data_end": from_day(act.data_end).isoformat(),
        "train_rows": len(y_train),
        **backtest_summary(model, rep, recency, y_train),
    }
    ids = [
        f"{act.persons[p]}:{k}"
        for p, k in zip(
            np.concatenate([groups, test.person]),
            np.concatenate([*(u.klass for u in parts), test.klass]),
            strict=True,
        )
    ]
    both = FeatureFrame(cols, np.vstack([x_train, test.frame.values]))
    card = ModelCard(name, FAMILY, VERSION, cfg, data_hash(both.table(ids, "unit")), clock.now(), report)
    return card, RefillModel(model, cols, cfg)


@dataclass
class Score:
    person_id: str
    drug_class: str
    run_out: date
    late_risk: float | None  # None: not due within due_days (or already overdue)
    expected_refill: date | None  # run-out + 1 + the class's mean past delay (when it has refills)
    reasons: list[Reason]


def score(
    store: WorkspaceStore,
    model: RefillModel,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    activity: Activity | None = None,
) -> list[Score]:
    """Every current (person, class) as of `as_of` (default: today): the run-out date, and for the classes
    due within due_days the late-refill risk and its reasons."""
    tz = ZoneInfo(get_settings().timezone)
    day = as_of or clock.now().astimezone(tz).date()
    act = activity or load_activity(store, str(tz), model.config["features"])
    t = to_day(day)
    due_days, late_days = int(model.config["due_days"]), int(model.config["late_days"])
    u = units(act, t, due_days, late_days, labels=False, due_only=False)
    due = u.run_out + 1
    scored = np.flatnonzero((due > t) & (due <= t + due_days))
    x = u.frame.values[scored]
    p = model.classifier.predict(x)
    top = model.config["reasons"]
    why = reasons(
        model.classifier.contributions(x),
        x,
        model.columns,
        top=int(top["top"]),
        min_contribution=float(top["min_contribution"]),
    )
    risk: dict[int, tuple[float, list[Reason]]] = {
        int(i): (float(p[j]), why[j]) for j, i in enumerate(scored)
    }
    out = []
    for i in range(len(u.person)):
        delay = u.mean_delay[i]
        expected = None if np.isnan(delay) else from_day(int(u.run_out[i]) + 1 + max(0, round(float(delay))))
        r, rs = risk.get(i, (None, []))
        out.append(
            Score(
                str(act.persons[u.person[i]]), str(u.klass[i]), from_day(int(u.run_out[i])), r, expected, rs
            )
        )
    return out


def write(
    store: WorkspaceStore,
    scores: list[Score],
    as_of: date,
    *,
    clock: Clock = SYSTEM_CLOCK,
    refresh_segments: bool = True,
) -> dict[str, Any]:
    """refill_run_out (time, key = drug class), refill_late_risk (key = drug class) and
    refill_late_reasons (key = 'class:rank')."""
    from careloop.models.scores import write_score_traits

    tz = ZoneInfo(get_settings().timezone)

    def put(trait: str, values: list[tuple[str, str, float | str | datetime | None]]) -> int:
        done = write_score_traits(
            store, trait, values, as_of=as_of, clock=clock, refresh_segments=refresh_segments
        )
        return int(done["values"])

    return {
        "refill_run_out": put(
            "refill_run_out",
            [(s.person_id, s.drug_class, datetime.combine(s.run_out, dtime.min, tzinfo=tz)) for s in scores],
        ),
        "refill_late_risk": put(
            "refill_late_risk", [(s.person_id, s.drug_class, s.late_risk) for s in scores]
        ),
        "refill_late_reasons": put(
            "refill_late_reasons",
            [
                (s.person_id, f"{s.drug_class}:{i + 1}", r.text)
                for s in scores
                for i, r in enumerate(s.reasons)
            ],
        ),
    }
