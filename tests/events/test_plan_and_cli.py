"""Tracking plans (violations flagged and counted, never dropped) and the source / events commands."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from careloop.api import create_app
from careloop.cli import app
from careloop.errors import ConfigError
from careloop.events.plan import TrackingPlan
from careloop.events.spec import parse
from careloop.storage import connect

PLAN = """
allow_unplanned: false
events:
  refill_reminder_clicked:
    properties:
      drug_class: {type: string, required: true}
      days_left: integer
  app_opened: {}
"""


def test_plan_checks_names_and_property_types() -> None:
    plan = TrackingPlan.from_dict(__import__("yaml").safe_load(PLAN))
    assert plan.check("track", "app_opened", {"anything": 1}) == []
    assert plan.check("track", "refill_reminder_clicked", {"drug_class": "statin", "days_left": 3}) == []
    assert plan.check("track", "refill_reminder_clicked", {"days_left": "3"}) == [
        "property 'drug_class' is required",
        "property 'days_left' should be integer, got str",
    ]
    assert plan.check("track", "unknown_event", {}) == ["event 'unknown_event' is not in the tracking plan"]
    assert plan.check("identify", "identify", {}) == []  # traits are not planned events
    with pytest.raises(ConfigError, match="use one of"):
        TrackingPlan.from_dict({"events": {"x": {"properties": {"p": {"type": "money"}}}}})


def test_spec_corrects_client_clock_skew() -> None:
    from datetime import UTC, datetime

    received = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    body = {
        "batch": [{"type": "track", "event": "x", "userId": "u", "timestamp": "2026-11-01T10:00:00Z"}],
        "sentAt": "2026-11-01T10:00:30Z",
    }  # the phone's clock is an hour fast
    acc = parse(body, received).accepted[0]
    assert acc.occurred_at == datetime(2026, 11, 1, 8, 59, 30, tzinfo=UTC)
    assert acc.message_id.startswith("h-")  # no messageId: a content hash, so a resend is still a repeat


def test_source_commands_plan_violations_and_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN, encoding="utf-8")
    r = runner.invoke(
        app, ["source", "create", "careapp", "--channel", "wechat_mp", "--plan", str(plan), "--json"]
    )
    assert r.exit_code == 0, r.output
    key = orjson.loads(r.stdout)["write_key"]
    assert orjson.loads(r.stdout)["planned_events"] == ["app_opened", "refill_reminder_clicked"]
    r = runner.invoke(app, ["source", "create", "careapp"])
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(app, ["source", "create", "x", "--user-id-kind", "email_hash"])
    assert r.exit_code == 2 and "app_user_id" in r.output
    listed = orjson.loads(runner.invoke(app, ["source", "list", "--json"]).stdout)
    assert (
        listed[0]["name"] == "careapp" and "write_key" not in listed[0] and key[-4:] == listed[0]["key_hint"]
    )

    headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    backend = connect()
    with TestClient(create_app(backend=backend)) as client:
        body = {
            "batch": [
                {
                    "type": "track",
                    "event": "refill_reminder_clicked",
                    "userId": "u1",
                    "messageId": "a",
                    "properties": {"days_left": "3"},
                },
                {"type": "track", "event": "app_opened", "userId": "u1", "messageId": "b"},
                {"type": "track", "event": "app_opened", "userId": "u1", "messageId": "b"},
                {"type": "track", "userId": "u1", "messageId": "c"},
            ]
        }
        r = client.post("/v1/batch", json=body, headers=headers)
        assert r.status_code == 400 and r.json()["stored"] == 2 and r.json()["duplicates"] == 1
    violations = backend.workspace("default").scalar("SELECT plan_violations FROM event WHERE key = 'a'")
    assert "drug_class" in str(violations)  # flagged on the stored event, not dropped
    backend.close()

    stats = orjson.loads(runner.invoke(app, ["events", "stats", "--json"]).stdout)
    assert stats["sources"] == [
        {
            "source": "careapp",
            "type": "track",
            "stored": 2,
            "duplicates": 1,
            "quarantined": 1,
            "plan_violations": 1,
            "attributed": 0,
        }
    ]
    r = runner.invoke(app, ["events", "stats"])
    assert r.exit_code == 0 and "careapp" in r.stdout
    r = runner.invoke(app, ["events", "attribute", "--json"])
    assert orjson.loads(r.stdout) == {"persons_moved": 0, "persons_released": 0, "events_attributed": 0}


def test_rotating_and_disabling_a_write_key() -> None:
    runner = CliRunner()
    old = orjson.loads(runner.invoke(app, ["source", "create", "web", "--channel", "web", "--json"]).stdout)[
        "write_key"
    ]
    new = orjson.loads(runner.invoke(app, ["source", "rotate-key", "web", "--json"]).stdout)["write_key"]
    assert new != old

    def status(key: str) -> int:
        backend = connect()
        try:
            with TestClient(create_app(backend=backend)) as client:
                headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
                body = {"userId": "u1", "event": "page_viewed"}
                return client.post("/v1/track", json=body, headers=headers).status_code
        finally:
            backend.close()

    assert status(old) == 401 and status(new) == 200
    assert runner.invoke(app, ["source", "disable", "web"]).exit_code == 0
    assert status(new) == 401
    assert runner.invoke(app, ["source", "enable", "web"]).exit_code == 0
    assert status(new) == 200
    r = runner.invoke(app, ["source", "rotate-key", "nope"])
    assert r.exit_code == 1 and "careloop source create nope" in r.output


def test_quarantined_messages_are_shown_masked() -> None:
    from careloop.ingest.quarantine import mask_raw

    shown = mask_raw(
        "event",
        {
            "userId": "user-123456",
            "type": "identify",
            "traits": {"phone": "13812345678", "name": "王小明", "plan": "gold"},
            "context": {"traits": {"idNumber": "11010519491231002X"}},
            "properties": {"note": "call 13912345678"},
        },
    )
    assert shown["userId"] == "us****56" and shown["traits"]["phone"] == "138****5678"
    assert shown["traits"]["name"] == "王*明" and shown["traits"]["plan"] == "gold"
    assert shown["context"]["traits"]["idNumber"] == "1101**********002X"
    assert "13912345678" not in str(shown)
