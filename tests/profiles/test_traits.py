"""Traits from every source of a person, on DuckDB and PostgreSQL: windows, filters, builtins, adherence."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from careloop.errors import ConfigError
from careloop.profiles.traits import compute_traits, load_traits, person_traits
from careloop.storage import Backend

AS_OF = date(2026, 10, 31)


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(backend: Backend):  # type: ignore[no-untyped-def]
    s = backend.workspace("default")
    # person P1 has records in two sources (his, pharmacy); P2 one; the record x9 is linked to nobody
    s.insert(
        "identity_link",
        [
            {"source": "his", "patient_key": "h1", "person_id": "P1", "rule": "id_number"},
            {"source": "pharmacy", "patient_key": "r1", "person_id": "P1", "rule": "id_number"},
            {"source": "his", "patient_key": "h2", "person_id": "P2", "rule": "alone"},
        ],
    )
    s.insert(
        "person",
        [
            {"person_id": "P1", "birth_date": date(1970, 11, 1), "sex": "female"},  # 55 on the as-of day
            {"person_id": "P2", "birth_date": date(2016, 1, 1)},
        ],
    )
    s.insert(
        "encounter",
        [
            {
                "source": "his",
                "key": "e1",
                "patient_key": "h1",
                "encounter_class": "outpatient",
                "start": at(2026, 10, 1),
            },
            {
                "source": "his",
                "key": "e2",
                "patient_key": "h1",
                "encounter_class": "outpatient",
                "start": at(2026, 5, 1),
            },
            {
                "source": "his",
                "key": "e3",
                "patient_key": "h1",
                "encounter_class": "outpatient",
                "start": at(2026, 11, 5),
            },
            {
                "source": "his",
                "key": "e4",
                "patient_key": "x9",
                "encounter_class": "outpatient",
                "start": at(2026, 10, 1),
            },
            {
                "source": "his",
                "key": "e5",
                "patient_key": "h2",
                "encounter_class": "emergency",
                "start": at(2025, 1, 1),
            },
        ],
    )
    # days are the patients' local days (Asia/Shanghai): 23:00 on the as-of day counts, 05:00 the next
    # morning (still the as-of day in UTC) does not
    s.insert(
        "encounter",
        [
            {"source": "his", "key": k, "patient_key": "h2", "encounter_class": "outpatient", "start": when}
            for k, when in (
                ("e6", datetime(2026, 10, 31, 15, 0, tzinfo=UTC)),
                ("e7", datetime(2026, 10, 31, 21, 0, tzinfo=UTC)),
            )
        ],
    )
    s.insert(
        "appointment",
        [
            {
                "source": "his",
                "key": "a1",
                "patient_key": "h1",
                "scheduled_at": at(2026, 9, 1),
                "status": "no_show",
            },
            {
                "source": "his",
                "key": "a2",
                "patient_key": "h1",
                "scheduled_at": at(2026, 9, 8),
                "status": "attended",
            },
            {
                "source": "his",
                "key": "a3",
                "patient_key": "h2",
                "scheduled_at": at(2026, 10, 20),
                "status": "cancelled",
            },
        ],
    )
    fills = [("d1", at(2025, 11, 5)), ("d2", at(2026, 2, 3)), ("d3", at(2026, 5, 4)), ("d4", at(2026, 8, 2))]
    s.insert(
        "dispense",
        [
            {
                "source": "pharmacy",
                "key": k,
                "patient_key": "r1",
                "drug_code": "atorvastatin",
                "drug_class": "statin",
                "dispensed_at": when,
                "days_supply": 90,
                "amount": 120.5,
            }
            for k, when in fills
        ],
    )
    return s


def _values(store, person: str) -> dict[tuple[str, str], object]:  # type: ignore[no-untyped-def]
    out = {}
    for r in person_traits(store, person):
        out[(r["trait"], r["key"])] = (
            r["value_text"]
            if r["value_text"] is not None
            else r["value_time"]
            if r["value_time"] is not None
            else r["value_num"]
        )
    return out


def test_shipped_traits_on_every_backend(store) -> None:  # type: ignore[no-untyped-def]
    summary = compute_traits(store, as_of=AS_OF)
    assert summary.persons == 2
    p1 = _values(store, "P1")
    assert p1[("visits_90d", "")] == 1.0  # 10-01; 11-05 is after the as-of day; x9 is nobody's
    assert p1[("visits_365d", "")] == 2.0
    assert p1[("last_visit_at", "")].date() == date(2026, 10, 1)  # type: ignore[union-attr]
    assert p1[("no_shows_365d", "")] == 1.0 and ("cancellations_90d", "") not in p1
    assert p1[("spend_365d", "")] == pytest.approx(4 * 120.5)  # the 2025-11-05 fill is 360 days back: in
    assert p1[("age", "")] == 55.0 and p1[("age_band", "")] == "55-64"  # birthday tomorrow
    assert p1[("sex", "")] == "female" and ("sex", "") not in _values(store, "P2")  # P2's is unknown
    # four back-to-back 90-day fills from 2025-11-05 (the index date): 2025-11-05 .. 2026-10-30 covered,
    # 360 of the 361 days to the as-of day
    assert p1[("pdc", "statin")] == pytest.approx(360 / 361) and p1[("pdc_adherent", "statin")] == 1.0
    assert p1[("pdc_run_out", "statin")].date() == date(2026, 10, 30)  # type: ignore[union-attr]
    p2 = _values(store, "P2")
    assert p2[("age_band", "")] == "<14" and p2[("cancellations_90d", "")] == 1.0
    assert p2.get(("visits_365d", "")) == 1.0, p2  # e6 only: e5 is too old, e7 is on the next local day
    # recomputing replaces, never duplicates
    compute_traits(store, as_of=AS_OF)
    assert (
        store.scalar("SELECT count(*) FROM trait_value WHERE person_id = 'P1' AND trait = 'visits_90d'") == 1
    )


def test_definitions_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    for body, message in (
        ("traits: {x: {from: nothing, aggregate: count}}", "`from` must name an entity"),
        ("traits: {x: {from: encounter, aggregate: median, of: cost}}", "`aggregate` must be one of"),
        (
            "traits: {x: {from: encounter, aggregate: sum, of: 'cost; DROP TABLE person'}}",
            "`of` must be a field",
        ),
        ("traits: {x: {from: encounter, aggregate: count, window_days: 30}}", "a window needs `time`"),
        ("traits: {x: {from: event, aggregate: count, where: {user_id: abc}}}", "personal identifiers"),
        ("traits: {x: {builtin: horoscope}}", "builtin 'horoscope'"),
    ):
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_traits(bad)


def test_where_values_are_parameters_not_sql(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.yaml"
    path.write_text(
        "traits:\n  odd:\n    from: appointment\n    aggregate: count\n    where: {status: \"no_show' OR '1'='1\"}\n",
        encoding="utf-8",
    )
    summary = compute_traits(store, load_traits(path), as_of=AS_OF)
    assert summary.values == 0 and store.count("person") == 2


def test_traits_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    from careloop.cli import app

    listed = orjson.loads(runner.invoke(app, ["traits", "list", "--json"]).stdout)
    assert "pdc" in {t["name"] for t in listed["traits"]}
    out = orjson.loads(runner.invoke(app, ["traits", "compute", "--as-of", "2026-10-31", "--json"]).stdout)
    assert out["values"] == 0  # an empty store computes nothing, and says so
    r = runner.invoke(app, ["traits", "show", "P404"])
    assert r.exit_code == 1 and "no person" in r.output
    r = runner.invoke(app, ["traits", "compute", "--trait", "nope"])
    assert r.exit_code == 2 and "careloop traits list" in r.output


def test_keyed_aggregates_and_preferred_channel(store) -> None:  # type: ignore[no-untyped-def]
    events = [("wechat_oa", 3), ("app", 2), ("sms", 2)]
    store.insert(
        "event",
        [
            {
                "source": "live",
                "key": f"{ch}{i}",
                "event_type": "track",
                "name": "x",
                "channel": ch,
                "occurred_at": at(2026, 10, 20),
                "person_id": "P1",
            }
            for ch, n in events
            for i in range(n)
        ]
        + [
            {
                "source": "live",
                "key": "tie",
                "event_type": "track",
                "name": "x",
                "channel": "sms",
                "occurred_at": at(2026, 10, 21),
                "person_id": "P2",
            },
            {
                "source": "live",
                "key": "tie2",
                "event_type": "track",
                "name": "x",
                "channel": "app",
                "occurred_at": at(2026, 10, 21),
                "person_id": "P2",
            },
        ],
    )
    compute_traits(store, as_of=AS_OF)
    p1, p2 = _values(store, "P1"), _values(store, "P2")
    assert p1[("events_90d_by_channel", "wechat_oa")] == 3.0 and p1[("events_90d_by_channel", "sms")] == 2.0
    assert p1[("preferred_channel", "")] == "wechat_oa"
    assert p2[("preferred_channel", "")] == "app"  # a tie goes to the first channel in order
    assert p1[("fills_365d_by_channel", "")] == 4.0  # the test rows name no channel: the empty key
    # computing only the preferred channel reads the stored per-channel counts
    compute_traits(store, as_of=AS_OF, only=["preferred_channel"])
    assert _values(store, "P1")[("preferred_channel", "")] == "wechat_oa"


def test_keyed_definitions_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    for body, message in (
        ("traits: {x: {from: event, aggregate: count, by: user_id}}", "`by` must be a text field"),
        ("traits: {x: {builtin: top_key}}", "needs `of`"),
        ("traits: {x: {from: event, aggregate: count}, y: {builtin: top_key, of: x}}", "computed `by`"),
    ):
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_traits(bad)


def test_first_match_stage_and_decision_type(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    compute_traits(store, as_of=AS_OF)
    p1, p2 = _values(store, "P1"), _values(store, "P2")
    assert p1[("stage_5a", "")] == "Act" and p2[("stage_5a", "")] == "Act"  # both had a recent visit
    assert p1[("decision_type", "")] == "中度"  # statin fills: chronic maintenance
    assert ("decision_type", "") not in p2  # no fills this year
    path = tmp_path / "t.yaml"
    path.write_text(
        "traits:\n"
        "  fills_by_class: {from: dispense, aggregate: count, by: drug_class}\n"
        "  kind:\n"
        "    builtin: first_match\n"
        "    rules:\n"
        "      - {value: severe, when: {trait: fills_by_class, key: [oncology], op: '>=', value: 1}}\n"
        "      - {value: chronic, when: {trait: fills_by_class, key: [statin, ARB], op: '>=', value: 3}}\n"
        "    default: none\n",
        encoding="utf-8",
    )
    compute_traits(store, load_traits(path), as_of=AS_OF)
    assert _values(store, "P1")[("kind", "")] == "chronic" and _values(store, "P2")[("kind", "")] == "none"
    path.write_text(
        "traits:\n  k: {builtin: first_match, rules: [{value: a, when: {trait: nope, op: exists}}]}\n"
    )
    with pytest.raises(ConfigError, match="not in this file"):
        load_traits(path)


def _history(store, trait: str = "stage_5a") -> dict[tuple[str, str, date], object]:  # type: ignore[no-untyped-def]
    return {
        (p, k, d): t if t is not None else n
        for p, k, d, t, n in store.tuples(
            "SELECT person_id, key, as_of, value_text, value_num FROM trait_history WHERE trait = :t",
            {"t": trait},
        )
    }


def test_history_is_written_per_day_and_idempotent(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = compute_traits(store, as_of=AS_OF)
    assert summary.history == {"stage_5a": 2} and summary.current
    assert _history(store) == {("P1", "", AS_OF): "Act", ("P2", "", AS_OF): "Act"}  # as trait_value
    assert {r[0] for r in store.tuples("SELECT DISTINCT trait FROM trait_history")} == {"stage_5a"}
    computed_at = store.scalar("SELECT max(computed_at) FROM trait_history")
    compute_traits(store, as_of=AS_OF)  # the same day again: that day's rows are replaced
    assert store.count("trait_history") == 2
    assert store.scalar("SELECT max(computed_at) FROM trait_history") >= computed_at
    compute_traits(store, as_of=date(2026, 3, 1), only=["stage_5a"])  # another day adds its own
    assert store.count("trait_history") == 4
    assert store.scalar("SELECT count(DISTINCT as_of) FROM trait_history") == 2
    # any text or number trait may keep history, keyed ones included
    path = tmp_path / "t.yaml"
    path.write_text(
        "traits:\n"
        "  visits_by_class:\n"
        "    {from: encounter, aggregate: count, time: start, by: encounter_class, history: true}\n"
        "  last_visit: {from: encounter, aggregate: max, of: start, time: start}\n",
        encoding="utf-8",
    )
    mine = load_traits(path)
    assert mine.traits["visits_by_class"].history and not mine.traits["last_visit"].history
    out = compute_traits(store, mine, as_of=AS_OF)
    assert out.history == {"visits_by_class": 3}
    assert _history(store, "visits_by_class") == {
        ("P1", "outpatient", AS_OF): 2.0,  # 10-01 and 05-01 (11-05 is after the day)
        ("P2", "outpatient", AS_OF): 1.0,  # e6 (e7 is on the next local day)
        ("P2", "emergency", AS_OF): 1.0,
    }


def test_history_only_leaves_current_values_and_computes_dependencies_then(store) -> None:  # type: ignore[no-untyped-def]
    compute_traits(store, as_of=AS_OF)
    before = sorted(store.tuples("SELECT * FROM trait_value"), key=str)
    assert _values(store, "P2")[("visits_180d", "")] == 1.0  # stored: a visit on the as-of day
    past = date(2026, 3, 1)
    summary = compute_traits(store, as_of=past, current=False)
    assert not summary.current and summary.history == {"stage_5a": 2} and summary.values == 2
    # stage_5a and what it reads were computed as of that day; nothing else was
    assert set(summary.per_trait) == {
        "stage_5a",
        "visits_180d",
        "fills_180d",
        "feedback_best_365d",
        "asks_90d",
        "online_consultations_180d",
        "events_90d",
        "last_visit_at",
        "last_fill_at",
        "last_event_by_channel",
    }
    assert sorted(store.tuples("SELECT * FROM trait_value"), key=str) == before  # untouched
    # P2's only visit before 2026-03-01 was on 2025-01-01: no longer recent then (the stored
    # visits_180d = 1 describes 2026-10-31), a history with us: Aware. P1 had fills in 180 days: Act.
    assert {k: v for k, v in _history(store).items() if k[2] == past} == {
        ("P1", "", past): "Act",
        ("P2", "", past): "Aware",
    }
    assert store.count("trait_history") == 4  # the as-of day's snapshot is still there
    compute_traits(store, as_of=past, current=False)
    assert store.count("trait_history") == 4  # idempotent per day


def test_history_option_is_checked(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="history: true"):
        compute_traits(store, as_of=AS_OF, only=["visits_90d"], current=False)
    bad = tmp_path / "t.yaml"
    for body, message in (
        ("traits: {x: {from: encounter, aggregate: count, history: yes please}}", "true or false"),
        (
            "traits: {x: {from: encounter, aggregate: max, of: start, time: start, history: true}}",
            "text and number values only",
        ),
    ):
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_traits(bad)
    bad.write_text("traits: {x: {from: encounter, aggregate: count}}", encoding="utf-8")
    with pytest.raises(ConfigError, match="no trait is declared"):
        compute_traits(store, load_traits(bad), as_of=AS_OF, current=False)


def test_history_only_cli() -> None:
    import os

    from careloop.cli import app
    from careloop.storage import connect

    b = connect(os.environ["CARELOOP_DATABASE_URL"])
    s = b.workspace("default")
    s.insert("identity_link", [{"source": "his", "patient_key": "h1", "person_id": "P1", "rule": "alone"}])
    s.insert("person", [{"person_id": "P1"}])
    s.insert(
        "encounter",
        [
            {
                "source": "his",
                "key": "e1",
                "patient_key": "h1",
                "encounter_class": "outpatient",
                "start": at(2026, 10, 1),
            }
        ],
    )
    b.close()
    runner = CliRunner()
    listed = orjson.loads(runner.invoke(app, ["traits", "list", "--json"]).stdout)
    assert {t["name"] for t in listed["traits"] if t["history"]} == {"stage_5a"}
    r = runner.invoke(app, ["traits", "compute", "--as-of", "2026-08-02", "--history-only", "--json"])
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.stdout)
    assert out["current"] is False and out["history"] == {"stage_5a": 1} and out["segments"] == {}
    r = runner.invoke(app, ["traits", "compute", "--as-of", "2026-10-31", "--history-only"])
    assert r.exit_code == 0 and "current values untouched" in r.output
    r = runner.invoke(app, ["traits", "compute", "--history-only", "--trait", "visits_90d"])
    assert r.exit_code == 2 and "history: true" in r.output
    b = connect(os.environ["CARELOOP_DATABASE_URL"])
    s = b.workspace("default")
    assert s.count("trait_value") == 0  # history-only never writes current values
    assert s.tuples("SELECT as_of, value_text FROM trait_history ORDER BY as_of") == [
        (date(2026, 8, 2), "O"),  # the only visit (10-01) is after that day: known, no history yet
        (date(2026, 10, 31), "Act"),
    ]
    b.close()
