"""The risk models' shared learner: LightGBM on a feature table, with calibrated probabilities.

Fitting (decision 0015):

1. The training table is split at random, stratified by label, into a **fit** part and a held-out
   **calibration** part (`calibration_share`, default 30 %).
2. The number of boosting rounds is chosen by 5-fold cross-validation with early stopping on the fit
   part only (``rounds: cv``), or fixed (``rounds: N``).
3. LightGBM is fitted on the fit part.
4. Its raw scores on the calibration part map to probabilities: **isotonic** regression when that part
   has at least 1,000 rows, else **Platt** scaling (a logistic curve on the raw score) — isotonic
   over-fits small samples (``calibration: auto | isotonic | platt``).

Nothing of the test window is seen. Reason codes come from the booster's raw contributions
(`careloop.models.reasons`); calibration is monotone, so it does not change the ranking they explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from careloop.errors import ModelError

FloatArray = npt.NDArray[np.float64]

LGBM_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 8,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
}
FIT_DEFAULTS: dict[str, Any] = {
    "lightgbm": LGBM_DEFAULTS,
    "rounds": "cv",  # or a whole number
    "max_rounds": 400,
    "calibration": "auto",  # auto | isotonic | platt
    "calibration_share": 0.3,
    "seed": 7,
    "threads": 1,  # LightGBM threads; 1 is predictable on a shared machine, raise it on an idle one
}
ISOTONIC_MIN_ROWS = 1000


@dataclass
class CalibratedBooster:
    """A fitted booster, its calibrator and what it was fitted on."""

    booster: Any  # lightgbm.Booster
    columns: tuple[str, ...]
    categorical: tuple[str, ...]
    calibration: str  # isotonic | platt
    calibrator: Any  # sklearn IsotonicRegression on p, or LogisticRegression on the raw score
    rounds: int
    fit_rows: int
    calibration_rows: int
    levels: dict[str, list[str]] = field(default_factory=dict)  # categorical codes -> names

    def raw(self, x: FloatArray) -> FloatArray:
        out: FloatArray = np.asarray(self.booster.predict(x, raw_score=True), dtype=np.float64)
        return out

    def predict(self, x: FloatArray) -> FloatArray:
        """Calibrated probabilities."""
        if len(x) == 0:
            return np.empty(0)
        return _calibrate(self.calibration, self.calibrator, self.raw(x))

    def contributions(self, x: FloatArray) -> FloatArray:
        """TreeSHAP contributions in log-odds: rows x (features + 1), the last column the bias."""
        if len(x) == 0:
            return np.empty((0, len(self.columns) + 1))
        out: FloatArray = np.asarray(self.booster.predict(x, pred_contrib=True), dtype=np.float64)
        return out


#: calibrated probabilities stay inside [0.001, 0.999]: a finite calibration sample cannot show certainty
P_FLOOR = 0.001


def _calibrate(method: str, calibrator: Any, raw: FloatArray) -> FloatArray:
    if method == "isotonic":
        p = calibrator.predict(_sigmoid(raw))
    else:
        p = calibrator.predict_proba(raw.reshape(-1, 1))[:, 1]
    out: FloatArray = np.clip(np.asarray(p, dtype=np.float64), P_FLOOR, 1 - P_FLOOR)
    return out


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def split_holdout(
    y: FloatArray, share: float, seed: int, groups: npt.NDArray[np.int64] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Random split stratified by label: (fit rows, held-out rows). With `groups` (e.g. the person of
    each row when a person appears at several cut-offs) whole groups go to one side, stratified by
    whether the group has a positive row."""
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(y), dtype=np.int64)
    uniq, inverse = np.unique(groups, return_inverse=True)
    positive = np.zeros(len(uniq), dtype=np.bool_)
    positive[inverse[y > 0]] = True
    held_group = np.zeros(len(uniq), dtype=np.bool_)
    for flag in (False, True):
        g = np.flatnonzero(positive == flag)
        rng.shuffle(g)
        held_group[g[: round(len(g) * share)]] = True
    held = held_group[inverse]
    return np.flatnonzero(~held), np.flatnonzero(held)


