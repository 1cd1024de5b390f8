"""Receipts become events (once), 回T退订 replies and e-mail links become opt-outs the policy obeys."""

from __future__ import annotations

from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.clock import FixedClock
from careloop.identity.records import cipher_for
from careloop.journeys.engine import enter, run_due, save_journey, set_status
from careloop.messaging.inbound import is_stop, parse_replies, unsubscribe_token
from careloop.storage import Backend
from tests.journeys.test_engine import MORNING, _content, _people, _sends


def test_stop_words() -> None:
    assert all(is_stop(t) for t in ("T", " t ", "TD", "退订", "【退订】", "stop!", "N"))
    assert not any(is_stop(t) for t in ("谢谢", "T恤", "what", ""))
    got = parse_replies(
        [
            {"phone_number": "13800000001", "content": "T", "send_time": "2026-11-02 10:00:00"},
            {"mobile": "+8613800000002", "text": "好的"},
        ]
    )
    assert [(p, t) for p, t, _ in got] == [("13800000001", "T"), ("+8613800000002", "好的")]


def test_receipts_replies_and_unsubscribe_links(backend: Backend) -> None:
    clock = FixedClock(MORNING)
    store = backend.workspace("default")
    persons = _people(store, 3)
    cipher = cipher_for()
    store.execute(
        "UPDATE person SET phone_bidx = :b WHERE person_id = 'P001'",
        {"b": cipher.blind_index("+8613800000001", "phone")},
    )
    _content(store)
    spec = {
        "name": "clicky",
        "trigger": {"type": "api"},
        "holdout": False,
        "start": "s",
        "nodes": {
            "s": {"type": "send", "channel": "outbox", "content": "refill_sms", "next": "w"},
            "w": {"type": "wait", "event": "message_clicked", "timeout": "3d", "next": "done"},
            "done": {"type": "exit"},
        },
    }
    save_journey(store, spec, clock=clock)
    enter(store, set_status(store, "clicky", "published", clock=clock), persons, "api", clock=clock)
    run_due(store, clock=clock)
    key = store.scalar("SELECT idempotency_key FROM message_send WHERE person_id = 'P000'")
    with TestClient(create_app(backend=backend, clock=clock)) as client:
        body = {"receipts": [{"idempotency_key": key, "event": "message_clicked", "at": MORNING.isoformat()}]}
        assert client.post("/v1/channels/outbox/receipts", json=body).json() == {"stored": 1, "unknown": 0}
        assert client.post("/v1/channels/outbox/receipts", json=body).json() == {"stored": 0, "unknown": 0}
        assert store.tuples("SELECT person_id, name, channel FROM event WHERE source = 'channel:outbox'") == [
            ("P000", "message_clicked", "outbox")
        ]
        unknown = {"idempotency_key": "nobody:s:1", "event": "message_opened"}
        assert client.post("/v1/channels/outbox/receipts", json=unknown).json() == {"stored": 0, "unknown": 1}
        assert client.post("/v1/channels/fax/receipts", json=body).status_code == 400
        # the click woke P000's wait
        assert store.tuples("SELECT status, exit_reason FROM journey_entry WHERE person_id = 'P000'")[0][
            0
        ] in ("active", "waiting", "done")
        r = client.post("/v1/channels/sms/replies", json={"phone_number": "138 0000 0001", "content": "T"})
        assert r.json() == {"replies": 1, "unsubscribe": 1, "persons": 1, "new_optouts": 1}
        assert store.tuples("SELECT person_id, scope, channel, source FROM contact_optout") == [
            ("P001", "marketing", "sms", "sms_reply")
        ]
        token = unsubscribe_token(cipher, "P002", "email")
        assert client.get("/v1/unsubscribe", params={"t": token + "0"}).status_code == 400
        page = client.get("/v1/unsubscribe", params={"t": token})
        assert page.status_code == 200 and "已退订" in page.text
    run_due(store, clock=clock)  # (the server's worker may have done it already)
    woke = store.tuples(
        "SELECT s.outcome FROM journey_step s JOIN journey_entry e ON e.entry_id = s.entry_id "
        "WHERE e.person_id = :p AND s.node = 'w' AND s.kind = 'wait' ORDER BY s.at",
        {"p": "P000"},
    )
    assert sorted(w[0] for w in woke) == ["event", "waiting"]  # the click ended the wait, not the timeout
    optouts = dict(store.tuples("SELECT person_id, channel FROM contact_optout"))
    assert optouts == {"P001": "sms", "P002": "email"}
    # an opted-out patient gets no more marketing on that channel
    store.insert(
        "contact_optout",
        [{"person_id": "P000", "scope": "marketing", "channel": "*", "source": "api", "at": MORNING}],
    )
    spec2 = {
        **spec,
        "name": "again",
        "nodes": {"s": {"type": "send", "channel": "outbox", "content": "refill_sms"}},
    }
    save_journey(store, spec2, clock=clock)
    enter(store, set_status(store, "again", "published", clock=clock), ["P000"], "api", clock=clock)
    run_due(store, clock=clock)
    assert ("P000", "blocked", "unsubscribed") in _sends(store)
