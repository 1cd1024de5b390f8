"""Traits: values that describe each unified patient, declared in YAML and computed on any backend.

An **aggregate** trait counts, sums or takes the min / max / average of one entity's rows of the person
(every source's records, through identity links; live events through their attribution) whose time falls
in a window ending on the as-of date, optionally filtered by field values. Field names are checked
against the entity's schema and values travel as query parameters, so a definition cannot inject SQL.
**Builtin** traits are computed by careloop: `age`, `age_band` (from the golden record's birth date)
and `adherence` (PDC per drug class, with MPR, adherent flag and refill run-out date as sibling traits;
see `careloop.profiles.adherence`).

Values land in `trait_value` (one row per person, trait and key), replacing the previous values of the
traits computed. A trait declared with ``history: true`` (text or number) also keeps a dated snapshot in
`trait_history`: one row per person, trait and key for each local as-of day computed (recomputing a day
replaces that day's rows). `compute_traits(..., current=False)` records a past day's snapshot without
touching `trait_value`, computing the traits it reads as of that day too.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.domain import entities, field_specs
from careloop.errors import ConfigError
from careloop.profiles.adherence import Fill, class_adherence
from careloop.profiles.conditions import evaluate, traits_used
from careloop.profiles.conditions import parse as cond_parse
from careloop.profiles.definitions import read_definitions
from careloop.profiles.tags import load_person_traits
from careloop.storage import WorkspaceStore

AGGREGATES = ("count", "count_distinct", "sum", "min", "max", "avg")
BUILTINS = ("age", "age_band", "sex", "adherence", "top_key", "first_match")
#: builtins that read other traits, so they are computed after every other trait of a run
_DERIVED = ("top_key", "first_match")
AGE_BANDS = (
    (14, "<14"),
    (25, "14-24"),
    (35, "25-34"),
    (45, "35-44"),
    (55, "45-54"),
    (65, "55-64"),
    (75, "65-74"),
)


@dataclass(frozen=True)
class TraitDef:
    name: str
    description: str = ""
    type: str = "number"  # number | text | time
    source: str | None = None  # entity ("from")
    aggregate: str | None = None
    of: str | None = None
    time: str | None = None
    window_days: int | None = None
    where: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None
    by: str | None = None  # a field of the entity: one value per distinct value of it (the trait's key)
    rules: tuple[tuple[str, Any], ...] = ()  # first_match: (value, condition) in order
    default: str | None = None  # first_match: the value when no rule holds
    history: bool = False  # keep a dated snapshot per as-of day in trait_history (text and number only)


@dataclass
class TraitSet:
    version: int
    traits: dict[str, TraitDef]


def load_traits(path: Path | None = None) -> TraitSet:
    """The trait definitions of `path`, or careloop's shipped ones; every definition is checked."""
    origin, data = read_definitions(path, "traits.yaml", "trait definitions")
    raw = data.get("traits") if isinstance(data, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{origin}: expected `traits:` mapping names to definitions (see docs/traits.md)")
    defs = {str(name): _check(str(name), spec or {}, origin) for name, spec in raw.items()}
    for d in defs.values():
        used = set().union(*(traits_used(c) for _, c in d.rules)) if d.rules else set()
        if used - defs.keys() - _sibling_names(defs):
            raise ConfigError(
                f"{origin}: trait {d.name!r} reads trait(s) not in this file: {', '.join(sorted(used - defs.keys()))}"
            )
        if d.builtin == "top_key" and (d.of not in defs or defs[d.of].by is None):
            raise ConfigError(
                f"{origin}: trait {d.name!r}: `of` must name a trait of this file computed `by` a field"
            )
    return TraitSet(int(data.get("version", 1)), defs)


def _first_match(name: str, spec: dict[str, Any], where: str) -> TraitDef:
    rules = spec.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(f"{where}: builtin first_match needs `rules`: a list of {{value, when}} in order")
    parsed = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or "value" not in r or "when" not in r:
            raise ConfigError(f"{where}: rules[{i}] needs `value` and `when`")
        parsed.append((str(r["value"]), cond_parse(r["when"], f"{where}.rules[{i}]")))
    default = spec.get("default")
    return TraitDef(
        name,
        spec.get("description", ""),
        "text",
        builtin="first_match",
        rules=tuple(parsed),
        default=None if default is None else str(default),
    )


def _sibling_names(defs: dict[str, TraitDef]) -> set[str]:
    return {
        f"{n}_{s}"
        for n, d in defs.items()
        if d.builtin == "adherence"
        for s in ("mpr", "adherent", "run_out")
    }


def _check(name: str, spec: dict[str, Any], origin: str) -> TraitDef:
    d = _check_spec(name, spec, origin)
    history = spec.get("history", False)
    if not isinstance(history, bool):
        raise ConfigError(f"{origin}: trait {name!r}: `history` is true or false")
    if history and d.type not in ("text", "number"):
        raise ConfigError(
            f"{origin}: trait {name!r}: `history` keeps text and number values only, not {d.type}"
        )
    return replace(d, history=True) if history else d


def _check_spec(name: str, spec: dict[str, Any], origin: str) -> TraitDef:
    where = f"{origin}: trait {name!r}"
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ConfigError(f"{where}: names are letters, digits and '_' and start with a letter")
    if spec.get("builtin"):
        if spec["builtin"] not in BUILTINS:
            raise ConfigError(f"{where}: builtin {spec['builtin']!r} is not one of {', '.join(BUILTINS)}")
        typ = "text" if spec["builtin"] in ("age_band", "sex", "top_key", "first_match") else "number"
        if spec["builtin"] == "first_match":
            return _first_match(name, spec, where)
        if spec["builtin"] == "top_key" and not isinstance(spec.get("of"), str):
            raise ConfigError(
                f"{where}: builtin top_key needs `of`: the keyed trait whose largest key it names"
            )
        return TraitDef(
            name,
            spec.get("description", ""),
            typ,
            builtin=spec["builtin"],
            window_days=spec.get("window_days"),
            of=spec.get("of"),
        )
    entity = spec.get("from")
    if entity not in entities():
        raise ConfigError(f"{where}: `from` must name an entity ({', '.join(sorted(entities()))})")
    fields = {f.name: f for f in field_specs(entities()[entity])}
    agg = spec.get("aggregate")
    if agg not in AGGREGATES:
        raise ConfigError(f"{where}: `aggregate` must be one of {', '.join(AGGREGATES)}")
    of = spec.get("of")
    if agg != "count" and of not in fields:
        raise ConfigError(f"{where}: `of` must be a field of {entity}: {', '.join(fields)}")
    t = spec.get("time")
    if t is not None and (t not in fields or fields[t].py_type not in (datetime, date)):
        raise ConfigError(f"{where}: `time` must be a date or time field of {entity}")
    window = spec.get("window_days")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ConfigError(f"{where}: `window_days` must be a whole number of days >= 1")
    if window is not None and t is None:
        raise ConfigError(f"{where}: a window needs `time`: the field it applies to")
    conds = spec.get("where") or {}
    if not isinstance(conds, dict) or any(k not in fields for k in conds):
        raise ConfigError(f"{where}: `where` maps fields of {entity} to a value or a list of values")
    if any(fields[k].pii for k in conds) or (of and fields[of].pii):
        raise ConfigError(f"{where}: traits cannot filter on or aggregate personal identifiers")
    by = spec.get("by")
    if by is not None and (
        by not in fields or fields[by].pii or (fields[by].py_type is not str and fields[by].enum is None)
    ):
        raise ConfigError(f"{where}: `by` must be a text field of {entity} that is not a personal identifier")
    typ = spec.get(
        "type",
        "time"
        if agg in ("min", "max") and of in fields and fields[of].py_type in (datetime, date)
        else "number",
    )
    if typ not in ("number", "time"):
        raise ConfigError(f"{where}: `type` is number or time")
    return TraitDef(name, spec.get("description", ""), typ, entity, agg, of, t, window, dict(conds), by=by)


@dataclass
class ComputeSummary:
    as_of: datetime
    traits: int
    values: int  # rows stored in trait_value; in a history-only run, in trait_history
    persons: int
    seconds: float
    per_trait: dict[str, int]  # values computed per trait (in a history-only run, dependencies too)
    history: dict[str, int] = field(default_factory=dict)  # snapshot rows written per trait with history
    current: bool = True  # False: a history-only run, trait_value untouched

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compute_traits(
    store: WorkspaceStore,
    traitset: TraitSet | None = None,
    *,
    as_of: date | None = None,
    only: list[str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    current: bool = True,
) -> ComputeSummary:
    """Compute the traits (all, or `only` these) for every person and replace their stored values; the
    traits declared with ``history: true`` also replace their snapshot of the as-of day in
    `trait_history`, in the same transaction.

    With `current=False` (``careloop traits compute --as-of DAY --history-only``) only snapshots are
    written, e.g. of a past day: the traits with history (all, or those of `only`) are computed together
    with every trait they read — all as of that day, the dependencies in memory only — and `trait_value`
    is left as it is."""
    started = time.perf_counter()
    traitset = traitset or load_traits()
    names = only or list(traitset.traits)
    unknown = [n for n in names if n not in traitset.traits]
    if unknown:
        raise ConfigError(f"unknown trait(s) {', '.join(unknown)}; `careloop traits list` shows them")
    if not current:
        plain = [n for n in only or [] if not traitset.traits[n].history]
        if plain:
            raise ConfigError(
                f"history-only computes traits declared with `history: true`; not {', '.join(plain)} "
                "(docs/traits.md)"
            )
        names = [n for n in names if traitset.traits[n].history]
        if not names:
            raise ConfigError("no trait is declared with `history: true`: nothing to record (docs/traits.md)")
    # traits that read other traits come after them; a history-only run computes what they read too
    names = _in_order(traitset, names, dependencies=not current)
    tz = ZoneInfo(get_settings().timezone)  # days are the patients' local days
    day = as_of or clock.now().astimezone(tz).date()
    end = datetime.combine(day, dtime.max, tzinfo=tz)  # windows end on the as-of day, inclusive
    now = clock.now()
    per_trait: dict[str, int] = {}
    computed: dict[str, list[dict[str, Any]]] = {}  # by definition
    by_trait: dict[str, list[dict[str, Any]]] = {}  # by stored trait name (adherence siblings apart)
    for name in names:
        d = traitset.traits[name]
        if d.builtin == "top_key":
            got = _top_key(store, d, by_trait.get(d.of or ""))
        elif d.builtin == "first_match":
            got = _first_match_values(store, d, by_trait, day, tz)
        else:
            got = _builtin(store, d, day, tz) if d.builtin else _aggregate(store, d, end)
        computed[name] = got
        per_trait[name] = len(got)
        for t in {name} | _siblings(traitset, [name]):
            by_trait.setdefault(t, [])
        for r in got:
            by_trait.setdefault(r["trait"], []).append(r)
    kept = sorted(n for n in names if traitset.traits[n].history)
    history = [
        {
            "person_id": r["person_id"],
            "trait": r["trait"],
            "key": r["key"],
            "as_of": day,
            "value_text": r["value_text"],
            "value_num": r["value_num"],
            "computed_at": now,
        }
        for n in kept
        for r in computed[n]
        if r["trait"] == n and (r["value_text"] is not None or r["value_num"] is not None)
    ]
    rows: list[dict[str, Any]] = (
        [{**r, "computed_at": now, "as_of": end} for n in names for r in computed[n]] if current else []
    )
    replaced = sorted({r["trait"] for r in rows} | set(names) | _siblings(traitset, names))
    with store.backend.transaction():
        if current:
            store.execute("DELETE FROM trait_value WHERE trait = ANY(:t)", {"t": replaced})
            for start in range(0, len(rows), 200_000):
                store.insert("trait_value", rows[start : start + 200_000])
        if kept:
            store.execute(
                "DELETE FROM trait_history WHERE trait = ANY(:t) AND as_of = :d", {"t": kept, "d": day}
            )
            for start in range(0, len(history), 200_000):
                store.insert("trait_history", history[start : start + 200_000])
    stored = rows if current else history
    return ComputeSummary(
        as_of=end,
        traits=len(names),
        values=len(stored),
        persons=len({r["person_id"] for r in stored}),
        seconds=round(time.perf_counter() - started, 3),
        per_trait=per_trait,
        history={n: sum(1 for r in history if r["trait"] == n) for n in kept},
        current=current,
    )


def _reads(traitset: TraitSet, d: TraitDef) -> set[str]:
    """The definitions `d` reads (an adherence sibling such as ``pdc_adherent`` is its trait's)."""
    used = set().union(*(traits_used(c) for _, c in d.rules)) if d.rules else set()
    if d.builtin == "top_key" and d.of:
        used.add(d.of)
    owner = {s: n for n in traitset.traits for s in _siblings(traitset, [n])}
    return {owner.get(u, u) for u in used if owner.get(u, u) in traitset.traits}


def _in_order(traitset: TraitSet, names: list[str], *, dependencies: bool) -> list[str]:
    """`names` with every trait after the traits of the run it reads; with `dependencies`, plus every
    trait they read, transitively."""
    wanted = set(names)
    out: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for dep in sorted(_reads(traitset, traitset.traits[n])):
            if dependencies or dep in wanted:
                visit(dep)
        out.append(n)

    for n in sorted(names, key=lambda n: traitset.traits[n].builtin in _DERIVED):
        visit(n)
    return out


def _siblings(traitset: TraitSet, names: list[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        if traitset.traits[n].builtin == "adherence":
            out |= {f"{n}_mpr", f"{n}_adherent", f"{n}_run_out"}
    return out


def _aggregate(store: WorkspaceStore, d: TraitDef, end: datetime) -> list[dict[str, Any]]:
    assert d.source is not None and d.aggregate is not None
    col = "e.key" if d.aggregate == "count" else f"e.{d.of}"
    fn = {"count": "count({})", "count_distinct": "count(DISTINCT {})"}.get(d.aggregate, d.aggregate + "({})")
    person = "l.person_id"
    join = "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key"
    if d.source == "event":  # live events carry their person; file events go through their record
        person = "coalesce(e.person_id, l.person_id)"
        join = "LEFT JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key"
    params: dict[str, Any] = {"end": end}
    conds = []
    if d.time:
        conds.append(f"e.{d.time} <= :end")
        if d.window_days:
            conds.append(f"e.{d.time} > :start")
            params["start"] = end - timedelta(days=d.window_days)
    for i, (k, v) in enumerate(sorted(d.where.items())):
        if isinstance(v, list):
            conds.append(f"e.{k} = ANY(:w{i})")
            params[f"w{i}"] = [str(x) for x in v]
        else:
            conds.append(f"e.{k} = :w{i}")
            params[f"w{i}"] = v if isinstance(v, bool | int | float) else str(v)
    where = " AND ".join([f"{person} IS NOT NULL", *conds])
    key = f"coalesce(CAST(e.{d.by} AS TEXT), '')" if d.by else "''"
    sql = f"SELECT {person} AS person_id, {key} AS k, {fn.format(col)} AS v FROM {d.source} e {join} WHERE {where} GROUP BY 1, 2"  # noqa: S608 - names checked by _check, values are parameters
    out = []
    for pid, k, v in store.tuples(sql, params):
        if v is None:
            continue
        row = _row(pid, d.name, k)
        if d.type == "time":
            row["value_time"] = (
                v if isinstance(v, datetime) else datetime.combine(v, dtime.min, tzinfo=end.tzinfo)
            )
        else:
            row["value_num"] = float(v)
        out.append(row)
    return out


def _row(person: str, trait: str, key: str = "") -> dict[str, Any]:
    return {
        "person_id": person,
        "trait": trait,
        "key": key,
        "value_num": None,
        "value_text": None,
        "value_time": None,
    }


def _first_match_values(
    store: WorkspaceStore, d: TraitDef, computed: dict[str, list[dict[str, Any]]], day: date, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """Per person, the value of the first rule that holds (traits of this run — `computed`, by stored
    trait name — else as stored)."""
    needed = set().union(*(traits_used(c) for _, c in d.rules))
    values: dict[str, dict[tuple[str, str], Any]] = defaultdict(dict)
    stored = needed - computed.keys()
    if stored:
        for pid, mine in load_person_traits(store, stored).items():
            values[pid].update(mine)
    for name in needed & computed.keys():
        for r in computed[name]:
            v = (
                r["value_text"]
                if r["value_text"] is not None
                else r["value_time"]
                if r["value_time"] is not None
                else r["value_num"]
            )
            values[r["person_id"]][(r["trait"], r["key"])] = v
    out = []
    for (pid,) in store.tuples("SELECT person_id FROM person"):
        mine = values.get(pid, {})
        chosen = next((value for value, c in d.rules if evaluate(c, mine, day, tz).holds), d.default)
        if chosen is not None:
            row = _row(pid, d.name)
            row["value_text"] = chosen
            out.append(row)
    return out


def _top_key(store: WorkspaceStore, d: TraitDef, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Per person, the key of `d.of` with the largest value (ties: the first key in order)."""
    if rows is None:  # not computed in this run: read the stored values
        rows = [
            {"person_id": p, "key": k, "value_num": v}
            for p, k, v in store.tuples(
                "SELECT person_id, key, value_num FROM trait_value WHERE trait = :t", {"t": d.of}
            )
        ]
    best: dict[str, tuple[float, str]] = {}
    for r in rows:
        v = r["value_num"]
        if v is None or not r["key"]:
            continue
        cur = best.get(r["person_id"])
        if cur is None or v > cur[0] or (v == cur[0] and r["key"] < cur[1]):
            best[r["person_id"]] = (float(v), r["key"])
    out = []
    for pid, (_, key) in sorted(best.items()):
        row = _row(pid, d.name)
        row["value_text"] = key
        out.append(row)
    return out


def _builtin(store: WorkspaceStore, d: TraitDef, day: date, tz: ZoneInfo) -> list[dict[str, Any]]:
    if d.builtin == "sex":
        return [
            {**_row(pid, d.name), "value_text": str(sex)}
            for pid, sex in store.tuples("SELECT person_id, sex FROM person WHERE sex IS NOT NULL")
        ]
    if d.builtin in ("age", "age_band"):
        out = []
        for pid, birth in store.tuples(
            "SELECT person_id, birth_date FROM person WHERE birth_date IS NOT NULL"
        ):
            years = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
            if years < 0:
                continue
            row = _row(pid, d.name)
            if d.builtin == "age":
                row["value_num"] = float(years)
            else:
                row["value_text"] = next((label for limit, label in AGE_BANDS if years < limit), "75+")
            out.append(row)
        return out
    return _adherence(store, d, day, tz)


def _adherence(store: WorkspaceStore, d: TraitDef, day: date, tz: ZoneInfo) -> list[dict[str, Any]]:
    window = d.window_days or 365
    period_start = day - timedelta(days=window - 1)
    since = datetime.combine(period_start - timedelta(days=365), dtime.min, tzinfo=tz)  # supply carried in
    until = datetime.combine(day, dtime.max, tzinfo=tz)
    fills: dict[tuple[str, str], list[Fill]] = {}
    for pid, drug, cls, at, days in store.tuples(
        "SELECT l.person_id, e.drug_code, e.drug_class, e.dispensed_at, e.days_supply FROM dispense e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key "
        "WHERE e.dispensed_at >= :since AND e.dispensed_at <= :until AND e.days_supply > 0",
        {"since": since, "until": until},
    ):
        klass = cls or drug
        fills.setdefault((pid, klass), []).append(Fill(pid, drug, klass, _local_day(at, tz), int(days)))
    out: list[dict[str, Any]] = []
    for (pid, klass), group in sorted(fills.items()):
        a = class_adherence(pid, klass, group, period_start, day)
        if not a.eligible:
            continue
        base = {"person_id": pid, "key": klass, "value_num": None, "value_text": None, "value_time": None}
        out.append({**base, "trait": d.name, "value_num": a.pdc})
        out.append({**base, "trait": f"{d.name}_mpr", "value_num": a.mpr})
        out.append({**base, "trait": f"{d.name}_adherent", "value_num": 1.0 if a.adherent else 0.0})
        if a.run_out_date:
            out.append(
                {
                    **base,
                    "trait": f"{d.name}_run_out",
                    "value_time": datetime.combine(a.run_out_date, dtime.min, tzinfo=tz),
                }
            )
    return out


def _local_day(at: Any, tz: ZoneInfo) -> date:
    if isinstance(at, datetime):
        return (at.astimezone(tz) if at.tzinfo else at).date()
    return at  # type: ignore[no-any-return]


def person_traits(store: WorkspaceStore, person_id: str) -> list[dict[str, Any]]:
    """A person's stored trait values, by trait and key."""
    return store.rows(
        "SELECT trait, key, value_num, value_text, value_time, as_of, computed_at FROM trait_value WHERE person_id = :p "
        "ORDER BY trait, key",
        {"p": person_id},
    )