def group_folds(
    y: FloatArray, groups: npt.NDArray[np.int64], k: int, seed: int
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """k cross-validation folds that keep each group's rows together (stratified by positive groups)."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    positive = np.zeros(len(uniq), dtype=np.bool_)
    positive[inverse[y > 0]] = True
    fold = np.zeros(len(uniq), dtype=np.int64)
    for flag in (False, True):
        g = np.flatnonzero(positive == flag)
        rng.shuffle(g)
        fold[g] = np.arange(len(g)) % k
    row_fold = fold[inverse]
    return [(np.flatnonzero(row_fold != i), np.flatnonzero(row_fold == i)) for i in range(k)]


def fit_calibrated(
    x: FloatArray,
    y: FloatArray,
    columns: Sequence[str],
    config: Mapping[str, Any],
    categorical: Sequence[str] = (),
    levels: Mapping[str, list[str]] | None = None,
    groups: npt.NDArray[np.int64] | None = None,
) -> CalibratedBooster:
    """Fit LightGBM + calibrator as in the module docstring; `config` as FIT_DEFAULTS. `groups` (one id
    per row) keeps a group's rows on one side of the calibration split and of every CV fold."""
    import lightgbm as lgb
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.float64)
    positives = int(y.sum())
    if positives < 10 or len(y) - positives < 10:
        raise ModelError(
            f"too few examples to learn from: {positives} positive and {len(y) - positives} negative rows "
            "(need at least 10 of each); widen the training window or choose another cut-off"
        )
    seed = int(config["seed"])
    fit_rows, cal_rows = split_holdout(y, float(config["calibration_share"]), seed, groups)
    params = {
        "objective": "binary",
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": int(config["threads"]),
        **dict(config["lightgbm"]),
    }
    cat_idx = [list(columns).index(c) for c in categorical]
    data = lgb.Dataset(
        x[fit_rows],
        y[fit_rows],
        feature_name=list(columns),
        categorical_feature=cat_idx or "auto",
        free_raw_data=False,
        params={"verbose": -1},
    )
    rounds = config["rounds"]
    if rounds == "cv":
        fit_groups = groups[fit_rows] if groups is not None else np.arange(len(fit_rows), dtype=np.int64)
        cv: dict[str, Any] = lgb.cv(
            params,
            data,
            num_boost_round=int(config["max_rounds"]),
            folds=group_folds(y[fit_rows], fit_groups, 5, seed),
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        rounds = max(1, len(cv["valid binary_logloss-mean"]))
    elif not isinstance(rounds, int) or rounds < 1:
        raise ModelError(f"rounds must be 'cv' or a whole number >= 1, not {rounds!r}")
    booster = lgb.train(params, data, num_boost_round=int(rounds))
    raw = np.asarray(booster.predict(x[cal_rows], raw_score=True), dtype=np.float64)
    method = str(config["calibration"])
    if method == "auto":
        method = "isotonic" if len(cal_rows) >= ISOTONIC_MIN_ROWS else "platt"
    if method == "isotonic":
        calibrator: Any = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        calibrator.fit(_sigmoid(raw), y[cal_rows])
    elif method == "platt":
        calibrator = LogisticRegression(C=1e6)
        calibrator.fit(raw.reshape(-1, 1), y[cal_rows])
    else:
        raise ModelError(f"calibration must be auto, isotonic or platt, not {method!r}")
    return CalibratedBooster(
        booster=booster,
        columns=tuple(columns),
        categorical=tuple(categorical),
        calibration=method,
        calibrator=calibrator,
        rounds=int(rounds),
        fit_rows=len(fit_rows),
        calibration_rows=len(cal_rows),
        levels=dict(levels or {}),
    )


@dataclass
class Baseline:
    """A logistic regression on a few columns (NaN replaced by the training median, and a 0/1 column
    saying it was missing) — the simple models the boosted one must beat."""

    name: str
    columns: tuple[str, ...]
    medians: FloatArray
    model: Any

    def design(self, x: FloatArray, all_columns: Sequence[str]) -> FloatArray:
        idx = [list(all_columns).index(c) for c in self.columns]
        sub = x[:, idx]
        missing = np.isnan(sub)
        filled = np.where(missing, self.medians, sub)
        return np.hstack([filled, missing.astype(np.float64)])

    def predict(self, x: FloatArray, all_columns: Sequence[str]) -> FloatArray:
        if len(x) == 0:
            return np.empty(0)
        p: FloatArray = self.model.predict_proba(self.design(x, all_columns))[:, 1]
        return p


def fit_baseline(
    name: str, x: FloatArray, y: FloatArray, all_columns: Sequence[str], columns: Sequence[str]
) -> Baseline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    idx = [list(all_columns).index(c) for c in columns]
    sub = x[:, idx]
    medians = np.array(
        [np.nanmedian(sub[:, j]) if (~np.isnan(sub[:, j])).any() else 0.0 for j in range(len(idx))]
    )
    b = Baseline(name, tuple(columns), medians, None)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(b.design(x, all_columns), y)
    b.model = model
    return b


def backtest(
    model: CalibratedBooster,
    baselines: Sequence[Baseline],
    x: FloatArray,
    y: FloatArray,
    columns: Sequence[str],
) -> dict[str, Any]:
    """The test-window report: the model's figures, every baseline's, the AUC differences and the drivers."""
    from careloop.models.evaluation import binary_report, summary
    from careloop.models.reasons import drivers

    p = model.predict(x)
    report = binary_report(y, p)
    rows = [{"model": "lightgbm (calibrated)", **summary(report)}]
    for b in baselines:
        rows.append({"model": b.name, **summary(binary_report(y, b.predict(x, columns)))})
    for row in rows:
        row.pop("n", None)
        row.pop("positives", None)
        row.pop("base_rate", None)
    report["models"] = rows
    report["drivers"] = drivers(model.contributions(x), x, columns, model.categorical)
    return report


def backtest_summary(
    model: Any, rep: dict[str, Any], baseline: dict[str, Any], y_train: Any
) -> dict[str, Any]:
    """The report entries every backtested classifier shares: training and calibration sizes, the test
    window's figures, the baseline's and the difference in AUC, reliability, lift and drivers."""
    a, b = rep["auc"], baseline["auc"]
    return {
        "train_positives": int(np.asarray(y_train).sum()),
        "fit_rows": model.fit_rows,
        "calibration_rows": model.calibration_rows,
        "calibration": model.calibration,
        "rounds": model.rounds,
        "test_rows": rep["n"],
        "test_positives": rep["positives"],
        "test_base_rate": rep["base_rate"],
        "auc": a,
        "pr_auc": rep["pr_auc"],
        "brier": rep["brier"],
        "ece": rep["ece"],
        "baseline": baseline["model"],
        "baseline_auc": b,
        "baseline_pr_auc": baseline.get("pr_auc"),
        "baseline_brier": baseline.get("brier"),
        "auc_vs_baseline": None if a is None or b is None else round(a - b, 4),
        "models": rep["models"],
        "reliability": rep["reliability"],
        "lift": rep["lift"],
        "drivers": rep["drivers"],
    }
