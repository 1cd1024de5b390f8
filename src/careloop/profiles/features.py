"""The per-person feature matrix that personas and lookalikes work on, built from stored traits.

Which traits, and how each becomes columns, is declared in YAML (`personas.yaml`, docs/personas.md):

* numbers — a trait's unkeyed value, or the sum / min / max / mean over a keyed trait's keys (PDC per
  drug class -> the lowest PDC), or the days from a time trait to its as-of day (days since the last visit);
* categories — one 0/1 column per value (5A stage, decision type, preferred channel), plus one for "no
  value" when some persons have none.

Missing numbers are imputed by a stated rule: **zero** for counts and sums (no visit recorded is no visit),
**cap** for days-since (never = `cap_days`), **median** otherwise, with a 0/1 "has a value" column so the
imputation cannot hide that the value was missing. Counts and money are heavy-tailed, so they go through
log1p. Every number column is then standardised (z-score over all persons, clipped to ±5 SD); 0/1
columns stay 0/1, so a category or a "has" column weighs about as much as one standardised number
(two persons in different categories are √2 apart, as two random persons are on one z-scored number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, NotFoundError
from careloop.profiles.definitions import read_definitions
from careloop.storage import WorkspaceStore

HOWS = ("value", "sum", "min", "max", "mean", "days_since", "category")
MISSING = ("zero", "median", "cap")
FORMATS = ("number", "int", "age", "percent", "yuan", "days")
Z_CLIP = 5.0
SAME = "every person has the same value"
_AGG_SQL = {"sum": "sum", "min": "min", "max": "max", "mean": "avg"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Feature:
    """One declared feature: a trait, how it becomes columns, and its wording in descriptions."""

    name: str
    trait: str
    how: str = "value"
    missing: str = "median"
    log: bool = False
    label_zh: str = ""
    label_en: str = ""
    has_zh: str = ""
    has_en: str = ""
    format: str = "number"
    #: category values as people read them: (value, 中文, English)
    levels: tuple[tuple[str, str, str], ...] = ()

    def level_label(self, value: str, lang: str) -> str:
        """A category value in `lang` (zh | en): its declared label, else the value itself."""
        for v, zh, en in self.levels:
            if v == value:
                return zh if lang == "zh" else en
        return value


@dataclass(frozen=True)
class FeatureConfig:
    """Features plus the clustering settings that travel with them (personas.yaml)."""

    version: int
    features: tuple[Feature, ...]
    k_min: int = 2
    k_max: int = 8
    sample: int = 5000
    tie: float = 0.01
    seed: int = 0
    cap_days: int = 730

    def settings(self) -> dict[str, Any]:
        return {
            "features_version": self.version,
            "k_min": self.k_min,
            "k_max": self.k_max,
            "sample": self.sample,
            "tie": self.tie,
            "seed": self.seed,
            "cap_days": self.cap_days,
        }


def split_label(text: str) -> tuple[str, str]:
    """("中文", "English") of a "中文 / English" description, each cut before its first explanation."""
    text = " ".join(text.split())
    zh, sep, en = text.partition("/")
    if not sep:
        return text, text
    zh = re.split(r"[（(]", zh)[0].strip()
    en = re.split(r"\s*[(:;]", en.strip())[0].strip()
    return zh or en, en or zh


def load_feature_config(path: Path | None = None, traits_path: Path | None = None) -> FeatureConfig:
    """The features of `path` (default: careloop's personas.yaml), checked against the trait definitions
    of `traits_path` (default: careloop's traits.yaml)."""
    from careloop.profiles.traits import load_traits

    origin, data = read_definitions(path, "personas.yaml", "persona features")
    defs = load_traits(traits_path).traits
    raw = data.get("features")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{origin}: expected `features:` mapping names to {{trait, how}} (see docs/personas.md)"
        )
    features = []
    for name, spec in raw.items():
        where = f"{origin}: feature {name!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("trait"), str):
            raise ConfigError(f"{where}: needs `trait:` naming a stored trait")
        if not _NAME.match(str(name)):
            raise ConfigError(f"{where}: names are letters, digits and '_' and start with a letter")
        features.append(_feature(str(name), spec, defs, where))
    ints = {k: data.get(k, d) for k, d in (("k_min", 2), ("k_max", 8), ("sample", 5000), ("seed", 0))}
    ints["cap_days"] = data.get("cap_days", 730)
    for k, v in ints.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{origin}: `{k}` is a whole number >= 0")
    if ints["k_min"] < 2 or ints["k_max"] < ints["k_min"]:
        raise ConfigError(f"{origin}: need 2 <= k_min <= k_max (got {ints['k_min']}, {ints['k_max']})")
    if ints["sample"] < 100 or ints["cap_days"] < 1:
        raise ConfigError(f"{origin}: `sample` is at least 100 and `cap_days` at least 1")
    tie = data.get("tie", 0.01)
    if not isinstance(tie, int | float) or isinstance(tie, bool) or not 0 <= tie < 1:
        raise ConfigError(f"{origin}: `tie` is a number in [0, 1)")
    return FeatureConfig(int(data.get("version", 1)), tuple(features), tie=float(tie), **ints)


def _feature(name: str, spec: dict[str, Any], defs: dict[str, Any], where: str) -> Feature:
    extra = set(spec) - {"trait", "how", "missing", "log", "label", "has_label", "format", "levels"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    trait = spec["trait"]
    d = defs.get(trait)
    if d is None:
        raise ConfigError(
            f"{where}: {trait!r} is not a trait of the trait definitions (`careloop traits list`)"
        )
    how = spec.get("how", "value")
    if how not in HOWS:
        raise ConfigError(f"{where}: `how` is one of {', '.join(HOWS)}")
    keyed = d.by is not None or d.builtin == "adherence"
    if keyed and how in ("value", "category"):
        raise ConfigError(f"{where}: {trait} has one value per key; use how: sum | min | max | mean")
    if how == "days_since" and d.type != "time":
        raise ConfigError(f"{where}: days_since needs a time trait (like last_visit_at)")
    if how == "category" and d.type != "text":
        raise ConfigError(f"{where}: category needs a text trait (like stage_5a)")
    if how not in ("days_since", "category") and d.type != "number":
        raise ConfigError(f"{where}: {trait} is a {d.type} trait; use how: days_since or category")
    default_missing = (
        "cap"
        if how == "days_since"
        else "zero"
        if how == "sum" or d.aggregate in ("count", "count_distinct", "sum")
        else "median"
    )
    missing = spec.get("missing", default_missing)
    if missing not in MISSING or (missing == "cap") != (how == "days_since"):
        raise ConfigError(f"{where}: `missing` is zero or median (cap: only and always for days_since)")
    log = spec.get("log", missing == "zero")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: `log` is true or false")
    fmt = spec.get("format", "days" if how == "days_since" else "number")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: `format` is one of {', '.join(FORMATS)}")
    label = spec.get("label") or d.description or trait
    zh, en = split_label(str(label))
    has_zh, has_en = (
        split_label(str(spec["has_label"])) if spec.get("has_label") else (f"有{zh}记录", f"a recorded {en}")
    )
    levels = spec.get("levels") or {}
    if not isinstance(levels, dict) or (levels and how != "category"):
        raise ConfigError(f'{where}: `levels` maps a category\'s values to "中文 / English" labels')
    named = tuple((str(v), *_level_label(str(v), str(t))) for v, t in levels.items())
    return Feature(name, trait, how, missing, log, zh, en, has_zh, has_en, fmt, named)


def _level_label(value: str, text: str) -> tuple[str, str]:
    """(中文, English) of a category value's "中文 / English" label."""
    zh, sep, en = text.partition("/")
    if not sep:
        return text.strip() or value, text.strip() or value
    return zh.strip() or value, en.strip() or value


@dataclass(frozen=True)
class Column:
    """One column of the matrix: a number, a feature's "has a value" flag, or one value of a category."""

    name: str
    feature: str
    kind: str  # number | has | level
    level: str | None = None  # the category value ('' = no value)

    @property
    def binary(self) -> bool:
        return self.kind != "number"


@dataclass
class FeatureMatrix:
    """Standardised columns per person (rows in person-id order) and what describing them needs."""

    persons: list[str]
    columns: list[Column]
    x: np.ndarray  # (persons, columns), float64
    features: dict[str, Feature]
    #: per number column: the values as stored (NaN when missing; zero-imputed features hold their zeros)
    display: dict[str, np.ndarray]
    #: per category feature: each person's value ('' = none)
    categories: dict[str, np.ndarray]
    transform: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    as_of: datetime | None = None

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.persons)}


