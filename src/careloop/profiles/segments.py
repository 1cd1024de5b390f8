# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""Segments: audiences over traits, events, other segments and households — stored, refreshed, explained.

The language and its compilation to SQL live in `segment_compile`; the Python evaluator behind
explanations and incremental updates in `segment_eval`. This module stores definitions (versioned),
evaluates them over everyone (`refresh`, `refresh_all`: one set-based statement per segment, only the
differences written) or over a few persons (`update_memberships`: the evaluator, for the persons an
event or a change touched) and logs who entered and who left (`segment_change`) — what journeys listen to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, NotFoundError
from careloop.privacy.audit import audit_config_change
from careloop.profiles import conditions as cond
from careloop.profiles import segment_eval
from careloop.profiles.segment_compile import (
    EventLeaf,
    HouseholdLeaf,
    SegmentLeaf,
    compile_segment,
    parse,
    segment_refs,
    walk,
)
from careloop.storage import WorkspaceStore

__all__ = [
    "EventLeaf",
    "HouseholdLeaf",
    "Segment",
    "SegmentLeaf",
    "all_segments",
    "count",
    "dependency_order",
    "explain",
    "get_segment",
    "list_segments",
    "members",
    "parse",
    "refresh",
    "refresh_all",
    "save_segment",
    "segments_using",
    "stored_members",
    "update_memberships",
]

_NAME = re.compile(r"^[\w\u4e00-\u9fff·\- ]{1,64}$")


# ---- stored segments ----------------------------------------------------------------------------------
@dataclass
class Segment:
    name: str
    description: str
    definition: Any
    version: int


def _today(clock: Clock) -> tuple[date, ZoneInfo]:
    tz = ZoneInfo(get_settings().timezone)
    return clock.now().astimezone(tz).date(), tz


def save_segment(
    store: WorkspaceStore,
    name: str,
    definition: Any,
    description: str = "",
    *,
    clock: Clock = SYSTEM_CLOCK,
    actor: str | None = None,
    role: str | None = None,
) -> Segment:
    """Create a segment, or a new version of it when the definition changed (recorded in the audit chain
    as `segment.save`, by `actor` — default the command-line user)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"segment name {name!r}: 1-64 letters, digits, Chinese characters, '_', '-', '·' or spaces"
        )
    parse(definition)
    _check_references(store, name, definition)
    now = clock.now()
    text = orjson.dumps(definition).decode()
    old = [
        {"definition": d, "version": v}
        for d, v in store.tuples("SELECT definition, version FROM segment WHERE name = :n", {"n": name})
    ]
    if not old:
        store.insert(
            "segment",
            [
                {
                    "name": name,
                    "description": description,
                    "definition": text,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        audit_config_change(store, "segment.save", "segment", name, {"version": 1}, actor=actor, role=role)
        return Segment(name, description, definition, 1)
    stored = old[0]["definition"]
    stored = orjson.loads(stored) if isinstance(stored, str) else stored
    version = int(old[0]["version"]) + (0 if stored == definition else 1)
    store.execute(
        "UPDATE segment SET definition = :d, description = :desc, version = :v, updated_at = :now WHERE name = :n",
        {"d": text, "desc": description, "v": version, "now": now, "n": name},
    )
    audit_config_change(store, "segment.save", "segment", name, {"version": version}, actor=actor, role=role)
    return Segment(name, description, definition, version)


def _check_references(store: WorkspaceStore, name: str, definition: Any) -> None:
    refs = segment_refs(parse(definition))
    if name in refs:
        raise ConfigError(f"segment {name!r} cannot contain itself")
    known = {r[0] for r in store.tuples("SELECT name FROM segment")}
    missing = refs - known
    if missing:
        raise ConfigError(
            f"segment {name!r} refers to unknown segment(s) {', '.join(sorted(missing))}; create them first"
        )


def stored_members(
    store: WorkspaceStore, name: str, *, limit: int | None = None, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """(total, members as of the last refresh: person_id, version, entered_at), by person id, paged."""
    get_segment(store, name)
    total = int(store.scalar("SELECT count(*) FROM segment_member WHERE segment = :s", {"s": name}) or 0)
    page = " LIMIT :lim OFFSET :off" if limit is not None else ""
    rows = store.rows(
        f"SELECT person_id, version, entered_at FROM segment_member WHERE segment = :s ORDER BY person_id{page}",
        {"s": name, "lim": limit, "off": offset} if limit is not None else {"s": name},
    )
    return total, rows


def all_segments(store: WorkspaceStore) -> list[Segment]:
    """Every stored segment with its definition, in one query."""
    out = []
    for name, description, definition, version in store.tuples(
        "SELECT name, description, definition, version FROM segment ORDER BY name"
    ):
        d = orjson.loads(definition) if isinstance(definition, str) else definition
        out.append(Segment(name, description or "", d, int(version)))
    return out


def get_segment(store: WorkspaceStore, name: str) -> Segment:
    # tuples, not Arrow: Arrow would give every JSON object of a definition the keys of all the others
    rows = store.tuples(
        "SELECT name, description, definition, version FROM segment WHERE name = :n", {"n": name}
    )
    if not rows:
        raise NotFoundError(
            f"no segment {name!r}; `careloop segment list` shows them, `segment create` makes one"
        )
    name_, description, definition, version = rows[0]
    d = orjson.loads(definition) if isinstance(definition, str) else definition
    return Segment(name_, description or "", d, int(version))


def list_segments(store: WorkspaceStore) -> list[dict[str, Any]]:
    rows = store.rows("SELECT name, description, version, updated_at FROM segment ORDER BY name")
    counts = dict(store.tuples("SELECT segment, count(*) FROM segment_member GROUP BY segment"))
    for r in rows:
        r["members"] = int(counts.get(r["name"], 0))
    return rows


def _compiled(store: WorkspaceStore, definition: Any, day: date, tz: ZoneInfo) -> tuple[str, dict[str, Any]]:
    return compile_segment(parse(definition), day, tz, store.backend.dialect.name)


def members(
    store: WorkspaceStore, definition: Any, *, as_of: date | None = None, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Person ids the definition holds for now (evaluated, not the stored membership)."""
    today, tz = _today(clock)
    sql, params = _compiled(store, definition, as_of or today, tz)
    return sorted(r[0] for r in store.tuples(sql, params))


