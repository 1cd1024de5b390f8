"""Tags: labels over traits ("依从性差", "近90天未就诊", "老年"), declared in YAML and versioned.

Each tag is a rule in the condition language (`careloop.profiles.conditions`). `apply_tags` evaluates
every rule for every person from their stored traits and records, with each tag given, the tag set's
version, the rule as it was, and the trait values that made it hold — so "why does this patient carry
this tag?" is answered from the record, even after the rules change.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.profiles.conditions import Node, Traits, describe, evaluate, parse, traits_used
from careloop.profiles.definitions import read_definitions
from careloop.storage import WorkspaceStore


@dataclass(frozen=True)
class Tag:
    name: str
    label_en: str
    rule: Node

    @property
    def rule_text(self) -> str:
        return describe(self.rule)


@dataclass(frozen=True)
class TagSet:
    version: int
    tags: dict[str, Tag]


def load_tags(path: Path | None = None) -> TagSet:
    """The tags of `path` (default: careloop's shipped tags.yaml), every rule checked."""
    origin, data = read_definitions(path, "tags.yaml", "tag definitions")
    raw = data.get("tags")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{origin}: expected `tags:` mapping tag names to {{en, when}} (see docs/tags.md)")
    if not isinstance(data.get("version"), int):
        raise ConfigError(
            f"{origin}: give the tag set a whole-number `version` (bump it when a rule changes)"
        )
    tags = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "when" not in spec:
            raise ConfigError(f"{origin}: tag {name!r} needs `when:` (its rule)")
        tags[str(name)] = Tag(str(name), str(spec.get("en", "")), parse(spec["when"], f"{origin}: {name}"))
    return TagSet(data["version"], tags)


@dataclass
class ApplySummary:
    version: int
    persons: int
    tagged: int
    per_tag: dict[str, int]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_person_traits(
    store: WorkspaceStore, names: set[str], person: str | None = None
) -> dict[str, Traits]:
    """person -> {(trait, key): value} for these traits (of one person when given)."""
    params: dict[str, Any] = {"t": sorted(names)}
    where = "trait = ANY(:t)"
    if person is not None:
        where += " AND person_id = :p"
        params["p"] = person
    out: dict[str, Traits] = defaultdict(dict)
    for pid, trait, key, num, text, at in store.tuples(
        f"SELECT person_id, trait, key, value_num, value_text, value_time FROM trait_value WHERE {where}",  # noqa: S608 - fixed text
        params,
    ):
        out[pid][(trait, key)] = text if text is not None else at if at is not None else num
    return out


def apply_tags(
    store: WorkspaceStore,
    tagset: TagSet | None = None,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ApplySummary:
    """Tag every person from their stored traits; replaces the previous tags."""
    started = time.perf_counter()
    tagset = tagset or load_tags()
    tz = ZoneInfo(get_settings().timezone)
    day = as_of or clock.now().astimezone(tz).date()
    needed = set().union(*(traits_used(t.rule) for t in tagset.tags.values()))
    traits = load_person_traits(store, needed)
    persons = [r[0] for r in store.tuples("SELECT person_id FROM person")]
    now = clock.now()
    stamp = datetime.combine(day, dtime.max, tzinfo=tz)
    rows: list[dict[str, Any]] = []
    per_tag: dict[str, int] = dict.fromkeys(tagset.tags, 0)
    for pid in persons:
        mine = traits.get(pid, {})
        for tag in tagset.tags.values():
            verdict = evaluate(tag.rule, mine, day, tz)
            if verdict.holds:
                per_tag[tag.name] += 1
                rows.append(
                    {
                        "person_id": pid,
                        "tag": tag.name,
                        "label_en": tag.label_en,
                        "tagset_version": tagset.version,
                        "rule": tag.rule_text,
                        "evidence": orjson.dumps(verdict.as_dict()).decode(),
                        "as_of": stamp,
                        "assigned_at": now,
                    }
                )
    with store.backend.transaction():
        store.execute("DELETE FROM person_tag WHERE person_id IS NOT NULL")
        for start in range(0, len(rows), 200_000):
            store.insert("person_tag", rows[start : start + 200_000])
    return ApplySummary(
        version=tagset.version,
        persons=len(persons),
        tagged=len({r["person_id"] for r in rows}),
        per_tag=per_tag,
        seconds=round(time.perf_counter() - started, 3),
    )


def person_tags(store: WorkspaceStore, person_id: str) -> list[dict[str, Any]]:
    """A person's tags with the rule and the values that put each there."""
    cols = ("tag", "label_en", "tagset_version", "rule", "evidence", "as_of")
    rows = [
        dict(zip(cols, r, strict=True))
        for r in store.tuples(  # tuples, not Arrow: evidence JSON differs in shape from tag to tag
            f"SELECT {', '.join(cols)} FROM person_tag WHERE person_id = :p ORDER BY tag",  # noqa: S608 - fixed names
            {"p": person_id},
        )
    ]
    for r in rows:
        if isinstance(r["evidence"], str):
            r["evidence"] = orjson.loads(r["evidence"])
    return rows
