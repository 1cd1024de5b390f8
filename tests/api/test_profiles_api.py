"""Traits, tags and segments over HTTP, on each backend."""

from __future__ import annotations

from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.profiles.tags import apply_tags
from careloop.storage import Backend
from tests.authn import key_headers
from tests.profiles.test_segments import AS_OF, _seed


def test_segment_routes_and_person_profiles(backend: Backend) -> None:
    store = backend.workspace("default")
    _seed(store)
    apply_tags(store, as_of=AS_OF)
    with TestClient(create_app(backend=backend), headers=key_headers(backend)) as client:
        r = client.put("/v1/segments/老年", json={"trait": "age", "op": ">=", "value": 65})
        assert r.status_code == 200 and r.json()["version"] == 1
        r = client.put(
            "/v1/segments/活跃老年", json={"all": [{"segment": "老年"}, {"event": "app_opened", "count": 1}]}
        )
        assert r.status_code == 200
        assert client.put("/v1/segments/bad", json={"all": []}).status_code == 400
        n = client.get("/v1/segments/老年/count", params={"as_of": "2026-10-31"}).json()["count"]
        out = client.post("/v1/segments/老年/refresh", params={"as_of": "2026-10-31"}).json()
        assert out["members"] == out["entered"] == n > 0
        client.post("/v1/segments/活跃老年/refresh", params={"as_of": "2026-10-31"})
        listed = {x["name"]: x["members"] for x in client.get("/v1/segments").json()}
        assert listed["老年"] == n and listed["活跃老年"] <= n
        page = client.get("/v1/segments/老年/members", params={"limit": 5}).json()
        assert page["total"] == n and len(page["items"]) == min(5, n)
        person = page["items"][0]["person_id"]
        why = client.get(f"/v1/segments/老年/explain/{person}", params={"as_of": "2026-10-31"}).json()
        assert why["in"] is True and why["because"]["condition"] == "age >= 65"
        preview = client.post("/v1/segments/preview", json={"trait": "age", "op": "<", "value": 14}).json()
        assert preview["count"] >= len(preview["sample"])
        traits = client.get(f"/v1/patients/{person}/traits").json()["traits"]
        assert any(t["trait"] == "age" and t["value_num"] >= 65 for t in traits)
        tags = client.get(f"/v1/patients/{person}/tags").json()["tags"]
        assert any(t["tag"] == "老年" for t in tags)
        r = client.get("/v1/segments/nope/count")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/patients/P404/traits").status_code == 404
