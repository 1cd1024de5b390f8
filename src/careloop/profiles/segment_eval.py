"""Segment definitions evaluated in Python for a few persons: explanations and incremental membership.

`load_facts` reads everything the definitions need about some persons — their traits, their events
(live ones by person, ingested ones through their records' identity links), their stored memberships
and, for household conditions, the same about the other members of their households — with one
look-up per table, each an ``IN`` list on one indexed column (the shape DuckDB answers from an ART
index: `careloop patient index` creates them; PostgreSQL has them from its migrations).
`evaluate` then decides each leaf from those facts and says what it saw. The compiled SQL
(`segment_compile`) and this evaluator select the same persons; the test suite holds them to it on
DuckDB and PostgreSQL.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from careloop.profiles import conditions as cond
from careloop.profiles.segment_compile import EventLeaf, HouseholdLeaf, SegmentLeaf, walk
from careloop.storage import WorkspaceStore

_CHUNK = 500  # ids per IN list


@dataclass
class Facts:
    """What the evaluator knows about one person."""

    traits: cond.Traits = field(default_factory=dict)
    events: dict[str, list[datetime]] = field(default_factory=dict)  # name -> sorted times
    segments: set[str] = field(default_factory=set)
    household: list[Facts] = field(default_factory=list)  # the other members

    def count(self, leaf: EventLeaf, as_of: date, tz: ZoneInfo) -> int:
        times = self.events.get(leaf.event, [])
        since, until = leaf.window(as_of, tz)
        hi = bisect.bisect_right(times, until)
        return hi - (bisect.bisect_left(times, since) if since else 0)


def _in_list(column: str, ids: Sequence[str], prefix: str) -> tuple[str, dict[str, Any]]:
    names = [f"{prefix}{i}" for i in range(len(ids))]
    return f"{column} IN ({', '.join(':' + n for n in names)})", dict(zip(names, ids, strict=True))


def _lookup(store: WorkspaceStore, select: str, column: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
    """Rows of `select … WHERE column IN (ids)`, in chunks (one indexed filter per statement)."""
    todo = sorted(set(ids))
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(todo), _CHUNK):
        where, params = _in_list(column, todo[start : start + _CHUNK], "i")
        out.extend(store.tuples(f"{select} WHERE {where}", params))
    return out


def needs(trees: Iterable[Any]) -> tuple[set[str], bool, bool, bool]:
    """(traits used, whether events, segment memberships, households are needed) by the trees."""
    leaves = [leaf for t in trees for leaf in walk(t)]
    traits = {n.trait for n in leaves if isinstance(n, cond.Leaf)}
    return (
        traits,
        any(isinstance(n, EventLeaf) for n in leaves),
        any(isinstance(n, SegmentLeaf) for n in leaves),
        any(isinstance(n, HouseholdLeaf) for n in leaves),
    )


def load_facts(
    store: WorkspaceStore, persons: Sequence[str], trees: Sequence[Any], *, memberships: bool = False
) -> dict[str, Facts]:
    """person -> Facts for the persons, holding what the trees read (and every stored membership when
    `memberships`)."""
    traits, events, segments, households = needs(trees)
    facts = _facts(store, persons, traits, events)
    if segments or memberships:
        for pid, name in _lookup(
            store, "SELECT person_id, segment FROM segment_member", "person_id", persons
        ):
            facts[pid].segments.add(name)
    if households:
        homes = _lookup(store, "SELECT person_id, household_id FROM household_member", "person_id", persons)
        if homes:
            rows = _lookup(
                store,
                "SELECT household_id, person_id FROM household_member",
                "household_id",
                {h for _, h in homes},
            )
            by_home: dict[str, list[str]] = defaultdict(list)
            for h, pid in rows:
                by_home[h].append(pid)
            others = _facts(store, [p for _, p in rows], traits, events)
            for pid, h in homes:
                facts[pid].household = [others[o] for o in sorted(by_home[h]) if o != pid]
    return facts


def person_traits(store: WorkspaceStore, persons: Sequence[str]) -> dict[str, cond.Traits]:
    """Every stored trait of these persons: person -> {(trait, key): value} (indexed look-ups)."""
    out: dict[str, cond.Traits] = {p: {} for p in persons}
    for pid, trait, key, num, text, at in _lookup(
        store,
        "SELECT person_id, trait, key, value_num, value_text, value_time FROM trait_value",
        "person_id",
        persons,
    ):
        out[pid][(trait, key)] = text if text is not None else at if at is not None else num
    return out


def existing_persons(store: WorkspaceStore, persons: Iterable[str]) -> set[str]:
    """Those of the ids that are stored persons."""
    return {r[0] for r in _lookup(store, "SELECT person_id FROM person", "person_id", persons)}


def household_members(store: WorkspaceStore, persons: Iterable[str]) -> set[str]:
    """Everyone who shares a household with one of the persons."""
    homes = {r[0] for r in _lookup(store, "SELECT household_id FROM household_member", "person_id", persons)}
    return {r[0] for r in _lookup(store, "SELECT person_id FROM household_member", "household_id", homes)}


def _facts(store: WorkspaceStore, persons: Sequence[str], traits: set[str], events: bool) -> dict[str, Facts]:
    facts = {p: Facts() for p in persons}
    if traits:
        for pid, trait, key, num, text, at in _lookup(
            store,
            "SELECT person_id, trait, key, value_num, value_text, value_time FROM trait_value",
            "person_id",
            persons,
        ):
            if trait in traits:
                facts[pid].traits[(trait, key)] = text if text is not None else at if at is not None else num
    if events:
        seen: dict[str, dict[str, list[datetime]]] = {p: defaultdict(list) for p in persons}
        for pid, name, at in _lookup(
            store, "SELECT person_id, name, occurred_at FROM event", "person_id", persons
        ):
            seen[pid][name].append(at)
        links = _lookup(
            store, "SELECT source, patient_key, person_id FROM identity_link", "person_id", persons
        )
        if links:
            owner = {(s, k): p for s, k, p in links}
            for source, key, pid, name, at in _lookup(
                store,
                "SELECT source, patient_key, person_id, name, occurred_at FROM event",
                "patient_key",
                {k for _, k, _ in links},
            ):
                person = owner.get((source, key))
                if pid is None and person is not None:
                    seen[person][name].append(at)
        for pid, by_name in seen.items():
            facts[pid].events = {n: sorted(ts) for n, ts in by_name.items()}
    return facts


def evaluate(
    node: Any, facts: Facts, day: date, tz: ZoneInfo, fresh: dict[str, bool] | None = None
) -> cond.Verdict:
    """Whether the tree holds for the person, leaf by leaf. `fresh` overrides stored memberships
    (segments re-evaluated earlier in the same pass)."""
    if isinstance(node, cond.Group):
        kids = [evaluate(c, facts, day, tz, fresh) for c in node.children]
        holds = (
            all(k.holds for k in kids)
            if node.kind == "all"
            else any(k.holds for k in kids)
            if node.kind == "any"
            else not kids[0].holds
        )
        return cond.Verdict(holds, node.kind, children=kids)
    if isinstance(node, EventLeaf):
        n = facts.count(node, day, tz)
        return cond.Verdict(cond._compare(n, node.op, node.count), node.describe(), seen=n)
    if isinstance(node, SegmentLeaf):
        member = fresh[node.segment] if fresh and node.segment in fresh else node.segment in facts.segments
        return cond.Verdict(member, f"member of {node.segment}", seen=member)
    if isinstance(node, HouseholdLeaf):
        meeting = sum(evaluate(node.condition, o, day, tz).holds for o in facts.household)
        return cond.Verdict(
            meeting >= node.min,
            node.describe(),
            seen={"members": len(facts.household), "meeting": meeting},
        )
    return cond.evaluate(node, facts.traits, day, tz)
