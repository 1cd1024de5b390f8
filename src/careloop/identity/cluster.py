"""Constrained clustering of scored pairs: strongest links first, never joining contradicting records.

Plain connected components let one sparse record (say a call-centre entry with only the family phone
and address) chain a mother and her child into one person. Here the edges are taken in priority order
(`rank`, then descending probability, ties by ids, so the result is deterministic) and two clusters are
joined only if they do not contradict each other:

- both hold valid ID numbers and share none (one person has one resident ID number), or
- both hold birth dates and no pair of them is close (equal, month/day swapped, or one digit wrong or
  two adjacent digits transposed — the typos the birth-date comparison allows), or
- a cannot-link pair (a manual split, two profiles of one family account) would end up in one cluster.

Must-link pairs (manual merges) are joined first and unconditionally: a person's decision outranks
the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from careloop.identity.components import pre_cluster, roots_of


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


@dataclass
class Clustering:
    """The result of `cluster_constrained`.

    cluster: the smallest node id of each node's cluster; best: the best probability of an edge to
    another member of its cluster (NaN for singletons); first_edge: the index (into the input edges)
    of the first accepted edge touching each node, -1 for none, -2 for a must-link.
    """

    cluster: npt.NDArray[np.int64]
    best: npt.NDArray[np.float64]
    first_edge: npt.NDArray[np.int64]


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
    result = cluster_constrained(n, left, right, prob, id_numbers, births)
    return result.cluster, result.best


def cluster_constrained(
    n: int,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    prob: npt.NDArray[np.float64],
    id_numbers: Sequence[str | None],
    births: Sequence[str | None],
    *,
    rank: npt.NDArray[np.int64] | None = None,
    must_link: Sequence[tuple[int, int]] = (),
    cannot_link: Sequence[tuple[int, int]] = (),
    exclusive: Sequence[str | None] | None = None,
) -> Clustering:
    """Cluster nodes 0..n-1: must-links first, then edges by (rank, -prob, left, right) with constraints.

    `exclusive`: a label per node (or None); a cluster never holds two different labels — used by
    incremental runs so that new records attach to at most one existing person.
    """
    ranks = np.zeros(len(left), dtype=np.int64) if rank is None else rank
    order = np.lexsort((right, left, -prob, ranks))
    # components that merge whole without a check are joined up front (numpy); only the rest loop below
    parent, first_edge, order = pre_cluster(
        n,
        left,
        right,
        order,
        id_numbers,
        births,
        close_birth,
        must_link=must_link,
        cannot_link=cannot_link,
        exclusive=exclusive,
    )
    ids: dict[int, set[str]] = {}
    dob: dict[int, set[str]] = {}
    forbidden: dict[int, set[int]] = {}
    label: dict[int, str] = {}
    if exclusive is not None:
        label = {i: x for i, x in enumerate(exclusive) if x is not None}
    for a, b in cannot_link:
        forbidden.setdefault(a, set()).add(b)
        forbidden.setdefault(b, set()).add(a)

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

    def blocked(ru: int, rv: int) -> bool:
        lu, lv = label.get(ru), label.get(rv)
        if lu is not None and lv is not None and lu != lv:
            return True
        fu, fv = forbidden.get(ru), forbidden.get(rv)
        if not fu or not fv:
            return False
        small = fu if len(fu) <= len(fv) else fv
        other = rv if small is fu else ru
        return any(find(x) == other for x in small)

    def union(ru: int, rv: int) -> None:
        iu, bu = attrs(ru)
        iv, bv = attrs(rv)
        if len(iu) + len(bu) < len(iv) + len(bv):
            ru, rv, iu, bu, iv, bv = rv, ru, iv, bv, iu, bu
        parent[rv] = ru
        iu |= iv
        bu |= bv
        del ids[rv], dob[rv]
        fv = forbidden.pop(rv, None)
        if fv:
            forbidden.setdefault(ru, set()).update(fv)
        lv = label.pop(rv, None)
        if lv is not None:
            label.setdefault(ru, lv)

    for a, b in must_link:
        ra, rb = find(a), find(b)
        for node in (a, b):
            if first_edge[node] == -1:
                first_edge[node] = -2
        if ra != rb:
            union(ra, rb)

    for k in order:
        u, v = int(left[k]), int(right[k])
        ru, rv = find(u), find(v)
        if ru == rv:
            continue
        iu, bu = attrs(ru)
        iv, bv = attrs(rv)
        if _conflict(iu, iv, bu, bv) or blocked(ru, rv):
            continue
        for node in (u, v):
            if first_edge[node] == -1:
                first_edge[node] = k
        union(ru, rv)

    roots = roots_of(parent)
    smallest = np.full(n, n, dtype=np.int64)
    np.minimum.at(smallest, roots, np.arange(n, dtype=np.int64))
    cluster = smallest[roots]
    best = np.full(n, np.nan)
    if len(left):
        same = roots[left] == roots[right]
        if same.any():
            both = np.concatenate([left[same], right[same]])
            p = np.concatenate([prob[same], prob[same]])
            filled = np.full(n, -1.0)
            np.maximum.at(filled, both, p)
            best = np.where(filled >= 0, filled, np.nan)
    return Clustering(cluster=cluster, best=best, first_edge=first_edge)
