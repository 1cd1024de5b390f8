"""Each console view's page: its numbers (from the view modules and careloop's libraries) turned into
KPI cards, ECharts options and tables, in the request's language. Exports call the same builders, so a
downloaded table is exactly the one on the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from careloop.console import assessment as assess
from careloop.console import executive as ex
from careloop.console import journey_analysis as ja
from careloop.console import marketing as mk
from careloop.console.journey_graph import graph_option, layout
from careloop.console.model import PALETTE, Chart, Ctx, Kpi, Page
from careloop.console.tables import Col, DataTable, columns_of
from careloop.errors import NotFoundError
from careloop.ingest.quarantine import QuarantineView
from careloop.journeys.engine import get_journey
from careloop.journeys.stats import journey_stats
from careloop.patients import PatientView
from careloop.patients.viewer import Visibility
from careloop.profiles.segments import get_segment, list_segments
from careloop.profiles.tags import person_tags
from careloop.profiles.traits import person_traits
from careloop.storage.queries import entity_counts, ingest_runs

ADHERENT_0 = {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _bar(
    categories: list[str], series: list[dict[str, Any]], *, pct: bool = False, horizontal: bool = False
) -> dict[str, Any]:
    value_axis: dict[str, Any] = {"type": "value"}
    if pct:
        value_axis["axisLabel"] = {"formatter": "{value}%"}
    cat_axis = {"type": "category", "data": categories, "axisLabel": {"interval": 0, "hideOverlap": True}}
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0},
        "grid": {"left": 8, "right": 16, "top": 36, "bottom": 8, "containLabel": True},
        "xAxis": value_axis if horizontal else cat_axis,
        "yAxis": cat_axis if horizontal else value_axis,
        "series": [{"type": "bar", **s} for s in series],
    }


def _pct(v: float | None) -> float | None:
    return round(v * 100, 2) if v is not None else None


# ---- executive dashboard -------------------------------------------------------------------------
def executive(ctx: Ctx) -> Page:
    p, t = ctx.period, ctx.t
    pat = ex.patients(ctx.store, p)
    rev = ex.revenue(ctx.store, p)
    fu = ex.follow_up(ctx.store, p)
    adh = ex.adherence(ctx.store)
    cli = ex.clinical(ctx.store, p)
    sat = ex.satisfaction(ctx.store, p)
    roi = ex.campaign_roi(ctx.store, p)
    trend = ex.monthly(ctx.store, p, pat)
    page = Page(extra={"patients": pat, "revenue": rev, "follow_up": fu, "adherence": adh, "clinical": cli})
    page.extra |= {"satisfaction": sat, "roi": roi}
    ja_url = ctx.url("/console/journey-analysis")
    builder = "/console/segments/new?definition=" + quote(orjson.dumps(ADHERENT_0).decode())
    page.kpis = [
        Kpi("kpi.persons", pat["persons"], "int", compare=False, href=ctx.url("/console/segments")),
        Kpi("kpi.active", pat["active"], "int", pat["active_prev"], href=ja_url),
        Kpi("kpi.new", pat["new"], "int", pat["new_prev"], href=ja_url),
        Kpi("kpi.lapsing", pat["lapsing"], "int", pat["lapsing_prev"], better="down", href=ja_url),
        Kpi(
            "kpi.revenue",
            rev["total"] if rev["records"] else None,
            "money",
            rev["total_prev"],
            empty="empty.no_revenue",
            detail=t("kpi.revenue_detail"),
        ),
        Kpi(
            "kpi.follow_up_tasks",
            _share(fu["tasks_done"], fu["tasks"]),
            "pct",
            _share(fu["tasks_done_prev"], fu["tasks_prev"]),
            detail=f"{fu['tasks_done']:,} / {fu['tasks']:,}",
            empty="empty.no_tasks",
            href=ctx.url("/console/journeys"),
        ),
        Kpi(
            "kpi.discharge_follow_up",
            _share(fu["discharges_followed"], fu["discharges"]),
            "pct",
            _share(fu["discharges_followed_prev"], fu["discharges_prev"]),
            detail=f"{fu['discharges_followed']:,} / {fu['discharges']:,}",
            empty="empty.no_discharges",
        ),
        Kpi(
            "kpi.adherence",
            _share(adh["adherent"], adh["pairs"]),
            "pct",
            compare=False,
            detail=t("kpi.adherence_detail").format(
                adherent=f"{adh['adherent']:,}", pairs=f"{adh['pairs']:,}", persons=f"{adh['persons']:,}"
            ),
            empty="empty.no_pdc",
            href=builder,
        ),
        Kpi(
            "kpi.bp",
            _share(cli["bp_controlled"], cli["bp_measured"]),
            "pct",
            _share(cli["bp_controlled_prev"], cli["bp_measured_prev"]),
            detail=f"{cli['bp_controlled']:,} / {cli['bp_measured']:,}",
            empty="empty.no_bp",
        ),
        Kpi(
            "kpi.glucose",
            _share(cli["glucose_controlled"], cli["glucose_measured"]),
            "pct",
            _share(cli["glucose_controlled_prev"], cli["glucose_measured_prev"]),
            detail=f"{cli['glucose_controlled']:,} / {cli['glucose_measured']:,}",
            empty="empty.no_glucose",
        ),
        Kpi(
            "kpi.satisfaction",
            sat["mean_share"],
            "pct",
            sat["mean_share_prev"],
            detail=t("kpi.satisfaction_detail").format(
                n=f"{sat['responses']:,}", satisfied=f"{sat['satisfied']:,}"
            ),
            empty="empty.no_feedback",
        ),
        Kpi(
            "kpi.nps",
            sat["nps"],
            "num",
            sat["nps_prev"],
            detail=t("kpi.nps_detail").format(n=f"{sat['nps_responses']:,}"),
            empty="empty.no_nps",
        ),
        Kpi(
            "kpi.roi",
            roi["roi"],
            "pct",
            roi["roi_prev"],
            detail=t("kpi.roi_detail").format(valued=roi["valued"], campaigns=roi["campaigns"]),
            empty="empty.no_roi",
            href=ctx.url("/console/marketing"),
        ),
    ]
    months = [r["month"] for r in trend]
    page.add(
        Chart(
            "trend",
            "chart.trend",
            {
                "tooltip": {"trigger": "axis"},
                "legend": {"top": 0},
                "grid": {"left": 8, "right": 8, "top": 36, "bottom": 8, "containLabel": True},
                "xAxis": {"type": "category", "data": months},
                "yAxis": [
                    {"type": "value", "name": t("col.active")},
                    {"type": "value", "name": t("col.revenue")},
                ],
                "series": [
                    {
                        "type": "line",
                        "name": t("col.active"),
                        "data": [r["active"] for r in trend],
                        "symbolSize": 6,
                    },
                    {
                        "type": "bar",
                        "name": t("col.revenue"),
                        "yAxisIndex": 1,
                        "data": [round(r["revenue"], 2) for r in trend],
                        "itemStyle": {"opacity": 0.6},
                    },
                ],
            },
            empty=None if any(r["active"] or r["revenue"] for r in trend) else "empty.no_activity",
        ),
        Chart(
            "adherence",
            "chart.adherence",
            _bar(
                [r["drug_class"] for r in adh["by_class"][:15]],
                [{"name": t("col.share_adherent"), "data": [_pct(r["share"]) for r in adh["by_class"][:15]]}],
                pct=True,
            ),
            empty=None if adh["by_class"] else "empty.no_pdc",
        ),
        DataTable(
            "monthly",
            "table.monthly",
            [
                Col("month", "col.month"),
                Col("active", "col.active", "int"),
                Col("revenue", "col.revenue", "money"),
            ],
            trend if any(r["active"] or r["revenue"] for r in trend) else [],
            empty="empty.no_activity",
        ),
        DataTable(
            "revenue",
            "table.revenue",
            [
                Col("kind", "col.kind", translate="revenue"),
                Col("current", "col.current", "money"),
                Col("previous", "col.previous", "money"),
            ],
            rev["by_kind"],
            empty="empty.no_revenue",
        ),
        DataTable(
            "adherence_by_class",
            "table.adherence",
            [
                Col("drug_class", "col.drug_class"),
                Col("measured", "col.measured", "int"),
                Col("adherent", "col.adherent", "int"),
                Col("share", "col.share_adherent", "pct"),
            ],
            adh["by_class"],
            empty="empty.no_pdc",
            note="note.adherence",
        ),
    )
    return page


# ---- marketing performance -----------------------------------------------------------------------
def marketing(ctx: Ctx) -> Page:
    p, t = ctx.period, ctx.t
    channels = mk.journey_sends_by_channel(ctx.store, p.lo, p.hi)
    blocks = mk.journey_blocks(ctx.store, p.lo, p.hi)
    journeys = mk.journeys(ctx.store)
    camps = mk.campaigns(ctx.store, p.lo, p.hi)
    crm = mk.crm_channels(ctx.store, p.lo, p.hi)
    crm_blocks = mk.crm_blocks(ctx.store, p.lo, p.hi)
    page = Page(extra={"journeys": journeys, "campaigns": camps, "channels": channels, "crm": crm})
    sent = sum(r["sent"] for r in channels)
    valued = [c for c in camps if c["value_treated"] is not None and c["cost"]]
    cost_v = sum(c["cost"] for c in valued)
    # blended CAC: all the period's campaign cost over all the new patients they brought
    acquired, cost_a = sum(c["acquired"] for c in camps), sum(c["cost"] or 0.0 for c in camps)
    page.kpis = [
        Kpi("kpi.journey_sends", sent, "int", compare=False, empty="empty.no_sends"),
        Kpi("kpi.journey_blocked", sum(r["blocked"] for r in channels), "int", compare=False, better="down"),
        Kpi("kpi.campaigns", len(camps), "int", compare=False),
        Kpi("kpi.campaign_messages", sum(c["treated"] for c in camps), "int", compare=False),
        Kpi("kpi.conversions", sum(c["converted"] for c in camps), "int", compare=False),
        Kpi(
            "kpi.incremental",
            sum(c["incremental"] for c in camps if c["incremental"] is not None) if camps else None,
            "num",
            compare=False,
            detail=t("kpi.incremental_detail"),
            empty="empty.no_campaigns",
        ),
        Kpi(
            "kpi.cost",
            sum(c["cost"] or 0.0 for c in camps) if camps else None,
            "money",
            compare=False,
            empty="empty.no_campaigns",
        ),
        Kpi(
            "kpi.cac",
            cost_a / acquired if acquired else None,
            "money",
            compare=False,
            detail=t("kpi.cac_detail").format(acquired=f"{acquired:,}"),
            empty="empty.no_acquisition",
        ),
        Kpi(
            "kpi.roi",
            (sum(c["value_treated"] for c in valued) - cost_v) / cost_v if cost_v else None,
            "pct",
            compare=False,
            detail=t("kpi.roi_detail").format(valued=len(valued), campaigns=len(camps)),
            empty="empty.no_roi",
        ),
    ]
    channel_cols = [Col("channel", "col.channel", translate="channel")]
    page.add(
        Chart(
            "journey_channels",
            "chart.journey_channels",
            _bar(
                [ctx.label("channel", r["channel"]) for r in channels],
                [
                    {"name": t("col.sent"), "stack": "s", "data": [r["sent"] for r in channels]},
                    {"name": t("col.blocked"), "stack": "s", "data": [r["blocked"] for r in channels]},
                    {"name": t("col.failed"), "stack": "s", "data": [r["failed"] for r in channels]},
                    {"name": t("col.pending"), "stack": "s", "data": [r["pending"] for r in channels]},
                ],
            ),
            empty=None if channels else "empty.no_sends",
        ),
        Chart(
            "journey_blocks",
            "chart.journey_blocks",
            _bar(
                [ctx.label("reason", r["reason"]) for r in blocks],
                [{"name": t("col.count"), "data": [r["count"] for r in blocks]}],
                horizontal=True,
            ),
            empty=None if blocks else "empty.no_blocks",
        ),
        Chart(
            "campaign_rates",
            "chart.campaign_rates",
            _bar(
                [c["campaign"] for c in camps],
                [
                    {"name": t("col.treated_rate"), "data": [_pct(c["treated_rate"]) for c in camps]},
                    {"name": t("col.holdout_rate"), "data": [_pct(c["holdout_rate"]) for c in camps]},
                ],
                pct=True,
            ),
            empty=None if camps else "empty.no_campaigns",
        ),
        DataTable(
            "journey_channels",
            "table.journey_channels",
            [
                *channel_cols,
                Col("intents", "col.intents", "int"),
                Col("sent", "col.sent", "int"),
                Col("blocked", "col.blocked", "int"),
                Col("failed", "col.failed", "int"),
                Col("pending", "col.pending", "int"),
                Col("delivered", "col.delivered", "int"),
                Col("opened", "col.opened", "int"),
                Col("clicked", "col.clicked", "int"),
                Col("delivery_rate", "col.delivery_rate", "pct"),
                Col("click_rate", "col.click_rate", "pct"),
            ],
            channels,
            empty="empty.no_sends",
        ),
        DataTable(
            "journey_blocks",
            "table.journey_blocks",
            [Col("reason", "col.reason", translate="reason"), Col("count", "col.count", "int")],
            blocks,
            empty="empty.no_blocks",
        ),
        DataTable(
            "journeys",
            "table.journey_results",
            [
                Col("journey", "col.journey"),
                Col("status", "col.status", translate="status"),
                Col("goal", "col.goal"),
                Col("entries", "col.entries", "int"),
                Col("sent", "col.sent", "int"),
                Col("blocked", "col.blocked", "int"),
                Col("delivered", "col.delivered", "int"),
                Col("clicked", "col.clicked", "int"),
                Col("treated", "col.treated", "int"),
                Col("treated_converted", "col.treated_converted", "int"),
                Col("holdout", "col.holdout", "int"),
                Col("holdout_converted", "col.holdout_converted", "int"),
                Col("uplift", "col.uplift", "pp"),
                Col("ci_low", "col.ci_low", "pp"),
                Col("ci_high", "col.ci_high", "pp"),
            ],
            journeys,
            empty="empty.no_journeys",
            note="note.journey_results",
            link=lambda r: "/console/journeys/" + quote(r["journey"]),
            link_col="journey",
        ),
        DataTable(
            "campaigns",
            "table.campaigns",
            [
                Col("campaign", "col.campaign"),
                Col("name", "col.name"),
                Col("objective", "col.objective", translate="objective"),
                Col("channel", "col.channel", translate="channel"),
                Col("start", "col.start", "date"),
                Col("treated", "col.treated", "int"),
                Col("holdout", "col.holdout", "int"),
                Col("delivered", "col.delivered", "int"),
                Col("clicked", "col.clicked", "int"),
                Col("converted", "col.treated_converted", "int"),
                Col("holdout_converted", "col.holdout_converted", "int"),
                Col("treated_rate", "col.treated_rate", "pct"),
                Col("holdout_rate", "col.holdout_rate", "pct"),
                Col("uplift", "col.uplift", "pp"),
                Col("ci_low", "col.ci_low", "pp"),
                Col("ci_high", "col.ci_high", "pp"),
                Col("incremental", "col.incremental", "num"),
                Col("cost", "col.cost", "money"),
                Col("value_treated", "col.value", "money"),
                Col("cost_per_conversion", "col.cost_per_conversion", "money"),
                Col("cost_per_incremental", "col.cost_per_incremental", "money"),
                Col("acquired", "col.acquired", "int"),
                Col("cac", "col.cac", "money"),
                Col("roi", "col.roi", "pct"),
            ],
            camps,
            empty="empty.no_campaigns",
            note="note.campaigns",
        ),
        DataTable(
            "crm_channels",
            "table.crm_channels",
            [
                *channel_cols,
                Col("treated", "col.treated", "int"),
                Col("holdout", "col.holdout", "int"),
                Col("blocked", "col.blocked", "int"),
                Col("delivered", "col.delivered", "int"),
                Col("clicked", "col.clicked", "int"),
                Col("converted", "col.treated_converted", "int"),
                Col("holdout_converted", "col.holdout_converted", "int"),
                Col("uplift", "col.uplift", "pp"),
                Col("ci_low", "col.ci_low", "pp"),
                Col("ci_high", "col.ci_high", "pp"),
                Col("message_cost", "col.message_cost", "money"),
            ],
            crm,
            empty="empty.no_campaigns",
        ),
        DataTable(
            "crm_blocks",
            "table.crm_blocks",
            [Col("reason", "col.reason", translate="reason"), Col("count", "col.count", "int")],
            crm_blocks,
            empty="empty.no_blocks",
        ),
    )
    return page


# ---- patient journey analysis --------------------------------------------------------------------
def journey_analysis(ctx: Ctx) -> Page:
    p, t = ctx.period, ctx.t
    funnel = ja.funnel(ctx.store, p)
    five = ja.stages_5a(ctx.store)
    flows = ja.flows_5a(ctx.store, p)
    coh = ja.cohorts(ctx.store, p)
    drops = ja.drop_off(ctx.store)
    page = Page(extra={"funnel": funnel, "stages_5a": five, "flows_5a": flows, "cohorts": coh})
    page.extra["flows_5a_detail"] = _flows_detail(ctx, flows)
    for r in funnel:
        r["label"] = ctx.label("stage", r["stage"])
    heat = [
        [k, i, round(v * 100, 1)]
        for i, c in enumerate(coh["cohorts"])
        for k, v in enumerate(c["retention"])
        if v is not None and c["size"]
    ]
    page.add(
        Chart(
            "funnel",
            "chart.funnel",
            {
                "tooltip": {"trigger": "item"},
                "series": [
                    {
                        "type": "funnel",
                        "sort": "none",
                        "left": "10%",
                        "width": "80%",
                        "minSize": "8%",
                        "label": {
                            "show": True,
                            "position": "inside",
                            "color": "#ffffff",
                            "formatter": "{b}: {c}",
                        },
                        "data": [{"name": r["label"], "value": r["persons"]} for r in funnel],
                    }
                ],
            },
            empty=None if funnel[0]["persons"] else "empty.no_activity",
        ),
        Chart(
            "stages_5a",
            "chart.stages_5a",
            _bar(
                [ctx.label("stage5a", s["stage"]) for s in five["stages"]],
                [
                    {
                        "name": t("col.persons"),
                        "data": [s["persons"] for s in five["stages"]],
                        "colorBy": "data",
                    }
                ],
            ),
            empty=None if five["total"] else "empty.no_5a",
        ),
        Chart(
            "flows_5a",
            "chart.flows_5a",
            _sankey(ctx, flows),
            height=360,
            empty=None if flows["persons"] else "empty.no_5a_history",
        ),
        Chart(
            "retention",
            "chart.retention",
            {
                "tooltip": {"position": "top"},
                "grid": {"left": 8, "right": 8, "top": 8, "bottom": 64, "containLabel": True},
                "xAxis": {
                    "type": "category",
                    "data": [f"+{k}" for k in range(len(coh["months"]))],
                    "name": t("col.months_after"),
                },
                "yAxis": {
                    "type": "category",
                    "data": coh["months"],
                    "inverse": True,
                    "name": t("col.cohort"),
                },
                "visualMap": {
                    "min": 0,
                    "max": 100,
                    "calculable": True,
                    "orient": "horizontal",
                    "left": "center",
                    "bottom": 0,
                    "inRange": {"color": ["#f7fbff", "#6baed6", "#08306b"]},
                    "text": ["100%", "0%"],
                },
                "series": [
                    {
                        "type": "heatmap",
                        "name": t("col.retention"),
                        "data": heat,
                        "label": {"show": True, "formatter": "{@[2]}%", "fontSize": 10},
                    }
                ],
            },
            height=420,
            empty=None if heat else "empty.no_cohorts",
        ),
        DataTable(
            "funnel",
            "table.funnel",
            [
                Col("label", "col.stage"),
                Col("persons", "col.persons", "int"),
                Col("from_previous", "col.from_previous", "pct"),
                Col("drop_off", "col.drop_off", "pct"),
                Col("did_step", "col.did_step", "int"),
            ],
            funnel if any(r["did_step"] for r in funnel) else [],
            empty="empty.no_activity",
            note="note.funnel",
        ),
        DataTable(
            "stages_5a",
            "table.stages_5a",
            [
                Col("stage", "col.stage", translate="stage5a"),
                Col("persons", "col.persons", "int"),
                Col("share", "col.share", "pct"),
            ],
            five["stages"],
            empty="empty.no_5a",
            note="note.stages_5a",
        ),
        DataTable(
            "flows_5a",
            "table.flows_5a",
            [Col("from", "col.from_stage", translate="stage5a")]
            + [Col(f"to_{s}", ctx.label("stage5a", s), "int", literal=True) for s in flows["stages"]]
            + [Col("total", "col.total", "int")],
            [
                {
                    "from": f,
                    **{f"to_{s}": flows["matrix"].get((f, s), 0) for s in flows["stages"]},
                    "total": sum(flows["matrix"].get((f, s), 0) for s in flows["stages"]),
                }
                for f in flows["stages"]
            ]
            if flows["persons"]
            else [],
            empty="empty.no_5a_history",
            note="note.flows_5a",
        ),
        DataTable(
            "moves_5a",
            "table.moves_5a",
            [
                Col("move", "col.move", translate="move5a"),
                Col("persons", "col.persons", "int"),
                Col("share", "col.share", "pct"),
            ],
            flows["moves"] if flows["persons"] else [],
            empty="empty.no_5a_history",
        ),
        DataTable(
            "cohorts",
            "table.cohorts",
            [Col("cohort", "col.cohort"), Col("size", "col.size", "int")]
            + [Col(f"m{k}", f"+{k}", "pct", literal=True) for k in range(len(coh["months"]))],
            [
                {
                    "cohort": c["cohort"],
                    "size": c["size"],
                    **{f"m{k}": v for k, v in enumerate(c["retention"])},
                }
                for c in coh["cohorts"]
                if any(x["size"] for x in coh["cohorts"])
            ],
            empty="empty.no_cohorts",
            note="note.cohorts",
        ),
        DataTable(
            "drop_off",
            "table.drop_off",
            [
                Col("journey", "col.journey"),
                Col("node", "col.node"),
                Col("status", "col.status", translate="status"),
                Col("exit_reason", "col.exit_reason", translate="exit"),
                Col("entries", "col.entries", "int"),
            ],
            drops,
            empty="empty.no_dropoff",
            link=lambda r: "/console/journeys/" + quote(r["journey"]),
            link_col="journey",
        ),
    )
    return page


def _days(pair: tuple[Any, Any]) -> str:
    lo, hi = pair
    return lo.isoformat() if lo == hi else f"{lo.isoformat()} – {hi.isoformat()}"


def _flows_detail(ctx: Ctx, flows: dict[str, Any]) -> str:
    """Which snapshots the flows compare (or, without two, what to record), in the request's language."""
    t, p = ctx.t, ctx.period
    if not flows["persons"]:
        stored = ", ".join(d.isoformat() for d in flows["stored_days"]) or t("flows.no_snapshots")
        return t("flows.none").format(start=p.start.isoformat(), end=p.end.isoformat(), days=stored)
    text = t("flows.compared").format(
        before=_days(flows["from_days"]), after=_days(flows["to_days"]), n=f"{flows['persons']:,}"
    )
    return text + (t("flows.new").format(n=f"{flows['new']:,}") if flows["new"] else "")


