"""What a journey did: entries per node and status, step outcomes, sends by status and block reason,
conversions (goal) in the treated group and in the holdout, and the uplift between them."""

from __future__ import annotations

import math
from typing import Any

from careloop.journeys.engine import get_journey
from careloop.storage import WorkspaceStore


def journey_stats(store: WorkspaceStore, name: str) -> dict[str, Any]:
    pub = get_journey(store, name)
    p = {"j": name}
    at_node = [
        {"node": n, "status": s, "entries": int(c)}
        for n, s, c in store.tuples(
            "SELECT node, status, count(*) FROM journey_entry WHERE journey = :j GROUP BY node, status ORDER BY node, status",
            p,
        )
    ]
    steps = [
        {"node": n, "kind": k, "outcome": o, "count": int(c)}
        for n, k, o, c in store.tuples(
            "SELECT node, kind, outcome, count(*) FROM journey_step WHERE journey = :j "
            "GROUP BY node, kind, outcome ORDER BY node, kind, outcome",
            p,
        )
    ]
    sends = [
        {"node": n, "status": s, "reason": r, "count": int(c)}
        for n, s, r, c in store.tuples(
            "SELECT node, status, reason, count(*) FROM message_send WHERE journey = :j "
            "GROUP BY node, status, reason ORDER BY node, status, reason",
            p,
        )
    ]
    groups = {
        arm: (int(n), int(conv or 0))
        for arm, n, conv in store.tuples(
            "SELECT CASE WHEN arm = 'holdout' THEN 'holdout' ELSE 'treated' END, count(*), "
            "sum(CASE WHEN exit_reason = 'goal' THEN 1 ELSE 0 END) FROM journey_entry WHERE journey = :j "
            "GROUP BY 1",
            p,
        )
    }
    return {
        "journey": name,
        "version": pub.version,
        "status": pub.status,
        "goal": pub.journey.goal_event,
        "entries": sum(r["entries"] for r in at_node),
        "at_node": at_node,
        "steps": steps,
        "sends": sends,
        "conversion": _uplift(groups.get("treated", (0, 0)), groups.get("holdout", (0, 0))),
    }


def _uplift(treated: tuple[int, int], holdout: tuple[int, int]) -> dict[str, Any]:
    """Conversion rates of both groups and their difference with a 95% normal-approximation interval."""
    (nt, ct), (nh, ch) = treated, holdout
    out: dict[str, Any] = {"treated": nt, "treated_converted": ct, "holdout": nh, "holdout_converted": ch}
    if nt == 0 or nh == 0:
        out["uplift"] = None
        return out
    pt, ph = ct / nt, ch / nh
    se = math.sqrt(pt * (1 - pt) / nt + ph * (1 - ph) / nh)
    out.update(
        treated_rate=round(pt, 4),
        holdout_rate=round(ph, 4),
        uplift=round(pt - ph, 4),
        ci95=[round(pt - ph - 1.96 * se, 4), round(pt - ph + 1.96 * se, 4)],
    )
    return out
