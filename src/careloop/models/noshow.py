"""No-show risk of booked appointments: LightGBM on the booking and the patient's history, a time-split
backtest, calibrated probabilities and reason codes (docs/models.md, decision 0015).

**Rows**: appointments whose outcome is known — attended (label 0) or no-show (label 1). Cancelled
bookings are not no-shows (the slot was given back) and are left out; they count in the history.

**Features**, each as known on the booking day (history strictly before it): lead time (days from
booking to the appointment), booking channel, weekday and hour of the slot, the patient's earlier
no-shows, appointments and cancellations and their no-show rate, days since the last visit, age,
the provider's level (三级 / 二级 / 基层), the kind of visit (check-up, chronic specialty, emergency,
other — from the department's specialty) and the approximate distance from the patient's district to
the provider.

**Backtest**: split day S; train on appointments scheduled in [S − train_days, S), test on
[S, S + test_days). Every training label is known by S. Default S = last day of data − test_days + 1.
Baselines in the same run: recency only (days since the last visit), earlier no-shows only, and a
logistic regression on the numeric features.
"""

from __future__ import annotations

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
    ATTENDED,
    BOOKED,
    CANCELLED,
    FEATURE_DEFAULTS,
    NO_SHOW,
    Activity,
    FeatureFrame,
    FloatArray,
    IntArray,
    distance_to,
    from_day,
    load_activity,
    to_day,
)
from careloop.storage import WorkspaceStore

FAMILY = "noshow"
VERSION = "1"
DEFAULT_NAME = "noshow"
CHANNELS = ["wechat", "app", "web", "phone", "onsite", "referral", "other"]
VISIT_TYPES = ["check_up", "chronic", "emergency", "other"]
_SPECIALTY_TYPE = {
    "health_check": "check_up",
    "preventive_care": "check_up",
    "cardiology": "chronic",
    "endocrinology": "chronic",
    "hepatology": "chronic",
    "respiratory": "chronic",
    "nephrology": "chronic",
    "emergency": "emergency",
}
COLUMNS = (
    "lead_days",
    "channel",
    "weekday",
    "hour",
    "prior_no_shows",
    "prior_appointments",
    "prior_no_show_rate",
    "prior_cancellations",
    "days_since_visit",
    "age",
    "org_level",
    "visit_type",
    "provider_distance_km",
)
CATEGORICAL = ("channel", "weekday", "visit_type")
LEVELS = {"channel": CHANNELS, "visit_type": VISIT_TYPES}
DEFAULTS: dict[str, Any] = {
    "train_days": 365,
    "test_days": 90,
    # the slot's hour is left out by default: in the synthetic network it leaks the outcome (attended
    # bookings take the visit's start time, missed ones a generic slot); with real slot times use []
    "exclude_features": ["hour"],
    "features": FEATURE_DEFAULTS,
    "fit": FIT_DEFAULTS,
    "reasons": {"top": 3, "min_contribution": 0.05},
}
LABEL = "no-show: an attended or missed appointment (cancelled bookings left out) that the patient missed"
_KEY = 1 << 21  # person * _KEY + day orders (person, day) pairs; days stay far below 2^21


@dataclass
class NoShowModel:
    classifier: CalibratedBooster
    columns: tuple[str, ...]
    config: dict[str, Any]


def columns_of(config: dict[str, Any]) -> tuple[str, ...]:
    exclude = set(config.get("exclude_features") or [])
    unknown = exclude - set(COLUMNS)
    if unknown:
        raise ConfigError(f"exclude_features: unknown feature(s) {', '.join(sorted(unknown))}")
    return tuple(c for c in COLUMNS if c not in exclude)


