"""Conditions over a patient's traits: the rule language of tags (and the trait part of segments).

A condition is JSON / YAML::

    {"all": [c, ...]}   {"any": [c, ...]}   {"not": c}
    {"trait": "age", "op": ">=", "value": 65}
    {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0}      # any drug class
    {"trait": "visits_90d", "op": "=", "value": 0, "default": 0}     # a missing count means 0
    {"trait": "last_visit_at", "op": "<", "value": "-90d"}            # relative to the as-of day
    {"trait": "age_band", "op": "in", "value": ["45-54", "55-64"]}
    {"trait": "pdc_run_out", "key": "*", "op": "between", "value": ["-1d", "+7d"]}   # inclusive
    {"trait": "pdc", "op": "exists"}

Operators: ``= != > >= < <= between in not_in exists missing``. ``key`` picks one key of a keyed trait (e.g.
a drug class); ``"*"`` means any key satisfies it, a list means any of those keys. A missing value fails every comparison unless the
condition gives a ``default``. `evaluate` returns the verdict with, for each leaf, the values it saw —
what `careloop tags show` and segment explanations print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from careloop.errors import ConfigError

OPS = ("=", "!=", ">", ">=", "<", "<=", "between", "in", "not_in", "exists", "missing")
_RELATIVE = re.compile(r"^([+-]?)(\d+)([dwmy])$")
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}

#: a person's traits: (trait, key) -> value (float, str or datetime)
Traits = dict[tuple[str, str], Any]


@dataclass(frozen=True)
class Leaf:
    trait: str
    op: str
    value: Any = None
    key: str | tuple[str, ...] | None = None  # None: the unkeyed value; "*" or a list: any of them
    default: Any = None


@dataclass(frozen=True)
class Group:
    kind: str  # all | any | not
    children: tuple[Node, ...]


Node = Leaf | Group


@dataclass
class Verdict:
    """Whether a condition holds, and why: the leaf's values, or the children's verdicts."""

    holds: bool
    text: str
    seen: Any = None
    children: list[Verdict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"holds": self.holds, "condition": self.text}
        if self.children:
            out["because"] = [c.as_dict() for c in self.children]
        else:
            out["seen"] = self.seen
        return out


def reject_nul(value: Any, where: str) -> None:
    """Text with a NUL character cannot be stored or compared on every backend (PostgreSQL refuses it)."""
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(f"{where}: text may not contain a NUL (\\x00) character")
    if isinstance(value, list | tuple):
        for v in value:
            reject_nul(v, where)


def parse(spec: Any, where: str = "condition") -> Node:
    """A checked condition tree (raises ConfigError naming the bad part)."""
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: a condition is a mapping: all / any / not, or trait + op + value")
    groups = [k for k in ("all", "any", "not") if k in spec]
    if groups:
        if len(spec) != 1:
            raise ConfigError(f"{where}: {groups[0]!r} stands alone in its mapping")
        kind = groups[0]
        if kind == "not":
            return Group("not", (parse(spec["not"], f"{where}.not"),))
        items = spec[kind]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.{kind}: a non-empty list of conditions")
        return Group(kind, tuple(parse(c, f"{where}.{kind}[{i}]") for i, c in enumerate(items)))
    trait, op = spec.get("trait"), spec.get("op")
    if not isinstance(trait, str) or not trait:
        raise ConfigError(f"{where}: `trait` names a trait (`careloop traits list`)")
    if op not in OPS:
        raise ConfigError(f"{where}: `op` is one of {' '.join(OPS)}")
    extra = set(spec) - {"trait", "op", "value", "key", "default"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    value = spec.get("value")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ConfigError(f"{where}: `{op}` needs a list value")
    if op == "between" and not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(f"{where}: `between` needs [low, high] (both included)")
    if op not in ("exists", "missing", "in", "not_in", "between") and value is None:
        raise ConfigError(f"{where}: `{op}` needs a value")
    if (
        isinstance(value, str)
        and value[:1] in "+-"
        and not _RELATIVE.match(value)
        and op in (">", ">=", "<", "<=")
    ):
        raise ConfigError(f"{where}: relative dates look like -90d, -2w, -6m, -1y")
    key = spec.get("key")
    for part in (trait, value, key, spec.get("default")):
        reject_nul(part, where)
    if isinstance(key, list):
        if not key:
            raise ConfigError(f"{where}: `key` as a list needs at least one key")
        return Leaf(trait, op, value, tuple(str(k) for k in key), spec.get("default"))
    return Leaf(trait, op, value, None if key is None else str(key), spec.get("default"))


def traits_used(node: Node) -> set[str]:
    if isinstance(node, Leaf):
        return {node.trait}
    return set().union(*(traits_used(c) for c in node.children))


def evaluate(node: Node, traits: Traits, as_of: date, tz: ZoneInfo) -> Verdict:
    if isinstance(node, Group):
        kids = [evaluate(c, traits, as_of, tz) for c in node.children]
        holds = (
            all(k.holds for k in kids)
            if node.kind == "all"
            else any(k.holds for k in kids)
            if node.kind == "any"
            else not kids[0].holds
        )
        return Verdict(holds, node.kind, children=kids)
    values = _values(node, traits)
    target = _resolve(node.value, as_of, tz)
    if node.op == "exists":
        holds = bool(values)
    elif node.op == "missing":
        holds = not values
    else:
        if not values and node.default is not None:
            values = {"": node.default}
        holds = any(_compare(v, node.op, target) for v in values.values())
    seen: Any = values.get("") if set(values) <= {""} else values
    return Verdict(holds, describe(node), seen=_plain(seen))


def _values(leaf: Leaf, traits: Traits) -> dict[str, Any]:
    if leaf.key == "*":
        return {k: v for (t, k), v in traits.items() if t == leaf.trait}
    if isinstance(leaf.key, tuple):
        return {k: v for (t, k), v in traits.items() if t == leaf.trait and k in leaf.key}
    k = leaf.key or ""
    return {k: traits[(leaf.trait, k)]} if (leaf.trait, k) in traits else {}


def _resolve(value: Any, as_of: date, tz: ZoneInfo) -> Any:
    """Relative dates (-90d) become the start of that local day; lists resolve element-wise."""
    if isinstance(value, list):
        return [_resolve(v, as_of, tz) for v in value]
    if isinstance(value, str):
        m = _RELATIVE.match(value)
        if m:
            days = int(m.group(2)) * _UNIT_DAYS[m.group(3)] * (-1 if m.group(1) == "-" else 1)
            return datetime.combine(as_of + timedelta(days=days), time.min, tzinfo=tz)
        try:
            d = date.fromisoformat(value)
            return datetime.combine(d, time.min, tzinfo=tz)
        except ValueError:
            return value
    return value


def _compare(v: Any, op: str, target: Any) -> bool:
    try:
        if op == "in":
            return bool(v in target)
        if op == "not_in":
            return bool(v not in target)
        if op == "between":
            return _compare(v, ">=", target[0]) and _compare(v, "<=", target[1])
        if isinstance(v, datetime) and isinstance(target, date) and not isinstance(target, datetime):
            target = datetime.combine(target, time.min, tzinfo=v.tzinfo)
        if isinstance(v, int | float) and isinstance(target, int | float):
            v, target = float(v), float(target)
        return bool(
            {
                "=": lambda: v == target,
                "!=": lambda: v != target,
                ">": lambda: v > target,
                ">=": lambda: v >= target,
                "<": lambda: v < target,
                "<=": lambda: v <= target,
            }[op]()
        )
    except TypeError:  # a number compared with a date, say: the condition does not hold
        return False


def describe(node: Node) -> str:
    if isinstance(node, Group):
        return f"{node.kind}({', '.join(describe(c) for c in node.children)})"
    key = f"[{'|'.join(node.key) if isinstance(node.key, tuple) else node.key}]" if node.key else ""
    if node.op in ("exists", "missing"):
        return f"{node.trait}{key} {node.op}"
    default = f" (missing = {node.default})" if node.default is not None else ""
    return f"{node.trait}{key} {node.op} {node.value}{default}"


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, datetime | date):
        return v.isoformat()
    return v
