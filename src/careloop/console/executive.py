# ruff: noqa: S608  (fixed SQL fragments and :name placeholders only; values are parameters)
"""The executive dashboard's numbers (管理层仪表盘): one set-based statement each, for a period and the
period before it. Definitions (docs/console.md):

- **active**: persons with a visit, fill, online consultation, booking or event in the period;
  **new**: persons first seen (golden record) in the period; **lapsing**: active in the previous
  period, not in this one;
- **revenue proxy**: visit costs + pharmacy amounts + online-consultation fees recorded in the period;
- **follow-up**: staff tasks (journeys' nurse / pharmacist calls) done among those created in the period;
  and discharges followed by a visit (follow-up, outpatient or online) within 30 days;
- **adherence**: the share of (person, drug class) PDC values ≥ 80 % (trait ``pdc_adherent``, as of its day);
- **clinical attainment**: hypertensive patients (ICD-10 I10-I15) whose latest blood pressure in the
  period is < 140/90 mmHg; diabetic patients (E10-E14) whose latest HbA1c is < 7 % (else fasting glucose
  4.4-7.0 mmol/L);
- **satisfaction**: mean feedback score as a share of its scale, satisfied share (≥ 80 % of the scale),
  NPS where the scale is 0-10;
- **campaign ROI**: campaigns started in the period, (conversion value - cost) / cost, over campaigns
  that record conversion values — last-touch attributed; the marketing view adds holdout uplift.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from careloop.console import sql
from careloop.console.period import Period, month_starts
from careloop.storage import WorkspaceStore

BP_CODES = ("8480-6", "8462-4")  # systolic, diastolic (LOINC)
HBA1C, FASTING_GLUCOSE = "4548-4", "14771-0"
HYPERTENSION = ("I10", "I11", "I12", "I13", "I15")
DIABETES = ("E10", "E11", "E12", "E13", "E14")
BP_TARGET = (140.0, 90.0)
HBA1C_TARGET = 7.0
FPG_RANGE = (4.4, 7.0)
FOLLOW_UP_DAYS = 30


def patients(store: WorkspaceStore, p: Period, months: int = 12) -> dict[str, Any]:
    """Persons; active / new / lapsing in the period and the previous one; active persons per calendar
    month over the `months` months up to the period's end — one pass over the activity."""
    bounds = month_starts(p.end, months, p.tz)
    q0 = p.shifted(2).lo
    per_names, params = sql.boundaries([q0, p.previous.lo, p.lo, p.hi], "w")
    month_names, month_params = sql.boundaries(bounds, "b")
    params |= month_params | {"lo": min(q0, bounds[0]), "hi": max(p.hi, bounds[-1])}
    query, (per_bits, month_bits) = sql.activity_mask([per_names, month_names], "lo", "hi")
    in_q, in_p, in_c = (sql.has(b) for b in per_bits)
    row = store.tuples(
        f"WITH f AS ({query}) SELECT sum({in_c}), sum({in_p}), "
        f"sum(CASE WHEN {in_p} = 1 AND {in_c} = 0 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN {in_q} = 1 AND {in_p} = 0 THEN 1 ELSE 0 END), "
        + ", ".join(f"sum({sql.has(b)})" for b in month_bits)
        + " FROM f",
        params,
    )[0]
    c, pr, lapsing, lapsing_prev, *per_month = (int(v or 0) for v in row)
    total, new, new_prev = store.tuples(
        "SELECT count(*), sum(CASE WHEN first_seen_at >= :c0 AND first_seen_at < :hi THEN 1 ELSE 0 END), "
        "sum(CASE WHEN first_seen_at >= :p0 AND first_seen_at < :c0 THEN 1 ELSE 0 END) FROM person",
        {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi},
    )[0]
    return {
        "persons": int(total or 0),
        "active": c,
        "active_prev": pr,
        "new": int(new or 0),
        "new_prev": int(new_prev or 0),
        "lapsing": lapsing,
        "lapsing_prev": lapsing_prev,
        "months": [b.strftime("%Y-%m") for b in bounds[:-1]],
        "active_by_month": per_month,
    }


