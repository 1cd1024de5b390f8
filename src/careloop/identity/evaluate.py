"""Pairwise precision, recall and F1 of a clustering against true labels, without listing pairs.

A pair is predicted when both records share a cluster and true when they share a label. With the
cross-tabulation of (cluster, label) counts: true positives = Σ C(n, 2) over its cells, predicted
pairs = Σ C(n, 2) over clusters, true pairs = Σ C(n, 2) over labels. O(n log n), no O(n²) pair list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PairwiseScores:
    """Pairwise scores; precision (recall) is 1.0 when nothing is predicted (nothing is true)."""

    precision: float
    recall: float
    f1: float
    true_positive_pairs: int
    predicted_pairs: int
    true_pairs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(counts: npt.NDArray[np.int64]) -> int:
    return int((counts * (counts - 1) // 2).sum())


def _codes(values: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    arr = np.asarray(values, dtype=object)
    if any(v is None for v in arr):
        raise ValueError("labels and clusters must not be missing (give singletons their own label)")
    _, inverse = np.unique(arr.astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def pairwise_scores(
    clusters: Sequence[Any] | npt.NDArray[Any], labels: Sequence[Any] | npt.NDArray[Any]
) -> PairwiseScores:
    """Scores of `clusters` (predicted cluster per record) against `labels` (true entity per record)."""
    if len(clusters) != len(labels):
        raise ValueError(f"{len(clusters)} cluster ids but {len(labels)} labels: give one of each per record")
    c, t = _codes(clusters), _codes(labels)
    predicted = _pairs(np.bincount(c)) if len(c) else 0
    true = _pairs(np.bincount(t)) if len(t) else 0
    if len(c):
        _, cell_counts = np.unique(c * (int(t.max()) + 1) + t, return_counts=True)
        tp = _pairs(cell_counts.astype(np.int64))
    else:
        tp = 0
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseScores(precision, recall, f1, tp, predicted, true)
