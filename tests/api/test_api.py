"""The HTTP API: health, readiness, data dictionary, runs and quarantine, problem-details errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend
from tests.authn import key_headers


@pytest.fixture
def client(backend: Backend, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "patient.csv"
    path.write_text(
        "key,name,sex,phone\np1,张三,male,13812345678\np2,李四,robot,13912345678\n", encoding="utf-8"
    )
    Ingestor(backend, "default").ingest(path, "csv")
    with TestClient(create_app(backend=backend), headers=key_headers(backend)) as c:
        yield c


def test_health_ready_and_schema(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json()["status"] == "ready"
    patient = client.get("/v1/schema/patient").json()
    assert any(c["name"] == "id_number" and c["pii"] == "id_number" for c in patient["columns"])
    assert client.get("/openapi.json").status_code == 200


def test_stats_runs_and_quarantine(client: TestClient) -> None:
    assert client.get("/v1/stats").json()["rows"]["patient"] == 1
    runs = client.get("/v1/ingest/runs").json()
    assert runs[0]["entities"]["patient"]["quarantined"] == 1
    q = client.get("/v1/quarantine").json()
    assert q["total"] == 1
    row = client.get(f"/v1/quarantine/{q['rows'][0]['id']}").json()
    assert row["raw"]["phone"] == "139****5678" and row["raw"]["name"] == "李*"
    assert "13912345678" not in client.get(f"/v1/quarantine/{q['rows'][0]['id']}").text


def test_problem_details(client: TestClient) -> None:
    r = client.get("/v1/quarantine/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "NotFoundError"
    r = client.get("/v1/stats", headers={"X-Careloop-Workspace": "unknown-ws"})
    assert r.status_code == 401 and "no credentials are valid in workspace 'unknown-ws'" in r.json()["detail"]
    r = client.get("/v1/schema/robots")
    assert r.status_code == 404


def test_workspace_header_scopes_reads(client: TestClient, backend: Backend) -> None:
    backend.ensure_workspace("other")
    other = {"X-Careloop-Workspace": "other"}
    # a key belongs to its workspace: the default one's key is not valid in "other"
    assert client.get("/v1/stats", headers=other).status_code == 401
    headers = {**key_headers(backend, workspace="other"), **other}
    assert client.get("/v1/stats", headers=headers).json()["rows"]["patient"] == 0