def _sankey(ctx: Ctx, flows: dict[str, Any]) -> dict[str, Any]:
    """An ECharts sankey: the stages at the start on the left, at the end on the right (5A order kept)."""
    order, matrix = flows["stages"], flows["matrix"]
    start, end = ctx.t("flows.start"), ctx.t("flows.end")

    def node(stage: str, side: str) -> str:
        return f"{ctx.label('stage5a', stage)} · {side}"

    nodes = [
        {
            "name": node(s, side),
            "itemStyle": {"color": PALETTE[i % len(PALETTE)]},
            "label": {"position": where},  # labels inside the chart on both sides
        }
        for side, where, present in (
            (start, "right", {f for (f, _), n in matrix.items() if n}),
            (end, "left", {x for (_, x), n in matrix.items() if n}),
        )
        for i, s in enumerate(order)
        if s in present
    ]
    links = [
        {"source": node(f, start), "target": node(x, end), "value": matrix[(f, x)]}
        for f in order
        for x in order
        if matrix.get((f, x))
    ]
    return {
        "tooltip": {"trigger": "item"},
        "series": [
            {
                "type": "sankey",
                "left": 8,
                "right": 8,
                "top": 8,
                "bottom": 8,
                "layoutIterations": 0,
                "nodeGap": 10,
                "emphasis": {"focus": "adjacency"},
                "lineStyle": {"color": "gradient", "opacity": 0.35},
                "label": {"fontSize": 11},
                "data": nodes,
                "links": links,
            }
        ],
    }


