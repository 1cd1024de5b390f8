"""Journeys and content over HTTP, on each backend; the in-process worker runs what the API enters."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.clock import FixedClock
from careloop.storage import Backend
from tests.authn import key_headers
from tests.journeys.test_engine import MORNING, _people


def test_journey_routes_and_the_in_process_worker(backend: Backend) -> None:
    clock = FixedClock(MORNING)
    persons = _people(backend.workspace("default"), 3)
    spec = {
        "trigger": {"type": "api"},
        "holdout": False,
        "start": "s",
        "nodes": {"s": {"type": "send", "channel": "outbox", "content": "hi", "purpose": "marketing"}},
    }
    with TestClient(create_app(backend=backend, clock=clock), headers=key_headers(backend)) as client:
        c = client.post("/v1/content/hi", json={"kind": "outbox", "body": {"zh": "您好"}}).json()
        assert c["status"] == "draft" and c["version"] == 1
        assert (
            client.post("/v1/content/hi/1/approve", params={"by": "reviewer"}).json()["status"] == "approved"
        )
        assert client.put("/v1/journeys/hello", json=spec).json() == {
            "name": "hello",
            "version": 1,
            "status": "draft",
        }
        r = client.post("/v1/journeys/hello/entries", json={"persons": persons})
        assert r.status_code == 400 and "publish it first" in r.json()["detail"]
        assert client.post("/v1/journeys/hello/publish").json()["status"] == "published"
        assert (
            client.post("/v1/journeys/hello/entries", json={"persons": persons, "key": "k1"}).json()[
                "entered"
            ]
            == 3
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the worker inside the server advances the entries
            stats = client.get("/v1/journeys/hello/stats").json()
            if any(r["status"] == "done" and r["entries"] == 3 for r in stats["at_node"]):
                break
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ... and delivers the sends to the outbox (the default channel)
            stats = client.get("/v1/journeys/hello/stats").json()
            if stats["sends"] and stats["sends"][0]["status"] == "sent":
                break
            time.sleep(0.2)
        assert stats["sends"] == [{"node": "s", "status": "sent", "reason": None, "count": 3}]
        assert backend.workspace("default").count("outbox_message") == 3
        listed = client.get("/v1/journeys").json()
        assert listed[0]["name"] == "hello" and listed[0]["entries"] == {"done": 3}
        assert client.post("/v1/journeys/hello/explode").status_code == 400
        assert client.get("/v1/journeys/nope/stats").status_code == 404
