"""The Segment-compatible collection API on each engine: auth, storage, dedupe, quarantine, limits."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.events.sources import create_source
from careloop.events.spec import gzip_json
from careloop.identity.records import cipher_for
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend


def auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def app_key(backend: Backend, tmp_path: Path) -> Iterator[tuple[TestClient, str, Backend]]:
    path = tmp_path / "patient_identifier.csv"
    path.write_text("key,patient_key,kind,system,value\ni1,p1,app_user_id,careapp,u-100\n", encoding="utf-8")
    (tmp_path / "patient.csv").write_text("key,name,phone\np1,张三,13812345678\np2,李四,13912345678\n")
    Ingestor(backend, "default").ingest(tmp_path / "patient.csv", "csv", source="app_db")
    Ingestor(backend, "default").ingest(path, "csv", source="app_db")
    store = backend.workspace("default")
    store.insert(
        "identity_link",
        [
            {"source": "app_db", "patient_key": "p1", "person_id": "P1", "rule": "alone"},
            {"source": "app_db", "patient_key": "p2", "person_id": "P2", "rule": "alone"},
        ],
    )
    store.insert("person", [{"person_id": "P1"}, {"person_id": "P2"}])
    _, key = create_source(store, "careapp", user_id_kind="app_user_id", user_id_system="careapp")
    with TestClient(create_app(backend=backend)) as c:
        yield c, key, backend


def _track(mid: str, user: str | None = "u-100", **extra: object) -> dict[str, object]:
    msg: dict[str, object] = {
        "type": "track",
        "event": "refill_reminder_clicked",
        "messageId": mid,
        "timestamp": "2026-11-01T08:59:00+00:00",
        "properties": {"drug_class": "statin"},
    }
    if user:
        msg["userId"] = user
    msg.update(extra)
    return msg


def test_batch_is_stored_once_and_attributed(app_key: tuple[TestClient, str, Backend]) -> None:
    client, key, backend = app_key
    body = {
        "batch": [_track("m1"), _track("m2", user=None, anonymousId="dev-1")],
        "sentAt": "2026-11-01T08:59:30+00:00",
    }
    r = client.post("/v1/batch", content=orjson.dumps(body), headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "stored": 2, "duplicates": 0}
    r = client.post("/v1/batch", content=gzip_json(body), headers={**auth(key), "Content-Encoding": "gzip"})
    assert r.json() == {"success": True, "stored": 0, "duplicates": 2}
    store = backend.workspace("default")
    rows = store.rows("SELECT key, person_id, name, properties, user_id FROM event ORDER BY key")
    assert [(r["key"], r["person_id"]) for r in rows] == [("m1", "P1"), ("m2", None)]
    assert rows[0]["user_id"] != "u-100"  # encrypted at rest
    assert store.count("event_duplicate") == 2
    # identify ties the anonymous device to the person; its earlier event is attributed (stitching)
    r = client.post(
        "/v1/identify",
        json={
            "userId": "u-100",
            "anonymousId": "dev-1",
            "messageId": "m3",
            "traits": {"phone": "13812345678", "plan": "gold"},
        },
        headers=auth(key),
    )
    assert r.status_code == 200, r.text
    assert store.scalar("SELECT person_id FROM event WHERE key = 'm2'") == "P1"
    props = store.scalar("SELECT properties FROM event WHERE key = 'm3'")
    assert "13812345678" not in str(props) and "gold" in str(props)
    message = store.scalar("SELECT message FROM event WHERE key = 'm3'")
    assert orjson.loads(cipher_for().decrypt(message, "raw"))["traits"]["phone"] == "13812345678"


def test_trait_phone_attributes_when_the_user_id_is_unknown(app_key: tuple[TestClient, str, Backend]) -> None:
    client, key, backend = app_key
    r = client.post(
        "/v1/track",
        json=_track("m9", user="u-new", context={"traits": {"phone": "139 1234 5678"}}),
        headers=auth(key),
    )
    assert r.status_code == 200, r.text
    assert backend.workspace("default").scalar("SELECT person_id FROM event WHERE key = 'm9'") == "P2"


def test_malformed_messages_are_quarantined_with_a_problem_body(
    app_key: tuple[TestClient, str, Backend],
) -> None:
    client, key, backend = app_key
    body = {"batch": [_track("ok1"), {"type": "track", "userId": "u-100", "messageId": "bad1"}, "nonsense"]}
    r = client.post("/v1/batch", json=body, headers=auth(key))
    assert r.status_code == 400
    p = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert p["stored"] == 1 and [e["index"] for e in p["errors"]] == [1, 2]
    assert p["errors"][0]["field"] == "event"
    store = backend.workspace("default")
    q = store.rows("SELECT source, entity, field, reason, event_type FROM quarantine ORDER BY line")
    assert [(x["source"], x["entity"], x["field"], x["event_type"]) for x in q] == [
        ("careapp", "event", "event", "track"),
        ("careapp", "event", "message", None),
    ]


def test_a_nul_character_is_quarantined_not_a_failed_batch(app_key: tuple[TestClient, str, Backend]) -> None:
    client, key, backend = app_key
    body = {"batch": [_track("n1", properties={"note": "a\u0000b"}), _track("n2")]}
    r = client.post("/v1/batch", json=body, headers=auth(key))
    assert r.status_code == 400 and r.json()["stored"] == 1 and r.json()["errors"][0]["index"] == 0
    assert backend.workspace("default").scalar("SELECT count(*) FROM event WHERE key = 'n2'") == 1


def test_auth_size_and_encoding_errors(app_key: tuple[TestClient, str, Backend]) -> None:
    client, key, backend = app_key
    assert client.post("/v1/track", json=_track("x")).status_code == 401
    assert client.post("/v1/track", json=_track("x"), headers=auth("clk_wrong")).status_code == 401
    big = {"batch": [_track(f"b{i}", properties={"pad": "x" * 30_000}) for i in range(20)]}
    r = client.post("/v1/batch", content=orjson.dumps(big), headers=auth(key))
    assert r.status_code == 413 and r.json()["title"] == "PayloadTooLarge"
    r = client.post("/v1/batch", content=b"{not json", headers=auth(key))
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = client.post("/v1/batch", content=b"abc", headers={**auth(key), "Content-Encoding": "gzip"})
    assert r.status_code == 400
    q = backend.workspace("default").rows("SELECT field, reason FROM quarantine ORDER BY created_at")
    assert [x["field"] for x in q] == ["body", "body"]  # unreadable bodies are kept, not lost
    assert "not valid JSON" in q[0]["reason"] or "not valid JSON" in q[1]["reason"]


def test_metrics_and_readiness(app_key: tuple[TestClient, str, Backend]) -> None:
    client, key, _ = app_key
    client.post("/v1/track", json=_track("mm"), headers=auth(key))
    text = client.get("/metrics").text
    assert 'careloop_events_stored_total{source="careapp",type="track"} 1.0' in text
    assert client.get("/ready").json()["collecting"] is True