# ---- patient 360 ---------------------------------------------------------------------------------
def patient(ctx: Ctx, ident: str) -> tuple[Page, dict[str, Any]]:
    """The 360 as the role's viewer shows it (PatientView masks; nothing here decrypts)."""
    view = PatientView(ctx.store, viewer=ctx.principal.viewer, events_limit=50, list_limit=100)
    doc = view.show(ident)
    page = Page(extra={"doc": doc, "cipher": view.cipher})
    pid = doc.get("person_id")
    sections: list[tuple[str, str, list[dict[str, Any]], int | None]] = []
    if doc.get("golden"):
        fields = [{"field": f, **v} for f, v in (doc["golden"].get("fields") or {}).items()]
        sections.append(("golden", "section.golden", fields, None))
    if "identifiers" in doc:
        sections.append(("identifiers", "section.identifiers", doc["identifiers"], None))
    if "sources" in doc:
        sections.append(("sources", "section.sources", doc["sources"], None))
    for name in ("encounters", "conditions", "appointments", "events", "consents", "messages"):
        if name in doc:
            sections.append((name, f"section.{name}", doc[name]["items"], doc[name]["total"]))
    if "medications" in doc:
        for name in ("prescriptions", "dispenses"):
            part = doc["medications"][name]
            sections.append((name, f"section.{name}", part["items"], part["total"]))
    if doc.get("household"):
        sections.append(("household", "section.household", doc["household"]["members"], None))
    if "history" in doc:
        sections.append(("history", "section.history", doc["history"], None))
    if pid is not None:
        sections.append(("traits", "section.traits", person_traits(ctx.store, pid), None))
        sections.append(("tags", "section.tags", person_tags(ctx.store, pid), None))
    for sid, title, rows, total in sections:
        table = DataTable(sid, title, columns_of(rows), rows, person_level=True, empty="empty.section")
        page.tables[sid] = table
        page.extra.setdefault("totals", {})[sid] = total
    return page, doc


