# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""Patient journey analysis (患者旅程分析): the funnel from first touch to refill, the 5A stages, cohort
retention and where journeys lose patients.

- **Funnel** (a period): touched (an event, a campaign touch or a journey message sent) → booked (an
  appointment booked) → attended (an appointment attended) → follow-up (a follow-up visit or online
  follow-up consultation) → refill (a fill of a drug class the person had filled before). A person counts
  at a stage when they did that step *and every step before it* in the period (the order inside the
  period is not checked); each step's own count is shown beside it.
- **5A stages**: the ``stage_5a`` trait (docs/traits.md) as of its day.
- **5A flows**: from the trait's dated snapshots (``trait_history``; the trait is declared with
  ``history: true``): per person, the latest snapshot on or before the period's first day and the latest
  on or before its last day; a person counts when both exist and the second is later. A transition matrix,
  and the share that moved up, stayed or moved down in the 5A order.
- **Cohort retention**: persons by the calendar month of their first activity ever (visit, fill, online
  consultation, booking, event); for each later month, the share of the cohort active in it.
- **Drop-off**: journey entries that ended without their goal, by the node they ended on.
"""

from __future__ import annotations

from typing import Any

from careloop.console import sql
from careloop.console.period import Period, month_starts
from careloop.storage import WorkspaceStore

STAGES = ("touched", "booked", "attended", "follow_up", "refill")
STAGES_5A = ("O", "Aware", "Appeal", "Ask", "Act", "Advocate")
TRAIT_5A = "stage_5a"


def funnel(store: WorkspaceStore, p: Period) -> list[dict[str, Any]]:
    """The five stages: persons reaching each (all steps up to it) and doing it at all."""
    n = len(STAGES)

    def flags(conds: dict[int, str]) -> str:
        return ", ".join(
            f"max(CASE WHEN {conds[i]} THEN 1 ELSE 0 END) AS s{i}" if i in conds else f"0 AS s{i}"
            for i in range(n)
        )

    def keyed(table: str, alias: str, conds: dict[int, str], where: str) -> str:
        return (
            f"SELECT {alias}.source, {alias}.patient_key, {flags(conds)} FROM {table} {alias} WHERE {where} "
            f"GROUP BY {alias}.source, {alias}.patient_key"
        )

    def within(col: str) -> str:
        return f"{col} >= :lo AND {col} < :hi"

    records = [
        keyed("event", "v", {0: "1 = 1"}, f"v.person_id IS NULL AND {within('v.occurred_at')}"),
        keyed("touch", "t", {0: "1 = 1"}, within("t.occurred_at")),
        keyed(
            "appointment",
            "a",
            {1: within("a.booked_at"), 2: f"a.status = 'attended' AND {within('a.scheduled_at')}"},
            f"(({within('a.booked_at')}) OR ({within('a.scheduled_at')}))",
        ),
        keyed("encounter", "e", {3: "1 = 1"}, f"e.encounter_class = 'follow_up' AND {within('e.start')}"),
        keyed("consultation", "c", {3: "1 = 1"}, f"c.is_follow_up AND {within('c.started_at')}"),
    ]
    cols = ", ".join(f"k.s{i}" for i in range(n))
    by_person = (
        f"SELECT v.person_id AS pid, {flags({0: '1 = 1'})} FROM event v "
        f"WHERE v.person_id IS NOT NULL AND {within('v.occurred_at')} GROUP BY v.person_id "
        f"UNION ALL SELECT s.person_id AS pid, {flags({0: '1 = 1'})} FROM message_send s "
        f"WHERE s.status = 'sent' AND {within('s.sent_at')} GROUP BY s.person_id"
    )
    refill_cols = ", ".join("1 AS s4" if i == 4 else f"0 AS s{i}" for i in range(n))
    refill = (
        f"SELECT f.pid, {refill_cols} FROM (SELECT l.person_id AS pid, d.cls, min(d.first_at) AS first_at, "
        "max(d.last_in) AS last_in FROM (SELECT source, patient_key, coalesce(drug_class, drug_code) AS cls, "
        "min(dispensed_at) AS first_at, max(CASE WHEN dispensed_at >= :lo THEN dispensed_at END) AS last_in "
        "FROM dispense WHERE dispensed_at < :hi GROUP BY source, patient_key, coalesce(drug_class, drug_code)) d "
        "JOIN identity_link l ON l.source = d.source AND l.patient_key = d.patient_key "
        "GROUP BY l.person_id, d.cls) f WHERE f.last_in > f.first_at"
    )
    union = (
        f"SELECT l.person_id AS pid, {cols} FROM ({' UNION ALL '.join(records)}) k "
        f"JOIN identity_link l ON l.source = k.source AND l.patient_key = k.patient_key "
        f"UNION ALL {by_person} UNION ALL {refill}"
    )
    maxes = ", ".join(f"max(s{i}) AS s{i}" for i in range(n))
    alone = ", ".join(f"sum(s{i})" for i in range(n))
    chained = ", ".join("sum(" + " * ".join(f"s{j}" for j in range(i + 1)) + ")" for i in range(n))
    row = store.tuples(
        f"WITH f AS (SELECT pid, {maxes} FROM ({union}) u GROUP BY pid) SELECT {alone}, {chained} FROM f",
        {"lo": p.lo, "hi": p.hi},
    )[0]
    alone_v, chained_v = [int(v or 0) for v in row[:n]], [int(v or 0) for v in row[n:]]
    out = []
    for i, name in enumerate(STAGES):
        prev = chained_v[i - 1] if i else None
        out.append(
            {
                "stage": name,
                "persons": chained_v[i],
                "did_step": alone_v[i],
                "from_previous": sql.ratio(chained_v[i], prev) if i else None,
                "drop_off": (1 - chained_v[i] / prev) if i and prev else None,
            }
        )
    return out


def stages_5a(store: WorkspaceStore) -> dict[str, Any]:
    """Persons per 5A stage (trait ``stage_5a``), in the model's order, and the traits' as-of day."""
    rows = dict(
        store.tuples(
            "SELECT value_text, count(*) FROM trait_value WHERE trait = 'stage_5a' GROUP BY value_text"
        )
    )
    as_of = store.scalar("SELECT max(as_of) FROM trait_value WHERE trait = 'stage_5a'")
    order = [s for s in STAGES_5A] + sorted(k for k in rows if k not in STAGES_5A and k is not None)
    total = sum(int(v) for v in rows.values())
    return {
        "as_of": as_of,
        "total": total,
        "stages": [
            {"stage": s, "persons": int(rows.get(s, 0)), "share": sql.ratio(rows.get(s, 0), total)}
            for s in order
        ],
    }


def flows_5a(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """Flows between 5A stages over the period from the stored snapshots (``trait_history``), in one
    grouped statement: per person the latest snapshot on or before the first day of the period (``fd``)
    and the latest on or before its last day (``td``); persons with both, the second later, count —
    those with only a snapshot after the first day are counted apart (``new``). When nothing can be
    compared, the days that are stored (latest first, at most 6), to say what to record."""
    dialect = store.backend.dialect.name
    before = sql.latest("value_text", "as_of", dialect, "as_of <= :a")
    after = sql.latest("value_text", "as_of", dialect)
    rows = store.tuples(
        "SELECT fv, tv, count(*), min(fd), max(fd), min(td), max(td) FROM ("
        f"SELECT person_id, max(as_of) FILTER (WHERE as_of <= :a) AS fd, max(as_of) AS td, "
        f"{before} AS fv, {after} AS tv FROM trait_history "
        "WHERE trait = :t AND key = '' AND as_of <= :b GROUP BY person_id) s "
        "WHERE fd IS NULL OR td > fd GROUP BY fv, tv",
        {"a": p.start, "b": p.end, "t": TRAIT_5A},
    )
    matrix: dict[tuple[str, str], int] = {}
    new = 0
    days: list[Any] = []
    for fv, tv, n, fd0, fd1, td0, td1 in rows:
        if fd0 is None:
            new += int(n)
            continue
        matrix[(str(fv), str(tv))] = matrix.get((str(fv), str(tv)), 0) + int(n)
        days.append((fd0, fd1, td0, td1))
    seen = {s for pair in matrix for s in pair}
    order = list(STAGES_5A) + sorted(seen - set(STAGES_5A))
    rank = {s: i for i, s in enumerate(order)}
    persons = sum(matrix.values())
    up = sum(n for (f, t), n in matrix.items() if rank[t] > rank[f])
    down = sum(n for (f, t), n in matrix.items() if rank[t] < rank[f])
    stored: list[Any] = []
    if not persons:
        stored = [
            d
            for (d,) in store.tuples(
                "SELECT as_of FROM trait_history WHERE trait = :t AND key = '' "
                "GROUP BY as_of ORDER BY as_of DESC LIMIT 6",
                {"t": TRAIT_5A},
            )
        ]
    return {
        "persons": persons,
        "new": new,
        "stages": order,
        "matrix": matrix,
        "from_days": (min(d[0] for d in days), max(d[1] for d in days)) if days else None,
        "to_days": (min(d[2] for d in days), max(d[3] for d in days)) if days else None,
        "moves": [
            {"move": "up", "persons": up, "share": sql.ratio(up, persons)},
            {
                "move": "same",
                "persons": persons - up - down,
                "share": sql.ratio(persons - up - down, persons),
            },
            {"move": "down", "persons": down, "share": sql.ratio(down, persons)},
        ],
        "stored_days": stored,
    }


def cohorts(store: WorkspaceStore, p: Period, months: int = 12) -> dict[str, Any]:
    """Retention by month of first activity: cohort sizes and, per later month, the share active."""
    bounds = month_starts(p.end, months, p.tz)
    names, params = sql.boundaries(bounds, "b")
    query, (bits,) = sql.activity_mask([names], None, "hi", first=True)
    first_case, _ = sql.bucket("first_at", bounds, "b")
    params["hi"] = bounds[-1]
    sums = ", ".join(f"sum({sql.has(b)})" for b in bits)
    rows = store.tuples(
        f"WITH f AS ({query}) SELECT {first_case} AS cm, count(*), {sums} FROM f WHERE first_at >= :b0 GROUP BY 1",
        params,
    )
    by = {int(cm): (int(size), [int(v or 0) for v in active]) for cm, size, *active in rows if cm is not None}
    labels = [b.strftime("%Y-%m") for b in bounds[:-1]]
    table = []
    for c in range(months):
        size, active = by.get(c, (0, [0] * months))
        retained = [sql.ratio(active[c + k], size) if c + k < months else None for k in range(months)]
        table.append({"cohort": labels[c], "size": size, "retention": retained})
    return {"months": labels, "cohorts": table}


def drop_off(store: WorkspaceStore) -> list[dict[str, Any]]:
    """Journey entries that ended without reaching the goal, by journey and the node they ended on
    (holdout entries are left out: they never started)."""
    return [
        {"journey": j, "node": n, "status": s, "exit_reason": r, "entries": int(c)}
        for j, n, s, r, c in store.tuples(
            "SELECT journey, node, status, coalesce(exit_reason, ''), count(*) FROM journey_entry "
            "WHERE coalesce(arm, '') <> 'holdout' AND (status IN ('exited', 'failed') "
            "OR (status = 'done' AND coalesce(exit_reason, '') <> 'goal')) "
            "GROUP BY journey, node, status, coalesce(exit_reason, '') ORDER BY count(*) DESC, journey, node "
            "LIMIT 50"
        )
    ]
