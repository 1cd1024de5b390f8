# ruff: noqa: S608  (the compiler joins fixed SQL fragments and :name placeholders only; values are parameters)
"""The segment language: parsing, and compilation to one parameterised SELECT for DuckDB or PostgreSQL.

A segment definition is the condition language of `careloop.profiles.conditions` (traits, all / any /
not, keys, defaults, relative dates) plus three leaves:

    {"event": "refill_reminder_clicked", "op": ">=", "count": 2, "within": "30d"}
    {"segment": "慢病管理"}                      # member of another segment (as last refreshed)
    {"household": <condition>, "min": 1}        # at least `min` other household members meet it

The compiler walks the tree and writes one SELECT over `person` whose WHERE clause holds one
sub-query per leaf. Trait names, keys, values, dates and event names all travel as query parameters;
the SQL text is built only from fixed fragments, so no definition can inject SQL.

Each leaf is written in the shape its engine plans best (both select the same persons; the test suite
checks both against the Python evaluator): on DuckDB an uncorrelated ``p.person_id IN (SELECT …)``,
which becomes a hash semi-join (correlated ``EXISTS`` under ``OR`` cost DuckDB 2.0 3-4x more); on
PostgreSQL a correlated ``EXISTS`` / count, which uses the indexes — its ``NOT IN`` over a large
sub-query cannot be hashed in the default work_mem and degrades to a nested loop.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from careloop.errors import ConfigError
from careloop.profiles import conditions as cond

SQL_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_WITHIN = re.compile(r"^(\d+)([dwmy])$")


@dataclass(frozen=True)
class EventLeaf:
    event: str
    op: str
    count: int
    within_days: int | None

    def window(self, as_of: date, tz: ZoneInfo) -> tuple[datetime | None, datetime]:
        """The first and last instants the leaf counts events in (local days, both inclusive)."""
        until = datetime.combine(as_of, time.max, tzinfo=tz)
        if not self.within_days:
            return None, until
        return datetime.combine(as_of - timedelta(days=self.within_days - 1), time.min, tzinfo=tz), until

    def describe(self) -> str:
        within = f" within {self.within_days}d" if self.within_days else ""
        return f"event {self.event} {self.op} {self.count}{within}"


@dataclass(frozen=True)
class SegmentLeaf:
    segment: str


@dataclass(frozen=True)
class HouseholdLeaf:
    """At least `min` other members of the person's household meet `condition` (traits and events)."""

    condition: Any
    min: int

    def describe(self) -> str:
        return f"household: at least {self.min} other member(s) meet the condition"


def parse(spec: Any, where: str = "segment", *, in_household: bool = False) -> Any:
    """A checked segment tree: condition groups, trait leaves, event, segment and household leaves."""
    if isinstance(spec, dict) and "event" in spec:
        return _event(spec, where)
    if isinstance(spec, dict) and "segment" in spec:
        if set(spec) != {"segment"} or not isinstance(spec["segment"], str):
            raise ConfigError(f"{where}: a membership condition is {{segment: NAME}}")
        if in_household:
            raise ConfigError(f"{where}: a household condition holds traits and events, not segments")
        cond.reject_nul(spec["segment"], where)
        return SegmentLeaf(spec["segment"])
    if isinstance(spec, dict) and "household" in spec:
        extra = set(spec) - {"household", "min"}
        if extra:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(sorted(extra))} of a household condition"
            )
        if in_household:
            raise ConfigError(f"{where}: household conditions cannot nest")
        least = spec.get("min", 1)
        if not isinstance(least, int) or isinstance(least, bool) or least < 1:
            raise ConfigError(f"{where}: a household condition's `min` is a whole number >= 1")
        return HouseholdLeaf(parse(spec["household"], f"{where}.household", in_household=True), least)
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("all", "any", "not"):
        kind = next(iter(spec))
        if kind == "not":
            return cond.Group("not", (parse(spec["not"], f"{where}.not", in_household=in_household),))
        items = spec[kind]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.{kind}: a non-empty list of conditions")
        return cond.Group(
            kind,
            tuple(parse(c, f"{where}.{kind}[{i}]", in_household=in_household) for i, c in enumerate(items)),
        )
    return cond.parse(spec, where)