def appointment_features(act: Activity, rows: IntArray, columns: tuple[str, ...] = COLUMNS) -> FeatureFrame:
    """The `columns` (of COLUMNS) of the appointments `rows` (indices into the activity's appointments),
    as of each one's booking day."""
    p = act.appt_person[rows]
    day = act.appt_day[rows]
    booked = np.where(np.isnan(act.appt_booked_day[rows]), day, act.appt_booked_day[rows]).astype(np.int64)
    booked = np.minimum(booked, day)
    out = np.full((len(rows), len(COLUMNS)), np.nan)
    col = {c: i for i, c in enumerate(COLUMNS)}
    lead = day - booked
    out[:, col["lead_days"]] = np.where(np.isnan(act.appt_booked_day[rows]), np.nan, lead)
    ch = act.appt_channel[rows]
    out[:, col["channel"]] = [CHANNELS.index(c) if c in CHANNELS else CHANNELS.index("other") for c in ch]
    out[:, col["weekday"]] = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    out[:, col["hour"]] = (act.appt_at[rows] % 86_400) // 3600
    status, known = act.appt_status, act.appt_known_day
    no_shows = _before(act.appt_person[status == NO_SHOW], known[status == NO_SHOW], p, booked)
    done = (status == NO_SHOW) | (status == ATTENDED)
    prior = _before(act.appt_person[done], known[done], p, booked)
    out[:, col["prior_no_shows"]] = no_shows
    out[:, col["prior_appointments"]] = prior
    out[:, col["prior_no_show_rate"]] = np.where(prior > 0, no_shows / np.maximum(prior, 1), np.nan)
    cancelled = status == CANCELLED
    out[:, col["prior_cancellations"]] = _before(act.appt_person[cancelled], known[cancelled], p, booked)
    last = _last_before(act.visit_person, act.visit_day, p, booked)
    out[:, col["days_since_visit"]] = np.where(last >= 0, booked - last, np.nan)
    out[:, col["age"]] = np.floor((day - act.birth_day[p]) / 365.25)
    org = act.appt_org[rows]
    out[:, col["org_level"]] = np.where(
        org >= 0, act.org_level[np.maximum(org, 0)] if len(act.org_level) else np.nan, np.nan
    )
    kinds = [_SPECIALTY_TYPE.get(str(s), "other") for s in act.appt_specialty[rows]]
    out[:, col["visit_type"]] = [VISIT_TYPES.index(k) for k in kinds]
    out[:, col["provider_distance_km"]] = distance_to(act, p, org)
    idx = [COLUMNS.index(c) for c in columns]
    return FeatureFrame(columns, out[:, idx], tuple(c for c in CATEGORICAL if c in columns))


def _before(person: IntArray, day: IntArray, q_person: IntArray, q_day: IntArray) -> FloatArray:
    """Per query, how many (person, day) rows have the query's person and a day before the query's day."""
    keys = np.sort(person * _KEY + day)
    hi = np.searchsorted(keys, q_person * _KEY + q_day, side="left")
    lo = np.searchsorted(keys, q_person * _KEY, side="left")
    out: FloatArray = (hi - lo).astype(np.float64)
    return out


