"""Customer lifetime value: BG/NBD or Pareto/NBD for repeat purchases and Gamma-Gamma for spend, fitted
with pymc-marketing; per patient the expected purchases over a horizon, P(alive) and the expected value.

**Data.** A transaction log (any file, `careloop.models.transactions`, or the store's dispenses per unified
person) becomes one row per customer in the form of Fader, Hardie & Lee (2005): ``frequency`` = repeat
purchases (distinct purchase days after the first), ``recency`` = time from the first to the last purchase,
``T`` = time from the first purchase to the end of the calibration period (transactions after it are
ignored), ``monetary_value`` = mean value of the repeat purchase days. Time is days, or weeks = days / 7
(continuous time, not calendar weeks).

**Models.** ``bgnbd`` (default; Fader, Hardie & Lee 2005, "Counting your customers the easy way") or
``paretonbd`` (Schmittlein, Morrison & Colombo 1987) for the purchase process, Gamma-Gamma (Fader, Hardie &
Lee 2005, "RFM and CLV") for the mean spend of repeat customers. The defaults put **flat priors** on every
parameter (pymc_extras ``Prior("HalfFlat")``): pymc's ``find_MAP`` maximises the log density without the
Jacobian of the log transform, so the MAP fit *is* the maximum-likelihood fit of the papers (this is how
the published CDNOW parameters are reproduced, tests/models/test_clv.py). ``method: mcmc`` samples the full
posterior with NUTS (``mcmc`` settings: draws, tune, chains, ...); predictions then average over the draws.
Any prior can be configured (``priors``: ``flat``, ``library`` for pymc-marketing's own defaults, or
``{dist: Gamma, kwargs: {alpha: 1, beta: 1}}``).

**Predictions**, made at the end of the calibration period for ``horizon_days``: expected purchases,
P(alive), the Gamma-Gamma expected mean spend, and value = expected purchases x expected spend, discounted
per 30-day step at ``discount_rate`` a year when it is not 0.

PyTensor compiles the model to C on first use; the compiled modules are kept under
``$XDG_CACHE_HOME/careloop/pytensor`` (default ``~/.cache/careloop/pytensor``) unless ``PYTENSOR_FLAGS``
names a compile directory, so later fits start in about a second instead of tens of seconds.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, ModelError
from careloop.models.base import ModelCard, data_hash, merge_config, registry
from careloop.models.scores import write_score_traits
from careloop.models.transactions import (
    PurchaseDays,
    Transactions,
    day_numbers,
    from_day,
    purchase_days,
    read_transactions,
    to_day,
)
from careloop.storage import WorkspaceStore

FAMILY = "clv"
VERSION = "1"
UNIT_DAYS = {"day": 1.0, "week": 7.0}
PARAMS = {
    "bgnbd": ("r", "alpha", "a", "b"),
    "paretonbd": ("r", "alpha", "s", "beta"),
    "gamma_gamma": ("p", "q", "v"),
}
TRAITS = {
    "expected_purchases": "clv_expected_purchases",
    "p_alive": "clv_p_alive",
    "value": "clv_value",
}
DEFAULTS: dict[str, Any] = {
    "model": "bgnbd",
    "time_unit": "day",
    "method": "map",
    "horizon_days": 365,
    "discount_rate": 0.0,
    "spend": True,
    "priors": {name: dict.fromkeys(params, "flat") for name, params in PARAMS.items()},
    "map": {"maxeval": 5000},
    "mcmc": {
        "draws": 1000,
        "tune": 1000,
        "chains": 2,
        "cores": None,
        "target_accept": 0.9,
        "random_seed": 20,
    },
}
#: chain x draw x customers evaluated at once when predicting from a sampled posterior
_CELLS = 20_000_000


def config_for(user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS with `user` merged over them, checked."""
    cfg = merge_config(DEFAULTS, user, "clv config")
    if cfg["model"] not in ("bgnbd", "paretonbd"):
        raise ConfigError(f"clv config: model is bgnbd or paretonbd, not {cfg['model']!r}")
    if cfg["time_unit"] not in UNIT_DAYS:
        raise ConfigError(f"clv config: time_unit is day or week, not {cfg['time_unit']!r}")
    if cfg["method"] not in ("map", "mcmc"):
        raise ConfigError(f"clv config: method is map or mcmc, not {cfg['method']!r}")
    horizon = cfg["horizon_days"]
    if not isinstance(horizon, int | float) or isinstance(horizon, bool) or horizon <= 0:
        raise ConfigError("clv config: horizon_days must be a number of days > 0")
    rate = cfg["discount_rate"]
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise ConfigError("clv config: discount_rate is a yearly rate from 0 (none) to below 1, e.g. 0.08")
    for key in ("draws", "tune", "chains"):
        value = cfg["mcmc"][key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"clv config: mcmc.{key} must be a whole number >= 1")
    a_b = [k in cfg["priors"]["bgnbd"] and cfg["priors"]["bgnbd"][k] == "library" for k in ("a", "b")]
    if any(a_b) and not all(a_b):
        raise ConfigError(
            "clv config: priors.bgnbd.a and .b are 'library' together (pymc-marketing's pooled prior) or neither"
        )
    return cfg


