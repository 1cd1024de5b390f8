"""Synthetic trait data with planted groups, for the persona and lookalike tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from careloop.storage import WorkspaceStore

AS_OF_END = datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC)  # the end of 2026-10-31 in Asia/Shanghai

#: group -> (size, age range, visits range, spend range, events range, days since last visit, stage, pdc?)
GROUPS: dict[
    str,
    tuple[
        int, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], str, bool
    ],
] = {
    "young": (50, (25, 35), (1, 1), (0, 120), (5, 10), (200, 400), "Appeal", False),
    "chronic": (40, (50, 60), (4, 8), (1500, 2500), (1, 2), (10, 60), "Act", True),
    "elderly": (30, (75, 85), (10, 16), (400, 800), (0, 0), (0, 30), "Act", False),
}


def trait_row(pid: str, trait: str, key: str = "", **value: Any) -> dict[str, Any]:
    return {
        "person_id": pid,
        "trait": trait,
        "key": key,
        "value_num": value.get("num"),
        "value_text": value.get("text"),
        "value_time": value.get("time"),
        "as_of": AS_OF_END,
        "computed_at": AS_OF_END,
    }


def plant(store: WorkspaceStore, seed: int = 7) -> dict[str, str]:
    """Persons in three clearly different groups (see GROUPS); returns person -> group."""
    rng = random.Random(seed)
    truth: dict[str, str] = {}
    persons, rows = [], []
    n = 0
    for group, (size, age, visits, spend, events, since, stage, pdc) in GROUPS.items():
        for _ in range(size):
            pid = f"P{n:04d}"
            n += 1
            truth[pid] = group
            persons.append({"person_id": pid})
            rows.append(trait_row(pid, "age", num=float(rng.randint(*age))))
            v = rng.randint(*visits)
            if v:  # a count nobody recorded is not stored (traits store only persons with rows)
                rows.append(trait_row(pid, "visits_365d", num=float(v)))
            rows.append(trait_row(pid, "spend_365d", num=float(rng.randint(*spend))))
            e = rng.randint(*events)
            if e:
                rows.append(trait_row(pid, "events_90d", num=float(e)))
            rows.append(trait_row(pid, "last_visit_at", time=AS_OF_END - timedelta(days=rng.randint(*since))))
            rows.append(trait_row(pid, "stage_5a", text=stage))
            fills = rng.randint(10, 14) if pdc else rng.randint(0, 1)
            if fills:
                rows.append(trait_row(pid, "fills_365d", num=float(fills)))
            if group == "young":
                rows.append(trait_row(pid, "sex", text="female"))
            if pdc:
                rows.append(trait_row(pid, "pdc", "CCB", num=0.8))
                rows.append(trait_row(pid, "decision_type", text="中度"))
    store.insert("person", persons)
    store.insert("trait_value", rows)
    return truth
