"""Stable unified person ids, and what changed between two resolutions.

Ids follow the evidence: each cluster takes the previous person id most of its members held (the
larger cluster wins a contested id; ties go to the smaller id, then the cluster with the smaller
first record), so re-running on unchanged data changes no id. A cluster with no previous id gets one
derived from its smallest record reference (``source:patient_key``), so a fresh run is deterministic
too. An id once used is never given to another person.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

ID_PREFIX = "P"


def derived_id(record: str, taken: Collection[str]) -> str:
    """The id derived from a record reference, skipping ids in `taken`."""
    salt = 0
    while True:
        text = record if salt == 0 else f"{record}#{salt}"
        pid = ID_PREFIX + hashlib.sha256(f"careloop-person:{text}".encode()).hexdigest()[:16]
        if pid not in taken:
            return pid
        salt += 1


def assign_ids(
    cluster: npt.NDArray[np.int64],
    refs: Sequence[str],
    previous: Sequence[str | None],
    retired: Collection[str] = (),
) -> list[str]:
    """Person id per record: `cluster` labels (the smallest member's index; refs are sorted so the
    smallest index is the smallest reference), `previous` the id each record held (None: new record).
    `retired`: ids used before that must not be handed out again (merged-away persons)."""
    counts: Counter[tuple[int, str]] = Counter(
        (int(c), p) for c, p in zip(cluster.tolist(), previous, strict=True) if p is not None
    )
    chosen: dict[int, str] = {}
    used: set[str] = set()
    for (c, pid), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if c in chosen or pid in used:
            continue
        chosen[c] = pid
        used.add(pid)
    taken = used | {p for p in previous if p is not None} | set(retired)
    out: list[str] = []
    for c in cluster.tolist():
        found = chosen.get(c)
        if found is None:
            found = chosen[c] = derived_id(refs[c], taken)
            taken.add(found)
        out.append(found)
    return out


@dataclass
class Change:
    """One identity_history row to write."""

    action: str  # created, merged, split, retired
    person_id: str
    other_person_ids: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


def diff(
    refs: Sequence[str],
    previous: Sequence[str | None],
    current: Sequence[str],
    rules: Sequence[str],
    probs: Sequence[float | None],
    previous_ids: Collection[str],
) -> list[Change]:
    """What a resolution changed: persons created, merged and split (and retired ones).

    `previous_ids`: every person id linked before the run (also those whose records are gone).
    """
    members: dict[str, list[int]] = defaultdict(list)
    before: dict[str, set[str]] = defaultdict(set)  # new id -> previous ids of its records
    after: dict[str, set[str]] = defaultdict(set)  # previous id -> new ids of its records
    held: dict[str, list[int]] = defaultdict(list)  # previous id -> its records
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

    known = set(previous_ids)
    changes: list[Change] = []
    for pid in sorted(members):
        idx = members[pid]
        recs = [refs[i] for i in idx]
        came_from = before[pid]
        if pid not in known:
            changes.append(Change("created", pid, sorted(came_from), recs, evidence(idx)))
        if len(came_from) >= 2:
            changes.append(Change("merged", pid, sorted(came_from - {pid}), recs, evidence(idx)))
    for old in sorted(after):
        went_to = after[old]
        if len(went_to) >= 2:
            idx = held[old]
            moved = [refs[i] for i in idx if current[i] != old]
            changes.append(Change("split", old, sorted(went_to - {old}), moved, evidence(idx)))
    for old in sorted(known - members.keys()):
        targets = sorted(after.get(old, set()))
        why = "merged into another person" if targets else "its records are no longer in the store"
        changes.append(Change("retired", old, targets, [], {"why": why}))
    return changes
