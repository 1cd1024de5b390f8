"""The vectorised pre-pass of constrained clustering changes nothing: the same clusters, best
probabilities and first edges as the plain loop, on random graphs with every kind of constraint."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

import careloop.identity.cluster as cluster_mod
from careloop.identity.cluster import Clustering, close_birth, cluster_constrained
from careloop.identity.components import component_labels, merge_free_components, roots_of


def _no_pre_pass(
    n: int,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    *_: object,
    **__: object,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    return np.arange(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), order


def _graph(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    n = rng.randint(2, 120)
    m = rng.randint(0, 3 * n)
    pairs = [tuple(sorted(rng.sample(range(n), 2))) for _ in range(m)]
    ids = [rng.choice([None, None, None, "A", "B", "C"]) for _ in range(n)]
    births = [
        rng.choice([None, "19900506", "19900605", "19900507", "19900560", "20010101", ""]) for _ in range(n)
    ]
    return {
        "n": n,
        "left": np.array([p[0] for p in pairs], dtype=np.int64),
        "right": np.array([p[1] for p in pairs], dtype=np.int64),
        "prob": np.array([rng.choice([0.91, 0.95, 0.99, rng.random()]) for _ in pairs]),
        "id_numbers": ids,
        "births": births,
        "rank": np.array([rng.randint(0, 2) for _ in pairs], dtype=np.int64),
        "must_link": [tuple(rng.sample(range(n), 2)) for _ in range(rng.randint(0, 3))],
        "cannot_link": [tuple(rng.sample(range(n), 2)) for _ in range(rng.randint(0, 3))],
        "exclusive": [rng.choice([None] * 8 + ["p1", "p2"]) for _ in range(n)] if seed % 2 else None,
    }


def _run(g: dict[str, object]) -> Clustering:
    return cluster_constrained(
        g["n"], g["left"], g["right"], g["prob"], g["id_numbers"], g["births"],  # type: ignore[arg-type]
        rank=g["rank"], must_link=g["must_link"], cannot_link=g["cannot_link"], exclusive=g["exclusive"],  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(300))
def test_pre_pass_gives_the_plain_loop_result(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _graph(seed)
    fast = _run(g)
    monkeypatch.setattr(cluster_mod, "pre_cluster", _no_pre_pass)
    plain = _run(g)
    assert np.array_equal(fast.cluster, plain.cluster)
    assert np.array_equal(fast.best, plain.best, equal_nan=True)
    assert np.array_equal(fast.first_edge, plain.first_edge)


def test_component_labels_and_roots() -> None:
    left = np.array([3, 1, 5, 7], dtype=np.int64)
    right = np.array([4, 3, 6, 5], dtype=np.int64)
    assert component_labels(8, left, right).tolist() == [0, 1, 2, 1, 1, 5, 5, 5]
    assert roots_of(np.array([0, 0, 1, 2, 4], dtype=np.int64)).tolist() == [0, 0, 0, 0, 4]


def test_merge_free_components() -> None:
    # 0-1-2: one ID number, close birth dates (month/day swapped): free. 3-4: two ID numbers. 5-6: far
    # birth dates. 7-8: a cannot-link. 9: alone.
    left = np.array([0, 1, 3, 5, 7], dtype=np.int64)
    right = np.array([1, 2, 4, 6, 8], dtype=np.int64)
    ids = ["X", None, "X", "X", "Y", None, None, None, None, "Z"]
    births = ["19900506", "19900605", None, None, None, "19900506", "20010101", None, None, None]
    label, free = merge_free_components(10, left, right, ids, births, close_birth, cannot_link=[(7, 8)])
    assert label.tolist() == [0, 0, 0, 3, 3, 5, 5, 7, 7, 9]
    assert free.tolist() == [True, True, True, False, False, False, False, False, False, True]
    _, free = merge_free_components(
        3, left[:2], right[:2], ids[:3], births[:3], close_birth, exclusive=["a", None, "b"]
    )
    assert not free.any()