# ---- segments ------------------------------------------------------------------------------------
def segments(ctx: Ctx) -> Page:
    rows = list_segments(ctx.store)
    page = Page()
    page.add(
        DataTable(
            "segments",
            "table.segments",
            [
                Col("name", "col.name"),
                Col("description", "col.description"),
                Col("version", "col.version", "int"),
                Col("members", "col.members", "int"),
                Col("updated_at", "col.updated_at", "datetime"),
            ],
            rows,
            empty="empty.no_segments",
            link=lambda r: "/console/segments/" + quote(r["name"]),
            link_col="name",
        ),
        Chart(
            "segment_sizes",
            "chart.segment_sizes",
            _bar(
                [r["name"] for r in rows],
                [{"name": ctx.t("col.members"), "data": [r["members"] for r in rows]}],
                horizontal=True,
            ),
            height=max(200, 28 * len(rows) + 60),
            empty=None if rows else "empty.no_segments",
        ),
    )
    return page


def segment(ctx: Ctx, name: str) -> Page:
    seg = get_segment(ctx.store, name)
    changes = ctx.store.rows(
        "SELECT change, cause, count(*) AS persons, max(at) AS last_at FROM segment_change WHERE segment = :s "
        "GROUP BY change, cause ORDER BY change, cause",
        {"s": name},
    )
    members = int(
        ctx.store.scalar("SELECT count(*) FROM segment_member WHERE segment = :s", {"s": name}) or 0
    )
    page = Page(extra={"segment": seg, "members": members})
    page.add(
        DataTable(
            "changes",
            "table.segment_changes",
            [
                Col("change", "col.change", translate="change"),
                Col("cause", "col.cause"),
                Col("persons", "col.persons", "int"),
                Col("last_at", "col.last_at", "datetime"),
            ],
            changes,
            empty="empty.no_changes",
        )
    )
    return page


