"""The outbox channel on DuckDB and PostgreSQL: one row per idempotency key, whatever is retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careloop.channels import ChannelError, OutboundMessage, build_channel
from careloop.channels.outbox import OutboxChannel
from careloop.clock import FixedClock
from careloop.errors import ConfigError
from careloop.storage import Backend


def message(key: str, **over: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "person_id": "p1",
        "to": "13800138000",
        "subject": None,
        "body": "【仁济医院】张三您好，请于11月3日复诊。回T退订",
        "template_code": "SMS_1",
        "template_params": {"name": "张三"},
        "purpose": "care",
    }
    fields.update(over)
    return OutboundMessage(**fields)


def outbox(backend: Backend, clock: FixedClock, workspace: str = "default", **config: Any) -> OutboxChannel:
    ch = build_channel("outbox", config, store=backend.workspace(workspace), clock=clock)
    assert isinstance(ch, OutboxChannel)
    return ch


def test_a_message_is_written_once(backend: Backend, clock: FixedClock) -> None:
    ch = outbox(backend, clock, stands_in_for="sms")
    first = ch.send(message("k1"))
    clock.advance(timedelta(minutes=5))
    again = ch.send(message("k1", body="changed on retry"))
    assert first.ok and again.ok and first.provider_message_id == again.provider_message_id == "k1"
    rows = backend.workspace("default").rows(
        "SELECT idempotency_key, person_id, channel, kind, subject, body, template_code, template_params, purpose, "
        "created_at FROM outbox_message"
    )
    assert len(rows) == 1
    row = rows[0]
    params = row.pop("template_params")
    assert (params if isinstance(params, dict) else json.loads(params)) == {
        "name": "张三"
    }  # JSONB on PostgreSQL
    assert row == {
        "idempotency_key": "k1",
        "person_id": "p1",
        "channel": "outbox",
        "kind": "sms",
        "subject": None,
        "body": "【仁济医院】张三您好，请于11月3日复诊。回T退订",  # the first write stands
        "template_code": "SMS_1",
        "purpose": "care",
        "created_at": datetime(2026, 11, 1, 9, 0, tzinfo=UTC),
    }
    assert "13800138000" not in json.dumps(rows, default=str)  # the address is never stored


def test_batches_and_workspaces(backend: Backend, clock: FixedClock) -> None:
    ch = outbox(backend, clock)
    results = ch.send_many([message("a"), message("b"), message("a"), message("c", template_params={})])
    assert [r.status for r in results] == ["sent"] * 4
    assert ch.send_many([message("b"), message("d")])[1].ok
    store = backend.workspace("default")
    assert store.count("outbox_message") == 4
    assert store.scalar("SELECT template_params FROM outbox_message WHERE idempotency_key = 'c'") is None
    other = outbox(backend, clock, workspace="hospital-b")
    assert other.send(message("a")).ok  # the same key in another workspace is another message
    assert backend.workspace("hospital-b").count("outbox_message") == 1 and store.count("outbox_message") == 4


def test_outbox_needs_a_store_and_simulated_receipts(backend: Backend, clock: FixedClock) -> None:
    with pytest.raises(ConfigError, match="WorkspaceStore"):
        build_channel("outbox", {})
    ch = outbox(backend, clock)
    (r,) = ch.parse_receipts(
        {"idempotency_key": "k1", "event": "message_opened", "at": "2026-11-01T10:00:00+08:00"}, {}
    )
    assert (r.event, r.provider_message_id, r.idempotency_key) == ("message_opened", "k1", "k1")
    with pytest.raises(ChannelError, match="message_delivered"):
        ch.parse_receipts({"receipts": [{"idempotency_key": "k1", "event": "read"}]}, {})