def _last_before(person: IntArray, day: IntArray, q_person: IntArray, q_day: IntArray) -> IntArray:
    """Per query, the latest day of the query's person before the query's day (-1: none)."""
    keys = np.sort(person * _KEY + day)
    idx = np.searchsorted(keys, q_person * _KEY + q_day, side="left") - 1
    found = keys[np.maximum(idx, 0)] if len(keys) else np.zeros(len(q_person), np.int64)
    ok = (idx >= 0) & (found // _KEY == q_person)
    out: IntArray = np.where(ok, found % _KEY, -1)
    return out


def outcome_rows(act: Activity, first: int, last: int) -> IntArray:
    """Appointments with a known outcome scheduled on days [first, last]."""
    a = act.appt_status
    out: IntArray = np.flatnonzero(
        ((a == ATTENDED) | (a == NO_SHOW)) & (act.appt_day >= first) & (act.appt_day <= last)
    ).astype(np.int64)
    return out


def fit(
    store: WorkspaceStore,
    name: str = DEFAULT_NAME,
    *,
    split: date | None = None,
    config: dict[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    activity: Activity | None = None,
) -> tuple[ModelCard, NoShowModel]:
    """Backtest and fit (see the module docstring)."""
    cfg = merge_config(DEFAULTS, config, "noshow config")
    train_days, test_days = cfg["train_days"], cfg["test_days"]
    if not isinstance(train_days, int) or not isinstance(test_days, int) or train_days < 30 or test_days < 7:
        raise ConfigError("train_days must be a whole number >= 30 and test_days >= 7")
    act = activity or load_activity(store, get_settings().timezone, cfg["features"])
    done = (act.appt_status == ATTENDED) | (act.appt_status == NO_SHOW)
    if not done.any():
        raise ModelError("no attended or missed appointments in the store: nothing to learn no-shows from")
    end = int(act.appt_day[done].max())
    s = to_day(split) if split else end - test_days + 1
    if s + test_days - 1 > end:
        raise ConfigError(
            f"the test window [{from_day(s)}, {from_day(s + test_days - 1)}] runs past the last appointment "
            f"outcome {from_day(end)}: choose a split on or before {from_day(end - test_days + 1)}"
        )
    train_rows = outcome_rows(act, s - train_days, s - 1)
    test_rows = outcome_rows(act, s, s + test_days - 1)
    cols = columns_of(cfg)
    train, test = appointment_features(act, train_rows, cols), appointment_features(act, test_rows, cols)
    y_train = (act.appt_status[train_rows] == NO_SHOW).astype(np.float64)
    y_test = (act.appt_status[test_rows] == NO_SHOW).astype(np.float64)
    if not y_test.any():
        raise ModelError(
            f"no no-show in the test window from {from_day(s)}: the backtest cannot measure the model"
        )
    cats = tuple(c for c in CATEGORICAL if c in cols)
    model = fit_calibrated(
        train.values, y_train, cols, cfg["fit"], cats, LEVELS, groups=act.appt_person[train_rows]
    )
    numeric = [c for c in cols if c not in CATEGORICAL]
    baselines = [
        fit_baseline(
            "recency only (days since the last visit)", train.values, y_train, cols, ["days_since_visit"]
        ),
        fit_baseline(
            "earlier no-shows only", train.values, y_train, cols, ["prior_no_shows", "prior_appointments"]
        ),
        fit_baseline("logistic regression, numeric features", train.values, y_train, cols, numeric),
    ]
    rep = backtest(model, baselines, test.values, y_test, cols)
    recency = rep["models"][1]
    report: dict[str, Any] = {
        "label": LABEL,
        "split": from_day(s).isoformat(),
        "train_window": f"[{from_day(s - train_days)}, {from_day(s - 1)}]",
        "test_window": f"[{from_day(s)}, {from_day(s + test_days - 1)}]",
        "train_rows": len(y_train),
        **backtest_summary(model, rep, recency, y_train),
    }
    keys = act.appt_key[np.concatenate([train_rows, test_rows])].tolist()
    both = FeatureFrame(cols, np.vstack([train.values, test.values]))
    card = ModelCard(
        name, FAMILY, VERSION, cfg, data_hash(both.table(keys, "appointment")), clock.now(), report
    )
    return card, NoShowModel(model, cols, cfg)


@dataclass
class Score:
    appointment: str  # source:key
    person_id: str
    scheduled_at: datetime  # local wall-clock time
    risk: float
    reasons: list[Reason]


def score(
    store: WorkspaceStore,
    model: NoShowModel,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    activity: Activity | None = None,
) -> list[Score]:
    """Risk and reasons of every booked appointment scheduled after `as_of` (default: today) and booked
    by then, soonest first."""
    tz = ZoneInfo(get_settings().timezone)
    day = as_of or clock.now().astimezone(tz).date()
    act = activity or load_activity(store, str(tz), model.config["features"])
    t = to_day(day)
    booked_by = np.where(np.isnan(act.appt_booked_day), -np.inf, act.appt_booked_day) <= t
    rows = np.flatnonzero((act.appt_status == BOOKED) & (act.appt_day > t) & booked_by).astype(np.int64)
    rows = rows[np.argsort(act.appt_at[rows], kind="stable")]
    frame = appointment_features(act, rows, model.columns)
    x = frame.values
    p = model.classifier.predict(x)
    top = model.config["reasons"]
    why = reasons(
        model.classifier.contributions(x),
        x,
        model.columns,
        top=int(top["top"]),
        min_contribution=float(top["min_contribution"]),
        levels=LEVELS,
    )
    return [
        Score(
            str(act.appt_key[r]),
            str(act.persons[act.appt_person[r]]),
            datetime.combine(from_day(int(act.appt_day[r])), dtime.min).replace(
                hour=int(act.appt_at[r] % 86_400 // 3600), minute=int(act.appt_at[r] % 3600 // 60)
            ),
            float(p[i]),
            why[i],
        )
        for i, r in enumerate(rows)
    ]


def write(
    store: WorkspaceStore,
    scores: list[Score],
    as_of: date,
    *,
    clock: Clock = SYSTEM_CLOCK,
    refresh_segments: bool = True,
) -> dict[str, Any]:
    """Per person, the risk and reasons of their next booked appointment: noshow_risk, noshow_reasons
    (key = rank) and noshow_next_at (when that appointment is)."""
    from careloop.models.scores import write_score_traits

    tz = ZoneInfo(get_settings().timezone)
    nxt: dict[str, Score] = {}
    for s in scores:  # soonest first: the first per person is the next one
        nxt.setdefault(s.person_id, s)

    def put(trait: str, values: list[tuple[str, str, float | str | datetime | None]]) -> dict[str, Any]:
        return write_score_traits(
            store, trait, values, as_of=as_of, clock=clock, refresh_segments=refresh_segments
        )

    out = {
        "noshow_risk": put("noshow_risk", [(p, "", s.risk) for p, s in nxt.items()]),
        "noshow_reasons": put(
            "noshow_reasons",
            [(p, str(i + 1), r.text) for p, s in nxt.items() for i, r in enumerate(s.reasons)],
        ),
        "noshow_next_at": put(
            "noshow_next_at", [(p, "", s.scheduled_at.replace(tzinfo=tz)) for p, s in nxt.items()]
        ),
    }
    return {k: v["values"] for k, v in out.items()}