# ---- journeys ------------------------------------------------------------------------------------
def journeys(ctx: Ctx) -> Page:
    counts: dict[str, dict[str, int]] = {}
    for j, status, n in ctx.store.tuples(
        "SELECT journey, status, count(*) FROM journey_entry GROUP BY journey, status"
    ):
        counts.setdefault(j, {})[status] = int(n)
    rows = []
    for name, version, status, updated, definition in ctx.store.tuples(
        "SELECT name, version, status, updated_at, definition FROM journey ORDER BY name"
    ):
        spec = orjson.loads(definition) if isinstance(definition, str) else (definition or {})
        c = counts.get(name, {})
        rows.append(
            {
                "name": name,
                "description": spec.get("description"),
                "trigger": (spec.get("trigger") or {}).get("type"),
                "version": int(version),
                "status": status,
                "updated_at": updated,
                "entries": sum(c.values()),
                "active": c.get("active", 0) + c.get("waiting", 0),
                "done": c.get("done", 0),
                "exited": c.get("exited", 0),
                "failed": c.get("failed", 0),
                "by_status": c,
            }
        )
    page = Page(extra={"journeys": rows})
    page.add(
        DataTable(
            "journeys",
            "table.journeys",
            [
                Col("name", "col.journey"),
                Col("description", "col.description"),
                Col("trigger", "col.trigger", translate="trigger"),
                Col("version", "col.version", "int"),
                Col("status", "col.status", translate="status"),
                Col("entries", "col.entries", "int"),
                Col("active", "col.active_entries", "int"),
                Col("done", "col.done", "int"),
                Col("exited", "col.exited", "int"),
                Col("failed", "col.failed", "int"),
                Col("updated_at", "col.updated_at", "datetime"),
            ],
            rows,
            empty="empty.no_journeys",
            link=lambda r: "/console/journeys/" + quote(r["name"]),
            link_col="name",
        )
    )
    return page