def revenue(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """Recorded money per kind (visits, pharmacy, online) in the period and the previous one."""
    w = {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi}
    parts = [
        ("visits", "encounter", "start", "cost"),
        ("pharmacy", "dispense", "dispensed_at", "amount"),
        ("online", "consultation", "started_at", "fee"),
    ]
    union = " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, r.\"{t}\" AS at, r.{v} AS v FROM {table} r "
        f'WHERE r.{v} IS NOT NULL AND r."{t}" >= :p0 AND r."{t}" < :hi'
        for kind, table, t, v in parts
    )
    rows = store.tuples(
        "SELECT kind, sum(CASE WHEN at >= :c0 THEN v ELSE 0 END), sum(CASE WHEN at < :c0 THEN v ELSE 0 END), "
        f"count(*) FROM ({union}) x GROUP BY kind",
        w,
    )
    by = {k: (sql.num(c) or 0.0, sql.num(pr) or 0.0, int(n)) for k, c, pr, n in rows}
    return {
        "total": sum(v[0] for v in by.values()),
        "total_prev": sum(v[1] for v in by.values()),
        "records": sum(v[2] for v in by.values()),
        "by_kind": [{"kind": k, "current": by[k][0], "previous": by[k][1]} for k, *_ in parts if k in by],
    }


