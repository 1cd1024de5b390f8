"""How good a risk score is, measured the same way for every risk model (docs/models.md).

- **AUC** (ROC): the chance a random positive scores above a random negative (0.5 = guessing).
- **PR-AUC** (average precision): precision averaged over the recall steps — read it against the base
  rate, which is what guessing gets.
- **Brier score**: mean squared error of the probabilities (lower is better; a constant base-rate
  forecast scores base × (1 − base)).
- **Reliability table**: predictions grouped in ten equal-width bins of predicted probability; each
  bin's mean prediction against its observed rate, and the expected calibration error (ECE: the
  bin-size-weighted mean absolute gap).
- **Lift by decile**: rows sorted by score, cut into ten equal groups (decile 1 = highest scores): each
  decile's rate over the base rate, and the share of all positives captured down to it.

Numbers that cannot be computed (a single class in the labels) are None, never a made-up value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    from sklearn.metrics import roc_auc_score

    yy = np.asarray(y, dtype=bool)
    if yy.all() or not yy.any():
        return None
    return _clean(float(roc_auc_score(yy, np.asarray(p, dtype=float))))


def pr_auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    from sklearn.metrics import average_precision_score

    yy = np.asarray(y, dtype=bool)
    if not yy.any():
        return None
    return _clean(float(average_precision_score(yy, np.asarray(p, dtype=float))))


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(yy) == 0:
        return None
    return _clean(float(np.mean((pp - yy) ** 2)))


def reliability(
    y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10
) -> tuple[list[dict[str, Any]], float | None]:
    """The reliability table (non-empty bins) and the expected calibration error."""
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(yy) == 0:
        return [], None
    which = np.minimum((pp * bins).astype(int), bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if not n:
            continue
        mean_p, rate = float(pp[sel].mean()), float(yy[sel].mean())
        ece += n / len(yy) * abs(mean_p - rate)
        rows.append(
            {
                "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                "n": n,
                "mean_predicted": round(mean_p, 4),
                "observed_rate": round(rate, 4),
            }
        )
    return rows, _clean(ece)


def lift_by_decile(y: npt.ArrayLike, p: npt.ArrayLike, groups: int = 10) -> list[dict[str, Any]]:
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(yy) == 0 or not yy.any():
        return []
    order = np.argsort(-pp, kind="stable")
    base = float(yy.mean())
    total = float(yy.sum())
    rows = []
    captured = 0.0
    for i, part in enumerate(np.array_split(order, min(groups, len(yy)))):
        if not len(part):
            continue
        pos = float(yy[part].sum())
        captured += pos
        rate = pos / len(part)
        rows.append(
            {
                "decile": i + 1,
                "n": len(part),
                "positives": int(pos),
                "rate": round(rate, 4),
                "mean_predicted": round(float(pp[part].mean()), 4),
                "lift": round(rate / base, 3),
                "cumulative_capture": round(captured / total, 4),
            }
        )
    return rows


def binary_report(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, Any]:
    """Every figure above for one set of labels and probabilities."""
    yy = np.asarray(y, dtype=float)
    table, ece = reliability(y, p)
    return {
        "n": len(yy),
        "positives": int(yy.sum()),
        "base_rate": _clean(float(yy.mean())) if len(yy) else None,
        "auc": auc(y, p),
        "pr_auc": pr_auc(y, p),
        "brier": brier(y, p),
        "ece": ece,
        "reliability": table,
        "lift": lift_by_decile(y, p),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a `binary_report` (for tables of several models)."""
    return {k: report[k] for k in ("n", "positives", "base_rate", "auc", "pr_auc", "brier", "ece")}