def journey(ctx: Ctx, name: str) -> Page:
    pub = get_journey(ctx.store, name)
    stats = journey_stats(ctx.store, name)
    t = ctx.t
    words = {
        "steps": t("graph.steps"),
        "here": t("graph.here"),
        "sent": t("col.sent"),
        "blocked": t("col.blocked"),
        **{
            f"type.{k}": ctx.label("node", k)
            for k in ("send", "wait", "branch", "split", "task", "update", "webhook", "exit")
        },
        **{f"edge.{k}": t(f"edge.{k}") for k in ("when", "default", "event", "timeout")},
    }
    positions = list(layout(pub.journey).values())
    depth = max((c for c, _ in positions), default=0)
    rows = max((r for _, r in positions), default=0)
    conv = stats["conversion"]
    page = Page(extra={"journey": pub, "stats": stats, "definition": pub.journey.raw})
    page.kpis = [
        Kpi("kpi.entries", stats["entries"], "int", compare=False),
        Kpi(
            "kpi.treated",
            conv["treated"],
            "int",
            compare=False,
            detail=f"{t('col.treated_converted')} {conv['treated_converted']:,}",
        ),
        Kpi(
            "kpi.holdout",
            conv["holdout"],
            "int",
            compare=False,
            detail=f"{t('col.holdout_converted')} {conv['holdout_converted']:,}",
        ),
        Kpi(
            "kpi.uplift",
            conv.get("uplift"),
            "pct",
            compare=False,
            detail=(
                t("kpi.ci").format(low=f"{conv['ci95'][0] * 100:+.1f}", high=f"{conv['ci95'][1] * 100:+.1f}")
                if conv.get("ci95")
                else None
            ),
            empty="empty.no_uplift" if pub.journey.goal_event else "empty.no_goal",
        ),
    ]
    page.add(
        Chart(
            "graph",
            "chart.journey_graph",
            graph_option(pub.journey, stats, words),
            height=max(320, 150 * (rows + 1) + 60),
        ),
        DataTable(
            "at_node",
            "table.at_node",
            [
                Col("node", "col.node"),
                Col("status", "col.status", translate="status"),
                Col("entries", "col.entries", "int"),
            ],
            stats["at_node"],
            empty="empty.no_entries",
        ),
        DataTable(
            "steps",
            "table.steps",
            [
                Col("node", "col.node"),
                Col("kind", "col.kind", translate="node"),
                Col("outcome", "col.outcome"),
                Col("count", "col.count", "int"),
            ],
            stats["steps"],
            empty="empty.no_entries",
        ),
        DataTable(
            "sends",
            "table.sends",
            [
                Col("node", "col.node"),
                Col("status", "col.status", translate="send_status"),
                Col("reason", "col.reason", translate="reason"),
                Col("count", "col.count", "int"),
            ],
            stats["sends"],
            empty="empty.no_sends",
        ),
    )
    page.extra["depth"] = depth
    return page


