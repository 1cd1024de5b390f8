"""``models``: lifetime-value fit and scoring time for N patients' transaction logs.

The log is simulated in numpy from the BG/NBD process with the published CDNOW parameters (r 0.243,
α 4.414, a 0.793, b 2.426 per week) and Gamma-Gamma spend (p 6.25, q 3.74, v 15.44): each patient's first
purchase falls in the first 12 weeks of a 39-week period; repeat purchases follow a Poisson process until
the patient drops out (after each repeat purchase with probability p). About 2 transactions per patient.

- **Fit** (seconds, lower is better): careloop's whole path from transaction rows — purchase days, customer
  summary (weeks = days / 7), BG/NBD and Gamma-Gamma MAP fits with pymc-marketing (compile cache warm), fit
  checks — against the *lifetimes* way in the same run: pymc-marketing's ``rfm_summary`` (the lifetimes
  summary code) and the closed-form log-likelihoods of Fader, Hardie & Lee maximised by scipy's L-BFGS-B
  over the log parameters, on customers grouped by identical (x, t_x, T) as lifetimes does.
- **Score** (seconds): expected purchases over 365 days, P(alive), expected spend and value for every
  patient — careloop's `ClvModel.predict` (pymc-marketing's formulas on xarray) against the same closed-form
  formulas written directly in numpy / scipy with the same parameters; the two must agree.

The aim is 1M patients scored (fit + score) in under 60 s on 2 cores.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from careloop.bench.report import BenchResult
from careloop.config import Settings
from careloop.models.clv import ClvModel, fit_clv, summarise
from careloop.models.transactions import Transactions, purchase_days

TRUE_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
TRUE_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
WEEKS = 39
ENTRY_WEEKS = 12
HORIZON_DAYS = 365
START_DAY = 20_089  # 2025-01-01 as days since 1970-01-01


def simulate_log(patients: int, seed: int) -> Transactions:
    """A BG/NBD + Gamma-Gamma transaction log: patient ids, purchase days, values (numpy only)."""
    rng = np.random.default_rng(seed)
    t = TRUE_BGNBD
    lam = rng.gamma(t["r"], 1.0 / t["alpha"], patients)
    drop = rng.beta(t["a"], t["b"], patients)
    entry = rng.uniform(0.0, ENTRY_WEEKS, patients)
    horizon = WEEKS - entry
    n = rng.poisson(lam * horizon)  # purchases a never-dropping patient would make in the period
    alive_for = rng.geometric(drop)  # repeat purchases before dropping out (>= 1)
    x = np.minimum(n, alive_for)
    # given n events in (0, T], the x-th is T times the x-th of n uniform order statistics
    last = np.where(x > 0, horizon * rng.beta(np.maximum(x, 1), np.maximum(n - x + 1, 1)), 0.0)
    who = np.repeat(np.arange(patients), x)
    times = rng.uniform(0.0, 1.0, len(who)) * np.repeat(last, x)
    ends = np.cumsum(x) - 1
    times[ends[x > 0]] = last[x > 0]  # each patient's x-th repeat purchase is at t_x exactly
    nu = rng.gamma(TRUE_GG["q"], 1.0 / TRUE_GG["v"], patients)
    customers = np.concatenate([np.arange(patients), who])
    weeks = np.concatenate([np.zeros(patients), times]) + entry[customers]
    values = rng.gamma(TRUE_GG["p"], 1.0 / nu[customers])
    days = START_DAY + np.floor(weeks * 7.0).astype(np.int64)
    ids = np.char.add("P", np.char.zfill(customers.astype(str), 7)).astype(object)
    return Transactions(ids, days, values, f"simulated BG/NBD log of {patients:,} patients")


# -- the baseline: closed-form likelihoods and predictions (the lifetimes way) -------------------------------


def _bgnbd_ll(log_params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray) -> float:
    r, alpha, a, b = np.exp(log_params)
    a_term = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_term = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx)
    tail = np.where(x > 0, np.logaddexp(a_term, d_term), a_term)
    ll = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b) + tail
    return -float(np.sum(w * ll))


def _gg_ll(log_params: np.ndarray, x: np.ndarray, m: np.ndarray, w: np.ndarray) -> float:
    p, q, v = np.exp(log_params)
    px = p * x
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    return -float(np.sum(w * ll))


def _grouped(frame: pd.DataFrame, cols: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of `cols` and how many customers share each (the likelihood is a weighted sum)."""
    counted = frame.groupby(cols, sort=False).size().reset_index(name="w")
    return [counted[c].to_numpy(np.float64) for c in cols], counted["w"].to_numpy(np.float64)


def baseline_fit(log: Transactions, end_day: int) -> tuple[dict[str, float], dict[str, float], pd.DataFrame]:
    """rfm_summary + scipy MLE of BG/NBD and Gamma-Gamma; the parameters and the summary."""
    from careloop.models.clv import _lib

    rfm_summary = _lib().rfm_summary
    frame = pd.DataFrame(
        {
            "id": log.customers,
            "date": np.datetime64("1970-01-01", "D") + log.days.astype("timedelta64[D]"),
            "value": log.values,
        }
    )
    end = pd.Timestamp(np.datetime64("1970-01-01", "D") + np.timedelta64(end_day, "D"))
    summary = rfm_summary(
        frame, "id", "date", "value", observation_period_end=end, time_unit="D", time_scaler=7.0
    )
    (x, tx, T), w = _grouped(summary, ["frequency", "recency", "T"])
    start = np.log([1.0, 1.0, 1.0, 1.0])
    res = minimize(_bgnbd_ll, start, args=(x, tx, T, w), method="L-BFGS-B")
    bg = dict(zip(("r", "alpha", "a", "b"), np.exp(res.x).tolist(), strict=True))
    rep = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    (fx, fm), fw = _grouped(rep, ["frequency", "monetary_value"])
    res = minimize(_gg_ll, np.log([1.0, 1.0, 1.0]), args=(fx, fm, fw), method="L-BFGS-B")
    gg = dict(zip(("p", "q", "v"), np.exp(res.x).tolist(), strict=True))
    return bg, gg, summary