def count(
    store: WorkspaceStore, definition: Any, *, as_of: date | None = None, clock: Clock = SYSTEM_CLOCK
) -> int:
    today, tz = _today(clock)
    sql, params = _compiled(store, definition, as_of or today, tz)
    return int(store.scalar(f"SELECT count(*) FROM ({sql}) q", params) or 0)


def refresh(
    store: WorkspaceStore,
    name: str,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    persons: Sequence[str] | None = None,
    cause: str = "refresh",
) -> dict[str, int]:
    """Re-evaluate a segment — for everyone, or only for `persons` (incremental) — store its members and
    log who entered and who left (`segment_change`); returns the counts."""
    seg = get_segment(store, name)
    if persons is not None:
        out = update_memberships(store, persons, [seg], as_of=as_of, clock=clock, cause=cause)
        return out[seg.name]
    return _refresh_all_persons(store, seg, as_of=as_of, clock=clock, cause=cause)


def refresh_all(
    store: WorkspaceStore,
    names: Sequence[str] | None = None,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    cause: str = "refresh",
) -> dict[str, dict[str, int]]:
    """Refresh every segment (or those named), segments another one refers to first."""
    segs = all_segments(store)
    if names is not None:
        known = {s.name for s in segs}
        missing = [n for n in names if n not in known]
        if missing:
            raise NotFoundError(f"no segment(s) {', '.join(missing)}; `careloop segment list` shows them")
        segs = [s for s in segs if s.name in set(names)]
    return {
        s.name: _refresh_all_persons(store, s, as_of=as_of, clock=clock, cause=cause)
        for s in dependency_order(segs)
    }


def segments_using(store: WorkspaceStore, traits: Sequence[str]) -> list[str]:
    """The segments whose members depend on these traits — directly, inside a household condition, or
    through a segment they refer to."""
    segs = all_segments(store)
    trees = {s.name: parse(s.definition) for s in segs}
    wanted = set(traits)
    hit = {
        n for n, t in trees.items() if any(isinstance(x, cond.Leaf) and x.trait in wanted for x in walk(t))
    }
    grew = True
    while grew:
        more = {n for n, t in trees.items() if n not in hit and segment_refs(t) & hit}
        hit |= more
        grew = bool(more)
    return sorted(hit)


def _refresh_all_persons(
    store: WorkspaceStore, seg: Segment, *, as_of: date | None, clock: Clock, cause: str
) -> dict[str, int]:
    """One set-based pass: the database returns only who entered and who left; only those are written."""
    today, tz = _today(clock)
    sql, params = _compiled(store, seg.definition, as_of or today, tz)
    diff = (
        "SELECT coalesce(q.person_id, m.person_id), q.person_id IS NOT NULL "
        f"FROM ({sql}) q FULL JOIN (SELECT person_id FROM segment_member WHERE segment = :seg_name) m "
        "ON m.person_id = q.person_id WHERE q.person_id IS NULL OR m.person_id IS NULL"
    )
    before = int(store.scalar("SELECT count(*) FROM segment_member WHERE segment = :s", {"s": seg.name}) or 0)
    changed = store.tuples(diff, {**params, "seg_name": seg.name})
    entered = sorted(p for p, now in changed if now)
    left = sorted(p for p, now in changed if not now)
    with store.backend.transaction():
        store.execute(
            "UPDATE segment_member SET version = :v WHERE segment = :s AND version <> :v",
            {"v": seg.version, "s": seg.name},
        )
        _write_changes(store, seg, entered, left, clock, cause)
    size = before + len(entered) - len(left)
    return {"members": size, "entered": len(entered), "left": len(left), "stayed": size - len(entered)}


