"""Personas, seed personas and lookalikes over HTTP, on each backend."""

from __future__ import annotations

from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.clock import FixedClock
from careloop.storage import Backend
from tests.authn import key_headers
from tests.profiles.planted import plant


def test_persona_and_lookalike_routes(backend: Backend, clock: FixedClock) -> None:
    plant(backend.workspace("default"))
    with TestClient(create_app(backend=backend, clock=clock), headers=key_headers(backend)) as client:
        r = client.get("/v1/personas")
        assert r.status_code == 404 and "careloop persona build" in r.json()["detail"]
        built = client.post("/v1/personas/build").json()
        assert built["k"] == 3 and [c["size"] for c in built["clusters"]] == [50, 40, 30]
        assert set(built["scores"]) == {str(k) for k in range(3, 9)}
        latest = client.get("/v1/personas").json()
        assert latest["run_id"] == built["run_id"] and latest["clusters"] == built["clusters"]
        assert client.get("/v1/personas", params={"run_id": built["run_id"]}).json()["k"] == 3
        mine = client.get("/v1/patients/P0119/persona").json()
        assert mine["cluster"] == 3 and "年龄偏高" in mine["description_zh"]
        assert client.post("/v1/personas/build", params={"k": 1}).status_code == 422
        seeded = client.post("/v1/personas/seed", params={"refresh": True, "as_of": "2026-10-31"}).json()
        assert {s["name"]: s["members"] for s in seeded} == {"慢病管理": 40, "母婴": 50, "老年": 30}
        looks = client.get("/v1/segments/老年/lookalike", params={"top": 5}).json()
        assert looks["seed_members"] == 30 and len(looks["top"]) == 5 and looks["auc"] > 0.9
        r = client.get("/v1/segments/nope/lookalike")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
