"""Accuracy figures of the risk models: known answers on small examples."""

from __future__ import annotations

import numpy as np
import pytest

from careloop.models.evaluation import auc, binary_report, brier, lift_by_decile, pr_auc, reliability


def test_auc_pr_auc_and_brier_on_known_answers() -> None:
    y = [0, 0, 1, 1]
    assert auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1], [0.2, 0.3]) is None  # one class: no AUC, not a made-up number
    # average precision: ranks 1 (pos), 2 (neg), 3 (pos) -> (1/1 + 2/3) / 2
    assert pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert brier([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)


def test_reliability_table_and_ece() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p = np.array([0.05, 0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    rows, ece = reliability(y, p)
    assert [r["bin"] for r in rows] == ["0.0-0.1", "0.1-0.2", "0.9-1.0"]
    assert [r["n"] for r in rows] == [2, 2, 4]
    assert rows[1]["observed_rate"] == 0.5 and rows[2]["mean_predicted"] == 0.95
    # |0.05-0| * 2/8 + |0.15-0.5| * 2/8 + |0.95-0.75| * 4/8
    assert ece == pytest.approx(0.0125 + 0.0875 + 0.1)


def test_lift_by_decile_orders_by_score_and_captures_everything() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    rows = lift_by_decile(y, p)
    assert [r["decile"] for r in rows] == list(range(1, 11)) and sum(r["n"] for r in rows) == 1000
    assert rows[0]["lift"] > 1.5 > 0.5 > rows[-1]["lift"]
    assert rows[-1]["cumulative_capture"] == 1.0
    assert rows[0]["mean_predicted"] > rows[-1]["mean_predicted"]


def test_binary_report_has_every_figure() -> None:
    report = binary_report([0, 1, 0, 1, 1], [0.2, 0.7, 0.4, 0.6, 0.9])
    assert report["n"] == 5 and report["positives"] == 3 and report["base_rate"] == 0.6
    assert report["auc"] == 1.0 and report["reliability"] and report["lift"]
