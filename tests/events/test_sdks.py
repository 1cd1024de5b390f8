"""The official Segment and RudderStack Python SDKs, pointed at careloop, deliver events unchanged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from careloop.identity.records import cipher_for
from tests.events.conftest import N_PATIENTS, LiveServer


def _stored(server: LiveServer) -> list[dict[str, Any]]:
    return server.backend.workspace("default").rows(
        "SELECT source, key, event_type, name, person_id, message FROM event WHERE received_at IS NOT NULL"
    )


def test_segment_sdk_delivers_10000_events_once_to_the_right_patients(live_server: LiveServer) -> None:
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(
        live_server.write_key,
        host=live_server.url,
        upload_size=100,
        max_queue_size=20_000,
        gzip=True,
        on_error=lambda e, batch: errors.append(e),
    )
    sent: dict[str, dict[str, Any]] = {}
    for k in range(10_000):
        ok, msg = client.track(
            user_id=f"u-{k % N_PATIENTS}",
            event="refill_reminder_clicked" if k % 3 else "article_read",
            properties={"seq": k, "drug_class": "statin", "days_left": k % 30},
        )
        assert ok
        sent[msg["messageId"]] = msg
    client.flush()
    client.join()
    assert errors == []
    rows = _stored(live_server)
    assert len(rows) == 10_000
    assert {r["key"] for r in rows} == set(sent)  # every messageId stored, each once
    cipher = cipher_for()
    for r in rows:
        original = sent[r["key"]]
        seq = original["properties"]["seq"]
        assert r["person_id"] == f"P{seq % N_PATIENTS}"
        assert r["name"] == original["event"] and r["event_type"] == "track"
    for r in rows[:200]:  # what was stored is what the SDK sent
        stored = orjson.loads(cipher.decrypt(r["message"], "raw"))
        original = orjson.loads(orjson.dumps(sent[r["key"]], default=str))
        for field in ("event", "userId", "properties", "messageId", "type", "context"):
            assert stored[field] == original[field], field


def test_rudderstack_sdk_delivers_identify_and_track(live_server: LiveServer) -> None:
    pytest.importorskip("rudderstack.analytics", reason="rudder-sdk-python is in the dev extra")
    from rudderstack.analytics.client import Client

    errors: list[Any] = []
    client = Client(live_server.write_key, host=live_server.url, on_error=lambda e, batch: errors.append(e))
    client.identify(user_id="u-7", anonymous_id="device-7", traits={"plan": "gold"})
    for k in range(500):
        client.track(user_id="u-8", event="app_opened", properties={"n": k})
    client.page(anonymous_id="device-7", name="refill_page", properties={"path": "/refill"})
    client.flush()
    client.join()
    assert errors == []
    rows = _stored(live_server)
    assert len(rows) == 502
    by_type: dict[str, set[str | None]] = {}
    for r in rows:
        by_type.setdefault(r["event_type"], set()).add(r["person_id"])
    assert by_type == {"identify": {"P7"}, "track": {"P8"}, "page": {"P7"}}  # the device is stitched to u-7
