"""What a console page shows: KPI cards, charts (ECharts options as JSON) and tables, plus the request
context every page is built in (who, which workspace, language, period)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson

from careloop.clock import Clock
from careloop.console.i18n import label_for, translator
from careloop.console.period import Period
from careloop.console.tables import DataTable, Kind
from careloop.privacy.auth import Principal
from careloop.storage import WorkspaceStore

#: Okabe-Ito: distinguishable with every common colour-vision deficiency, readable on white
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D00", "#000000")


@dataclass
class Kpi:
    label: str  # i18n key
    value: float | None
    kind: Kind
    previous: float | None = None
    compare: bool = True  # False: a snapshot, no previous period
    detail: str | None = None  # translated text under the number
    href: str | None = None  # drill-down
    empty: str | None = None  # i18n key of why there is no number
    better: Literal["up", "down"] = "up"

    @property
    def delta(self) -> float | None:
        if self.value is None or self.previous is None or not self.compare:
            return None
        return self.value - self.previous

    @property
    def trend(self) -> str:
        """good / bad / flat, for the colour of the change (with an arrow, never colour alone)."""
        d = self.delta
        if d is None or abs(d) < 1e-12:
            return "flat"
        up = d > 0
        return "good" if up == (self.better == "up") else "bad"


@dataclass
class Chart:
    id: str
    title: str  # i18n key
    option: dict[str, Any]
    height: int = 320
    empty: str | None = None  # i18n key shown instead of the chart when there is nothing to draw

    @property
    def json(self) -> str:
        """The option as JSON safe inside a <script type="application/json"> element."""
        text = orjson.dumps(self.option, default=str).decode()
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass
class Section:
    """A titled group of a page's charts and tables (ids), in order."""

    title: str  # i18n key
    charts: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    note: str | None = None  # i18n key
    detail: str | None = None  # text computed for this request (already translated), under the note


@dataclass
class Page:
    kpis: list[Kpi] = field(default_factory=list)
    charts: dict[str, Chart] = field(default_factory=dict)
    tables: dict[str, DataTable] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, *items: Chart | DataTable) -> None:
        for item in items:
            if isinstance(item, Chart):
                self.charts[item.id] = item
            else:
                self.tables[item.id] = item


@dataclass
class Ctx:
    """One console request: the signed-in principal, its store, language, time zone and period."""

    principal: Principal
    store: WorkspaceStore
    lang: str
    tz: ZoneInfo
    clock: Clock
    data_date: date
    period: Period
    args: Mapping[str, str]
    t: Callable[[str], str] = field(init=False)

    def __post_init__(self) -> None:
        self.t = translator(self.lang)

    def label(self, group: str, value: Any) -> str:
        return label_for(self.lang, group, value)

    def url(self, path: str, **params: Any) -> str:
        """`path` with the period (unless overridden) and `params`; None values are left out."""
        query: dict[str, Any] = {**self.period.query(), **params}
        clean = {k: v for k, v in query.items() if v is not None}
        return f"{path}?{urlencode(clean)}" if clean else path


def fmt(value: Any, kind: str, lang: str, tz: ZoneInfo | None = None) -> str:
    """A value as the console shows it ('—' for nothing)."""
    if value is None or value == "":
        return "—"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "num":
        return f"{float(value):,.2f}"
    if kind == "pct":
        return f"{float(value) * 100:.1f}%"
    if kind == "pp":
        unit = " 个百分点" if lang == "zh" else " pp"
        return f"{float(value) * 100:+.1f}{unit}"
    if kind == "money":
        return f"¥{float(value):,.0f}"
    if kind == "datetime" and isinstance(value, datetime):
        return (value.astimezone(tz) if tz else value).strftime("%Y-%m-%d %H:%M")
    if kind in ("date", "datetime") and isinstance(value, datetime):
        return (value.astimezone(tz) if tz else value).strftime("%Y-%m-%d")
    if kind in ("date", "datetime") and isinstance(value, date):
        return value.isoformat()
    if kind == "json" or isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode()
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("yes" if value else "no")
    if isinstance(value, float | Decimal):
        return f"{float(value):,.2f}"
    return str(value)


def fmt_delta(k: Kpi, lang: str) -> str:
    d = k.delta
    if d is None:
        return ""
    if k.kind == "pct":
        return fmt(d, "pp", lang)
    if k.kind == "money":
        return ("+" if d >= 0 else "−") + fmt(abs(d), "money", lang)
    if k.kind == "int":
        return f"{int(d):+,}"
    return f"{d:+,.2f}"
