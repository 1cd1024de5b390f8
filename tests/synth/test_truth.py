"""Ground truth: consistent with the data, and the planted effects are visible (but not deterministic)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from careloop.synth.catalog import DRUG_CLASSES
from careloop.synth.files import FILES, PATIENT_SOURCES
from tests.synth.conftest import Net

CUTOFF = date(2026, 10, 31) - timedelta(days=89)


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row


def _con(net: Net) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Shanghai'")
    for name in ("identity", "churn", "no_show", "adherence", "persons", "campaigns"):
        con.register(name, net.truth(name))
    for source in ("his_h001", "his_h002", "his_h003", "his_h004", "his_jc"):
        con.register(f"{source}_appointment", net.table(FILES[(source, "appointment")].path("parquet")))
    parts = []
    for source in PATIENT_SOURCES:
        if (source, "dispense") in FILES:
            t = net.table(FILES[(source, "dispense")].path("parquet"))
            parts.append(t.append_column("source", pa.array([source] * t.num_rows, pa.string())))
    con.register("dispense", pa.concat_tables(parts))
    con.register("message", net.table("crm/message.parquet"))
    con.register("touch", net.table("crm/touch.parquet"))
    return con


def test_no_show_truth_covers_every_appointment(net: Net) -> None:
    con = _con(net)
    sources = ("his_h001", "his_h002", "his_h003", "his_h004", "his_jc")
    data = con.execute(
        " UNION ALL ".join(f"SELECT '{s}' AS source, key, status FROM {s}_appointment" for s in sources)
    ).fetchall()
    truth = con.execute("SELECT source, appointment_key, status FROM no_show").fetchall()
    assert sorted(data) == sorted(truth)
    # outcome equals the shown status except for bookings after the as-of date
    mismatched = con.execute("SELECT DISTINCT status FROM no_show WHERE status <> outcome").fetchall()
    assert mismatched in ([], [("booked",)])


def test_no_show_drivers_raise_no_shows(net: Net) -> None:
    con = _con(net)
    base = "FROM no_show WHERE origin = 'visit' AND outcome IN ('attended', 'no_show')"

    def rate(where: str) -> float:
        return float(_one(con, f"SELECT avg((outcome = 'no_show')::INT) {base} AND {where}")[0])

    assert rate("prior_no_shows >= 1") > rate("prior_no_shows = 0") + 0.05
    assert rate("lead_time_days > 14") > rate("lead_time_days <= 2") + 0.04
    overall, mean_p = _one(con, f"SELECT avg((outcome = 'no_show')::INT), avg(p_no_show) {base}")
    assert 0.05 < overall < 0.2
    assert abs(overall - mean_p) < 0.03  # calibrated: outcomes are drawn from p
    assert 0.0 < rate("p_no_show > 0.5") < 1.0  # noisy, not deterministic


def test_churn_truth_and_effect(net: Net) -> None:
    con = _con(net)
    n, churn_rate, mean_p = _one(
        con, "SELECT count(*), avg(churned::INT), avg(p_true) FROM churn WHERE active_at_cutoff"
    )
    assert n > 100 and 0.05 < churn_rate < 0.35 and abs(churn_rate - mean_p) < 0.06
    low, high = _one(
        con,
        "SELECT avg(churned::INT) FILTER (WHERE q = 1), avg(churned::INT) FILTER (WHERE q = 4) "
        "FROM (SELECT churned, ntile(4) OVER (ORDER BY p_true) AS q FROM churn WHERE active_at_cutoff)",
    )
    assert high > low + 0.1
    with_cancel, without = _one(
        con,
        "SELECT avg(churned::INT) FILTER (WHERE cancelled_appointments_180d >= 1), "
        "avg(churned::INT) FILTER (WHERE cancelled_appointments_180d = 0) FROM churn WHERE active_at_cutoff",
    )
    assert with_cancel > without
    assert _one(con, "SELECT count(*) FROM churn WHERE NOT active_at_cutoff AND churned IS NOT NULL")[0] == 0


def test_churned_patients_have_no_chronic_fills_in_the_final_window(net: Net) -> None:
    con = _con(net)
    classes = ", ".join(f"'{c}'" for c in DRUG_CLASSES)
    late = _one(
        con,
        f"""SELECT count(*) FROM dispense d JOIN identity i ON i.source = d.source AND i.patient_key = d.patient_key
            JOIN churn c ON c.person_id = i.person_id
            WHERE c.churned AND d.drug_class IN ({classes}) AND CAST(d.dispensed_at AS DATE) >= DATE '{CUTOFF}'""",
    )[0]
    assert late == 0
    active_late = _one(
        con,
        f"""SELECT count(DISTINCT c.person_id) FROM dispense d
            JOIN identity i ON i.source = d.source AND i.patient_key = d.patient_key
            JOIN churn c ON c.person_id = i.person_id
            WHERE c.active_at_cutoff AND NOT c.churned AND CAST(d.dispensed_at AS DATE) >= DATE '{CUTOFF}'""",
    )[0]
    assert active_late > 0


def _pdc(fills: list[tuple[date, int]], end: date) -> float | None:
    """PQA PDC of one drug, written independently of the generator (DOMAIN.md)."""
    fills = sorted(fills)
    if len({d for d, _ in fills}) < 2:
        return None
    covered: set[date] = set()
    next_free = fills[0][0]
    for day, supply in fills:
        start = max(day, next_free)
        for k in range(supply):
            d = start + timedelta(days=k)
            if d <= end:
                covered.add(d)
        next_free = start + timedelta(days=supply)
    period = (end - fills[0][0]).days + 1
    return len(covered) / period


def test_adherence_truth_matches_the_dispenses(net: Net) -> None:
    con = _con(net)
    rows = con.execute(
        """SELECT i.person_id, d.drug_class, CAST(d.dispensed_at AS DATE), d.days_supply
           FROM dispense d JOIN identity i ON i.source = d.source AND i.patient_key = d.patient_key"""
    ).fetchall()
    fills: dict[tuple[str, str], list[tuple[date, int]]] = defaultdict(list)
    for person, cls, day, supply in rows:
        fills[(person, cls)].append((day, supply))
    truth = con.execute("SELECT person_id, drug_class, pdc, n_fills, pattern FROM adherence").fetchall()
    assert truth
    for person, cls, pdc, n_fills, _ in truth:
        got = _pdc(fills[(person, cls)], date(2026, 10, 31))
        assert len(fills[(person, cls)]) == n_fills
        if pdc is None:
            assert got is None
        else:
            assert got is not None and abs(got - pdc) < 1e-3, (person, cls, got, pdc)
    by_pattern = dict(con.execute("SELECT pattern, avg(pdc) FROM adherence GROUP BY 1").fetchall())
    assert by_pattern["adherent"] > 0.9 > by_pattern["irregular"] > by_pattern["lapsed"]
    sql = "SELECT count(*) FROM adherence WHERE pattern = 'switched_channel' AND channel_path LIKE '%>%'"
    assert _one(con, sql)[0] > 0


def test_campaign_holdouts_and_uplift(net: Net) -> None:
    con = _con(net)
    share = _one(con, "SELECT avg(is_holdout::INT) FROM message")[0]
    assert 0.07 < share < 0.13
    treated, holdout = _one(
        con,
        """SELECT avg(conv::INT) FILTER (WHERE NOT is_holdout), avg(conv::INT) FILTER (WHERE is_holdout)
           FROM (SELECT m.is_holdout, EXISTS (SELECT 1 FROM touch t WHERE t.message_key = m.key
                 AND t.touch_type = 'converted') AS conv FROM message m WHERE m.status = 'delivered' OR m.is_holdout)""",
    )
    assert treated > holdout
    blocked = con.execute("SELECT DISTINCT status, block_reason FROM message WHERE is_holdout").fetchall()
    assert blocked == [("blocked", "holdout")]


def test_feedback_text_follows_the_score(net: Net) -> None:
    from careloop.synth.texts import NEGATIVE, POSITIVE

    texts: dict[int, list[str]] = defaultdict(list)
    for source in ("his_h001", "his_h002", "his_jc", "internet_hospital", "call_centre"):
        for r in net.table(f"{source}/feedback.parquet").to_pylist():
            if r["text"]:
                texts[int(r["score"])].append(r["text"])
    neg = {s: sum(any(p in t for p in NEGATIVE) for t in ts) / len(ts) for s, ts in texts.items()}
    pos = {s: sum(any(p in t for p in POSITIVE) for t in ts) / len(ts) for s, ts in texts.items()}
    assert neg[5] == 0 and pos[1] == 0 if 1 in pos else True
    assert neg[2] == 1.0 and pos[5] == 1.0
    assert set(texts) >= {2, 3, 4, 5}
