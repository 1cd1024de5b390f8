# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""The segment builder: form rows (trait / event / segment conditions) -> a segment definition in the
language of docs/segments.md, counted live with `careloop.profiles.segments.count` and explained for a
sample member with `explain` — the library's own functions, so the console's numbers are the CLI's and
the API's.

A row is: kind (trait, event, segment), negate, and per kind
- trait: trait, key (blank: unkeyed, ``*`` any key), op, value (``a, b`` for in / not_in / between);
- event: event name, op, count, within (``30d``; blank: all history);
- segment: another segment's name.
Rows combine with all (every row) or any (one row). Values that look like numbers are numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from careloop.errors import ConfigError
from careloop.profiles import segments as seg
from careloop.profiles.conditions import OPS
from careloop.profiles.segment_compile import compile_segment, parse
from careloop.profiles.traits import load_traits
from careloop.storage import WorkspaceStore

KINDS = ("trait", "event", "segment")
EVENT_OPS = (">=", ">", "=", "<", "<=", "!=")
MAX_ROWS = 12
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


@dataclass
class Row:
    kind: str = "trait"
    negate: bool = False
    trait: str = ""
    key: str = ""
    op: str = ">="
    value: str = ""
    event: str = ""
    count: str = "1"
    within: str = ""
    segment: str = ""

    def blank(self) -> bool:
        return not (
            self.trait if self.kind == "trait" else self.event if self.kind == "event" else self.segment
        )


@dataclass
class Form:
    combine: str = "all"
    rows: list[Row] = field(default_factory=list)
    name: str = ""
    description: str = ""
    person: str = ""


def _value(text: str) -> Any:
    text = text.strip()
    if _NUMBER.match(text):
        f = float(text)
        return int(f) if f.is_integer() and "." not in text else f
    return text


def _values(text: str) -> list[Any]:
    return [_value(v) for v in re.split(r"[,，]", text) if v.strip()]


def parse_form(data: Mapping[str, Any]) -> Form:
    """The builder's form fields (``combine``, ``c{i}_kind`` …) as a Form."""
    form = Form(
        combine="any" if data.get("combine") == "any" else "all",
        name=str(data.get("name") or "").strip(),
        description=str(data.get("description") or "").strip(),
        person=str(data.get("person") or "").strip(),
    )
    for i in range(MAX_ROWS):
        kind = str(data.get(f"c{i}_kind") or "")
        if kind not in KINDS:
            continue
        form.rows.append(
            Row(
                kind=kind,
                negate=bool(data.get(f"c{i}_not")),
                trait=str(data.get(f"c{i}_trait") or "").strip(),
                key=str(data.get(f"c{i}_key") or "").strip(),
                op=str(data.get(f"c{i}_op") or ">="),
                value=str(data.get(f"c{i}_value") or "").strip(),
                event=str(data.get(f"c{i}_event") or "").strip(),
                count=str(data.get(f"c{i}_count") or "1").strip(),
                within=str(data.get(f"c{i}_within") or "").strip(),
                segment=str(data.get(f"c{i}_segment") or "").strip(),
            )
        )
    return form


def condition(row: Row) -> dict[str, Any]:
    if row.kind == "trait":
        if row.op not in OPS:
            raise ConfigError(f"operator {row.op!r} is not one of {' '.join(OPS)}")
        leaf: dict[str, Any] = {"trait": row.trait, "op": row.op}
        if row.key:
            leaf["key"] = row.key
        if row.op in ("in", "not_in", "between"):
            leaf["value"] = _values(row.value)
        elif row.op not in ("exists", "missing"):
            if not row.value:
                raise ConfigError(f"the condition on {row.trait} needs a value")
            leaf["value"] = _value(row.value)
        out = leaf
    elif row.kind == "event":
        if row.op not in EVENT_OPS:
            raise ConfigError(f"an event count compares with one of {' '.join(EVENT_OPS)}")
        try:
            n = int(row.count or "1")
        except ValueError:
            raise ConfigError(f"the count of {row.event} is a whole number") from None
        out = {"event": row.event, "op": row.op, "count": n}
        if row.within:
            out["within"] = row.within
    else:
        out = {"segment": row.segment}
    return {"not": out} if row.negate else out