def _event(spec: dict[str, Any], where: str) -> EventLeaf:
    extra = set(spec) - {"event", "op", "count", "within"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))} of an event condition")
    op, count = spec.get("op", ">="), spec.get("count", 1)
    if op not in SQL_OPS:
        raise ConfigError(f"{where}: an event condition's `op` is one of {' '.join(SQL_OPS)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
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


def walk(node: Any) -> list[Any]:
    """Every leaf of the tree (household conditions: the leaf itself and the leaves inside it)."""
    if isinstance(node, cond.Group):
        return [leaf for c in node.children for leaf in walk(c)]
    if isinstance(node, HouseholdLeaf):
        return [node, *walk(node.condition)]
    return [node]


def segment_refs(node: Any) -> set[str]:
    return {n.segment for n in walk(node) if isinstance(n, SegmentLeaf)}


class Compiler:
    def __init__(self, as_of: date, tz: ZoneInfo, dialect: str = "duckdb") -> None:
        self.as_of, self.tz = as_of, tz
        self.sets = dialect == "duckdb"  # DuckDB: uncorrelated IN sets; PostgreSQL: correlated EXISTS
        self.params: dict[str, Any] = {}
        self._n = itertools.count()

    def param(self, value: Any) -> str:
        name = f"s{next(self._n)}"
        self.params[name] = value
        return f":{name}"

    def node(self, n: Any, person: str = "p.person_id") -> str:
        if isinstance(n, cond.Group):
            if n.kind == "not":
                return f"NOT ({self.node(n.children[0], person)})"
            joiner = " AND " if n.kind == "all" else " OR "
            return "(" + joiner.join(self.node(c, person) for c in n.children) + ")"
        if isinstance(n, EventLeaf):
            return self.event(n, person)
        if isinstance(n, SegmentLeaf):
            return self._in(
                person,
                "SELECT m.person_id FROM segment_member m",
                f"m.segment = {self.param(n.segment)}",
                "m",
            )
        if isinstance(n, HouseholdLeaf):
            return self.household(n, person)
        return self.trait(n, person)

    def _in(self, person: str, select: str, where: str, alias: str) -> str:
        """`person` is among the persons `select … WHERE where` gives (alias.person_id)."""
        if self.sets:
            return f"{person} IN ({select} WHERE {where})"
        return f"EXISTS ({select} WHERE {alias}.person_id = {person} AND {where})"

    def trait(self, leaf: cond.Leaf, person: str) -> str:
        base = f"t.trait = {self.param(leaf.trait)}"
        if isinstance(leaf.key, tuple):
            base += f" AND t.key = ANY({self.param(list(leaf.key))})"
        elif leaf.key != "*":
            base += f" AND t.key = {self.param(leaf.key or '')}"
        select = "SELECT t.person_id FROM trait_value t"
        any_value = self._in(person, select, base, "t")
        if leaf.op == "exists":
            return any_value
        if leaf.op == "missing":
            return f"NOT {any_value}"
        target = cond._resolve(leaf.value, self.as_of, self.tz)
        match = self._in(person, select, f"{base} AND {self.compare(target, leaf.op)}", "t")
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
        return f"{column} {SQL_OPS[op]} {self.param(value)}"

    def _match(self, leaf: EventLeaf) -> str:
        since, until = leaf.window(self.as_of, self.tz)
        window = f" AND e.occurred_at >= {self.param(since)}" if since else ""
        return f"e.name = {self.param(leaf.event)} AND e.occurred_at <= {self.param(until)}{window}"

    def event(self, leaf: EventLeaf, person: str) -> str:
        if not self.sets:
            return f"{self.event_count(leaf, person)} {SQL_OPS[leaf.op]} {self.param(leaf.count)}"
        # persons with at least one such event, grouped; those with none pass when 0 passes the test
        match = self._match(leaf)
        grouped = (
            "SELECT q.pid FROM (SELECT e.person_id AS pid FROM event e WHERE e.person_id IS NOT NULL "
            f"AND {match} UNION ALL SELECT l.person_id FROM event e JOIN identity_link l "
            "ON l.source = e.source AND l.patient_key = e.patient_key "
            f"WHERE e.person_id IS NULL AND {match}) q GROUP BY q.pid HAVING "
        )
        test = f"count(*) {SQL_OPS[leaf.op]} {self.param(leaf.count)}"
        if cond._compare(0, leaf.op, leaf.count):
            return f"NOT ({person} IN ({grouped}NOT ({test})))"
        return f"{person} IN ({grouped}{test})"

    def event_count(self, leaf: EventLeaf, person: str = "p.person_id") -> str:
        """How many of the event the person had in the window (a correlated sub-query)."""
        match = self._match(leaf)
        # live events carry their person; ingested ones reach it through their record's identity link
        # (two counts: the live one needs no join at all)
        return (
            f"((SELECT count(*) FROM event e WHERE e.person_id = {person} AND {match}) + "
            "(SELECT count(*) FROM event e JOIN identity_link l ON l.source = e.source "
            f"AND l.patient_key = e.patient_key WHERE e.person_id IS NULL AND l.person_id = {person} AND {match}))"
        )

    def household(self, leaf: HouseholdLeaf, person: str) -> str:
        """At least `min` other members of the person's household meet the condition."""
        inner = self.node(leaf.condition, "o.person_id")
        pairs = (
            "FROM household_member me JOIN household_member o "
            "ON o.household_id = me.household_id AND o.person_id <> me.person_id"
        )
        least = self.param(leaf.min)
        if self.sets:
            return (
                f"{person} IN (SELECT me.person_id {pairs} WHERE {inner} "
                f"GROUP BY me.person_id HAVING count(*) >= {least})"
            )
        return f"(SELECT count(*) {pairs} WHERE me.person_id = {person} AND {inner}) >= {least}"


def compile_segment(
    tree: Any, as_of: date, tz: ZoneInfo, dialect: str = "duckdb"
) -> tuple[str, dict[str, Any]]:
    """SELECT person_id of the persons the tree holds for (named parameters; `dialect` picks leaf shapes)."""
    c = Compiler(as_of, tz, dialect)
    where = c.node(tree)
    return f"SELECT p.person_id FROM person p WHERE {where}", c.params
