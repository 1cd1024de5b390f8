"""The consent ledger in the journey engine, end to end (DuckDB and PostgreSQL): a patient under 14 without
a guardian's consent is never messaged — blocked at send time with the reason, nothing delivered — while
adults, children whose guardian consented and a child who turns 14 while the journey waits are."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from careloop.channels.outbox import OutboxChannel, OutboxConfig
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.domain.identifiers import id_check_char
from careloop.journeys.engine import enter, run_due
from careloop.messaging.dispatch import Dispatcher
from careloop.privacy import consent as ledger
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage import Backend, WorkspaceStore
from tests.journeys.test_engine import MORNING, _content, _journey, _people, _publish


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


def _id_number(birth: date) -> str:
    first = f"110105{birth:%Y%m%d}007"
    return first + id_check_char(first)


def test_an_under_14_patient_without_guardian_consent_is_never_messaged(store: WorkspaceStore) -> None:
    clock = FixedClock(MORNING)  # 2026-11-02 10:00 in Shanghai
    # everyone has an ingested marketing consent of their own (not a guardian's)
    adult, child, guarded, child_by_id, nearly_14 = _people(store, 5)
    births = {
        adult: date(1980, 4, 1),
        child: date(2016, 7, 1),
        guarded: date(2015, 1, 1),
        nearly_14: date(2012, 11, 4),
    }
    for pid, born in births.items():
        store.execute("UPDATE person SET birth_date = :b WHERE person_id = :p", {"b": born, "p": pid})
    s = get_settings()
    token = FieldCipher(load_keyring(s.key_file, environment=s.environment)).encrypt(
        _id_number(date(2017, 3, 3)), "id_number"
    )
    store.execute("UPDATE person SET id_number = :t WHERE person_id = :p", {"t": token, "p": child_by_id})
    ledger.record(
        store,
        guarded,
        "marketing",
        "grant",
        clock=FixedClock(MORNING - timedelta(days=1)),
        data_category="personal",
        guardian_relation="mother",
        proof="form-g1",
    )
    _content(store)
    soon = _publish(store, _journey(name="soon"), clock)  # wait 1h, send marketing (outbox)
    late = _publish(
        store,
        _journey(
            name="late",
            nodes={
                "w": {"type": "wait", "duration": "3d", "next": "s"},
                "s": {"type": "send", "channel": "outbox", "content": "refill_sms", "purpose": "marketing"},
            },
        ),
        clock,
    )
    enter(store, soon, [adult, child, guarded, child_by_id], "api", clock=clock)
    enter(store, late, [child, nearly_14], "api", clock=clock)
    run_due(store, clock=clock)  # the waits start
    for _ in range(4):  # past the hour, then past the 14th birthday (2026-11-04, local)
        clock.advance(timedelta(days=1))
        run_due(store, clock=clock)
    sends = {
        (j, p): (st, why)
        for j, p, st, why in store.tuples("SELECT journey, person_id, status, reason FROM message_send")
    }
    assert sends == {
        ("soon", adult): ("pending", None),
        ("soon", child): ("blocked", "guardian_consent_required"),
        ("soon", guarded): ("pending", None),
        ("soon", child_by_id): ("blocked", "guardian_consent_required"),  # age from the ID number
        ("late", child): ("blocked", "guardian_consent_required"),
        ("late", nearly_14): ("pending", None),  # 14 by the time the send was due
    }
    outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
    assert Dispatcher(lambda st, kind: outbox, clock=clock)(store)["sent"] == 3
    delivered = {p for (p,) in store.tuples("SELECT person_id FROM outbox_message")}
    assert delivered == {adult, guarded, nearly_14}
    # the guardian withdraws: the next send to that child is blocked too
    ledger.record(store, guarded, "marketing", "withdraw", clock=clock)
    again = _publish(store, _journey(name="again"), clock)
    enter(store, again, [guarded], "api", clock=clock)
    run_due(store, clock=clock)  # starts the hour's wait
    clock.advance(timedelta(hours=2))
    run_due(store, clock=clock)
    assert store.tuples("SELECT status, reason FROM message_send WHERE journey = 'again'") == [
        ("blocked", "consent_withdrawn")
    ]
    assert MORNING < datetime(2026, 11, 3, 16, 0, tzinfo=UTC) < clock.now()  # the birthday was crossed
    assert (
        store.scalar(
            "SELECT count(*) FROM outbox_message WHERE person_id IN (:a, :b)", {"a": child, "b": child_by_id}
        )
        == 0
    )