def definition(form: Form) -> dict[str, Any] | None:
    """The definition the form describes (None when it has no condition yet)."""
    leaves = [condition(r) for r in form.rows if not r.blank()]
    if not leaves:
        return None
    return leaves[0] if len(leaves) == 1 else {form.combine: leaves}


def form_of(definition: Any) -> Form | None:
    """Rows for a definition the form can show (one level of all / any over leaves), else None."""
    if not isinstance(definition, dict):
        return None
    combine, items = "all", [definition]
    for k in ("all", "any"):
        if k in definition and isinstance(definition[k], list):
            combine, items = k, definition[k]
    rows = []
    for item in items:
        negate = isinstance(item, dict) and set(item) == {"not"}
        leaf = item["not"] if negate else item
        if not isinstance(leaf, dict):
            return None
        if "trait" in leaf:
            v = leaf.get("value")
            key = leaf.get("key")
            if isinstance(key, list):
                return None
            rows.append(
                Row(
                    "trait",
                    negate,
                    trait=str(leaf["trait"]),
                    key="" if key is None else str(key),
                    op=str(leaf.get("op", "=")),
                    value=", ".join(str(x) for x in v)
                    if isinstance(v, list)
                    else ("" if v is None else str(v)),
                )
            )
        elif "event" in leaf:
            rows.append(
                Row(
                    "event",
                    negate,
                    event=str(leaf["event"]),
                    op=str(leaf.get("op", ">=")),
                    count=str(leaf.get("count", 1)),
                    within=str(leaf.get("within", "")),
                )
            )
        elif set(leaf) == {"segment"}:
            rows.append(Row("segment", negate, segment=str(leaf["segment"])))
        else:
            return None
    return Form(combine=combine, rows=rows)


def sample_member(store: WorkspaceStore, definition: Any, day: date, tz: ZoneInfo) -> str | None:
    """One person the definition holds (the smallest id), for the explanation."""
    sql, params = compile_segment(parse(definition), day, tz, store.backend.dialect.name)
    value = store.scalar(f"SELECT min(q.person_id) FROM ({sql}) q", params)
    return str(value) if value is not None else None


def preview(
    store: WorkspaceStore, form: Form, day: date, tz: ZoneInfo, *, explain_person: bool, clock: Any
) -> dict[str, Any]:
    """Count (and, when allowed, an explanation for the given or a sample person) of the form's
    definition; `error` says what is wrong with it instead."""
    out: dict[str, Any] = {"definition": None, "count": None, "explanation": None, "error": None}
    try:
        d = definition(form)
        out["definition"] = d
        if d is None:
            return out
        out["count"] = seg.count(store, d, as_of=day, clock=clock)
        if explain_person:
            person = form.person or sample_member(store, d, day, tz)
            out["person"] = person
            if person:
                out["explanation"] = seg.explain(store, d, person, as_of=day, clock=clock)
    except ConfigError as e:
        out["error"] = str(e)
    return out


def vocabulary(store: WorkspaceStore) -> dict[str, Any]:
    """What the form offers: stored traits (with their keys, ranges and a few text values), the most
    frequent event names, and the segments."""
    described = {name: d.description for name, d in load_traits().traits.items()}
    traits: dict[str, dict[str, Any]] = {}
    for trait, keyed, lo, hi, texts in store.tuples(
        "SELECT trait, max(CASE WHEN key <> '' THEN 1 ELSE 0 END), min(value_num), max(value_num), "
        "count(value_text) FROM trait_value GROUP BY trait ORDER BY trait"
    ):
        traits[trait] = {
            "keyed": bool(keyed),
            "min": lo,
            "max": hi,
            "text": int(texts) > 0,
            "description": described.get(trait, ""),
            "values": [],
        }
    for trait, value in store.tuples(
        "SELECT trait, value_text FROM trait_value WHERE value_text IS NOT NULL "
        "GROUP BY trait, value_text ORDER BY trait, count(*) DESC"
    ):
        values = traits.get(trait, {}).get("values")
        if values is not None and len(values) < 12:
            values.append(value)
    events = [
        r[0]
        for r in store.tuples("SELECT name FROM event GROUP BY name ORDER BY count(*) DESC, name LIMIT 40")
    ]
    return {"traits": traits, "events": events, "segments": [s["name"] for s in seg.list_segments(store)]}
