"""The console's statements run on DuckDB and on PostgreSQL (when CARELOOP_TEST_POSTGRES_URL is set) and
agree with a recount in Python from the raw rows."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from careloop.console import executive as ex
from careloop.console import journey_analysis as ja
from careloop.console import marketing as mk
from careloop.console.period import Period
from careloop.profiles.traits import compute_traits
from careloop.storage import Backend, WorkspaceStore
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

    # the demo's way: a snapshot 90 days back (history only) beside the current one; the flows of the
    # 90-day period are the pairs of each person's two snapshots, recounted in Python
    compute_traits(store, as_of=AS_OF - timedelta(days=90), clock=backend.clock, current=False)
    snaps: dict[str, dict[date, str]] = {}
    for pid, day, stage in store.tuples(
        "SELECT person_id, as_of, value_text FROM trait_history WHERE trait = 'stage_5a'"
    ):
        snaps.setdefault(pid, {})[day] = stage
    assert {len(v) for v in snaps.values()} == {2}
    pairs: dict[tuple[str, str], int] = {}
    for by_day in snaps.values():
        key = (by_day[AS_OF - timedelta(days=90)], by_day[AS_OF])
        pairs[key] = pairs.get(key, 0) + 1
    flows = ja.flows_5a(store, Period(AS_OF, 90, TZ))
    assert flows["matrix"] == pairs and flows["persons"] == store.count("person")
    assert flows["from_days"] == (AS_OF - timedelta(days=90),) * 2 and flows["to_days"] == (AS_OF, AS_OF)
    assert sum(m["persons"] for m in flows["moves"]) == flows["persons"]

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
    _acquisition_matches_a_recount(store, p)
    assert isinstance(mk.crm_channels(store, p.lo, p.hi), list)
    assert mk.crm_blocks(store, p.lo, p.hi) is not None
    assert mk.journey_sends_by_channel(store, p.lo, p.hi) == []
    assert mk.journeys(store) == []
    assert ja.drop_off(store) == []


def test_5a_flows_on_each_engine(backend: Backend) -> None:
    from tests.console.world import SNAPSHOT_FLOWS, insert_snapshots

    backend.ensure_workspace("flows")
    store = backend.workspace("flows")
    p = Period(AS_OF, 90, TZ)
    empty = ja.flows_5a(store, p)
    assert empty["persons"] == 0 and empty["stored_days"] == [] and empty["from_days"] is None
    insert_snapshots(store)
    flows = ja.flows_5a(store, p)
    assert flows["matrix"] == SNAPSHOT_FLOWS and flows["persons"] == 4 and flows["new"] == 1
    assert flows["from_days"] == (date(2026, 7, 15), date(2026, 8, 1))
    assert flows["to_days"] == (date(2026, 10, 1), date(2026, 10, 30))
    assert [(m["move"], m["persons"], m["share"]) for m in flows["moves"]] == [
        ("up", 2, 0.5),
        ("same", 1, 0.25),
        ("down", 1, 0.25),
    ]
    none = ja.flows_5a(store, Period(date(2026, 7, 31), 90, TZ))  # nothing on or before 05-03
    assert none["persons"] == 0 and none["stored_days"][:2] == [date(2026, 11, 5), date(2026, 10, 30)]
    assert len(none["stored_days"]) == 6


def _acquisition_matches_a_recount(store: WorkspaceStore, p: Period) -> None:
    """New patients per campaign: persons converted by a treated message with no visit, fill or online
    consultation before the campaign started; CAC = cost / that count."""
    link = {
        (s, k): pid for s, k, pid in store.tuples("SELECT source, patient_key, person_id FROM identity_link")
    }
    first: dict[str, object] = {}
    for table, col in (
        ("encounter", '"start"'),
        ("dispense", "dispensed_at"),
        ("consultation", "started_at"),
    ):
        for src, key, at in store.tuples(f"SELECT source, patient_key, {col} FROM {table}"):
            pid = link.get((src, key))
            if pid is not None and at is not None and (pid not in first or at < first[pid]):  # type: ignore[operator]
                first[pid] = at
    holdout = {(s, k): bool(h) for s, k, h in store.tuples("SELECT source, key, is_holdout FROM message")}
    campaigns = {
        (s, k): (start, end, cost)
        for s, k, start, end, cost in store.tuples('SELECT source, key, start, "end", cost FROM campaign')
    }
    converted: dict[str, set[str]] = {}
    for src, key, mkey, ckey in store.tuples(
        "SELECT source, patient_key, message_key, campaign_key FROM touch WHERE touch_type = 'converted'"
    ):
        c = campaigns.get((src, ckey))
        pid = link.get((src, key))
        if c is None or pid is None or holdout.get((src, mkey), True):
            continue
        start, end = c[0], c[1] or c[0]
        if start < p.hi and end >= p.lo and (pid not in first or first[pid] >= start):  # type: ignore[operator]
            converted.setdefault(ckey, set()).add(pid)
    assert converted, "the test network has campaigns that bring new patients"
    camps = mk.campaigns(store, p.lo, p.hi)
    assert {c["campaign"]: c["acquired"] for c in camps if c["acquired"]} == {
        k: len(v) for k, v in converted.items()
    }
    for c in camps:
        if c["acquired"] and c["cost"] is not None:
            assert c["cac"] == pytest.approx(c["cost"] / c["acquired"])
