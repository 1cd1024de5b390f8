"""Reason codes: the drivers that raise a patient's risk most, in Chinese and English."""

from __future__ import annotations

import math

import numpy as np

from careloop.models.reasons import LABELS, MISSING, PHRASES, drivers, phrase, reasons
from careloop.models.risk_features import PERSON_FEATURES


def test_every_feature_has_words() -> None:
    from careloop.models import noshow, refill

    for feature in (*PERSON_FEATURES, *noshow.COLUMNS, *refill.COLUMNS):
        assert feature in PHRASES and feature in LABELS, feature


def test_phrases_use_the_patients_own_values() -> None:
    assert phrase("cancellations_180d", 2.0) == ("近180天取消预约2次", "2 cancelled appointments in 180 days")
    assert phrase("cancellations_180d", 1.0)[1] == "1 cancelled appointment in 180 days"
    assert phrase("app_activity_trend", 0.25)[0] == "App/微信活跃度下降75%（近90天对比前90天）"
    assert phrase("satisfaction_change", -1.5)[1] == "satisfaction down 1.5 points (last 180 days vs before)"
    assert phrase("days_to_run_out", -4.0) == ("药品已用完4天", "medication ran out 4 days ago")
    assert phrase("satisfaction_change", math.nan) == MISSING["satisfaction_change"]
    assert phrase("weekday", 6.0) == ("周日", "Sunday")
    assert phrase("channel", 3.0, {"channel": ["wechat", "app", "web", "phone"]}) == (
        "电话预约",
        "booked by phone",
    )


def test_reasons_take_the_largest_positive_contributions() -> None:
    columns = ("cancellations_180d", "age", "distance_km")
    values = np.array([[3.0, 81.0, 40.0], [0.0, 30.0, 2.0]])
    contrib = np.array([[0.9, 0.04, 0.3, -2.0], [-0.2, -0.1, -0.3, -2.0]])  # last column: the bias
    got = reasons(contrib, values, columns, top=3, min_contribution=0.05)
    assert [r.feature for r in got[0]] == ["cancellations_180d", "distance_km"]  # age adds too little
    assert got[0][0].text == "近180天取消预约3次 / 3 cancelled appointments in 180 days"
    assert got[1] == []  # nothing raises this patient's risk


def test_drivers_rank_by_mean_absolute_contribution_with_direction() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    contrib = np.column_stack([0.8 * x[:, 0], -0.1 * x[:, 1], np.zeros(200)])
    rows = drivers(contrib, x, ("cancellations_180d", "age"))
    assert [r["feature"] for r in rows] == ["cancellations_180d", "age"]
    assert rows[0]["direction"] == "higher raises risk" and rows[1]["direction"] == "lower raises risk"
    assert rows[0]["share"] > 0.8
