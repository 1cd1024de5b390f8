"""Constrained clustering of scored pairs: strongest links first, never joining contradicting records.

Plain connected components let one sparse record (say a call-centre entry with only the family phone
and address) chain a mother and her child into one person. Here the edges at or above the threshold
are taken in descending probability (ties by ids, so the result is deterministic) and two clusters are
joined only if they do not contradict each other:

- both hold valid ID numbers and share none (one person has one resident ID number), or
- both hold birth dates and no pair of them is close (equal, month/day swapped, or one digit wrong or
  two adjacent digits transposed — the typos the birth-date comparison allows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def close_birth(a: str, b: str) -> bool:
    """Birth dates (YYYYMMDD) equal, month/day swapped, one digit different or adjacent digits swapped."""
    if a == b or (len(a) == 8 and a[:4] + a[6:] + a[4:6] == b):
        return True
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) == 1:
        return True
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _conflict(ids_a: set[str], ids_b: set[str], births_a: set[str], births_b: set[str]) -> bool:
    if ids_a and ids_b and ids_a.isdisjoint(ids_b):
        return True
    return bool(births_a and births_b) and not any(close_birth(x, y) for x in births_a for y in births_b)


def cluster_edges(
    n: int,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    prob: npt.NDArray[np.float64],
    id_numbers: Sequence[str | None],
    births: Sequence[str | None],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Cluster nodes 0..n-1 over the edges (left, right, prob), strongest first.

    Returns (cluster id per node: the smallest node id of its cluster, best probability of an edge
    to another member of its cluster per node: NaN for singletons).
    """
    order = np.lexsort((right, left, -prob))
    parent = np.arange(n, dtype=np.int64)
    ids: dict[int, set[str]] = {}
    dob: dict[int, set[str]] = {}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:
            parent[x], x = root, int(parent[x])
        return root

    def attrs(root: int) -> tuple[set[str], set[str]]:
        if root not in ids:
            i, b = id_numbers[root], births[root]
            ids[root] = {i} if i else set()
            dob[root] = {b} if b else set()
        return ids[root], dob[root]

    for k in order:
        ru, rv = find(int(left[k])), find(int(right[k]))
        if ru == rv:
            continue
        iu, bu = attrs(ru)
        iv, bv = attrs(rv)
        if _conflict(iu, iv, bu, bv):
            continue
        if len(iu) + len(bu) < len(iv) + len(bv):
            ru, rv, iu, bu, iv, bv = rv, ru, iv, bv, iu, bu
        parent[rv] = ru
        iu |= iv
        bu |= bv
        del ids[rv], dob[rv]

    roots = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    smallest = np.full(n, n, dtype=np.int64)
    np.minimum.at(smallest, roots, np.arange(n, dtype=np.int64))
    cluster = smallest[roots]
    best = np.full(n, np.nan)
    same = roots[left] == roots[right]
    if same.any():
        both = np.concatenate([left[same], right[same]])
        p = np.concatenate([prob[same], prob[same]])
        filled = np.full(n, -1.0)
        np.maximum.at(filled, both, p)
        best = np.where(filled >= 0, filled, np.nan)
    return cluster, best
