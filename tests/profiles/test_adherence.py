"""PDC / MPR: the worked example of DOMAIN.md, the overlap rules as properties, and the CLI on a file."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from careloop.cli import app
from careloop.profiles.adherence import Fill, adherence, class_adherence, shifted_supplies, threshold_for

START, END = date(2018, 1, 1), date(2018, 12, 31)


def fill(
    day: date, days: int = 90, drug: str = "atorvastatin", cls: str = "statin", patient: str = "A"
) -> Fill:
    return Fill(patient, drug, cls, day, days)


def test_worked_example_of_domain_md() -> None:
    fills = [fill(date(2018, 3, 25)), fill(date(2018, 7, 5)), fill(date(2018, 9, 25))]
    supplies = shifted_supplies(fills)
    assert supplies[2][0] == date(2018, 10, 3)  # the third fill starts after the second runs out
    a = class_adherence("A", "statin", fills, START, END)
    assert (a.index_date, a.days_covered, a.days_in_period) == (date(2018, 3, 25), 270, 282)
    assert round(a.pdc or 0, 4) == 0.9574 and a.adherent is True
    assert round(a.mpr or 0, 4) == round(270 / 282, 4) and a.run_out_date == date(2018, 12, 31)


def test_one_fill_is_not_eligible_and_different_drugs_do_not_shift() -> None:
    a = class_adherence("A", "statin", [fill(date(2018, 6, 1), 30)], START, END)
    assert a.eligible is False and a.pdc is None and a.adherent is None
    same_day = [
        fill(date(2018, 12, 1), 31, drug="atorvastatin"),
        fill(date(2018, 12, 1), 31, drug="rosuvastatin"),
    ]
    assert class_adherence("A", "statin", same_day, START, END).eligible is False  # one date only
    two = [*same_day, fill(date(2018, 12, 15), 10, drug="rosuvastatin")]
    b = class_adherence("A", "statin", two, START, END)
    assert b.days_covered == 31 and b.pdc == 1.0  # the second drug covers the same days: no shift
    assert b.mpr == pytest.approx(72 / 31) and b.mpr_capped == 1.0


def test_supply_carried_in_from_before_the_period_counts() -> None:
    fills = [fill(date(2017, 12, 20), 30), fill(date(2018, 1, 10), 30), fill(date(2018, 2, 20), 30)]
    a = class_adherence("A", "statin", fills, START, date(2018, 3, 31))
    # index 2018-01-10; the December fill covers to 01-18, so the January refill runs 01-19 .. 02-17:
    # 01-10 .. 02-17 is covered (39 days), then the February fill 02-20 .. 03-21 (30 days)
    assert a.index_date == date(2018, 1, 10)
    assert a.days_covered == 39 + 30 and a.days_in_period == 81


def test_antiretroviral_threshold() -> None:
    assert threshold_for("Antiretroviral agents") == 0.90 and threshold_for("statin") == 0.80


fills_strategy = st.lists(
    st.tuples(
        st.integers(min_value=-60, max_value=364),  # day offset from the period start
        st.integers(min_value=1, max_value=120),  # days' supply
        st.sampled_from(["d1", "d2", "d3"]),  # drug of the class
    ),
    min_size=1,
    max_size=12,
)


def _fills(spec: list[tuple[int, int, str]]) -> list[Fill]:
    return [Fill("P", drug, "cls", START + timedelta(days=off), days) for off, days, drug in spec]


@settings(max_examples=300, deadline=None)
@given(fills_strategy)
def test_properties_of_pdc(spec: list[tuple[int, int, str]]) -> None:
    fills = _fills(spec)
    a = class_adherence("P", "cls", fills, START, END)
    if a.pdc is None:
        return
    assert 0.0 <= a.pdc <= 1.0
    assert a.days_covered <= a.days_in_period
    # order of rows never matters
    shuffled = fills[:]
    random.Random(1).shuffle(shuffled)
    assert class_adherence("P", "cls", shuffled, START, END) == a
    # an extra fill never lowers coverage
    more = class_adherence(
        "P", "cls", [*fills, Fill("P", "d1", "cls", END - timedelta(days=3), 5)], START, END
    )
    assert more.days_covered >= a.days_covered
    # without supply carried in, covered days never exceed the days supplied from the index date
    if all(f.filled_on >= START for f in fills):
        assert a.days_covered <= sum(f.days_supply for f in fills if f.filled_on >= a.index_date)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=200),
    st.lists(st.integers(min_value=1, max_value=60), min_size=2, max_size=8),
)
def test_same_drug_refills_shift_so_no_supply_is_lost(first: int, supplies: list[int]) -> None:
    """One drug refilled every time on the day the previous supply started (always early): shifting makes
    the supplies consecutive, so coverage is the total supplied, cut at the period end."""
    day = START + timedelta(days=first)
    fills = [Fill("P", "d1", "cls", day + timedelta(days=i), s) for i, s in enumerate(supplies)]
    a = class_adherence("P", "cls", fills, START, END)
    assert a.days_covered == min(sum(supplies), a.days_in_period)


def test_cli_on_a_fills_file(tmp_path: Path) -> None:
    path = tmp_path / "fills.csv"
    path.write_text(
        "member,ndc,cls,dispensed,supply\n"
        "A,atorvastatin,statin,2018-03-25,90\nA,atorvastatin,statin,2018-07-05,90\nA,atorvastatin,statin,2018-09-25,90\n"
        "B,tenofovir,antiretroviral,2018-06-01,30\nB,tenofovir,antiretroviral,2018-07-01,30\n"
        "C,metformin,biguanide,2018-13-01,30\nC,metformin,biguanide,2018-02-01,-5\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    args = [
        "adherence",
        "pdc",
        "--fills",
        str(path),
        "--period-start",
        "2018-01-01",
        "--period-end",
        "2018-12-31",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--patient-col" in r.output and "member" in r.output  # says what to do
    cols = ["--patient-col", "member", "--drug-col", "ndc", "--class-col", "cls", "--date-col", "dispensed"]
    r = runner.invoke(
        app, [*args, *cols, "--days-col", "supply", "--json", "--rejects", str(tmp_path / "rej.csv")]
    )
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.stdout)
    rows = {x["patient"]: x for x in out["rows"]}
    assert round(rows["A"]["pdc"], 4) == 0.9574 and rows["A"]["adherent"] is True
    assert rows["B"]["threshold"] == 0.9 and rows["B"]["days_in_period"] == 214
    assert [x["line"] for x in out["rejected_rows"]] == [7, 8]
    assert (tmp_path / "rej.csv").read_text().count("\n") == 3
    assert adherence([], START, END) == []
