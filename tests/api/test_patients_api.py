"""GET /v1/patients/{id} and GET /v1/patients?phone= on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.patients import PatientView, Viewer, Visibility
from careloop.storage import Backend
from tests.authn import key_headers
from tests.patients.conftest import Linked, make_linked, make_network


@pytest.fixture
def linked(backend: Backend, tmp_path: Path) -> Linked:
    return make_linked(backend, make_network(tmp_path / "net"))


@pytest.fixture
def client(linked: Linked) -> Iterator[TestClient]:
    with TestClient(create_app(backend=linked.backend), headers=key_headers(linked.backend)) as c:
        yield c


def test_patient_360_lookup_and_problems(client: TestClient, linked: Linked) -> None:
    pid = linked.busiest_person()
    clear = PatientView(linked.store, viewer=Viewer(default=Visibility.CLEAR)).show(pid)
    planted = {f: clear["golden"]["fields"][f]["value"] for f in ("name", "phone", "id_number")}
    r = client.get(f"/v1/patients/{pid}", params={"events": 2})
    assert r.status_code == 200
    doc = r.json()
    assert doc["person_id"] == pid and doc["workspace"] == "default" and doc["viewer"] == "admin"
    assert len(doc["events"]["items"]) <= 2 and doc["events"]["total"] >= len(doc["events"]["items"])
    for value in planted.values():
        if value:
            assert value not in r.text and value.removeprefix("+86") not in r.text
    ref = doc["sources"][0]["ref"]
    assert client.get(f"/v1/patients/{ref}").json()["person_id"] == pid
    if planted["phone"]:
        local = planted["phone"].removeprefix("+86")
        found = client.get("/v1/patients", params={"phone": f"{local[:3]} {local[3:7]} {local[7:]}"})
        assert found.status_code == 200 and pid in {f["person_id"] for f in found.json()["items"]}
        assert local not in found.text
    if planted["id_number"]:
        found = client.get("/v1/patients", params={"id_number": planted["id_number"]})
        assert pid in {f["person_id"] for f in found.json()["items"]}
    missing = client.get("/v1/patients/P999999999")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "NotFoundError" and "careloop patient find" in missing.json()["detail"]
    bad = client.get("/v1/patients")
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    other = client.get(f"/v1/patients/{pid}", headers={"X-Careloop-Workspace": "unknown-ws"})
    assert other.status_code == 401
    linked.backend.ensure_workspace("empty")
    empty = client.get(
        f"/v1/patients/{pid}",
        headers={"X-Careloop-Workspace": "empty", **key_headers(linked.backend, workspace="empty")},
    )
    assert empty.status_code == 404