# -- pymc-marketing, imported on first use with the compile cache in place ---------------------------------


def compile_dir() -> Path:
    """Where PyTensor keeps compiled modules for careloop (unless PYTENSOR_FLAGS names one)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "careloop" / "pytensor"


def _use_compile_cache() -> None:
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if "compiledir" in flags or "pytensor" in sys.modules:
        return
    target = compile_dir()
    target.mkdir(parents=True, exist_ok=True)
    os.environ["PYTENSOR_FLAGS"] = ",".join(p for p in (flags, f"base_compiledir={target}") if p)


def _lib() -> Any:
    """The pymc-marketing CLV module (imported once, quietly)."""
    _use_compile_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import pymc_marketing.clv as clv

    return clv


def _prior(spec: Any, where: str) -> Any:
    from pymc_extras.prior import Prior

    if spec == "flat":
        return Prior("HalfFlat")
    if isinstance(spec, Mapping) and isinstance(spec.get("dist"), str):
        try:
            return Prior(spec["dist"], **dict(spec.get("kwargs") or {}))
        except Exception as e:  # an unknown distribution or argument
            raise ConfigError(f"clv config: {where}: {e}") from e
    raise ConfigError(
        f"clv config: {where} is 'flat', 'library' or {{dist: NAME, kwargs: {{...}}}}, not {spec!r}"
    )


def _model_config(priors: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        param: _prior(spec, f"priors.{name}.{param}")
        for param, spec in priors[name].items()
        if spec != "library"
    }


# -- the customer summary ----------------------------------------------------------------------------------


def summarise(days: PurchaseDays, time_unit: str) -> pd.DataFrame:
    """One row per customer: customer_id (the code), frequency, recency, T, monetary_value."""
    hist = days.histories()
    unit = UNIT_DAYS[time_unit]
    frequency = hist.days - 1
    repeat = np.where(frequency > 0, (hist.total - hist.first_value) / np.maximum(frequency, 1), 0.0)
    return pd.DataFrame(
        {
            "customer_id": np.arange(days.customers, dtype=np.int64),
            "frequency": frequency.astype(np.float64),
            "recency": (hist.last - hist.first) / unit,
            "T": (days.end - hist.first) / unit,
            "monetary_value": repeat,
        }
    )


# -- the fitted model --------------------------------------------------------------------------------------


@dataclass
class ClvModel:
    """A fitted CLV model: posterior draws of the purchase and spend parameters (one draw for MAP)."""

    model: str
    time_unit: str
    method: str
    priors: dict[str, Any]
    posterior: dict[str, np.ndarray]  # name -> (chain, draw)
    spend_posterior: dict[str, np.ndarray] | None = None
    _predictors: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)

    def params(self) -> dict[str, float]:
        return params_of(self.posterior, self.model)

    def spend_params(self) -> dict[str, float] | None:
        return None if self.spend_posterior is None else params_of(self.spend_posterior, "gamma_gamma")

    def draws(self) -> int:
        first = next(iter(self.posterior.values()))
        return int(first.size)

    def spend_usable(self) -> bool:
        """Gamma-Gamma's mean spend p v / (q - 1) exists only for q > 1."""
        sp = self.spend_params()
        return sp is not None and sp["q"] > 1

    def artefact(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "time_unit": self.time_unit,
            "method": self.method,
            "priors": self.priors,
            "posterior": self.posterior,
            "spend_posterior": self.spend_posterior,
        }

    @classmethod
    def from_artefact(cls, a: Mapping[str, Any]) -> ClvModel:
        return cls(
            model=a["model"],
            time_unit=a["time_unit"],
            method=a["method"],
            priors=a["priors"],
            posterior=a["posterior"],
            spend_posterior=a.get("spend_posterior"),
        )

    def _pymc(self) -> tuple[Any, Any]:
        """pymc-marketing model objects carrying these draws (built on a one-customer stub)."""
        if self._predictors is None:
            clv = _lib()
            import arviz as az

            cls = clv.BetaGeoModel if self.model == "bgnbd" else clv.ParetoNBDModel
            stub = pd.DataFrame({"customer_id": [0], "frequency": [0.0], "recency": [0.0], "T": [1.0]})
            tm = cls(model_config=_model_config(self.priors, self.model))
            tm.build_model(stub)
            tm.idata = az.InferenceData(posterior=_dataset(self.posterior))
            gg = None
            if self.spend_posterior is not None:
                gg = clv.GammaGammaModel(model_config=_model_config(self.priors, "gamma_gamma"))
                gg.idata = az.InferenceData(posterior=_dataset(self.spend_posterior))
            self._predictors = (tm, gg)
        return self._predictors

    def predict(self, summary: pd.DataFrame, horizon_days: float, discount_rate: float = 0.0) -> pd.DataFrame:
        """Per customer (rows of `summary`): expected_purchases and value over the horizon, p_alive,
        expected_spend (NaN without a usable spend model)."""
        tm, gg = self._pymc()
        unit = UNIT_DAYS[self.time_unit]
        horizon = float(horizon_days) / unit
        steps = _discount_steps(float(horizon_days), discount_rate)
        spend_ok = gg is not None and self.spend_usable()
        chunk = max(10_000, _CELLS // max(self.draws(), 1))
        parts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for start in range(0, len(summary), chunk):
                part = summary.iloc[start : start + chunk]
                purchases = tm.expected_purchases(part, future_t=horizon)
                alive = tm.expected_probability_alive(part)
                out = {
                    "expected_purchases": _mean_over_draws(purchases),
                    "p_alive": _mean_over_draws(alive),
                }
                if spend_ok:
                    spend = gg.expected_customer_spend(part)
                    if steps is None:
                        value = purchases * spend
                    else:
                        value, previous = 0.0, 0.0
                        for day, factor in steps:
                            cum = (
                                purchases
                                if day == horizon_days
                                else tm.expected_purchases(part, future_t=day / unit)
                            )
                            value = value + (cum - previous) * spend * factor
                            previous = cum
                    out["expected_spend"] = _mean_over_draws(spend)
                    out["value"] = _mean_over_draws(value)
                else:
                    out["expected_spend"] = np.full(len(part), np.nan)
                    out["value"] = np.full(len(part), np.nan)
                parts.append(pd.DataFrame(out, index=part.index))
        return pd.concat(parts) if parts else pd.DataFrame(columns=[*TRAITS, "expected_spend"])

    def expected_repeat_purchases(self, summary: pd.DataFrame) -> float:
        """Repeat purchases the model expects in the calibration period, summed over customers (a fit check
        against the observed total)."""
        tm, _ = self._pymc()
        total = 0.0
        chunk = max(10_000, _CELLS // max(self.draws(), 1))
        for start in range(0, len(summary), chunk):
            part = summary.iloc[start : start + chunk]
            got = tm.expected_purchases_new_customer(part[["customer_id"]], t=part["T"].to_numpy())
            total += float(np.sum(_mean_over_draws(got)))
        return total


def _dataset(draws: Mapping[str, np.ndarray]) -> Any:
    import xarray as xr

    first = next(iter(draws.values()))
    chains, n = first.shape
    return xr.Dataset(
        {k: (("chain", "draw"), np.asarray(v)) for k, v in draws.items()},
        coords={"chain": np.arange(chains), "draw": np.arange(n)},
    )


def _mean_over_draws(x: Any) -> np.ndarray:
    dims = [d for d in ("chain", "draw") if d in getattr(x, "dims", ())]
    reduced = x.mean(dims) if dims else x
    return np.asarray(reduced.transpose("customer_id").values, dtype=np.float64)


def _discount_steps(horizon_days: float, rate: float) -> list[tuple[float, float]] | None:
    """(end day, discount factor) of each 30-day step of the horizon; None when not discounting."""
    if rate == 0:
        return None
    ends = [float(d) for d in np.arange(30.0, horizon_days, 30.0)] + [horizon_days]
    return [(d, 1.0 / (1.0 + rate) ** (d / 365.0)) for d in ends]


# -- fitting -----------------------------------------------------------------------------------------------


def _posterior_draws(idata: Any) -> dict[str, np.ndarray]:
    post = idata.posterior
    return {
        str(k): np.asarray(v.values, dtype=np.float64)
        for k, v in post.data_vars.items()
        if tuple(v.dims) == ("chain", "draw")
    }


def _log_likelihood(model: Any, draws: Mapping[str, np.ndarray]) -> float | None:
    """The data's log-likelihood at the posterior mean (the MAP point for a MAP fit): priors excluded."""
    pm_model = model.model
    point: dict[str, np.ndarray] = {}
    for rv in pm_model.free_RVs:
        if rv.name not in draws:
            return None
        value = np.asarray(np.mean(draws[rv.name]))
        transform = pm_model.rvs_to_transforms.get(rv)
        if transform is not None:
            value = np.asarray(transform.forward(value, *rv.owner.inputs).eval())
        point[pm_model.rvs_to_values[rv].name] = value
    terms = list(pm_model.observed_RVs) + list(pm_model.potentials)
    fn = pm_model.compile_logp(vars=terms, jacobian=False)
    ll = float(fn(point))
    return ll if math.isfinite(ll) else None


def _run(model: Any, data: pd.DataFrame, cfg: Mapping[str, Any], what: str) -> None:
    """Fit `model` on `data` as configured; pymc's failures become ModelErrors saying what failed."""
    import logging

    kwargs: dict[str, Any]
    if cfg["method"] == "map":
        kwargs = {"maxeval": int(cfg["map"]["maxeval"]), "progressbar": False}
    else:
        mc = dict(cfg["mcmc"])
        cores = mc.pop("cores") or min(mc["chains"], os.cpu_count() or 1)
        kwargs = {**mc, "cores": cores, "progressbar": False}
    quiet = logging.getLogger("pymc")
    level = quiet.level
    if cfg["method"] == "map":
        quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(data, method=cfg["method"], **kwargs)
    except (ValueError, FloatingPointError, RuntimeError, ArithmeticError) as e:
        raise ModelError(f"{what} could not be fitted ({type(e).__name__}: {e}); check the data") from e
    finally:
        quiet.setLevel(level)


def _diagnostics(idata: Any, params: tuple[str, ...]) -> dict[str, dict[str, float]]:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(idata.posterior[list(params)])  # type: ignore[no-untyped-call]
        ess = az.ess(idata.posterior[list(params)])  # type: ignore[no-untyped-call]
    return {p: {"r_hat": round(float(rhat[p]), 4), "ess_bulk": round(float(ess[p]), 1)} for p in params}


def params_of(draws: Mapping[str, np.ndarray], model: str) -> dict[str, float]:
    """Posterior means of a model's parameters (the point itself for a MAP fit)."""
    return {p: float(np.mean(draws[p])) for p in PARAMS[model]}


def _rounded(params: Mapping[str, float]) -> dict[str, float]:
    """Parameters to 7 significant digits (a tiny scale must not round to 0)."""
    return {k: float(f"{v:.7g}") for k, v in params.items()}


#: a fitted parameter above this means the data barely identify it (the fit ran to a boundary)
_LARGE = 1e4


def _boundary_warnings(params: Mapping[str, float], model: str) -> list[str]:
    large = [k for k, v in params.items() if v > _LARGE]
    if not large:
        return []
    why = {
        "bgnbd": "almost no dropout is visible, so P(alive) is close to 1 for everyone",
        "paretonbd": "almost no dropout is visible",
        "gamma_gamma": "a customer's purchases hardly vary in value, so spend follows each customer's own mean",
    }[model]
    return [
        f"{' and '.join(large)} {'is' if len(large) == 1 else 'are'} very large: {why}; the data do not "
        "identify it well, so treat the predictions with care"
    ]


def fit_clv(
    summary: pd.DataFrame, config: Mapping[str, Any] | None = None
) -> tuple[ClvModel, dict[str, Any]]:
    """Fit the purchase model (and Gamma-Gamma when values exist) on a customer summary; the model and its
    report (parameters, log-likelihood, fit checks)."""
    cfg = config_for(config)
    n = len(summary)
    if n == 0:
        raise ModelError("no customers to fit")
    repeaters = int((summary["frequency"] > 0).sum())
    if repeaters == 0:
        raise ModelError(
            "no customer bought on two different days in the calibration period; the purchase models "
            "need repeat purchases (use a later observation end or more history)"
        )
    clv = _lib()
    started = time.perf_counter()
    name = cfg["model"]
    cls = clv.BetaGeoModel if name == "bgnbd" else clv.ParetoNBDModel
    tm = cls(model_config=_model_config(cfg["priors"], name))
    data = summary[["customer_id", "frequency", "recency", "T"]]
    _run(tm, data, cfg, "the purchase model")
    posterior = _posterior_draws(tm.idata)
    params = params_of(posterior, name)
    if not all(math.isfinite(v) and v > 0 for v in params.values()):
        raise ModelError(f"the purchase model did not converge (parameters {params}); check the data")
    report: dict[str, Any] = {
        "model": name,
        "method": cfg["method"],
        "time_unit": cfg["time_unit"],
        "customers": n,
        "repeat_customers": repeaters,
        "repeat_purchases": int(summary["frequency"].sum()),
        "params": _rounded(params),
        "log_likelihood": _log_likelihood(tm, posterior),
    }
    warns = _boundary_warnings(params, name)
    if cfg["method"] == "mcmc":
        report["diagnostics"] = _diagnostics(tm.idata, PARAMS[name])
    spend_posterior = None
    if cfg["spend"] and "monetary_value" in summary and summary["monetary_value"].gt(0).any():
        spend_posterior, report["spend"] = _fit_spend(clv, summary, cfg)
        warns += _boundary_warnings(params_of(spend_posterior, "gamma_gamma"), "gamma_gamma")
    if warns:
        report["warnings"] = warns
    fitted = ClvModel(name, cfg["time_unit"], cfg["method"], cfg["priors"], posterior, spend_posterior)
    report["expected_repeat_purchases"] = round(fitted.expected_repeat_purchases(data), 2)
    report["fit_seconds"] = round(time.perf_counter() - started, 3)
    return fitted, report


def _fit_spend(
    clv: Any, summary: pd.DataFrame, cfg: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    used = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    gg = clv.GammaGammaModel(model_config=_model_config(cfg["priors"], "gamma_gamma"))
    _run(gg, used[["customer_id", "frequency", "monetary_value"]], cfg, "the Gamma-Gamma spend model")
    posterior = _posterior_draws(gg.idata)
    params = params_of(posterior, "gamma_gamma")
    report: dict[str, Any] = {
        "model": "gamma_gamma",
        "customers": len(used),
        "params": _rounded(params),
        "log_likelihood": _log_likelihood(gg, posterior),
        "mean_spend": round(params["p"] * params["v"] / (params["q"] - 1), 4) if params["q"] > 1 else None,
        # Gamma-Gamma assumes spend is independent of how often a customer buys: check it
        "corr_frequency_spend": round(float(used["frequency"].corr(used["monetary_value"])), 4)
        if len(used) > 2
        else None,
    }
    if params["q"] <= 1:
        report["note"] = "q <= 1: the mean spend is not defined, so no value is predicted"
    if cfg["method"] == "mcmc":
        report["diagnostics"] = _diagnostics(gg.idata, PARAMS["gamma_gamma"])
    return posterior, report


def prediction_summary(pred: pd.DataFrame, horizon_days: float) -> dict[str, Any]:
    """Totals and averages of per-customer predictions, for reports."""
    value = pred["value"].to_numpy(dtype=np.float64)
    out: dict[str, Any] = {
        "horizon_days": horizon_days,
        "customers": len(pred),
        "expected_purchases": round(float(pred["expected_purchases"].sum()), 2),
        "mean_p_alive": round(float(pred["p_alive"].mean()), 4) if len(pred) else None,
    }
    if len(value) and np.isfinite(value).all():
        top = np.sort(value)[::-1][: max(1, len(value) // 10)]
        total = float(value.sum())
        out["value"] = round(total, 2)
        out["top_decile_value_share"] = round(float(top.sum()) / total, 4) if total > 0 else None
    return out


# -- the two entry points: a transaction file, the store -------------------------------------------------


@dataclass
class ClvRun:
    """A fit (or a saved model) applied to customers: the model, its report and per-customer predictions."""

    model: ClvModel
    report: dict[str, Any]
    config: dict[str, Any]
    ids: np.ndarray
    summary: pd.DataFrame
    predictions: pd.DataFrame
    data_hash: str
    card: ModelCard | None = None

    def frame(self) -> pd.DataFrame:
        """One row per customer: id, the summary and the predictions."""
        out = self.summary.drop(columns=["customer_id"]).copy()
        out.insert(0, "customer", self.ids)
        for col in ("expected_purchases", "p_alive", "expected_spend", "value"):
            out[col] = self.predictions[col].to_numpy()
        return out


def _fit_and_predict(
    days: PurchaseDays,
    cfg: dict[str, Any],
    source: str,
    *,
    save: str | None,
    workspace: str,
    clock: Clock,
    loaded: tuple[ModelCard, ClvModel] | None = None,
) -> ClvRun:
    summary = summarise(days, loaded[1].time_unit if loaded else cfg["time_unit"])
    digest = data_hash(summary)
    if loaded is None:
        model, report = fit_clv(summary, cfg)
    else:
        card, model = loaded
        report = {
            "model": model.model,
            "method": model.method,
            "time_unit": model.time_unit,
            "loaded": card.name,
            "trained_at": card.trained_at.isoformat(),
            "params": _rounded(model.params()),
            "customers": len(summary),
        }
        sp = model.spend_params()
        if sp is not None:
            report["spend"] = {"params": _rounded(sp)}
    report["source"] = source
    report["observation_end"] = from_day(days.end).isoformat()
    report["transactions"] = days.transactions
    report["ignored_after_observation_end"] = days.ignored
    report["purchase_days"] = len(days.day)
    started = time.perf_counter()
    pred = model.predict(summary, cfg["horizon_days"], cfg["discount_rate"])
    report["predictions"] = prediction_summary(pred, cfg["horizon_days"])
    report["score_seconds"] = round(time.perf_counter() - started, 3)
    run = ClvRun(model, report, cfg, days.ids, summary, pred, digest)
    if save and loaded is None:
        card = ModelCard(
            name=save,
            family=FAMILY,
            family_version=VERSION,
            config=cfg,
            data_hash=digest,
            trained_at=clock.now(),
            report=report,
        )
        registry(workspace).save(card, model.artefact())
        run.card = card
    return run


def load_model(name: str, workspace: str) -> tuple[ModelCard, ClvModel]:
    card, artefact = registry(workspace).load(name, family=FAMILY, family_version=VERSION)
    return card, ClvModel.from_artefact(artefact)


def fit_transactions(
    tx: Transactions,
    config: Mapping[str, Any] | None = None,
    *,
    observation_end: date | None = None,
    save: str | None = None,
    workspace: str = "default",
    clock: Clock = SYSTEM_CLOCK,
) -> ClvRun:
    """Fit on a transaction log (calibration period ending at `observation_end`, default its last day)."""
    cfg = config_for(config)
    days = purchase_days(tx, None if observation_end is None else to_day(observation_end))
    return _fit_and_predict(days, cfg, tx.source, save=save, workspace=workspace, clock=clock)


def fit_file(
    path: Path,
    *,
    customer_col: str,
    date_col: str,
    value_col: str | None,
    date_format: str | None = None,
    config: Mapping[str, Any] | None = None,
    observation_end: date | None = None,
    save: str | None = None,
    workspace: str = "default",
    clock: Clock = SYSTEM_CLOCK,
) -> ClvRun:
    """`careloop models clv fit`: read any transaction file and fit on it."""
    cfg = config_for(config)  # a bad config fails before the file is read
    tx = read_transactions(
        path,
        customer_col=customer_col,
        date_col=date_col,
        value_col=value_col,
        date_format=date_format,
        timezone=get_settings().timezone,
    )
    return fit_transactions(
        tx, cfg, observation_end=observation_end, save=save, workspace=workspace, clock=clock
    )


def store_transactions(store: WorkspaceStore, end: datetime, timezone: str) -> Transactions:
    """Every dispense of a unified person up to `end`: person, local day, amount (a missing amount is 0)."""
    table = store.sql(
        "SELECT l.person_id AS person_id, e.dispensed_at AS at, e.amount AS amount FROM dispense e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key "
        "WHERE e.dispensed_at IS NOT NULL AND e.dispensed_at <= :end",
        {"end": end},
    )
    at = pd.to_datetime(table.column("at").to_pandas(), utc=True)
    local = at.dt.tz_convert(ZoneInfo(timezone)).dt.tz_localize(None)
    amount = pc.fill_null(pc.cast(table.column("amount"), pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    return Transactions(
        customers=np.asarray(table.column("person_id").to_pylist(), dtype=object),
        days=day_numbers(local),
        values=np.clip(np.asarray(amount, dtype=np.float64), 0.0, None),
        source="the store's dispenses",
    )


def score_store(
    store: WorkspaceStore,
    config: Mapping[str, Any] | None = None,
    *,
    as_of: date | None = None,
    model_name: str | None = None,
    save: str | None = None,
    workspace: str = "default",
    clock: Clock = SYSTEM_CLOCK,
    write: bool = True,
) -> ClvRun:
    """Fit on the store's dispenses per person up to `as_of` (or use the saved model `model_name`), predict
    for every person with a dispense and write clv_expected_purchases, clv_p_alive and clv_value."""
    cfg = config_for(config)
    if model_name and save:
        raise ConfigError(
            "--save keeps a new fit; with --saved nothing is fitted, so there is nothing to save"
        )
    tz = ZoneInfo(get_settings().timezone)
    day = as_of or clock.now().astimezone(tz).date()
    end = datetime.combine(day, dtime.max, tzinfo=tz)
    tx = store_transactions(store, end, get_settings().timezone)
    if tx.rows == 0:
        raise ModelError(
            f"no dispense of a unified person on or before {day}; ingest dispenses and run "
            "`careloop identity resolve` first"
        )
    days = purchase_days(tx, to_day(day))
    loaded = load_model(model_name, workspace) if model_name else None
    run = _fit_and_predict(days, cfg, tx.source, save=save, workspace=workspace, clock=clock, loaded=loaded)
    if write:
        run.report["traits"] = write_clv_traits(store, run, as_of=day, clock=clock)
    return run


def write_clv_traits(
    store: WorkspaceStore, run: ClvRun, *, as_of: date, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """Write the three CLV traits (replacing earlier values); segments using them are re-evaluated."""
    ids = [str(i) for i in run.ids]
    written: dict[str, Any] = {}
    for column, trait in TRAITS.items():
        values = run.predictions[column].to_numpy(dtype=np.float64)
        written[trait] = write_score_traits(
            store,
            trait,
            ((pid, "", float(v) if math.isfinite(v) else None) for pid, v in zip(ids, values, strict=True)),
            as_of=as_of,
            clock=clock,
        )
    return written
