"""Delivery of reserved sends: outbox exactly once, retries with back-off, dead letters, no address."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult
from careloop.channels.outbox import OutboxChannel, OutboxConfig
from careloop.clock import FixedClock
from careloop.journeys.engine import enter, run_due, save_journey, set_status
from careloop.messaging.content import move, save_content
from careloop.messaging.dispatch import Dispatcher
from careloop.storage import Backend, WorkspaceStore
from tests.journeys.test_engine import MORNING, _people


class Flaky(Channel[ChannelConfig]):
    """Answers retry for the first `fails` attempts of each message, then sent."""

    name = "flaky"
    kind = "sms"
    Config = ChannelConfig

    def __init__(self, fails: int) -> None:
        super().__init__(ChannelConfig())
        self.fails, self.calls = fails, {}

    def _send(self, message: OutboundMessage) -> SendResult:
        n = self.calls[message.idempotency_key] = self.calls.get(message.idempotency_key, 0) + 1
        return (
            SendResult.retry("provider busy", "Throttling") if n <= self.fails else SendResult.sent(f"m{n}")
        )

    def parse_receipts(self, payload: Any, headers: Any, params: Any = None) -> list[Receipt]:
        return []


def _reserve(store: WorkspaceStore, clock: FixedClock, n: int, kind: str = "outbox") -> None:
    persons = _people(store, n)
    save_content(store, "hello", kind=kind, body={"zh": "您好，{{ age | int }}岁的朋友"}, purpose="marketing")
    move(store, "hello", 1, "approve", by="reviewer")
    store.insert(
        "trait_value", [{"person_id": p, "trait": "age", "key": "", "value_num": 60.0} for p in persons]
    )
    spec = {
        "name": "hi",
        "trigger": {"type": "api"},
        "holdout": False,
        "start": "s",
        "nodes": {"s": {"type": "send", "channel": kind, "content": "hello"}},
    }
    save_journey(store, spec, clock=clock)
    pub = set_status(store, "hi", "published", clock=clock)
    enter(store, pub, persons, "api", clock=clock)
    run_due(store, clock=clock)


def test_outbox_delivery_is_exactly_once_even_when_repeated(backend: Backend) -> None:
    store = backend.workspace("default")
    clock = FixedClock(MORNING)
    _reserve(store, clock, 5)
    outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
    d = Dispatcher(lambda s, kind: outbox, clock=clock)
    assert d(store) == {"sent": 5, "failed": 0, "retry": 0, "dead": 0}
    assert d(store)["sent"] == 0  # nothing pending any more
    # a crash after the outbox write but before the ledger said sent: delivered again, written once
    store.execute("UPDATE message_send SET status = 'pending', next_attempt_at = :t", {"t": MORNING})
    assert d(store)["sent"] == 5
    assert store.scalar("SELECT count(*) FROM outbox_message") == 5
    assert store.scalar("SELECT count(DISTINCT idempotency_key) FROM outbox_message") == 5
    assert store.scalar("SELECT min(body) FROM outbox_message") == "您好，60岁的朋友"


def test_retries_back_off_then_dead_letter(backend: Backend) -> None:
    store = backend.workspace("default")
    clock = FixedClock(MORNING)
    _reserve(store, clock, 1, kind="sms")
    flaky = Flaky(fails=2)
    d = Dispatcher(lambda s, kind: flaky, clock=clock)
    d._address = lambda store, channel, person: "+8613800000000"  # type: ignore[method-assign]
    assert d(store)["retry"] == 1
    assert d(store)["retry"] == 0  # not due yet: the channel's retry_after (60 s by default)
    clock.advance(timedelta(seconds=61))
    assert d(store)["retry"] == 1  # second failure
    clock.advance(timedelta(seconds=61))
    assert d(store)["sent"] == 1
    assert store.tuples("SELECT status, attempts, provider_message_id FROM message_send") == [
        ("sent", 3, "m3")
    ]
    # a channel that never recovers: dead after send_max_attempts (5)
    store.execute(
        "UPDATE message_send SET status = 'pending', attempts = 0, next_attempt_at = :t", {"t": clock.now()}
    )
    always = Flaky(fails=99)
    d2 = Dispatcher(lambda s, kind: always, clock=clock)
    d2._address = d._address  # type: ignore[method-assign]
    for _ in range(6):
        d2(store)
        clock.advance(timedelta(hours=1))
    assert store.tuples("SELECT status, attempts, reason FROM message_send") == [("dead", 5, "provider busy")]


def test_no_address_fails_without_calling_the_channel(backend: Backend) -> None:
    store = backend.workspace("default")
    clock = FixedClock(MORNING)
    _reserve(store, clock, 1, kind="sms")
    never = Flaky(fails=0)
    assert Dispatcher(lambda s, kind: never, clock=clock)(store)["failed"] == 1  # no key ring, no phone
    assert never.calls == {}
    assert store.tuples("SELECT status, reason FROM message_send") == [("failed", "no_address")]


def test_provider_template_parameters_come_from_the_content_item() -> None:
    from careloop.errors import ConfigError
    from careloop.messaging.content import ContentItem
    from careloop.messaging.dispatch import template_params

    def item(params: str) -> ContentItem:
        body = {"zh": "x", "params": params} if params else {"zh": "x"}
        return ContentItem("c", 1, "approved", "sms", "service", "", body, "SMS_1", None, None, None)

    traits = {"age": 61.0, "stage_5a": "Act", "phone": "never sent unasked"}
    assert template_params(item(""), traits) == {}
    assert template_params(item("stage_5a, age"), traits) == {"1": "Act", "2": "61"}  # Tencent: positional
    assert template_params(item("stage=stage_5a,age=age"), traits) == {"stage": "Act", "age": "61"}
    import pytest

    with pytest.raises(ConfigError, match="needs trait 'visit'"):
        template_params(item("visit"), traits)