# ---- data quality --------------------------------------------------------------------------------
def data_quality(ctx: Ctx) -> Page:
    runs = ingest_runs(ctx.store, 50)
    counts = entity_counts(ctx.store)
    may_quarantine = ctx.principal.allows("quarantine:read")
    page = Page(extra={"may_quarantine": may_quarantine})
    total_q = int(ctx.store.scalar("SELECT count(*) FROM quarantine") or 0)
    page.kpis = [
        Kpi("kpi.runs", len(runs), "int", compare=False),
        Kpi("kpi.rows", sum(counts.values()), "int", compare=False),
        Kpi("kpi.quarantined", total_q, "int", compare=False, better="down"),
    ]
    page.add(
        DataTable(
            "runs",
            "table.runs",
            [
                Col("run_id", "col.run"),
                Col("source", "col.source"),
                Col("format", "col.format"),
                Col("status", "col.status", translate="status"),
                Col("started_at", "col.started_at", "datetime"),
                Col("rows", "col.rows", "int"),
                Col("quarantined", "col.quarantined", "int"),
                Col("seconds", "col.seconds", "num"),
            ],
            runs,
            empty="empty.no_runs",
        ),
        DataTable(
            "entities",
            "table.entities",
            [Col("entity", "col.entity"), Col("rows", "col.rows", "int")],
            [{"entity": k, "rows": v} for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))],
        ),
    )
    if may_quarantine:
        reasons = ctx.store.rows(
            "SELECT source, entity, field, reason, count(*) AS rows, max(created_at) AS last_at FROM quarantine "
            "GROUP BY source, entity, field, reason ORDER BY count(*) DESC, source, entity, field LIMIT 200"
        )
        latest = QuarantineView(ctx.store, cipher=None).list(limit=100)
        page.add(
            Chart(
                "reasons",
                "chart.quarantine_reasons",
                _bar(
                    [f"{r['entity']}.{r['field'] or '-'}" for r in reasons[:12]],
                    [{"name": ctx.t("col.rows"), "data": [r["rows"] for r in reasons[:12]]}],
                    horizontal=True,
                ),
                height=max(200, 30 * min(12, len(reasons)) + 60),
                empty=None if reasons else "empty.no_quarantine",
            ),
            DataTable(
                "reasons",
                "table.quarantine_reasons",
                [
                    Col("source", "col.source"),
                    Col("entity", "col.entity"),
                    Col("field", "col.field"),
                    Col("reason", "col.reason"),
                    Col("rows", "col.rows", "int"),
                    Col("last_at", "col.last_at", "datetime"),
                ],
                reasons,
                empty="empty.no_quarantine",
            ),
            DataTable(
                "quarantine",
                "table.quarantine",
                [
                    Col("id", "col.id"),
                    Col("run_id", "col.run"),
                    Col("source", "col.source"),
                    Col("entity", "col.entity"),
                    Col("file", "col.file"),
                    Col("line", "col.line", "int"),
                    Col("field", "col.field"),
                    Col("reason", "col.reason"),
                ],
                latest,
                person_level=True,
                empty="empty.no_quarantine",
                link=lambda r: "/console/data-quality/quarantine/" + quote(str(r["id"])),
                link_col="id",
            ),
        )
    return page


