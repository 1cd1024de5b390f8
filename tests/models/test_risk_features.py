"""Point-in-time features of the risk models: the PQA supply rules, and the same features on both engines."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from careloop.bench.patient360_bench import link_from_truth
from careloop.ingest.pipeline import Ingestor
from careloop.models import noshow
from careloop.models.risk_features import (
    Activity,
    class_supply,
    from_day,
    load_activity,
    person_features,
    to_day,
)
from careloop.profiles.adherence import Fill, class_adherence
from careloop.storage import connect
from careloop.synth import generate_network


def _activity(fills: list[tuple[int, str, str, int, int]], persons: int) -> Activity:
    """An activity holding only these fills: (person, drug, class, day, days supply)."""
    i0, f0, o0, b0 = (np.empty(0, np.int64), np.empty(0), np.empty(0, object), np.empty(0, np.bool_))
    p, drug, klass, day, supply = (
        (list(c) for c in zip(*fills, strict=True)) if fills else ([], [], [], [], [])
    )
    return Activity(
        persons=np.array([f"P{i:03d}" for i in range(persons)], dtype=object),
        birth_day=np.full(persons, np.nan),
        home_lat=np.full(persons, np.nan),
        home_lon=np.full(persons, np.nan),
        org_keys=o0,
        org_lat=f0,
        org_lon=f0,
        org_level=f0,
        fill_person=np.array(p, np.int64),
        fill_day=np.array(day, np.int64),
        fill_supply=np.array(supply, np.int64),
        fill_drug=np.array(drug, object),
        fill_class=np.array(klass, object),
        fill_retail=np.zeros(len(p), np.bool_),
        fill_amount=np.zeros(len(p)),
        visit_person=i0,
        visit_day=i0,
        visit_chronic=b0,
        visit_org=i0,
        care_person=np.array(p, np.int64),
        care_day=np.array(day, np.int64),
        appt_person=i0,
        appt_key=o0,
        appt_at=i0,
        appt_day=i0,
        appt_booked_day=f0,
        appt_known_day=i0,
        appt_status=i0,
        appt_channel=o0,
        appt_org=i0,
        appt_specialty=o0,
        event_person=i0,
        event_day=i0,
        fb_person=i0,
        fb_day=i0,
        fb_score=f0,
        fu_person=i0,
        fu_day=i0,
        fu_engaged_day=i0,
        data_end=max(day, default=0),
    )


def test_supply_follows_the_pqa_worked_example() -> None:
    """docs: 90-day fills on 2018-03-25, 07-05, 09-25, period end 2018-12-31 -> PDC 0.9574, the third
    fill shifted to start 2018-10-03 (run-out 2018-12-31)."""
    days = [to_day(date(2018, 3, 25)), to_day(date(2018, 7, 5)), to_day(date(2018, 9, 25))]
    act = _activity([(0, "amlodipine", "CCB", d, 90) for d in days], 1)
    t = to_day(date(2018, 12, 31))
    cs = class_supply(act, t)
    ref = class_adherence(
        "P000",
        "CCB",
        [Fill("P000", "amlodipine", "CCB", from_day(d), 90) for d in days],
        date(2018, 1, 1),
        date(2018, 12, 31),
    )
    assert from_day(int(cs.run_out[0])) == date(2018, 12, 31) == ref.run_out_date
    # the 365-day window ending 2018-12-31 starts 2018-01-01, as the reference's period
    assert cs.pdc[0] == pytest.approx(270 / 282, abs=1e-4) and ref.pdc == pytest.approx(cs.pdc[0])
    # the second fill came 12 days after the first ran out (late), the third 8 days early
    assert cs.late_refills[0] == 1 and cs.mean_delay[0] == pytest.approx((12 - 8) / 2)


def test_supply_matches_the_reference_on_random_fills() -> None:
    rng = np.random.default_rng(3)
    fills = []
    for person in range(60):
        for klass, drugs in (("CCB", ["amlodipine", "nifedipine"]), ("statin", ["atorvastatin"])):
            day = 18_000 + int(rng.integers(0, 200))
            for _ in range(int(rng.integers(1, 12))):
                supply = int(rng.choice([7, 30, 90]))
                fills.append((person, str(rng.choice(drugs)), klass, day, supply))
                day += int(supply + rng.integers(-20, 60))
    act = _activity(fills, 60)
    for t in (18_300, 18_700, 19_100):
        cs = class_supply(act, t)
        for i in range(len(cs.person)):
            mine = [f for f in fills if f[0] == cs.person[i] and f[2] == cs.klass[i] and t - 730 < f[3] <= t]
            ref = class_adherence(
                "p",
                str(cs.klass[i]),
                [Fill("p", d, k, from_day(day), s) for _, d, k, day, s in mine],
                from_day(t - 364),
                from_day(t),
            )
            assert ref.run_out_date is not None and to_day(ref.run_out_date) == cs.run_out[i]
            assert ref.fills == cs.fills[i]
            assert (ref.pdc is None and math.isnan(cs.pdc[i])) or cs.pdc[i] == pytest.approx(ref.pdc)
        # every (person, class) with a fill in the year is there, and nothing else
        expected = {(p, k) for p, _, k, day, _ in fills if t - 365 < day <= t}
        assert set(zip(cs.person.tolist(), cs.klass.tolist(), strict=True)) == expected


@pytest.fixture(scope="module")
def small_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("risk-small") / "net"
    generate_network(out, patients=300, seed=5, as_of=date(2026, 10, 31), chunk_size=300, quiet=True)
    return out


def _features(url: str, net: Path) -> dict[str, Any]:
    backend = connect(url)
    try:
        Ingestor(backend, "default").ingest(net, "parquet")
        store = backend.workspace("default")
        link_from_truth(store, net, backend.clock)
        act = load_activity(store, "Asia/Shanghai")
        t = act.data_end - 60
        order = np.argsort(act.appt_key.astype(str), kind="stable")
        appts = noshow.appointment_features(act, order.astype(np.int64))
        return {
            "persons": act.persons.tolist(),
            "data_end": act.data_end,
            "person": person_features(act, t).values,
            "appointments": appts.values,
            "fills": len(act.fill_day),
            "events": len(act.event_day),
            "follow_ups": int((act.fu_engaged_day > t).sum()),
        }
    finally:
        backend.close()


@pytest.mark.postgres
def test_same_features_on_duckdb_and_postgresql(
    small_net: Path, tmp_path: Path, postgres_server_url: str
) -> None:
    from tests.conftest import _reset_postgres

    duck = _features(f"duckdb:///{tmp_path / 'c.duckdb'}", small_net)
    _reset_postgres(postgres_server_url)
    pg = _features(postgres_server_url, small_net)
    assert duck["persons"] == pg["persons"] and duck["data_end"] == pg["data_end"]
    assert (duck["fills"], duck["events"], duck["follow_ups"]) == (
        pg["fills"],
        pg["events"],
        pg["follow_ups"],
    )
    assert duck["fills"] > 100 and duck["events"] > 100
    for key in ("person", "appointments"):
        np.testing.assert_array_equal(np.isnan(duck[key]), np.isnan(pg[key]))
        np.testing.assert_allclose(np.nan_to_num(duck[key]), np.nan_to_num(pg[key]))
