"""Segments: 24 definitions give the same members in SQL (DuckDB and PostgreSQL) as the Python evaluator
behind `explain`; names and values cannot inject SQL."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.profiles.segments import (
    count,
    explain,
    get_segment,
    members,
    parse,
    refresh,
    refresh_all,
    save_segment,
    update_memberships,
)
from careloop.storage import Backend, WorkspaceStore

AS_OF = date(2026, 10, 31)
N = 60
BANDS = ["<14", "14-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]

DEFINITIONS: list[object] = [
    {"trait": "age", "op": ">=", "value": 65},
    {"trait": "age", "op": "between", "value": [45, 64]},
    {"trait": "age_band", "op": "in", "value": ["25-34", "35-44"]},
    {"trait": "age_band", "op": "not_in", "value": ["<14"]},
    {"trait": "age", "op": "missing"},
    {"trait": "pdc", "op": "exists", "key": "*"},
    {"trait": "pdc", "key": "statin", "op": "<", "value": 0.8},
    {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0},
    {"trait": "visits_90d", "op": "=", "value": 0, "default": 0},
    {"trait": "visits_90d", "op": ">=", "value": 2},
    {"trait": "visits_90d", "op": "!=", "value": 1},
    {"trait": "last_visit_at", "op": "<", "value": "-90d"},
    {"trait": "last_visit_at", "op": ">=", "value": "2026-09-01"},
    {"trait": "pdc_run_out", "key": "*", "op": "between", "value": ["-1d", "+7d"]},
    {"event": "refill_reminder_clicked", "op": ">=", "count": 2, "within": "30d"},
    {"event": "refill_reminder_clicked", "op": "=", "count": 0},
    {"event": "app_opened", "op": ">", "count": 3},
    {"not": {"event": "app_opened", "count": 1, "within": "7d"}},
    {
        "all": [
            {"trait": "age", "op": ">=", "value": 45},
            {"trait": "pdc_adherent", "key": "*", "op": "=", "value": 0},
        ]
    },
    {"any": [{"trait": "age", "op": "<", "value": 14}, {"trait": "age", "op": ">=", "value": 75}]},
    {
        "all": [
            {"not": {"trait": "visits_90d", "op": ">", "value": 0}},
            {"trait": "last_visit_at", "op": "exists"},
        ]
    },
    {
        "any": [
            {"event": "refill_reminder_clicked", "count": 1},
            {"trait": "pdc", "key": "ARB", "op": ">=", "value": 0.9},
        ]
    },
    {
        "all": [
            {"trait": "age_band", "op": "=", "value": "55-64"},
            {"not": {"event": "app_opened", "count": 1}},
        ]
    },
    {"segment": "老年"},
    {"trait": "pdc", "key": ["statin", "ARB"], "op": ">=", "value": 0.5},
    {"household": {"trait": "age", "op": "<", "value": 14}},
    {
        "all": [
            {"trait": "age", "op": ">=", "value": 45},
            {"household": {"event": "app_opened", "count": 1, "within": "30d"}, "min": 1},
        ]
    },
    {"not": {"household": {"trait": "visits_90d", "op": ">=", "value": 1}, "min": 2}},
]


def _seed(store: WorkspaceStore) -> None:
    rng = random.Random(42)
    at = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    persons, traits, links, events = [], [], [], []
    for i in range(N):
        pid = f"P{i:03d}"
        persons.append({"person_id": pid})
        links.append({"source": "app", "patient_key": f"a{i}", "person_id": pid, "rule": "alone"})

        def tv(trait: str, key: str = "", **v: object) -> None:
            traits.append({"person_id": pid, "trait": trait, "key": key, "as_of": at, **v})  # noqa: B023

        if rng.random() < 0.9:
            age = rng.randint(3, 90)
            tv("age", value_num=float(age))
            tv("age_band", value_text=BANDS[min(7, sum(age >= b for b in (14, 25, 35, 45, 55, 65, 75)))])
        for cls in ("statin", "ARB"):
            if rng.random() < 0.4:
                pdc = round(rng.random(), 2)
                tv("pdc", cls, value_num=pdc)
                tv("pdc_adherent", cls, value_num=1.0 if pdc >= 0.8 else 0.0)
                tv("pdc_run_out", cls, value_time=at + timedelta(days=rng.randint(-20, 20)))
        if rng.random() < 0.7:
            tv("visits_90d", value_num=float(rng.randint(0, 3)))
        if rng.random() < 0.8:
            tv("last_visit_at", value_time=at - timedelta(days=rng.randint(0, 300)))
        for k in range(rng.randint(0, 6)):
            name = rng.choice(["refill_reminder_clicked", "app_opened"])
            when = at - timedelta(days=rng.randint(0, 60))
            live = rng.random() < 0.5  # live events carry their person; file events their record
            events.append(
                {
                    "source": "app",
                    "key": f"{pid}-{k}",
                    "event_type": "track",
                    "name": name,
                    "occurred_at": when,
                    "channel": "app",
                    "person_id": pid if live else None,
                    "patient_key": None if live else f"a{i}",
                }
            )
    homes = [  # households of 1-4 persons, in order
        {"household_id": f"H{i // 3:03d}", "person_id": f"P{i:03d}", "role": "member"}
        for i in range(N)
        if i % 7 != 0
    ]
    store.insert("household_member", homes)
    store.insert("person", persons)
    store.insert("trait_value", traits)
    store.insert("identity_link", links)
    store.insert("event", events)


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    s = backend.workspace("default")
    _seed(s)
    save_segment(s, "老年", {"trait": "age", "op": ">=", "value": 65})
    refresh(s, "老年", as_of=AS_OF)
    return s


def test_sql_and_explanations_agree_on_every_definition(store: WorkspaceStore) -> None:
    assert len(DEFINITIONS) >= 20
    persons = [f"P{i:03d}" for i in range(N)]
    sizes = []
    for d in DEFINITIONS:
        got = members(store, d, as_of=AS_OF)
        expected = [p for p in persons if explain(store, d, p, as_of=AS_OF)["in"]]
        assert got == expected, d
        assert count(store, d, as_of=AS_OF) == len(got)
        sizes.append(len(got))
    assert all(0 < n < N for n in sizes[:4])  # the data exercises the definitions, not only edge cases
    assert all(0 < n < N for n in sizes[-3:])  # household conditions too


def test_incremental_updates_agree_with_full_refresh(store: WorkspaceStore) -> None:
    persons = [f"P{i:03d}" for i in range(N)]
    for i, d in enumerate(DEFINITIONS):
        save_segment(store, f"d{i}", d)
    segs = [get_segment(store, f"d{i}") for i in range(len(DEFINITIONS))]
    # from empty memberships, the per-person evaluator finds exactly the SQL members
    update_memberships(store, persons[:25], segs, as_of=AS_OF)
    update_memberships(store, persons[25:], segs, as_of=AS_OF)
    for i, d in enumerate(DEFINITIONS):
        stored = sorted(
            r[0]
            for r in store.tuples("SELECT person_id FROM segment_member WHERE segment = :s", {"s": f"d{i}"})
        )
        assert stored == members(store, d, as_of=AS_OF), d
    # a full refresh then finds nothing to change
    assert all(o["entered"] == o["left"] == 0 for o in refresh_all(store, as_of=AS_OF).values())
    # new events for one person: the incremental update equals what a full refresh would do
    store.insert(
        "event",
        [
            {
                "source": "app",
                "key": f"new-{k}",
                "event_type": "track",
                "name": "refill_reminder_clicked",
                "occurred_at": datetime(2026, 10, 30, 9, tzinfo=UTC),
                "channel": "app",
                "person_id": "P004",
            }
            for k in range(3)
        ],
    )
    out = update_memberships(store, ["P004"], segs, as_of=AS_OF, cause="event")
    assert out["d14"]["entered"] == 1  # refill_reminder_clicked >= 2 within 30d
    assert all(o["entered"] == o["left"] == 0 for o in refresh_all(store, as_of=AS_OF).values())
    change = store.tuples(
        "SELECT change, cause FROM segment_change WHERE segment = 'd14' AND person_id = 'P004'"
    )
    assert ("entered", "event") in change


def test_trait_changes_re_evaluate_the_segments_that_use_them(store: WorkspaceStore) -> None:
    from careloop.profiles.segments import segments_using

    save_segment(store, "老年活跃", {"all": [{"segment": "老年"}, {"event": "app_opened", "count": 1}]})
    save_segment(store, "家有儿童", {"household": {"trait": "age", "op": "<", "value": 14}})
    save_segment(store, "复诊", {"trait": "visits_90d", "op": ">=", "value": 1})
    assert segments_using(store, ["age"]) == ["家有儿童", "老年", "老年活跃"]
    assert segments_using(store, ["visits_90d", "pdc"]) == ["复诊"]
    refresh_all(store, as_of=AS_OF)
    young = store.scalar(
        "SELECT person_id FROM trait_value WHERE trait = 'age' AND value_num < 60 ORDER BY person_id"
    )
    store.execute(
        "UPDATE trait_value SET value_num = 70 WHERE trait = 'age' AND person_id = :p", {"p": young}
    )
    out = refresh_all(store, segments_using(store, ["age"]), as_of=AS_OF, cause="traits")
    assert out["老年"]["entered"] == 1 and out["老年"]["left"] == 0
    assert store.tuples(
        "SELECT change, cause FROM segment_change WHERE segment = '老年' AND person_id = :p", {"p": young}
    ) == [("entered", "traits")]


def test_explain_says_why_condition_by_condition(store: WorkspaceStore) -> None:
    d = {
        "all": [
            {"trait": "age", "op": ">=", "value": 45},
            {"event": "app_opened", "count": 1, "within": "30d"},
        ]
    }
    out = explain(store, d, "P000", as_of=AS_OF)
    leaves = out["because"]["because"]
    assert leaves[0]["condition"] == "age >= 45" and "seen" in leaves[0]
    assert leaves[1]["condition"] == "event app_opened >= 1 within 30d" and isinstance(leaves[1]["seen"], int)
    assert out["in"] == (leaves[0]["holds"] and leaves[1]["holds"])


def test_refresh_reports_entries_and_exits(store: WorkspaceStore) -> None:
    save_segment(store, "活跃", {"event": "app_opened", "count": 1, "within": "30d"})
    first = refresh(store, "活跃", as_of=AS_OF)
    assert first["entered"] == first["members"] > 0 and first["left"] == 0
    save_segment(store, "活跃", {"event": "app_opened", "count": 1, "within": "7d"})  # narrower: version 2
    second = refresh(store, "活跃", as_of=AS_OF)
    assert (
        second["left"] > 0
        and second["entered"] == 0
        and second["members"] == first["members"] - second["left"]
    )
    assert store.scalar("SELECT max(version) FROM segment_member WHERE segment = '活跃'") == 2


def test_bad_definitions_and_references(store: WorkspaceStore) -> None:
    with pytest.raises(ConfigError, match="unknown segment"):
        save_segment(store, "x", {"segment": "nope"})
    with pytest.raises(ConfigError, match="cannot contain itself"):
        save_segment(store, "老年", {"segment": "老年"})
    with pytest.raises(ConfigError, match="within"):
        parse({"event": "x", "within": "a month"})
    with pytest.raises(ConfigError, match="segment name"):
        save_segment(store, "a; DROP TABLE person", {"trait": "age", "op": ">", "value": 1})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trait=st.text(min_size=1, max_size=20),
    text=st.text(max_size=20),
    event=st.text(min_size=1, max_size=20),
)
def test_names_and_values_never_reach_the_sql_text(
    backend: Backend, trait: str, text: str, event: str
) -> None:
    store = backend.workspace("fuzz")
    if not store.scalar("SELECT count(*) FROM person"):
        store.insert("person", [{"person_id": "F1"}])
    d = {
        "any": [
            {"trait": trait, "op": "=", "value": text},
            {"trait": trait, "key": text, "op": "exists"},
            {"event": event, "count": 1},
        ]
    }
    if (
        "\x00" in trait + text + event
    ):  # PostgreSQL cannot hold NUL in text: refused up front, on every backend
        with pytest.raises(ConfigError, match="NUL"):
            count(store, d, as_of=AS_OF)
    else:
        assert count(store, d, as_of=AS_OF) in (0, 1)
    assert store.count("person") == 1


def test_segment_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from careloop.cli import app
    from careloop.storage import connect

    backend = connect()
    try:
        _seed(backend.workspace("default"))
    finally:
        backend.close()
    runner = CliRunner()
    r = runner.invoke(app, ["segment", "create", "老年", '{trait: age, op: ">=", value: 65}', "--json"])
    assert r.exit_code == 0, r.output
    definition = tmp_path / "d.yaml"
    definition.write_text("all:\n  - {segment: 老年}\n  - {event: app_opened, count: 1}\n", encoding="utf-8")
    assert runner.invoke(app, ["segment", "create", "活跃老年", str(definition)]).exit_code == 0
    for name in ("老年", "活跃老年"):
        out = orjson.loads(
            runner.invoke(app, ["segment", "refresh", name, "--as-of", "2026-10-31", "--json"]).stdout
        )[0]
        n = orjson.loads(
            runner.invoke(app, ["segment", "count", name, "--as-of", "2026-10-31", "--json"]).stdout
        )
        assert out["members"] == n["count"] > 0
    member = orjson.loads(runner.invoke(app, ["segment", "members", "活跃老年", "--json"]).stdout)[0][
        "person_id"
    ]
    why = orjson.loads(
        runner.invoke(
            app, ["segment", "explain", "活跃老年", member, "--as-of", "2026-10-31", "--json"]
        ).stdout
    )
    assert why["in"] is True and why["because"]["because"][0]["condition"] == "member of 老年"
    r = runner.invoke(app, ["segment", "export", "活跃老年", "--output", str(tmp_path / "m.csv")])
    assert r.exit_code != 0 and "purpose" in r.output  # person-level exports need a recorded purpose
    r = runner.invoke(
        app,
        ["segment", "export", "活跃老年", "--output", str(tmp_path / "m.csv"), "--purpose", "care follow-up"],
    )
    assert r.exit_code == 0 and (tmp_path / "m.csv").read_text().startswith("person_id,segment,version")
    again = orjson.loads(
        runner.invoke(app, ["segment", "refresh", "--all", "--as-of", "2026-10-31", "--json"]).stdout
    )
    assert [o["segment"] for o in again] == ["老年", "活跃老年"]  # referenced first
    assert all(o["entered"] == o["left"] == 0 for o in again)
    assert runner.invoke(app, ["segment", "refresh"]).exit_code == 2
    r = runner.invoke(app, ["segment", "create", "bad", "{all: []}"])
    assert r.exit_code == 2 and "non-empty list" in r.output
    r = runner.invoke(app, ["segment", "count", "nope"])
    assert r.exit_code == 1 and "careloop segment list" in r.output


def test_counts_are_identical_on_duckdb_and_postgresql(
    tmp_path: Path, clock: FixedClock, postgres_server_url: str
) -> None:
    """The same data in both engines: every definition selects the same persons."""
    from careloop.storage import connect
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_server_url)
    got = {}
    for name, url in (("duckdb", f"duckdb:///{tmp_path / 'x.duckdb'}"), ("postgres", postgres_server_url)):
        backend = connect(url, clock=clock)
        try:
            s = backend.workspace("default")
            _seed(s)
            save_segment(s, "老年", {"trait": "age", "op": ">=", "value": 65})
            refresh(s, "老年", as_of=AS_OF)
            got[name] = [members(s, d, as_of=AS_OF) for d in DEFINITIONS]
        finally:
            backend.close()
    assert len(DEFINITIONS) >= 20
    assert got["duckdb"] == got["postgres"]
    assert sum(len(m) for m in got["duckdb"]) > 0
