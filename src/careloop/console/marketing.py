# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""Marketing performance (营销绩效分析): what careloop's journeys sent and what the ingested campaign
history (CRM: campaigns, messages, touches) achieved — per channel, per journey and per campaign.

- Journeys: every send intent is a `message_send` row (sent, blocked with its reason, failed, …);
  deliveries, opens and clicks are the receipt events channels store (``message_delivered`` …, keyed
  ``<provider message id>:<event>``); conversions and the holdout uplift with its 95 % interval are
  `careloop.journeys.stats.journey_stats`.
- Campaigns: messages (holdout rows are ``is_holdout``), touches (delivered … converted, with a value),
  the campaign's cost. Conversion rates are per message, treated vs holdout; the uplift and its interval
  use the same normal approximation as journey stats. ROI is last-touch attributed; the incremental
  conversions (uplift × treated messages) are shown beside it.
- Acquisition: a campaign **acquired** a patient when a treated message converted a person with no visit,
  fill or online consultation before the campaign started (a new patient, not a returning one). **CAC** =
  cost / acquired patients; **cost per incremental conversion** = cost / incremental conversions (what the
  campaign caused, by the holdout).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from careloop.console import sql
from careloop.journeys.stats import journey_stats
from careloop.storage import WorkspaceStore

RECEIPTS = ("message_delivered", "message_opened", "message_clicked")

#: per CRM message: which touches it got (0 / 1 each) and the value it converted
_TOUCHED = (
    "SELECT source, message_key, max(CASE WHEN touch_type = 'delivered' THEN 1 ELSE 0 END) AS d, "
    "max(CASE WHEN touch_type = 'opened' THEN 1 ELSE 0 END) AS o, "
    "max(CASE WHEN touch_type = 'clicked' THEN 1 ELSE 0 END) AS k, "
    "max(CASE WHEN touch_type = 'converted' THEN 1 ELSE 0 END) AS c, "
    "max(CASE WHEN touch_type = 'opted_out' THEN 1 ELSE 0 END) AS u, "
    "sum(CASE WHEN touch_type = 'converted' THEN value END) AS v "
    "FROM touch WHERE message_key IS NOT NULL GROUP BY source, message_key"
)

#: receipt events of journey sends, with the provider message id they carry in their key
_RECEIPTED = (
    "SELECT substr(key, 1, length(key) - length(name) - 1) AS pmid, "
    "max(CASE WHEN name = 'message_delivered' THEN 1 ELSE 0 END) AS d, "
    "max(CASE WHEN name = 'message_opened' THEN 1 ELSE 0 END) AS o, "
    "max(CASE WHEN name = 'message_clicked' THEN 1 ELSE 0 END) AS k "
    "FROM event WHERE source LIKE 'channel:%' AND name IN ('message_delivered', 'message_opened', 'message_clicked') "
    "GROUP BY 1"
)


def uplift(treated: int, treated_conv: int, holdout: int, holdout_conv: int) -> dict[str, Any]:
    """Conversion rates of both groups and their difference with a 95 % normal-approximation interval
    (the formula of `careloop.journeys.stats`)."""
    out: dict[str, Any] = {"treated_rate": None, "holdout_rate": None, "uplift": None, "ci_low": None}
    out["ci_high"] = None
    if treated:
        out["treated_rate"] = treated_conv / treated
    if holdout:
        out["holdout_rate"] = holdout_conv / holdout
    if not treated or not holdout:
        return out
    pt, ph = treated_conv / treated, holdout_conv / holdout
    se = math.sqrt(pt * (1 - pt) / treated + ph * (1 - ph) / holdout)
    out.update(uplift=pt - ph, ci_low=pt - ph - 1.96 * se, ci_high=pt - ph + 1.96 * se)
    return out


