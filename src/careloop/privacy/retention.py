"""Retention: rules per table in YAML (`retention.yaml`), a dry-run plan and a batched purge.

A rule says which time column of a table counts and how long after it rows are kept. `plan` counts, per
rule, the rows older than the cut-off (now - keep) without changing anything; `purge` deletes exactly
those rows, one time window per transaction (so a long purge holds no long lock), and appends a
``retention.purge`` entry to the audit chain. The clock is injectable: `plan(store, clock=...)`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError
from careloop.storage.schema import LogicalType, table
from careloop.storage.workspace import WorkspaceStore

_KEEP = re.compile(r"^\s*(\d+)\s*([dy])\s*$")
#: rows deleted per transaction are those of one window of this length
WINDOW = timedelta(days=31)


@dataclass(frozen=True)
class Rule:
    table: str
    column: str
    keep: str
    basis: str = ""

    @property
    def period(self) -> timedelta:
        m = _KEEP.match(self.keep)
        assert m is not None
        n, unit = int(m.group(1)), m.group(2)
        return timedelta(days=n * (365 if unit == "y" else 1))


def load_rules(path: Path | None = None) -> list[Rule]:
    """The rules of `path`, else of CARELOOP_RETENTION_FILE, else careloop's; checked against the schema."""
    if path is None:
        from careloop.config import get_settings

        path = get_settings().retention_file
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files("careloop.privacy").joinpath("retention.yaml").read_text(encoding="utf-8")
    )
    where = str(path) if path else "careloop's retention.yaml"
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from e
    rules = []
    seen = set()
    for i, r in enumerate(doc.get("rules") or []):
        if not isinstance(r, dict) or not {"table", "column", "keep"} <= r.keys():
            raise ConfigError(f"{where}: rule {i + 1} needs table, column and keep")
        rule = Rule(str(r["table"]), str(r["column"]), str(r["keep"]), str(r.get("basis", "")))
        try:
            col = table(rule.table).column(rule.column)
        except KeyError as e:
            raise ConfigError(f"{where}: rule {i + 1}: {e.args[0]}") from None
        if col.type not in (LogicalType.TIMESTAMPTZ, LogicalType.DATE):
            raise ConfigError(f"{where}: rule {i + 1}: {rule.table}.{rule.column} is not a date or time")
        if not _KEEP.match(rule.keep):
            raise ConfigError(f"{where}: rule {i + 1}: keep {rule.keep!r} must look like 3y or 90d")
        if rule.table in seen:
            raise ConfigError(f"{where}: two rules for table {rule.table}")
        seen.add(rule.table)
        rules.append(rule)
    return rules


@dataclass
class PlanLine:
    table: str
    column: str
    keep: str
    basis: str
    data_class: str
    level: int
    cutoff: datetime
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _data_grade(name: str) -> tuple[str, int]:
    """The table's most sensitive column: its class and level (DSL Art 21)."""
    cols = table(name).columns
    top = max(cols, key=lambda c: c.level)
    return top.data_class, top.level


def _cutoff(rule: Rule, now: datetime) -> datetime:
    return now - rule.period


def plan(
    store: WorkspaceStore, *, rules: list[Rule] | None = None, clock: Clock = SYSTEM_CLOCK
) -> list[PlanLine]:
    """Per rule, the rows a purge now would delete (nothing is changed)."""
    now = clock.now()
    out = []
    for rule in rules if rules is not None else load_rules():
        if not store.backend.existing_columns(rule.table):
            continue
        cut = _cutoff(rule, now)
        n = int(store.scalar(f"SELECT count(*) FROM {rule.table} WHERE {rule.column} < :cut", {"cut": cut}))  # noqa: S608 - names from the checked rules
        cls, level = _data_grade(rule.table)
        out.append(PlanLine(rule.table, rule.column, rule.keep, rule.basis, cls, level, cut, n))
    return out


def purge(
    store: WorkspaceStore,
    *,
    rules: list[Rule] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    actor: str = "system",
) -> list[PlanLine]:
    """Delete what `plan` counts, in time windows of `WINDOW`, one transaction each; returns the counts."""
    lines = plan(store, rules=rules, clock=clock)
    for line in lines:
        if not line.rows:
            continue
        t, c = line.table, line.column
        oldest = store.scalar(f"SELECT min({c}) FROM {t} WHERE {c} < :cut", {"cut": line.cutoff})  # noqa: S608
        if isinstance(oldest, datetime) or oldest is None:
            start = oldest
        else:  # a DATE column: the engine compares it as midnight in its session time zone, so start a
            # day early (every zone's midnight of that day is later) or the oldest day would be missed
            start = datetime(oldest.year, oldest.month, oldest.day, tzinfo=line.cutoff.tzinfo) - timedelta(
                days=1
            )
        deleted = 0
        while start is not None and start < line.cutoff:
            end = min(start + WINDOW, line.cutoff)
            with store.backend.transaction():
                params = {"a": start, "b": end}
                deleted += int(store.scalar(f"SELECT count(*) FROM {t} WHERE {c} >= :a AND {c} < :b", params))  # noqa: S608
                store.execute(f"DELETE FROM {t} WHERE {c} >= :a AND {c} < :b", params)  # noqa: S608
            start = end
        line.rows = deleted
    from careloop.privacy.audit import audit_event

    audit_event(
        store,
        actor=actor,
        action="retention.purge",
        target_kind="workspace",
        target_id=store.workspace,
        purpose="retention",
        detail={"rows": {ln.table: ln.rows for ln in lines}, "at": clock.now().isoformat()},
    )
    return lines
