"""The real data sets of ../shared/data ingest completely, with counts that match the files, on every backend."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from careloop.ingest.pipeline import Ingestor
from careloop.ingest.synthea import synthea_mapping
from careloop.storage import Backend


def _csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_synthea_csv_counts_match_the_files(backend: Backend, shared_data: Path) -> None:
    folder = shared_data / "synthea" / "csv"
    summary = Ingestor(backend, "default").ingest(folder, "synthea")
    assert summary.status == "completed"
    store = backend.workspace("default")
    expected: Counter[str] = Counter()
    for entry in synthea_mapping(folder).files:
        path = folder / entry.path
        if entry.where:
            with path.open(encoding="utf-8", newline="") as f:
                column = entry.where.split('"')[1]
                expected[entry.entity] += sum(1 for r in csv.DictReader(f) if r[column] != "")
        else:
            expected[entry.entity] += _csv_rows(path)
    assert {e: c.rows for e, c in summary.entities.items()} == dict(expected)
    for entity, counts in summary.entities.items():
        assert counts.quarantined == 0, f"{entity}: {counts}"
        stored = store.count(entity)
        assert stored == counts.accepted, entity
        assert counts.accepted + counts.duplicates == counts.rows, entity
    # every CSV of the export is covered
    covered = {e.path for e in synthea_mapping(folder).files}
    assert covered == {p.name for p in folder.glob("*.csv")}
    assert store.count("patient") == _csv_rows(folder / "patients.csv") == 111
    assert store.count("encounter") == 7584
    assert store.count("prescription") == 6124
    again = Ingestor(backend, "default").ingest(folder, "synthea")
    assert all(c.accepted == 0 and c.updated == 0 for c in again.entities.values())


def _fhir_resources(folder: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for f in folder.glob("*.json"):
        doc = json.loads(f.read_text(encoding="utf-8"))
        for entry in doc.get("entry", []):
            counts[entry["resource"]["resourceType"]] += 1
    return counts


def test_synthea_fhir_bundles_ingest_every_resource(backend: Backend, shared_data: Path) -> None:
    folder = shared_data / "synthea" / "fhir"
    resources = _fhir_resources(folder)
    summary = Ingestor(backend, "default").ingest(folder, "fhir")
    store = backend.workspace("default")
    assert summary.quarantined == 0, summary.to_dict()
    assert store.count("patient") == resources["Patient"] == 6
    assert store.count("encounter") == resources["Encounter"]
    assert store.count("condition") == resources["Condition"]
    assert store.count("immunization") == resources["Immunization"]
    assert store.count("prescription") == resources["MedicationRequest"]
    assert store.count("organization") == resources["Organization"]
    assert store.count("doctor") == resources["Practitioner"]
    # resources careloop does not model are kept verbatim
    raw = {
        r["record_type"]: r["n"]
        for r in store.rows("SELECT record_type, count(*) AS n FROM raw_record GROUP BY record_type")
    }
    for kind in ("Claim", "ExplanationOfBenefit", "Provenance", "DocumentReference", "DiagnosticReport"):
        assert raw[f"fhir:{kind}"] == resources[kind]
    # observations: one row per observation, blood-pressure panels as one row per component
    assert store.count("observation") >= resources["Observation"]
    assert (
        store.scalar("SELECT count(DISTINCT split_part(key, '/', 1)) FROM observation")
        == resources["Observation"]
    )
    # every resource is accounted for
    mapped_types = {
        "Patient",
        "Encounter",
        "Condition",
        "Immunization",
        "MedicationRequest",
        "Organization",
        "Practitioner",
        "Observation",
        "Procedure",
        "CarePlan",
        "Device",
        "ImagingStudy",
    }
    unmapped = sum(n for t, n in resources.items() if t not in mapped_types)
    assert sum(raw.values()) == unmapped


def test_broken_fhir_resources_are_quarantined(backend: Backend, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "ok",
                    "gender": "female",
                    "birthDate": "1970-05-01",
                }
            },
            {"resource": {"resourceType": "Patient", "id": "robot", "gender": "robot"}},
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "Patient/ok"},
                }
            },
        ],
    }
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    summary = Ingestor(backend, "default").ingest(path, "fhir")
    store = backend.workspace("default")
    assert store.count("patient") == 1
    reasons = [r["reason"] for r in store.rows("SELECT reason FROM quarantine")]
    assert summary.quarantined == 2 and len(reasons) == 2
    assert any("gender" in r for r in reasons) and any("status" in r for r in reasons)
