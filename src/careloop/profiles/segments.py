# ruff: noqa: S608  (the compiler joins fixed SQL fragments and :name placeholders only; values are parameters)
"""Segments: audiences defined by conditions, compiled to parameterised SQL for any backend.

A segment definition is the condition language of `careloop.profiles.conditions` (traits, all / any /
not, keys, defaults, relative dates) plus two leaves:

    {"event": "refill_reminder_clicked", "op": ">=", "count": 2, "within": "30d"}
    {"segment": "慢病管理"}                      # member of another segment (as last refreshed)

The compiler walks the tree and writes one SELECT over `person` whose WHERE clause holds an EXISTS /
NOT EXISTS / count sub-query per leaf. Trait names, keys, values, dates and event names all travel as
query parameters; the SQL text is built only from fixed fragments, so no definition can inject SQL.
`explain` evaluates the same tree in Python for one person and says, leaf by leaf, what it saw.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, NotFoundError
from careloop.profiles import conditions as cond
from careloop.profiles.tags import load_person_traits
from careloop.storage import WorkspaceStore

_SQL_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_WITHIN = re.compile(r"^(\d+)([dwmy])$")
_NAME = re.compile(r"^[\w\u4e00-\u9fff·\- ]{1,64}$")


@dataclass(frozen=True)
class EventLeaf:
    event: str
    op: str
    count: int
    within_days: int | None


@dataclass(frozen=True)
class SegmentLeaf:
    segment: str


def parse(spec: Any, where: str = "segment") -> Any:
    """A checked segment tree: condition groups and trait leaves, event leaves and segment leaves."""
    if isinstance(spec, dict) and "event" in spec:
        extra = set(spec) - {"event", "op", "count", "within"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))} of an event condition")
        op, count = spec.get("op", ">="), spec.get("count", 1)
        if op not in _SQL_OPS:
            raise ConfigError(f"{where}: an event condition's `op` is one of {' '.join(_SQL_OPS)}")
        if not isinstance(count, int) or count < 0:
            raise ConfigError(f"{where}: `count` is a whole number >= 0")
        within = spec.get("within")
        days = None
        if within is not None:
            m = _WITHIN.match(str(within))
            if not m:
                raise ConfigError(f"{where}: `within` looks like 30d, 2w, 6m or 1y")
            days = int(m.group(1)) * cond._UNIT_DAYS[m.group(2)]
        if not isinstance(spec["event"], str) or not spec["event"]:
            raise ConfigError(f"{where}: `event` names an event")
        cond.reject_nul(spec["event"], where)
        return EventLeaf(spec["event"], op, count, days)
    if isinstance(spec, dict) and "segment" in spec:
        if set(spec) != {"segment"} or not isinstance(spec["segment"], str):
            raise ConfigError(f"{where}: a membership condition is {{segment: NAME}}")
        cond.reject_nul(spec["segment"], where)
        return SegmentLeaf(spec["segment"])
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("all", "any", "not"):
        kind = next(iter(spec))
        if kind == "not":
            return cond.Group("not", (parse(spec["not"], f"{where}.not"),))
        items = spec[kind]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.{kind}: a non-empty list of conditions")
        return cond.Group(kind, tuple(parse(c, f"{where}.{kind}[{i}]") for i, c in enumerate(items)))
    return cond.parse(spec, where)


class _Compiler:
    def __init__(self, as_of: date, tz: ZoneInfo) -> None:
        self.as_of, self.tz = as_of, tz
        self.params: dict[str, Any] = {}
        self._n = itertools.count()

    def param(self, value: Any) -> str:
        name = f"s{next(self._n)}"
        self.params[name] = value
        return f":{name}"

    def node(self, n: Any) -> str:
        if isinstance(n, cond.Group):
            if n.kind == "not":
                return f"NOT ({self.node(n.children[0])})"
            joiner = " AND " if n.kind == "all" else " OR "
            return "(" + joiner.join(self.node(c) for c in n.children) + ")"
        if isinstance(n, EventLeaf):
            return self.event(n)
        if isinstance(n, SegmentLeaf):
            return (
                "EXISTS (SELECT 1 FROM segment_member m WHERE m.person_id = p.person_id "
                f"AND m.segment = {self.param(n.segment)})"
            )
        return self.trait(n)

    def trait(self, leaf: cond.Leaf) -> str:
        base = f"t.person_id = p.person_id AND t.trait = {self.param(leaf.trait)}"
        if isinstance(leaf.key, tuple):
            base += f" AND t.key = ANY({self.param(list(leaf.key))})"
        elif leaf.key != "*":
            base += f" AND t.key = {self.param(leaf.key or '')}"
        any_value = f"EXISTS (SELECT 1 FROM trait_value t WHERE {base})"
        if leaf.op == "exists":
            return any_value
        if leaf.op == "missing":
            return f"NOT {any_value}"
        target = cond._resolve(leaf.value, self.as_of, self.tz)
        match = f"EXISTS (SELECT 1 FROM trait_value t WHERE {base} AND {self.compare(target, leaf.op)})"
        if leaf.default is not None and cond._compare(leaf.default, leaf.op, target):
            return f"({match} OR NOT {any_value})"  # a missing value counts as the default, which passes
        return match

    def compare(self, target: Any, op: str) -> str:
        sample = target[0] if isinstance(target, list) and target else target
        column = (
            "t.value_time"
            if isinstance(sample, datetime)
            else "t.value_num"
            if isinstance(sample, int | float) and not isinstance(sample, bool)
            else "t.value_text"
        )
        if op in ("in", "not_in"):
            values = [float(v) if column == "t.value_num" else v for v in target]
            test = f"{column} = ANY({self.param(values)})"
            return test if op == "in" else f"NOT ({test})"
        if op == "between":
            lo, hi = (float(v) if column == "t.value_num" else v for v in target)
            return f"{column} >= {self.param(lo)} AND {column} <= {self.param(hi)}"
        value = float(target) if column == "t.value_num" else target
        return f"{column} {_SQL_OPS[op]} {self.param(value)}"

    def event(self, leaf: EventLeaf) -> str:
        return f"{self.event_count(leaf)} {_SQL_OPS[leaf.op]} {self.param(leaf.count)}"

    def event_count(self, leaf: EventLeaf) -> str:
        """How many of the event the person had in the window (a correlated sub-query)."""
        window = ""
        if leaf.within_days:
            since = datetime.combine(
                self.as_of - timedelta(days=leaf.within_days - 1), time.min, tzinfo=self.tz
            )
            window = f" AND e.occurred_at >= {self.param(since)}"
        until = datetime.combine(self.as_of, time.max, tzinfo=self.tz)
        match = f"e.name = {self.param(leaf.event)} AND e.occurred_at <= {self.param(until)}{window}"
        # live events carry their person; ingested ones reach it through their record's identity link
        # (two counts: the live one needs no join at all)
        return (
            f"((SELECT count(*) FROM event e WHERE e.person_id = p.person_id AND {match}) + "
            "(SELECT count(*) FROM event e JOIN identity_link l ON l.source = e.source "
            f"AND l.patient_key = e.patient_key WHERE e.person_id IS NULL AND l.person_id = p.person_id AND {match}))"
        )


def compile_segment(tree: Any, as_of: date, tz: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """SELECT person_id of the persons the tree holds for (neutral SQL, named parameters)."""
    c = _Compiler(as_of, tz)
    where = c.node(tree)
    return f"SELECT p.person_id FROM person p WHERE {where}", c.params


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
    store: WorkspaceStore, name: str, definition: Any, description: str = "", *, clock: Clock = SYSTEM_CLOCK
) -> Segment:
    """Create a segment, or a new version of it when the definition changed."""
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
        return Segment(name, description, definition, 1)
    stored = old[0]["definition"]
    stored = orjson.loads(stored) if isinstance(stored, str) else stored
    version = int(old[0]["version"]) + (0 if stored == definition else 1)
    store.execute(
        "UPDATE segment SET definition = :d, description = :desc, version = :v, updated_at = :now WHERE name = :n",
        {"d": text, "desc": description, "v": version, "now": now, "n": name},
    )
    return Segment(name, description, definition, version)


def _check_references(store: WorkspaceStore, name: str, definition: Any) -> None:
    refs = _segment_refs(parse(definition))
    if name in refs:
        raise ConfigError(f"segment {name!r} cannot contain itself")
    known = {r[0] for r in store.tuples("SELECT name FROM segment")}
    missing = refs - known
    if missing:
        raise ConfigError(
            f"segment {name!r} refers to unknown segment(s) {', '.join(sorted(missing))}; create them first"
        )


def _segment_refs(node: Any) -> set[str]:
    if isinstance(node, SegmentLeaf):
        return {node.segment}
    if isinstance(node, cond.Group):
        return set().union(*(_segment_refs(c) for c in node.children))
    return set()


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


def members(
    store: WorkspaceStore, definition: Any, *, as_of: date | None = None, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Person ids the definition holds for now (evaluated, not the stored membership)."""
    today, tz = _today(clock)
    sql, params = compile_segment(parse(definition), as_of or today, tz)
    return sorted(r[0] for r in store.tuples(sql, params))


