"""Vectorised pre-pass of constrained clustering: the connected components that merge whole anyway.

Constrained clustering (`careloop.identity.cluster`) takes edges one by one in Python, refusing a join
between clusters that contradict each other. Within a connected component where no contradiction is
possible — at most one distinct valid ID number, every two distinct birth dates close, no cannot-link
pair — every join succeeds whatever the order, so the component becomes one cluster. Most components
are like that; `merge_free_components` finds them with numpy so that only the others go through the
Python loop, with identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

#: components with more distinct birth dates than this go through the loop without a pairwise check
MAX_BIRTHS_CHECKED = 12


def component_labels(
    n: int, left: npt.NDArray[np.int64], right: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The smallest node id of each node's connected component (min-label propagation, pointer jumping)."""
    label = np.arange(n, dtype=np.int64)
    if not len(left):
        return label
    while True:
        low = np.minimum(label[left], label[right])
        before = label.copy()
        np.minimum.at(label, left, low)
        np.minimum.at(label, right, low)
        while True:  # labels only decrease and label[x] <= x: jump to the label's label until stable
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            return label


def _distinct_per_label(
    label: npt.NDArray[np.int64], values: Sequence[str | None], candidates: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(node, label), sorted by label, of one node per distinct non-null value per label, among the
    candidate nodes."""
    nodes = np.flatnonzero(candidates)
    picked = np.asarray(values, dtype=object)[nodes]
    present = picked != None  # noqa: E711 - elementwise on an object array
    nodes, picked = nodes[present], picked[present]
    index: dict[object, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in picked), dtype=np.int64, count=len(picked))
    _, first = np.unique(label[nodes] * max(len(index), 1) + codes, return_index=True)
    return nodes[first], label[nodes[first]]


def merge_free_components(
    n: int,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    id_numbers: Sequence[str | None],
    births: Sequence[str | None],
    close_birth: Callable[[str, str], bool],
    cannot_link: Sequence[tuple[int, int]] = (),
    exclusive: Sequence[str | None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """(component label per node, True for nodes whose component merges whole without any check).

    `left`/`right` must include every pair that is joined (edges and must-links). A component is
    merge-free when it holds at most one distinct ID number, its distinct birth dates are pairwise
    close (`close_birth`), at most one distinct `exclusive` label and no cannot-link pair.
    Singletons count as merge-free.
    """
    label = component_labels(n, left, right)
    dirty = np.zeros(n, dtype=bool)  # indexed by label
    in_edge = np.zeros(n, dtype=bool)
    in_edge[left] = True
    in_edge[right] = True
    for values in (id_numbers, exclusive):
        if values is not None:
            _, value_labels = _distinct_per_label(label, values, in_edge)
            lab, counts = np.unique(value_labels, return_counts=True)
            dirty[lab[counts > 1]] = True
    b_nodes, b_labels = _distinct_per_label(label, births, in_edge & ~dirty[label])
    lab, start, counts = np.unique(b_labels, return_index=True, return_counts=True)
    dirty[lab[counts > MAX_BIRTHS_CHECKED]] = True
    several = (counts > 1) & (counts <= MAX_BIRTHS_CHECKED)
    for comp, at, k in zip(lab[several], start[several], counts[several], strict=True):
        dates = [str(births[int(i)]) for i in b_nodes[at : at + k]]
        if not all(close_birth(a, b) for i, a in enumerate(dates) for b in dates[i + 1 :]):
            dirty[comp] = True
    for a, b in cannot_link:
        dirty[label[a]] = dirty[label[b]] = True
    return label, ~dirty[label]


def pre_cluster(
    n: int,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    id_numbers: Sequence[str | None],
    births: Sequence[str | None],
    close_birth: Callable[[str, str], bool],
    *,
    must_link: Sequence[tuple[int, int]] = (),
    cannot_link: Sequence[tuple[int, int]] = (),
    exclusive: Sequence[str | None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Join the merge-free components up front: (parent, first_edge, the edges of `order` left to loop over).

    parent: each node of a merge-free component points at its smallest node, other nodes at themselves.
    first_edge: for nodes of merge-free components that are not in a must-link, the first edge in
    `order` touching them (in such a component that edge is always accepted); -1 elsewhere.
    """
    must = np.asarray(must_link, dtype=np.int64).reshape(-1, 2)
    all_left = np.concatenate([left, must[:, 0]])
    all_right = np.concatenate([right, must[:, 1]])
    comp, free = merge_free_components(
        n, all_left, all_right, id_numbers, births, close_birth, cannot_link, exclusive
    )
    parent = np.where(free, comp, np.arange(n, dtype=np.int64))
    first_edge = np.full(n, -1, dtype=np.int64)
    if len(order):
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order), dtype=np.int64)
        first = np.full(n, len(order), dtype=np.int64)
        np.minimum.at(first, left, position)
        np.minimum.at(first, right, position)
        take = free & (first < len(order))
        take[must.ravel()] = False
        first_edge[take] = order[first[take]]
    return parent, first_edge, order[~free[left[order]]]


def roots_of(parent: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The root of every node of a union-find parent array (pointer jumping, vectorised)."""
    roots = parent.copy()
    while True:
        jumped = roots[roots]
        if np.array_equal(jumped, roots):
            return roots
        roots = jumped
