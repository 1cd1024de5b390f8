"""The data-subject request, safe export and retention routes over HTTP (DPO allowed, marketer refused)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.bench.patient360_bench import link_from_truth
from careloop.clock import FixedClock
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend
from careloop.synth import generate_network
from tests.authn import key_headers


def test_dsr_routes(backend: Backend, clock: FixedClock, tmp_path: Path) -> None:
    net = tmp_path / "net"
    generate_network(net, patients=20, seed=4, as_of=date(2026, 10, 31), chunk_size=100, quiet=True)
    Ingestor(backend, "default", clock=clock).ingest(net, "parquet")
    store = backend.workspace("default")
    link_from_truth(store, net, clock)
    person = store.scalar("SELECT min(person_id) FROM person")
    dpo, marketer = key_headers(backend, "dpo"), key_headers(backend, "marketer")
    with TestClient(create_app(backend=backend, clock=clock)) as client:
        assert (
            client.post("/v1/dsr", json={"person_id": person, "kind": "copy"}, headers=marketer).status_code
            == 403
        )
        r = client.post("/v1/dsr", json={"person_id": person, "kind": "copy"}, headers=dpo)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        r = client.post(f"/v1/dsr/{rid}/access", headers=dpo)
        assert r.status_code == 200 and r.json()["person_id"] == person and "patient" in r.json()["tables"]
        assert client.get("/v1/dsr?overdue=true", headers=dpo).json() == []
        r = client.post("/v1/dsr", json={"person_id": person, "kind": "deletion"}, headers=dpo)
        did = r.json()["request_id"]
        assert client.post(f"/v1/dsr/{did}/erase", json={"confirm": False}, headers=dpo).status_code == 400
        r = client.post(f"/v1/dsr/{did}/erase", json={"confirm": True}, headers=dpo)
        assert r.status_code == 200, r.text
        assert r.json()["tables"]["person"] == 1
        assert client.get(f"/v1/dsr/{did}", headers=dpo).json()["certificate_sha256"] == r.json()["sha256"]
        assert client.get("/v1/segments/x/export", headers=dpo).status_code == 422  # purpose required
        r = client.post("/v1/exports/aggregate", json={"by": ["sex"], "k": 3}, headers=marketer)
        assert r.status_code == 200 and r.json()["k"] == 3
        assert client.get("/v1/retention/plan", headers=dpo).status_code == 200