def count(
    store: WorkspaceStore, definition: Any, *, as_of: date | None = None, clock: Clock = SYSTEM_CLOCK
) -> int:
    today, tz = _today(clock)
    sql, params = compile_segment(parse(definition), as_of or today, tz)
    return int(store.scalar(f"SELECT count(*) FROM ({sql}) q", params) or 0)


def refresh(
    store: WorkspaceStore,
    name: str,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
    persons: list[str] | None = None,
    cause: str = "refresh",
) -> dict[str, int]:
    """Re-evaluate a segment — for everyone, or only for `persons` (incremental) — store its members and
    log who entered and who left (`segment_change`); returns the counts."""
    seg = get_segment(store, name)
    return _apply(store, seg, as_of=as_of, clock=clock, persons=persons, cause=cause)


def _apply(
    store: WorkspaceStore,
    seg: Segment,
    *,
    as_of: date | None,
    clock: Clock,
    persons: list[str] | None,
    cause: str,
) -> dict[str, int]:
    today, tz = _today(clock)
    sql, params = compile_segment(parse(seg.definition), as_of or today, tz)
    member_sql = "SELECT person_id FROM segment_member WHERE segment = :seg"
    if persons is not None:
        if not persons:
            return {"members": 0, "entered": 0, "left": 0, "stayed": 0}
        sql += " AND p.person_id = ANY(:only)"
        params["only"] = sorted(persons)
        member_sql += " AND person_id = ANY(:only)"
    now = sorted(r[0] for r in store.tuples(sql, params))
    before = (
        {r[0] for r in store.tuples(member_sql, {"seg": seg.name, "only": params.get("only")})}
        if persons is not None
        else {r[0] for r in store.tuples(member_sql, {"seg": seg.name})}
    )
    entered = [p for p in now if p not in before]
    left = sorted(before - set(now))
    at = clock.now()
    with store.backend.transaction():
        if left:
            store.execute(
                "DELETE FROM segment_member WHERE segment = :s AND person_id = ANY(:p)",
                {"s": seg.name, "p": left},
            )
        if persons is None:
            store.execute(
                "UPDATE segment_member SET version = :v WHERE segment = :s", {"v": seg.version, "s": seg.name}
            )
        store.insert(
            "segment_member",
            [
                {"segment": seg.name, "person_id": p, "version": seg.version, "entered_at": at}
                for p in entered
            ],
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
    return {
        "members": len(now),
        "entered": len(entered),
        "left": len(left),
        "stayed": len(now) - len(entered),
    }


def has_event_conditions(definition: Any) -> bool:
    """Whether events can change the segment's members (it counts events, or contains such a segment)."""
    return _any_leaf(parse(definition), lambda n: isinstance(n, EventLeaf | SegmentLeaf))


def _any_leaf(node: Any, test: Any) -> bool:
    if isinstance(node, cond.Group):
        return any(_any_leaf(c, test) for c in node.children)
    return bool(test(node))


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
    traits = load_person_traits(store, _traits(tree), person).get(person, {})
    verdict = _evaluate(store, tree, traits, person, day, tz)
    return {"person_id": person, "as_of": day.isoformat(), "in": verdict.holds, "because": verdict.as_dict()}


def _traits(node: Any) -> set[str]:
    if isinstance(node, cond.Leaf):
        return {node.trait}
    if isinstance(node, cond.Group):
        return set().union(*(_traits(c) for c in node.children))
    return set()


def _evaluate(
    store: WorkspaceStore, node: Any, traits: cond.Traits, person: str, day: date, tz: ZoneInfo
) -> cond.Verdict:
    if isinstance(node, cond.Group):
        kids = [_evaluate(store, c, traits, person, day, tz) for c in node.children]
        holds = (
            all(k.holds for k in kids)
            if node.kind == "all"
            else any(k.holds for k in kids)
            if node.kind == "any"
            else not kids[0].holds
        )
        return cond.Verdict(holds, node.kind, children=kids)
    if isinstance(node, EventLeaf):
        c = _Compiler(day, tz)
        sql = f"SELECT {c.event_count(node)} FROM person p WHERE p.person_id = {c.param(person)}"
        n = int(store.scalar(sql, c.params) or 0)
        holds = cond._compare(n, node.op, node.count)
        within = f" within {node.within_days}d" if node.within_days else ""
        return cond.Verdict(holds, f"event {node.event} {node.op} {node.count}{within}", seen=n)
    if isinstance(node, SegmentLeaf):
        member = bool(
            store.scalar(
                "SELECT count(*) FROM segment_member WHERE segment = :s AND person_id = :p",
                {"s": node.segment, "p": person},
            )
        )
        return cond.Verdict(member, f"member of {node.segment}", seen=member)
    return cond.evaluate(node, traits, day, tz)
