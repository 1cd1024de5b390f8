"""Lifetime value beyond the default fit: Pareto/NBD on the CDNOW benchmark and the full posterior (NUTS).

Kept apart from test_clv.py so that each file stays under a minute when PyTensor's compile cache is cold
(each model compiles once, then loads from ~/.cache/careloop/pytensor).
"""

from __future__ import annotations

from datetime import date

import pytest

from careloop.models.clv import fit_transactions
from tests.models.test_clv import PUBLISHED_BGNBD, PUBLISHED_GG, _cdnow, _within

#: Fader, Hardie & Lee (2005), "A note on implementing the Pareto/NBD model in MATLAB"; LL -9595.0
PUBLISHED_PARETO = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}


def test_pareto_nbd_reproduces_the_published_parameters() -> None:
    run = fit_transactions(
        _cdnow(),
        {"model": "paretonbd", "time_unit": "week", "spend": False},
        observation_end=date(1997, 9, 30),
    )
    _within(run.report["params"], PUBLISHED_PARETO, 0.02)
    assert run.report["log_likelihood"] == pytest.approx(-9595.0, abs=0.1)
    assert "spend" not in run.report and run.predictions["value"].isna().all()


def test_full_posterior_on_request() -> None:
    run = fit_transactions(
        _cdnow(),
        {"time_unit": "week", "method": "mcmc", "mcmc": {"draws": 150, "tune": 150, "chains": 1}},
        observation_end=date(1997, 9, 30),
    )
    assert run.model.posterior["r"].shape == (1, 150)
    assert set(run.report["diagnostics"]) == {"r", "alpha", "a", "b"}
    assert run.model.params()["r"] == pytest.approx(PUBLISHED_BGNBD["r"], rel=0.1)
    assert run.report["spend"]["params"]["q"] == pytest.approx(PUBLISHED_GG["q"], rel=0.2)
    assert run.predictions["p_alive"].between(0, 1).all()