# ---- journeys -------------------------------------------------------------------------------------
def journey_sends_by_channel(store: WorkspaceStore, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """Send intents of the period per channel: sent, blocked, failed, pending, and receipts."""
    rows = store.tuples(
        f"WITH r AS ({_RECEIPTED}) SELECT s.channel, count(*), "
        "sum(CASE WHEN s.status = 'sent' THEN 1 ELSE 0 END), sum(CASE WHEN s.status = 'blocked' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN s.status IN ('failed', 'dead') THEN 1 ELSE 0 END), "
        "sum(CASE WHEN s.status IN ('pending', 'retry') THEN 1 ELSE 0 END), "
        "sum(coalesce(r.d, 0)), sum(coalesce(r.o, 0)), sum(coalesce(r.k, 0)) "
        "FROM message_send s LEFT JOIN r ON r.pmid = s.provider_message_id "
        "WHERE s.created_at >= :lo AND s.created_at < :hi GROUP BY s.channel ORDER BY count(*) DESC, s.channel",
        {"lo": lo, "hi": hi},
    )
    keys = ("channel", "intents", "sent", "blocked", "failed", "pending", "delivered", "opened", "clicked")
    out = [dict(zip(keys, (r[0], *(int(v or 0) for v in r[1:])), strict=True)) for r in rows]
    for r in out:
        r["delivery_rate"] = sql.ratio(r["delivered"], r["sent"])
        r["click_rate"] = sql.ratio(r["clicked"], r["delivered"] or r["sent"])
    return out


def journey_blocks(store: WorkspaceStore, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """Blocked send intents of the period by reason (the send-time policy's)."""
    return [
        {"reason": reason, "count": int(n)}
        for reason, n in store.tuples(
            "SELECT coalesce(reason, 'unknown'), count(*) FROM message_send WHERE status = 'blocked' "
            "AND created_at >= :lo AND created_at < :hi GROUP BY 1 ORDER BY count(*) DESC, 1",
            {"lo": lo, "hi": hi},
        )
    ]


def journeys(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Every journey, all time: entries, sends and blocks (journey_stats), receipts, conversions in the
    treated group and the holdout, and the uplift with its 95 % interval."""
    receipts = {
        j: (int(d or 0), int(k or 0))
        for j, d, k in store.tuples(
            f"WITH r AS ({_RECEIPTED}) SELECT s.journey, sum(r.d), sum(r.k) FROM message_send s "
            "JOIN r ON r.pmid = s.provider_message_id GROUP BY s.journey"
        )
    }
    out = []
    for (name,) in store.tuples("SELECT name FROM journey ORDER BY name"):
        st = journey_stats(store, name)
        conv = st["conversion"]
        sends = st["sends"]
        delivered, clicked = receipts.get(name, (0, 0))
        out.append(
            {
                "journey": name,
                "status": st["status"],
                "goal": st["goal"],
                "entries": st["entries"],
                "sent": sum(s["count"] for s in sends if s["status"] == "sent"),
                "blocked": sum(s["count"] for s in sends if s["status"] == "blocked"),
                "delivered": delivered,
                "clicked": clicked,
                "treated": conv["treated"],
                "treated_converted": conv["treated_converted"],
                "holdout": conv["holdout"],
                "holdout_converted": conv["holdout_converted"],
                "treated_rate": conv.get("treated_rate"),
                "holdout_rate": conv.get("holdout_rate"),
                "uplift": conv.get("uplift"),
                "ci_low": conv["ci95"][0] if conv.get("ci95") else None,
                "ci_high": conv["ci95"][1] if conv.get("ci95") else None,
            }
        )
    return out


# ---- campaigns (ingested CRM history) ------------------------------------------------------------
def campaigns(
    store: WorkspaceStore, lo: datetime, hi: datetime, *, started_only: bool = False
) -> list[dict[str, Any]]:
    """Campaigns running in [lo, hi) (or, with `started_only`, started in it) with their messages,
    touches, conversions treated vs holdout, uplift, cost, value and ROI."""
    when = (
        "c.start >= :lo AND c.start < :hi"
        if started_only
        else 'c.start < :hi AND coalesce(c."end", c.start) >= :lo'
    )
    rows = store.tuples(
        f"WITH t AS ({_TOUCHED}) "
        'SELECT c.key, c.name, c.objective, c.channel, c.start, c."end", c.budget, c.cost, '
        "sum(CASE WHEN m.key IS NOT NULL AND NOT m.is_holdout THEN 1 ELSE 0 END), "
        "sum(CASE WHEN m.is_holdout THEN 1 ELSE 0 END), "
        "sum(CASE WHEN m.status = 'blocked' AND NOT m.is_holdout THEN 1 ELSE 0 END), "
        "sum(CASE WHEN NOT m.is_holdout THEN t.d ELSE 0 END), sum(CASE WHEN NOT m.is_holdout THEN t.o ELSE 0 END), "
        "sum(CASE WHEN NOT m.is_holdout THEN t.k ELSE 0 END), sum(CASE WHEN NOT m.is_holdout THEN t.c ELSE 0 END), "
        "sum(CASE WHEN m.is_holdout THEN t.c ELSE 0 END), sum(CASE WHEN NOT m.is_holdout THEN t.v END), "
        "sum(CASE WHEN NOT m.is_holdout THEN t.u ELSE 0 END) "
        "FROM campaign c LEFT JOIN message m ON m.source = c.source AND m.campaign_key = c.key "
        "LEFT JOIN t ON t.source = m.source AND t.message_key = m.key "
        f'WHERE {when} GROUP BY c.key, c.name, c.objective, c.channel, c.start, c."end", c.budget, c.cost '
        "ORDER BY c.start, c.key",
        {"lo": lo, "hi": hi},
    )
    acquired = _acquired(store, when, lo, hi)
    out = []
    for key, name, objective, channel, start, end, budget, cost, *counts, value, optouts in rows:
        treated, holdout, blocked, delivered, opened, clicked, conv_t, conv_h = (int(v or 0) for v in counts)
        cost_f, value_f = sql.num(cost), sql.num(value)
        up = uplift(treated, conv_t, holdout, conv_h)
        out.append(
            {
                "campaign": key,
                "name": name,
                "objective": objective,
                "channel": channel,
                "start": start,
                "end": end,
                "budget": sql.num(budget),
                "cost": cost_f,
                "treated": treated,
                "holdout": holdout,
                "blocked": blocked,
                "delivered": delivered,
                "opened": opened,
                "clicked": clicked,
                "opted_out": int(optouts or 0),
                "converted": conv_t,
                "holdout_converted": conv_h,
                **up,
                "incremental": up["uplift"] * treated if up["uplift"] is not None else None,
                "value_treated": value_f,
                "cost_per_conversion": cost_f / conv_t if cost_f is not None and conv_t else None,
                "acquired": acquired.get(key, 0),
                "cac": cost_f / acquired[key] if cost_f is not None and acquired.get(key) else None,
                "cost_per_incremental": (
                    cost_f / (up["uplift"] * treated)
                    if cost_f is not None and up["uplift"] is not None and up["uplift"] > 0 and treated
                    else None
                ),
                "roi": (value_f - cost_f) / cost_f if value_f is not None and cost_f else None,
            }
        )
    return out


#: every visit, fill and online consultation, by record key: the care that makes someone a patient
_CARE = " UNION ALL ".join(
    f'SELECT source, patient_key, "{col}" AS at FROM {table}'
    for table, col in (("encounter", "start"), ("dispense", "dispensed_at"), ("consultation", "started_at"))
)


def _acquired(store: WorkspaceStore, when: str, lo: datetime, hi: datetime) -> dict[str, int]:
    """Per campaign, the persons a treated message converted who had no visit, fill or online
    consultation before the campaign started (new patients). The records are read only for the
    converted persons' keys."""
    rows = store.tuples(
        "WITH conv AS (SELECT DISTINCT c.key AS campaign, c.start AS start, l.person_id AS pid FROM touch x "
        "JOIN campaign c ON c.source = x.source AND c.key = x.campaign_key "
        "JOIN message m ON m.source = x.source AND m.key = x.message_key "
        "JOIN identity_link l ON l.source = x.source AND l.patient_key = x.patient_key "
        f"WHERE x.touch_type = 'converted' AND NOT m.is_holdout AND {when}), "
        "keys AS (SELECT l.source, l.patient_key, l.person_id AS pid FROM identity_link l "
        "WHERE l.person_id IN (SELECT pid FROM conv)), "
        f"firsts AS (SELECT k.pid, min(r.at) AS first_at FROM keys k JOIN ({_CARE}) r "
        "ON r.source = k.source AND r.patient_key = k.patient_key GROUP BY k.pid) "
        "SELECT conv.campaign, count(*) FROM conv LEFT JOIN firsts f ON f.pid = conv.pid "
        "WHERE f.first_at IS NULL OR f.first_at >= conv.start GROUP BY conv.campaign",
        {"lo": lo, "hi": hi},
    )
    return {key: int(n) for key, n in rows}


def crm_channels(store: WorkspaceStore, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """Campaign messages created in [lo, hi) per channel."""
    rows = store.tuples(
        f"WITH t AS ({_TOUCHED}) SELECT m.channel, "
        "sum(CASE WHEN NOT m.is_holdout THEN 1 ELSE 0 END), sum(CASE WHEN m.is_holdout THEN 1 ELSE 0 END), "
        "sum(CASE WHEN m.status = 'blocked' AND NOT m.is_holdout THEN 1 ELSE 0 END), "
        "sum(CASE WHEN NOT m.is_holdout THEN coalesce(t.d, 0) ELSE 0 END), "
        "sum(CASE WHEN NOT m.is_holdout THEN coalesce(t.k, 0) ELSE 0 END), "
        "sum(CASE WHEN NOT m.is_holdout THEN coalesce(t.c, 0) ELSE 0 END), "
        "sum(CASE WHEN m.is_holdout THEN coalesce(t.c, 0) ELSE 0 END), sum(m.cost) "
        "FROM message m LEFT JOIN t ON t.source = m.source AND t.message_key = m.key "
        "WHERE m.created_at >= :lo AND m.created_at < :hi GROUP BY m.channel ORDER BY 2 DESC, m.channel",
        {"lo": lo, "hi": hi},
    )
    out = []
    for channel, *counts, cost in rows:
        treated, holdout, blocked, delivered, clicked, conv_t, conv_h = (int(v or 0) for v in counts)
        out.append(
            {
                "channel": channel,
                "treated": treated,
                "holdout": holdout,
                "blocked": blocked,
                "delivered": delivered,
                "clicked": clicked,
                "converted": conv_t,
                "holdout_converted": conv_h,
                "message_cost": sql.num(cost),
                **uplift(treated, conv_t, holdout, conv_h),
            }
        )
    return out


def crm_blocks(store: WorkspaceStore, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """Campaign messages of the period not sent, by reason (holdout is by design, not a failure)."""
    return [
        {"reason": reason, "count": int(n)}
        for reason, n in store.tuples(
            "SELECT coalesce(block_reason, 'unknown'), count(*) FROM message WHERE status = 'blocked' "
            "AND created_at >= :lo AND created_at < :hi GROUP BY 1 ORDER BY count(*) DESC, 1",
            {"lo": lo, "hi": hi},
        )
    ]
