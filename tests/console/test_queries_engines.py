"""The console's statements run on DuckDB and on PostgreSQL (when CARELOOP_TEST_POSTGRES_URL is set) and
agree with a recount in Python from the raw rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from careloop.console import executive as ex
from careloop.console import journey_analysis as ja
from careloop.console import marketing as mk
from careloop.console.period import Period
from careloop.profiles.traits import compute_traits
from careloop.storage import Backend
from tests.patients.conftest import make_linked, make_network

AS_OF = date(2026, 10, 31)
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_network(tmp_path_factory.mktemp("console-net") / "net")


def test_queries_on_each_engine(backend: Backend, network: Path) -> None:
    linked = make_linked(backend, network)
    store = linked.store
    compute_traits(store, as_of=AS_OF, clock=backend.clock)
    p = Period(AS_OF, 365, TZ)

    rows: list[tuple[str, object]] = []
    for table, col in (
        ("encounter", '"start"'),
        ("dispense", "dispensed_at"),
        ("consultation", "started_at"),
        ("appointment", "booked_at"),
    ):
        rows += store.tuples(
            f"SELECT l.person_id, r.{col} FROM {table} r JOIN identity_link l "
            "ON l.source = r.source AND l.patient_key = r.patient_key"
        )
    rows += store.tuples(
        "SELECT l.person_id, v.occurred_at FROM event v JOIN identity_link l ON l.source = v.source "
        "AND l.patient_key = v.patient_key WHERE v.name NOT IN ('message_delivered', 'message_failed')"
    )

    def active(q: Period) -> set[str]:
        return {pid for pid, at in rows if at is not None and q.lo <= at < q.hi}  # type: ignore[operator]

    pat = ex.patients(store, p)
    now, before = active(p), active(p.previous)
    assert pat["active"] == len(now) > 0 and pat["active_prev"] == len(before)
    assert pat["lapsing"] == len(before - now)
    assert pat["lapsing_prev"] == len(active(p.shifted(2)) - before)
    assert pat["persons"] == store.count("person")

    firsts: dict[str, object] = {}
    for pid, at in rows:
        if at is not None and at < p.hi and (pid not in firsts or at < firsts[pid]):  # type: ignore[operator]
            firsts[pid] = at
    coh = ja.cohorts(store, p)
    from careloop.console.period import month_starts

    bounds = month_starts(AS_OF, 12, TZ)
    assert sum(c["size"] for c in coh["cohorts"]) == sum(
        1
        for at in firsts.values()
        if bounds[0] <= at < bounds[-1]  # type: ignore[operator]
    )

    funnel = ja.funnel(store, p)
    counts = [f["persons"] for f in funnel]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    assert all(f["did_step"] >= f["persons"] for f in funnel)
    five = ja.stages_5a(store)
    assert five["total"] == store.scalar("SELECT count(*) FROM trait_value WHERE trait = 'stage_5a'")

    rev = ex.revenue(store, p)
    paid = store.scalar(
        "SELECT sum(cost) FROM encounter WHERE start >= :lo AND start < :hi", {"lo": p.lo, "hi": p.hi}
    )
    visits = next((r["current"] for r in rev["by_kind"] if r["kind"] == "visits"), 0.0)
    assert visits == pytest.approx(float(paid or 0))
    monthly = ex.monthly(store, p, pat)
    assert [m["active"] for m in monthly] == pat["active_by_month"]

    # the rest run and return numbers the same shape on both engines
    fu = ex.follow_up(store, p)
    assert fu["discharges_followed"] <= fu["discharges"]
    adh = ex.adherence(store)
    assert adh["adherent"] <= adh["pairs"]
    cli = ex.clinical(store, p)
    assert cli["bp_controlled"] <= cli["bp_measured"] and cli["glucose_controlled"] <= cli["glucose_measured"]
    sat = ex.satisfaction(store, p)
    assert sat["responses"] == store.scalar(
        "SELECT count(*) FROM feedback WHERE score IS NOT NULL AND scale_max > 0 AND submitted_at >= :lo "
        "AND submitted_at < :hi",
        {"lo": p.lo, "hi": p.hi},
    )
    roi = ex.campaign_roi(store, p)
    camps = mk.campaigns(store, p.lo, p.hi, started_only=True)
    assert roi["campaigns"] == len(camps)
    valued = [c for c in camps if c["value_treated"] is not None and c["cost"]]
    if valued:
        cost = sum(c["cost"] for c in valued)
        assert roi["roi"] == pytest.approx((sum(c["value_treated"] for c in valued) - cost) / cost)
    assert isinstance(mk.crm_channels(store, p.lo, p.hi), list)
    assert mk.crm_blocks(store, p.lo, p.hi) is not None
    assert mk.journey_sends_by_channel(store, p.lo, p.hi) == []
    assert mk.journeys(store) == []
    assert ja.drop_off(store) == []
