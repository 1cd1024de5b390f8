"""Stable ids and the run diff: the set-based implementation against a plain per-record reference."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from careloop.identity.stable_ids import Change, assign_ids, derived_id, diff


def _reference_ids(
    cluster: list[int], refs: list[str], previous: list[str | None], retired: set[str]
) -> list[str]:
    counts = Counter((c, p) for c, p in zip(cluster, previous, strict=True) if p is not None)
    chosen: dict[int, str] = {}
    used: set[str] = set()
    for (c, pid), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if c not in chosen and pid not in used:
            chosen[c] = pid
            used.add(pid)
    taken = used | {p for p in previous if p is not None} | retired
    out = []
    for c in cluster:
        if c not in chosen:
            chosen[c] = derived_id(refs[c], taken)
            taken.add(chosen[c])
        out.append(chosen[c])
    return out


def _reference_diff(
    refs: list[str],
    previous: list[str | None],
    current: list[str],
    rules: list[str],
    probs: list[float | None],
    known: set[str],
) -> list[Change]:
    members: dict[str, list[int]] = defaultdict(list)
    before: dict[str, set[str]] = defaultdict(set)
    after: dict[str, set[str]] = defaultdict(set)
    held: dict[str, list[int]] = defaultdict(list)
    for i, (p, c) in enumerate(zip(previous, current, strict=True)):
        members[c].append(i)
        if p is not None:
            before[c].add(p)
            after[p].add(c)
            held[p].append(i)

    def evidence(idx: list[int]) -> dict[str, Any]:
        ps = [p for i in idx if (p := probs[i]) is not None]
        return {
            "rules": dict(sorted(Counter(rules[i] for i in idx).items())),
            "min_probability": min(ps) if ps else None,
            "max_probability": max(ps) if ps else None,
        }

    out: list[Change] = []
    for pid in sorted(members):
        idx = members[pid]
        recs = [refs[i] for i in idx]
        if pid not in known:
            out.append(Change("created", pid, sorted(before[pid]), recs, evidence(idx)))
        if len(before[pid]) >= 2:
            out.append(Change("merged", pid, sorted(before[pid] - {pid}), recs, evidence(idx)))
    for old in sorted(after):
        if len(after[old]) >= 2:
            moved = [refs[i] for i in held[old] if current[i] != old]
            out.append(Change("split", old, sorted(after[old] - {old}), moved, evidence(held[old])))
    for old in sorted(known - members.keys()):
        targets = sorted(after.get(old, set()))
        why = "merged into another person" if targets else "its records are no longer in the store"
        out.append(Change("retired", old, targets, [], {"why": why}))
    return out


def _labels(groups: list[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    first: dict[int, int] = {}
    return np.array([first.setdefault(g, i) for i, g in enumerate(groups)], dtype=np.int64)


@pytest.mark.parametrize("seed", range(12))
def test_ids_and_diff_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 400)
    refs = sorted({f"s{rng.randint(0, 3)}:{rng.randint(0, 10**6)}" for _ in range(n)})
    n = len(refs)
    old_persons = [f"P{rng.randint(0, n // 3 + 1):04d}" for _ in range(n)]
    previous: list[str | None] = [None if rng.random() < 0.2 else p for p in old_persons]
    cluster = _labels([rng.randint(0, n // 2 + 1) for _ in range(n)])
    retired = {f"P{rng.randint(0, n):04d}" for _ in range(rng.randint(0, 5))}
    ids = assign_ids(cluster, refs, previous, retired)
    assert ids == _reference_ids(cluster.tolist(), refs, previous, retired)

    rules = [rng.choice(["id_number", "probabilistic", "alone"]) for _ in range(n)]
    probs: list[float | None] = [None if r == "alone" else round(rng.random(), 3) for r in rules]
    known = {p for p in previous if p is not None} | {f"P9{rng.randint(0, 99):03d}" for _ in range(3)}
    assert diff(refs, previous, ids, rules, probs, known) == _reference_diff(
        refs, previous, ids, rules, probs, known
    )


def test_unchanged_clusters_keep_their_ids_and_report_nothing() -> None:
    refs = ["a:1", "a:2", "b:1", "b:2"]
    previous: list[str | None] = ["P1", "P1", "P2", "P2"]
    ids = assign_ids(np.array([0, 0, 2, 2], dtype=np.int64), refs, previous)
    assert ids == ["P1", "P1", "P2", "P2"]
    assert diff(refs, previous, ids, ["x"] * 4, [1.0] * 4, {"P1", "P2"}) == []