def baseline_score(
    summary: pd.DataFrame, bg: dict[str, float], gg: dict[str, float], horizon: float
) -> dict[str, np.ndarray]:
    """Expected purchases, P(alive), expected spend and value in closed form (numpy / scipy)."""
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    x = summary["frequency"].to_numpy(np.float64)
    tx = summary["recency"].to_numpy(np.float64)
    T = summary["T"].to_numpy(np.float64)
    m = summary["monetary_value"].to_numpy(np.float64)
    t = horizon
    odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-300) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
    num = (a + b + x - 1) / (a - 1)
    num *= 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(
        r + x, b + x, a + b + x - 1, t / (alpha + T + t)
    )
    purchases = num / (1 + odds)
    alive = 1 / (1 + odds)
    p, q, v = gg["p"], gg["q"], gg["v"]
    spend = p * (v + x * m) / (p * x + q - 1)
    return {
        "expected_purchases": purchases,
        "p_alive": alive,
        "expected_spend": spend,
        "value": purchases * spend,
    }


# -- the scenario -------------------------------------------------------------------------------------------


def _careloop_fit(log: Transactions, end_day: int) -> tuple[ClvModel, dict[str, Any], pd.DataFrame, float]:
    started = time.perf_counter()
    days = purchase_days(log, end_day)
    summary = summarise(days, "week")
    model, report = fit_clv(summary, {"time_unit": "week"})
    return model, report, summary, time.perf_counter() - started


def bench_models(patients: int, seed: int, cache: Path, settings: Settings, repeat: int) -> list[BenchResult]:
    log = simulate_log(patients, seed)
    end_day = START_DAY + WEEKS * 7
    _careloop_fit(simulate_log(2_000, seed + 1), end_day)  # warm pymc-marketing and the compile cache
    fit_s = score_s = base_fit_s = base_score_s = float("inf")
    model: ClvModel | None = None
    report: dict[str, Any] = {}
    bg: dict[str, float] = {}
    gg: dict[str, float] = {}
    agreement = 0.0
    for _ in range(repeat):
        model, report, summary, seconds = _careloop_fit(log, end_day)
        fit_s = min(fit_s, seconds)
        started = time.perf_counter()
        pred = model.predict(summary, HORIZON_DAYS)
        score_s = min(score_s, time.perf_counter() - started)

        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bg, gg, base_summary = baseline_fit(log, end_day)
        base_fit_s = min(base_fit_s, time.perf_counter() - started)
        started = time.perf_counter()
        mp, sp = model.params(), model.spend_params() or {}
        base = baseline_score(summary, mp, sp, HORIZON_DAYS / 7.0)
        base_score_s = min(base_score_s, time.perf_counter() - started)
        agreement = max(
            float(np.max(np.abs(pred[c].to_numpy() - base[c]) / np.maximum(np.abs(base[c]), 1e-9)))
            for c in ("expected_purchases", "p_alive", "value")
        )
        if len(base_summary) != len(summary):
            raise RuntimeError("the baseline and careloop summaries disagree on the number of patients")
    assert model is not None
    size = f"{patients:,} patients ({log.rows:,} transactions)"
    details: dict[str, object] = {
        "true_bgnbd": TRUE_BGNBD,
        "careloop_bgnbd": report["params"],
        "baseline_bgnbd": {k: round(v, 6) for k, v in bg.items()},
        "true_gamma_gamma": TRUE_GG,
        "careloop_gamma_gamma": report.get("spend", {}).get("params"),
        "baseline_gamma_gamma": {k: round(v, 6) for k, v in gg.items()},
        "max_relative_difference_of_scores": agreement,
        "fit_plus_score_seconds": round(fit_s + score_s, 3),
    }
    command = f"careloop bench clv --patients {patients}" + (f" --repeat {repeat}" if repeat > 1 else "")
    return [
        BenchResult(
            scenario="models-clv-fit",
            size=size,
            figure=fit_s,
            baseline=base_fit_s,
            unit="s",
            baseline_name="lifetimes way: rfm_summary + closed-form MLE with scipy L-BFGS-B",
            command=command,
            details=details,
            note=f"BG/NBD + Gamma-Gamma MAP, pymc-marketing; fit + score {fit_s + score_s:.1f} s",
        ),
        BenchResult(
            scenario="models-clv-score",
            size=size,
            figure=score_s * 1000,
            baseline=base_score_s * 1000,
            unit="ms",
            baseline_name="closed-form numpy / scipy, same parameters",
            command=command,
            details=details,
            note=f"{HORIZON_DAYS}-day purchases, P(alive), spend, value; max rel. diff {agreement:.1e}",
        ),
    ]