def build_features(
    store: WorkspaceStore, config: FeatureConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> FeatureMatrix:
    """The feature matrix of every person from their stored traits (see the module docstring)."""
    config = config or load_feature_config()
    if not store.scalar("SELECT count(*) FROM trait_value"):
        raise NotFoundError("no traits computed; run `careloop traits compute` first")
    persons = [r[0] for r in store.tuples("SELECT person_id FROM person ORDER BY person_id")]
    if not persons:
        raise NotFoundError("no persons; ingest sources and run `careloop identity resolve` first")
    index = {p: i for i, p in enumerate(persons)}
    n = len(persons)
    as_of = store.scalar("SELECT max(as_of) FROM trait_value")
    now = as_of if isinstance(as_of, datetime) else clock.now()
    blocks: list[np.ndarray] = []
    columns: list[Column] = []
    display: dict[str, np.ndarray] = {}
    categories: dict[str, np.ndarray] = {}
    transform: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for f in config.features:
        if f.how == "category":
            values = np.full(n, "", dtype=object)
            rows = store.tuples(
                "SELECT person_id, value_text FROM trait_value WHERE trait = :t AND key = ''", {"t": f.trait}
            )
            for pid, v in rows:
                i = index.get(pid)
                if i is not None and v is not None:
                    values[i] = str(v)
            levels = sorted(set(values.tolist()), key=lambda v: (v == "", v))
            if not rows:
                skipped.append({"feature": f.name, "reason": _not_computed(f.trait)})
                continue
            if len(levels) < 2:
                skipped.append({"feature": f.name, "reason": SAME})
                continue
            categories[f.name] = values
            for level in levels:
                col = Column(f"{f.name}={level}" if level else f"{f.name}=(none)", f.name, "level", level)
                columns.append(col)
                blocks.append((values == level).astype(np.float64))
                transform.append({"column": col.name, "feature": f.name, "trait": f.trait, "kind": "level"})
            continue
        raw, seen = _numbers(store, f, index, now)
        if not seen:
            skipped.append({"feature": f.name, "reason": _not_computed(f.trait)})
            continue
        observed = ~np.isnan(raw)
        fill: float
        if f.missing == "zero":
            fill = 0.0
        elif f.missing == "cap":
            fill = float(config.cap_days)
            raw = np.where(observed, np.minimum(raw, fill), raw)
        else:
            fill = float(np.median(raw[observed]))
        values = np.where(observed, raw, fill)
        shown = values if f.missing == "zero" else raw
        if f.log:
            values = np.sign(values) * np.log1p(np.abs(values))
        # median imputation: scaled by the recorded values only, so a mostly-missing trait is not
        # squeezed towards its median (its missingness is the "has" column's job)
        basis = values[observed] if f.missing == "median" else values
        mean, std = float(basis.mean()), float(basis.std())
        has = f.missing == "median" and 0 < int(observed.sum()) < n
        if std < 1e-12 and not has:
            skipped.append({"feature": f.name, "reason": SAME})
            continue
        if std >= 1e-12:
            col = Column(f.name, f.name, "number")
            columns.append(col)
            blocks.append(np.clip((values - mean) / std, -Z_CLIP, Z_CLIP))
            display[col.name] = shown
            transform.append(
                {
                    "column": col.name,
                    "feature": f.name,
                    "trait": f.trait,
                    "kind": "number",
                    "how": f.how,
                    "missing": f.missing,
                    "fill": fill,
                    "log1p": f.log,
                    "mean": mean,
                    "std": std,
                }
            )
        if has:
            col = Column(f"has:{f.name}", f.name, "has")
            columns.append(col)
            blocks.append(observed.astype(np.float64))
            transform.append({"column": col.name, "feature": f.name, "trait": f.trait, "kind": "has"})
    if not columns:
        same = [x["feature"] for x in skipped if x["reason"] == SAME]
        if not same:
            raise NotFoundError(
                "none of the persona features' traits has stored values; run `careloop traits compute` first"
            )
        raise ConfigError(
            f"no persona feature varies between the {n:,} person(s) ({', '.join(same)}: the same for "
            "everyone); personas need at least 3 persons with different traits"
        )
    return FeatureMatrix(
        persons=persons,
        columns=columns,
        x=np.column_stack(blocks),
        features={f.name: f for f in config.features},
        display=display,
        categories=categories,
        transform=transform,
        skipped=skipped,
        as_of=as_of if isinstance(as_of, datetime) else None,
    )


def _not_computed(trait: str) -> str:
    return f"no stored values of trait {trait}; run `careloop traits compute --trait {trait}`"


def _numbers(
    store: WorkspaceStore, f: Feature, index: dict[str, int], now: datetime
) -> tuple[np.ndarray, bool]:
    """Each person's number for the feature (NaN: none), and whether the trait has any stored value."""
    raw = np.full(len(index), np.nan)
    if f.how == "days_since":
        rows = store.tuples(
            "SELECT person_id, max(value_time), max(as_of) FROM trait_value WHERE trait = :t GROUP BY person_id",
            {"t": f.trait},
        )
        for pid, at, as_of in rows:
            i = index.get(pid)
            if i is not None and at is not None:
                ref = as_of if isinstance(as_of, datetime) else now
                raw[i] = max(0.0, (ref - at).total_seconds() / 86400)
        return raw, bool(rows)
    if f.how == "value":
        sql = "SELECT person_id, value_num FROM trait_value WHERE trait = :t AND key = ''"
    else:  # the aggregate name comes from a fixed map, never from the definition's text
        sql = f"SELECT person_id, {_AGG_SQL[f.how]}(value_num) FROM trait_value WHERE trait = :t GROUP BY person_id"  # noqa: S608
    rows = store.tuples(sql, {"t": f.trait})
    for pid, v in rows:
        i = index.get(pid)
        if i is not None and v is not None:
            raw[i] = float(v)
    return raw, bool(rows)


def format_value(v: float, fmt: str, lang: str) -> str:
    """A number as descriptions print it (`format` of the feature; lang zh | en)."""
    if fmt == "percent":
        return f"{v * 100:.0f}%"
    if fmt == "yuan":
        return f"{v:,.0f}元" if lang == "zh" else f"¥{v:,.0f}"
    if fmt == "days":
        return f"{v:,.0f}天" if lang == "zh" else f"{v:,.0f} day{'' if round(v) == 1 else 's'}"
    if fmt == "age":
        return f"{v:.0f}岁" if lang == "zh" else f"{v:.0f}"
    if fmt == "int" or abs(v) >= 100:
        return f"{v:,.0f}"
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text
