"""Booking evidence: a channel account joins the one adult it booked appointments for, and nobody else."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.identity.resolve import resolve
from careloop.identity.rules import ResolutionRules, load_rules, parse_rules
from careloop.storage import Backend
from careloop.storage.workspace import WorkspaceStore
from tests.identity.test_golden import T0, cipher

ADULT, MOTHER, CHILD, OTHER = "1001", "1002", "1003", "1004"


def _patients(store: WorkspaceStore, records: list[dict[str, Any]]) -> None:
    c = cipher()
    rows = []
    for r in records:
        row = {"name": None, "sex": None, "birth_date": None, "phone": None, **r}
        for kind in ("name", "phone"):
            if row[kind] is not None:
                row[f"{kind}_bidx"] = c.blind_index(row[kind], kind)
                row[kind] = c.encrypt(row[kind], kind)
            else:
                row[f"{kind}_bidx"] = None
        rows.append({**row, "_ingested_at": T0, "_updated_at": T0})
    store.insert("patient", pa.Table.from_pylist(rows))


def _booking(store: WorkspaceStore, n: int, account: str, source: str, patient: str, at: datetime) -> None:
    """An appointment booked through WeChat for `patient` at `at`, and the account's booking event a
    second later (the two systems' clocks differ)."""
    store.insert(
        "appointment",
        [
            {
                "source": "his_h001",
                "key": f"AP{n}",
                "patient_key": patient,
                "scheduled_at": at + timedelta(days=3),
                "status": "booked",
                "booked_at": at,
                "channel": "wechat",
                "org_key": "H001",
            }
        ],
    )
    store.insert(
        "event",
        pa.Table.from_pylist(
            [
                {
                    "source": source,
                    "key": f"EV{n}",
                    "event_type": "track",
                    "name": "appointment_booked",
                    "occurred_at": at + timedelta(seconds=1),
                    "channel": source,
                    "patient_key": account,
                    "properties": '{"org_key": "H001"}',
                }
            ]
        ),
    )


def _store(backend: Backend) -> WorkspaceStore:
    store = backend.workspace("default")
    his = [
        {"source": "his_h001", "key": ADULT, "name": "张伟明", "sex": "male", "birth_date": date(1980, 3, 4)},
        {
            "source": "his_h001",
            "key": MOTHER,
            "name": "李芳",
            "sex": "female",
            "birth_date": date(1975, 6, 1),
        },
        {"source": "his_h001", "key": CHILD, "name": "张小明", "sex": "male", "birth_date": date(2018, 1, 9)},
        {"source": "his_h001", "key": OTHER, "name": "赵敏", "sex": "female", "birth_date": date(1990, 2, 2)},
    ]
    followers = [
        {"source": "wechat_oa", "key": "oA-self"},  # an openid and nothing else
        {"source": "wechat_oa", "key": "oA-parent"},
        {"source": "wechat_oa", "key": "oA-family"},
        {"source": "wechat_oa", "key": "oA-named", "name": "王强"},
        {"source": "wechat_oa", "key": "oA-wrong-sex", "sex": "male"},
    ]
    _patients(store, his + followers)
    t = datetime(2026, 3, 2, 9, 0, tzinfo=T0.tzinfo)
    _booking(store, 1, "oA-self", "wechat_oa", ADULT, t)
    _booking(store, 2, "oA-self", "wechat_oa", ADULT, t + timedelta(days=40))
    _booking(store, 3, "oA-parent", "wechat_oa", CHILD, t + timedelta(hours=1))  # a child: a parent booked
    _booking(store, 4, "oA-family", "wechat_oa", MOTHER, t + timedelta(hours=2))
    _booking(store, 5, "oA-family", "wechat_oa", OTHER, t + timedelta(hours=3))  # two people: a family's
    _booking(store, 6, "oA-named", "wechat_oa", OTHER, t + timedelta(hours=4))  # 王强 is not 赵敏
    _booking(store, 7, "oA-wrong-sex", "wechat_oa", MOTHER, t + timedelta(hours=5))
    return store


def _persons(store: WorkspaceStore) -> dict[str, tuple[str, str | None]]:
    rows = store.tuples("SELECT patient_key, person_id, rule FROM identity_link")
    return {k: (p, r) for k, p, r in rows}


def _rules(**booking: Any) -> ResolutionRules:
    """The default rules without the model (a handful of records trains nothing), `booking` set on the
    booking rule."""
    data = load_rules().model_dump()
    data["probabilistic"] = False
    for rule in data["rules"]:
        if rule["field"] == "booking":
            rule.update(booking)
    return parse_rules(data)


def test_an_account_joins_the_one_adult_it_booked_for(backend: Backend, clock: FixedClock) -> None:
    store = _store(backend)
    resolve(store, clock=clock, rules=_rules(), downstream=False)
    links = _persons(store)
    assert links["oA-self"] == (links[ADULT][0], "booked_for_self")
    for alone in ("oA-parent", "oA-family", "oA-named", "oA-wrong-sex"):
        assert links[alone][1] == "alone", (alone, links[alone])
    assert len({p for p, _ in links.values()}) == len(links) - 1


def test_booking_evidence_needs_a_unique_match_in_time(backend: Backend, clock: FixedClock) -> None:
    store = _store(backend)
    # the event is a second after the appointment: no match without a tolerance
    resolve(store, clock=clock, rules=_rules(within_seconds=0), downstream=False)
    assert _persons(store)["oA-self"][1] == "alone"


def test_bad_booking_rules_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="a booking rule needs events"):
        parse_rules({"rules": [{"name": "b", "kind": "attach", "field": "booking", "events": ["x"]}]})
    with pytest.raises(ConfigError, match="belong to an attach rule with field: booking"):
        parse_rules({"rules": [{"name": "p", "kind": "attach", "field": "phone", "events": ["x"]}]})
    with pytest.raises(ConfigError, match="within_seconds"):
        parse_rules(
            {
                "rules": [
                    {
                        "name": "b",
                        "kind": "attach",
                        "field": "booking",
                        "events": ["appointment_booked"],
                        "channels": {"wechat_oa": "wechat"},
                        "within_seconds": -1,
                    }
                ]
            }
        )