def _write_changes(
    store: WorkspaceStore, seg: Segment, entered: list[str], left: list[str], clock: Clock, cause: str
) -> None:
    at = clock.now()
    if left:
        store.execute(
            "DELETE FROM segment_member WHERE segment = :s AND person_id = ANY(:p)",
            {"s": seg.name, "p": left},
        )
    store.insert(
        "segment_member",
        [{"segment": seg.name, "person_id": p, "version": seg.version, "entered_at": at} for p in entered],
    )
    store.insert(
        "segment_change",
        [
            {
                "segment": seg.name,
                "person_id": p,
                "change": change,
                "version": seg.version,
                "at": at,
                "cause": cause,
            }
            for change, group in (("entered", entered), ("left", left))
            for p in group
        ],
    )


def update_memberships(
    store: WorkspaceStore,
    persons: Sequence[str],
    segments: Sequence[Segment] | None = None,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    cause: str = "event",
) -> dict[str, dict[str, int]]:
    """Re-evaluate the segments (default: all) for these persons only — and, when a segment has household
    conditions, for their household members — writing only the changes. Reads each table once for all
    of them (`segment_eval.load_facts`), evaluates in Python in dependency order, so a segment that refers
    to another sees the membership just computed."""
    segs = dependency_order(list(segments) if segments is not None else all_segments(store))
    trees = {s.name: parse(s.definition) for s in segs}
    wanted = set(persons)
    if any(isinstance(n, HouseholdLeaf) for t in trees.values() for n in walk(t)):
        wanted |= segment_eval.household_members(store, wanted)
    known = sorted(segment_eval.existing_persons(store, wanted))  # only stored persons can be members
    facts = segment_eval.load_facts(store, known, list(trees.values()), memberships=True)
    today, tz = _today(clock)
    day = as_of or today
    fresh: dict[str, dict[str, bool]] = {p: {} for p in known}
    plan: list[tuple[Segment, list[str], list[str], int]] = []
    for s in segs:
        entered, left, size = [], [], 0
        for p in known:
            holds = segment_eval.evaluate(trees[s.name], facts[p], day, tz, fresh[p]).holds
            fresh[p][s.name] = holds
            was = s.name in facts[p].segments
            size += holds
            if holds and not was:
                entered.append(p)
            elif was and not holds:
                left.append(p)
        plan.append((s, entered, left, size))
    if any(e or lf for _, e, lf, _ in plan):
        with store.backend.transaction():
            for s, entered, left, _ in plan:
                _write_changes(store, s, entered, left, clock, cause)
    return {
        s.name: {"members": size, "entered": len(e), "left": len(lf), "stayed": size - len(e)}
        for s, e, lf, size in plan
    }


def dependency_order(segments: Sequence[Segment]) -> list[Segment]:
    """The segments with those another one refers to first (references outside the list are read as stored)."""
    by_name = {s.name: s for s in segments}
    done: list[Segment] = []
    seen: set[str] = set()

    def visit(s: Segment) -> None:
        if s.name in seen:
            return
        seen.add(s.name)
        for ref in sorted(segment_refs(parse(s.definition))):
            if ref in by_name:
                visit(by_name[ref])
        done.append(s)

    for s in sorted(segments, key=lambda s: s.name):
        visit(s)
    return done


def has_event_conditions(definition: Any) -> bool:
    """Whether events can change the segment's members (it counts events, looks at households, or
    contains another segment)."""
    return any(isinstance(n, EventLeaf | SegmentLeaf | HouseholdLeaf) for n in walk(parse(definition)))


# ---- explanations -------------------------------------------------------------------------------------
def explain(
    store: WorkspaceStore,
    definition: Any,
    person: str,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Leaf by leaf, whether the person meets the definition and the values seen."""
    today, tz = _today(clock)
    day = as_of or today
    tree = parse(definition)
    facts = segment_eval.load_facts(store, [person], [tree])[person]
    verdict = segment_eval.evaluate(tree, facts, day, tz)
    return {"person_id": person, "as_of": day.isoformat(), "in": verdict.holds, "because": verdict.as_dict()}
