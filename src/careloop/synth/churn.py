"""Planted churn of chronic patients.

Population: patients with an ongoing therapy at the cut-off (not a planted early lapse) that started at
least 90 days before it. Outcome: churned = no chronic-care activity (no fill, chronic visit or online
follow-up) in the final window of `CHURN_WINDOW_DAYS` days.

The drivers are measured from the generated data before the cut-off, exactly as a model could measure
them (``truth/churn.parquet`` holds their values):

- ``cancelled_appointments_180d``: cancelled bookings in the 180 days before the cut-off (extra ones are
  planted at rate exp(-1.8 + 0.9 z) for disengaged patients);
- ``ignored_follow_ups_180d``: delivered follow-up messages without an open, click or reply;
- ``app_activity_ratio``: organic app / WeChat events in the last 90 days over the 90 before (+1 each);
- ``satisfaction_change``: mean feedback score in the last 180 days minus the mean before;
- ``distance_km`` to the usual place of care; ``monthly_cost_yuan`` out of pocket for the drugs;
- ``age_80_plus``.

True model: logit p = -3.0 + 0.45 min(cancelled, 4) + 0.40 min(ignored, 3) + 0.9 max(0, -ln ratio)
+ 0.55 max(0, -satisfaction_change) + 0.025 min(distance_km, 60) + 0.004 min(cost, 500)
+ 0.3 age_80_plus + e, e ~ N(0, 0.4); missing drivers contribute 0. `p_true` includes e.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth import catalog
from careloop.synth.arrays import BoolArray, FloatArray, IntArray, sigmoid
from careloop.synth.cohorts import HOSPITAL, LAPSED, ONLINE, RETAIL, CarePlaces, Therapies
from careloop.synth.population import People
from careloop.synth.timeline import DRIVER_WINDOW_DAYS, Timeline

INTERCEPT = -3.0
#: share of drug cost the patient pays, by channel: hospital (employee / resident insurance), retail
#: (personal account or cash), DTP (mostly self-paid specialty drugs), online
_OUT_OF_POCKET = {HOSPITAL: (0.25, 0.45), RETAIL: (0.7, 0.85), 2: (0.8, 0.9), ONLINE: (0.5, 0.6)}


def active_at_cutoff(th: Therapies, n: int, tl: Timeline) -> BoolArray:
    ongoing = (th.pattern != LAPSED) & (th.start_day < tl.cutoff_day - 90)
    out = np.zeros(n, dtype=np.bool_)
    out[th.person[ongoing]] = True
    return out


def planted_cancellations(rng: np.random.Generator, people: People, active: BoolArray) -> IntArray:
    lam = np.exp(-1.8 + 0.9 * people.disengagement)
    return np.where(active, rng.poisson(lam), 0).astype(np.int64)


def monthly_cost(people: People, th: Therapies) -> FloatArray:
    ongoing = th.pattern != LAPSED
    resident = (~people.employee_insurance[th.person]).astype(np.int64)
    share = np.array([[v[0], v[1]] for _, v in sorted(_OUT_OF_POCKET.items())])[th.base_channel, resident]
    cost = catalog.DRUG_DAILY_COST[th.drug] * 30 * share * _markup(th.base_channel)
    out: FloatArray = np.bincount(th.person[ongoing], weights=cost[ongoing], minlength=people.n).astype(
        np.float64
    )
    return out


def _markup(channel: IntArray) -> FloatArray:
    out: FloatArray = np.array([1.0, 1.12, 1.05, 1.08])[channel]
    return out


@dataclass
class Churn:
    active: BoolArray
    churned: BoolArray  # False outside the population
    p_true: FloatArray  # NaN outside the population
    noise: FloatArray
    cancelled: IntArray
    ignored: IntArray
    activity_ratio: FloatArray  # NaN without digital services
    satisfaction_change: FloatArray  # NaN without feedback on both sides of the window start
    distance_km: FloatArray
    monthly_cost: FloatArray
    age_80_plus: BoolArray


def window_counts(person: IntArray, day: IntArray, lo: int, hi: int, n: int) -> IntArray:
    sel = (day >= lo) & (day < hi)
    out: IntArray = np.bincount(person[sel], minlength=n).astype(np.int64)
    return out


def decide(
    rng: np.random.Generator,
    people: People,
    places: CarePlaces,
    th: Therapies,
    active: BoolArray,
    cancelled: IntArray,
    ignored: IntArray,
    recent_events: IntArray,
    earlier_events: IntArray,
    digital: BoolArray,
    feedback_person: IntArray,
    feedback_day: IntArray,
    feedback_score: IntArray,
    tl: Timeline,
) -> Churn:
    n = people.n
    c = tl.cutoff_day
    ratio = np.where(digital, (recent_events + 1) / (earlier_events + 1), np.nan)
    recent = (feedback_day >= c - DRIVER_WINDOW_DAYS) & (feedback_day < c)
    earlier = feedback_day < c - DRIVER_WINDOW_DAYS
    sum_r = np.bincount(feedback_person[recent], weights=feedback_score[recent], minlength=n)
    cnt_r = np.bincount(feedback_person[recent], minlength=n)
    sum_e = np.bincount(feedback_person[earlier], weights=feedback_score[earlier], minlength=n)
    cnt_e = np.bincount(feedback_person[earlier], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        sat = np.where((cnt_r > 0) & (cnt_e > 0), sum_r / cnt_r - sum_e / cnt_e, np.nan)
    cost = monthly_cost(people, th)
    age80 = people.age >= 80
    noise = rng.normal(0, 0.4, n)
    logit = (
        INTERCEPT
        + 0.45 * np.minimum(cancelled, 4)
        + 0.40 * np.minimum(ignored, 3)
        + 0.9 * np.maximum(0, -np.log(np.nan_to_num(ratio, nan=1.0)))
        + 0.55 * np.maximum(0, -np.nan_to_num(sat, nan=0.0))
        + 0.025 * np.minimum(places.distance_primary, 60)
        + 0.004 * np.minimum(cost, 500)
        + 0.3 * age80
        + noise
    )
    p = np.where(active, sigmoid(logit), np.nan)
    churned = active & (rng.random(n) < np.nan_to_num(p, nan=0.0))
    return Churn(
        active=active,
        churned=churned,
        p_true=p,
        noise=noise,
        cancelled=cancelled,
        ignored=ignored,
        activity_ratio=ratio,
        satisfaction_change=sat,
        distance_km=places.distance_primary,
        monthly_cost=cost,
        age_80_plus=age80,
    )