def follow_up(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """Follow-up tasks done among those created in the period; discharges followed up within 30 days
    (discharges whose 30 days ended in the period, so every one had the full 30 days)."""
    w = {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi}
    t = store.tuples(
        "SELECT sum(CASE WHEN created_at >= :c0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN created_at >= :c0 AND status = 'done' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN created_at < :c0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN created_at < :c0 AND status = 'done' THEN 1 ELSE 0 END) "
        "FROM staff_task WHERE created_at >= :p0 AND created_at < :hi AND status <> 'cancelled'",
        w,
    )[0]
    days = timedelta(days=FOLLOW_UP_DAYS)
    d = {"p0": w["p0"] - days, "c0": w["c0"] - days, "hi": w["hi"] - days, "fhi": w["hi"]}
    dis = sql.linked(
        "encounter", "e", 'coalesce(e."end", e.start)', "p0", "hi", "e.encounter_class = 'inpatient'"
    )
    fu = sql.linked(
        "encounter",
        "e",
        "e.start",
        "p0",
        "fhi",
        "e.encounter_class IN ('follow_up', 'outpatient', 'online') AND e.patient_key IN "
        "(SELECT l2.patient_key FROM identity_link l2 WHERE l2.person_id IN (SELECT pid FROM dis))",
    )
    r = store.tuples(
        f"WITH dis AS ({dis}), fu AS ({fu}), "
        "x AS (SELECT d.pid, d.at, max(CASE WHEN f.at > d.at AND f.at <= d.at + INTERVAL '30' DAY THEN 1 ELSE 0 END) AS ok "
        "FROM dis d LEFT JOIN fu f ON f.pid = d.pid GROUP BY d.pid, d.at) "
        "SELECT sum(CASE WHEN at >= :c0 THEN 1 ELSE 0 END), sum(CASE WHEN at >= :c0 THEN ok ELSE 0 END), "
        "sum(CASE WHEN at < :c0 THEN 1 ELSE 0 END), sum(CASE WHEN at < :c0 THEN ok ELSE 0 END) FROM x",
        d,
    )[0]
    ints = [int(v or 0) for v in (*t, *r)]
    return {
        "tasks": ints[0],
        "tasks_done": ints[1],
        "tasks_prev": ints[2],
        "tasks_done_prev": ints[3],
        "discharges": ints[4],
        "discharges_followed": ints[5],
        "discharges_prev": ints[6],
        "discharges_followed_prev": ints[7],
    }


def adherence(store: WorkspaceStore) -> dict[str, Any]:
    """PDC ≥ 80 % per drug class from the ``pdc_adherent`` trait (1 / 0 per person and class)."""
    rows = store.tuples(
        "SELECT key, count(*), sum(CASE WHEN value_num >= 1 THEN 1 ELSE 0 END) FROM trait_value "
        "WHERE trait = 'pdc_adherent' GROUP BY key ORDER BY count(*) DESC, key"
    )
    persons, all_ok, as_of = store.tuples(
        "SELECT count(*), sum(ok), max(as_of) FROM (SELECT person_id, min(CASE WHEN value_num >= 1 THEN 1 ELSE 0 END) AS ok, "
        "max(as_of) AS as_of FROM trait_value WHERE trait = 'pdc_adherent' GROUP BY person_id) x"
    )[0]
    pairs = sum(int(n) for _, n, _ in rows)
    adherent = sum(int(a or 0) for _, _, a in rows)
    return {
        "as_of": as_of,
        "pairs": pairs,
        "adherent": adherent,
        "persons": int(persons or 0),
        "persons_all_adherent": int(all_ok or 0),
        "by_class": [
            {"drug_class": k, "measured": int(n), "adherent": int(a or 0), "share": sql.ratio(a or 0, n)}
            for k, n, a in rows
        ],
    }


def clinical(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """Blood-pressure and glucose attainment of hypertensive / diabetic patients, latest reading in the
    period (and in the previous one)."""
    codes = ", ".join(f"'{c}'" for c in (*BP_CODES, HBA1C, FASTING_GLUCOSE))
    params = {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi, "sys": BP_TARGET[0], "dia": BP_TARGET[1]}
    params |= {"a1c": HBA1C_TARGET, "fpg_lo": FPG_RANGE[0], "fpg_hi": FPG_RANGE[1]}
    dialect = store.backend.dialect.name
    per = "CASE WHEN ob.effective_at >= :c0 THEN 0 ELSE 1 END"
    # the latest reading per record and code, then per person and code (records of one person from
    # several sources), then the person's four values side by side
    latest = (
        f"SELECT ob.source, ob.patient_key, ob.code, {per} AS per, max(ob.effective_at) AS at, "
        f"{sql.latest('ob.value_num', 'ob.effective_at', dialect)} AS v FROM observation ob "
        f"WHERE ob.code IN ({codes}) AND ob.value_num IS NOT NULL AND ob.effective_at >= :p0 "
        f"AND ob.effective_at < :hi GROUP BY ob.source, ob.patient_key, ob.code, {per}"
    )
    person = (
        f"SELECT k.per, l.person_id AS pid, k.code, {sql.latest('k.v', 'k.at', dialect)} AS v FROM k "
        "JOIN identity_link l ON l.source = k.source AND l.patient_key = k.patient_key "
        "GROUP BY k.per, l.person_id, k.code"
    )

    def diagnosed(prefixes: tuple[str, ...]) -> str:
        listed = ", ".join(f"'{c}'" for c in prefixes)
        return (
            "SELECT DISTINCT l.person_id AS pid FROM condition c JOIN identity_link l "
            "ON l.source = c.source AND l.patient_key = c.patient_key "
            f"WHERE substr(c.code, 1, 3) IN ({listed})"
        )

    rows = store.tuples(
        f"WITH k AS ({latest}), pc AS ({person}), "
        f"lp AS (SELECT per, pid, max(CASE WHEN code = '{BP_CODES[0]}' THEN v END) AS sys, "
        f"max(CASE WHEN code = '{BP_CODES[1]}' THEN v END) AS dia, max(CASE WHEN code = '{HBA1C}' THEN v END) AS a1c, "
        f"max(CASE WHEN code = '{FASTING_GLUCOSE}' THEN v END) AS fpg FROM pc GROUP BY per, pid), "
        f"htn AS ({diagnosed(HYPERTENSION)}), dm AS ({diagnosed(DIABETES)}) "
        "SELECT lp.per, "
        "sum(CASE WHEN h.pid IS NOT NULL AND lp.sys IS NOT NULL AND lp.dia IS NOT NULL THEN 1 ELSE 0 END), "
        "sum(CASE WHEN h.pid IS NOT NULL AND lp.sys < :sys AND lp.dia < :dia THEN 1 ELSE 0 END), "
        "sum(CASE WHEN d.pid IS NOT NULL AND (lp.a1c IS NOT NULL OR lp.fpg IS NOT NULL) THEN 1 ELSE 0 END), "
        "sum(CASE WHEN d.pid IS NOT NULL AND (lp.a1c < :a1c OR (lp.a1c IS NULL AND lp.fpg >= :fpg_lo AND lp.fpg <= :fpg_hi)) THEN 1 ELSE 0 END) "
        "FROM lp LEFT JOIN htn h ON h.pid = lp.pid LEFT JOIN dm d ON d.pid = lp.pid GROUP BY lp.per",
        params,
    )
    by = {int(per): [int(v or 0) for v in vals] for per, *vals in rows}
    cur, prev = by.get(0, [0, 0, 0, 0]), by.get(1, [0, 0, 0, 0])
    return {
        "bp_measured": cur[0],
        "bp_controlled": cur[1],
        "bp_measured_prev": prev[0],
        "bp_controlled_prev": prev[1],
        "glucose_measured": cur[2],
        "glucose_controlled": cur[3],
        "glucose_measured_prev": prev[2],
        "glucose_controlled_prev": prev[3],
    }


def satisfaction(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """Feedback scores in the period and the previous one."""
    rows = store.tuples(
        "SELECT CASE WHEN submitted_at >= :c0 THEN 0 ELSE 1 END AS per, count(*), avg(score / scale_max), "
        "sum(CASE WHEN score / scale_max >= 0.8 THEN 1 ELSE 0 END), sum(CASE WHEN scale_max = 10 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN scale_max = 10 AND score >= 9 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN scale_max = 10 AND score <= 6 THEN 1 ELSE 0 END), min(scale_max), max(scale_max) "
        "FROM feedback WHERE score IS NOT NULL AND scale_max > 0 AND submitted_at >= :p0 AND submitted_at < :hi "
        "GROUP BY 1",
        {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi},
    )
    out: dict[str, Any] = {}
    for per, n, mean, satisfied, n10, promoters, detractors, smin, smax in rows:
        suffix = "" if int(per) == 0 else "_prev"
        out["responses" + suffix] = int(n)
        out["mean_share" + suffix] = sql.num(mean)
        out["satisfied" + suffix] = int(satisfied or 0)
        out["nps_responses" + suffix] = int(n10 or 0)
        out["nps" + suffix] = (int(promoters or 0) - int(detractors or 0)) / int(n10) * 100 if n10 else None
        out["scale" + suffix] = sql.num(smax) if smin == smax else None
    for suffix in ("", "_prev"):
        out.setdefault("responses" + suffix, 0)
        out.setdefault("mean_share" + suffix, None)
        out.setdefault("satisfied" + suffix, 0)
        out.setdefault("nps_responses" + suffix, 0)
        out.setdefault("nps" + suffix, None)
        out.setdefault("scale" + suffix, None)
    return out


def campaign_roi(store: WorkspaceStore, p: Period) -> dict[str, Any]:
    """ROI of the campaigns started in the period and of those started in the previous one: cost, and
    the value of the conversions of their treated (not held-out) messages, over the campaigns that
    record conversion values (the definitions of `careloop.console.marketing.campaigns`)."""
    rows = store.tuples(
        "WITH v AS (SELECT t.source, t.campaign_key, sum(t.value) AS value FROM touch t "
        "JOIN message m ON m.source = t.source AND m.key = t.message_key "
        "WHERE t.touch_type = 'converted' AND NOT m.is_holdout GROUP BY t.source, t.campaign_key) "
        "SELECT CASE WHEN c.start >= :c0 THEN 0 ELSE 1 END AS per, count(*), sum(c.cost), "
        "sum(CASE WHEN v.value IS NOT NULL AND c.cost > 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN v.value IS NOT NULL AND c.cost > 0 THEN c.cost END), "
        "sum(CASE WHEN v.value IS NOT NULL AND c.cost > 0 THEN v.value END) "
        "FROM campaign c LEFT JOIN v ON v.source = c.source AND v.campaign_key = c.key "
        "WHERE c.start >= :p0 AND c.start < :hi GROUP BY 1",
        {"p0": p.previous.lo, "c0": p.lo, "hi": p.hi},
    )
    out: dict[str, Any] = {}
    for per, n, cost, valued, cost_v, value in rows:
        suffix = "" if int(per) == 0 else "_prev"
        cv, vv = sql.num(cost_v) or 0.0, sql.num(value) or 0.0
        out |= {
            "campaigns" + suffix: int(n),
            "valued" + suffix: int(valued or 0),
            "cost" + suffix: sql.num(cost) or 0.0,
            "value" + suffix: vv,
            "roi" + suffix: (vv - cv) / cv if cv else None,
        }
    for suffix in ("", "_prev"):
        for k, default in (("campaigns", 0), ("valued", 0), ("cost", 0.0), ("value", 0.0), ("roi", None)):
            out.setdefault(k + suffix, default)
    return out


def monthly(store: WorkspaceStore, p: Period, active: dict[str, Any]) -> list[dict[str, Any]]:
    """Active persons (from `patients`) and revenue per calendar month up to the period's end."""
    months = len(active["months"])
    bounds = month_starts(p.end, months, p.tz)
    case, params = sql.bucket("at", bounds, "b")
    params |= {"lo": bounds[0], "hi": bounds[-1]}
    money = " UNION ALL ".join(
        f'SELECT r."{t}" AS at, r.{v} AS v FROM {table} r WHERE r.{v} IS NOT NULL AND r."{t}" >= :lo AND r."{t}" < :hi'
        for table, t, v in (
            ("encounter", "start", "cost"),
            ("dispense", "dispensed_at", "amount"),
            ("consultation", "started_at", "fee"),
        )
    )
    spent = dict(store.tuples(f"SELECT {case} AS m, sum(v) FROM ({money}) x GROUP BY 1", params))
    return [
        {
            "month": active["months"][i],
            "active": active["active_by_month"][i],
            "revenue": sql.num(spent.get(i)) or 0.0,
        }
        for i in range(months)
    ]