def quarantine_row(ctx: Ctx, qid: str) -> dict[str, Any]:
    row = QuarantineView(ctx.store).show(qid)
    if row is None:
        raise NotFoundError(f"no quarantined row {qid!r}")
    if ctx.principal.viewer.visibility("raw") is Visibility.HIDDEN:
        row["raw"] = None
        row["raw_hidden"] = True
    return row


# ---- capability self-assessment ------------------------------------------------------------------
def assessment(ctx: Ctx) -> Page:
    past = assess.history(ctx.store)
    page = Page(extra={"history": past, "dimensions": assess.DIMENSIONS, "levels": assess.LEVELS})
    names = [d.zh if ctx.lang == "zh" else d.en for d in assess.DIMENSIONS]
    series = [
        {
            "name": f"{a['title']} · {a['created_at']:%Y-%m-%d}",
            "value": [a["scores"].get(d.id) for d in assess.DIMENSIONS],
        }
        for a in past[:2]
    ]
    page.add(
        Chart(
            "radar",
            "chart.radar",
            {
                "tooltip": {},
                "legend": {"bottom": 0},
                "radar": {"indicator": [{"name": n, "max": 5, "min": 0} for n in names], "radius": "62%"},
                "series": [
                    {
                        "type": "radar",
                        "data": series,
                        "areaStyle": {"opacity": 0.15},
                        "symbolSize": 6,
                        "lineStyle": {"width": 2},
                    }
                ],
                "color": list(PALETTE[:2]),
            },
            height=420,
            empty=None if past else "empty.no_assessments",
        ),
        DataTable(
            "history",
            "table.assessments",
            [
                Col("title", "col.title"),
                Col("created_at", "col.created_at", "datetime"),
                Col("created_by", "col.created_by"),
            ]
            + [Col(d.id, d.zh if ctx.lang == "zh" else d.en, "num", literal=True) for d in assess.DIMENSIONS],
            [{**a, **a["scores"]} for a in past],
            empty="empty.no_assessments",
            link=lambda r: "/console/assessment/" + quote(r["assessment_id"]),
            link_col="title",
        ),
    )
    return page


#: view -> builder of its exportable page (views whose page needs an argument take it from `args`)
EXPORTABLE: dict[str, Callable[[Ctx], Page]] = {
    "executive": executive,
    "marketing": marketing,
    "journey_analysis": journey_analysis,
    "segments": segments,
    "journeys": journeys,
    "data_quality": data_quality,
    "assessment": assessment,
    "patient": lambda ctx: patient(ctx, ctx.args.get("id", ""))[0],
    "segment": lambda ctx: segment(ctx, ctx.args.get("name", "")),
    "journey": lambda ctx: journey(ctx, ctx.args.get("name", "")),
}
