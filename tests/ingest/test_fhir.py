"""FHIR R4 connector: hand-made fixtures, then the shared Synthea bundles (skipped when absent)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from careloop.domain import entities, field_specs
from careloop.ingest.batch import Rejection, StagedBatch
from careloop.ingest.fhir import FhirStats, read_fhir
from careloop.ingest.fhir_valuesets import check_value_sets, code_system_name

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "fhir"
SHARED_FHIR = REPO.parent / "shared" / "data" / "synthea" / "fhir"

#: the one resource type each careloop entity is made from (raw_record carries its type itself)
ENTITY_TYPE = {
    "organization": "Organization",
    "doctor": "Practitioner",
    "patient": "Patient",
    "encounter": "Encounter",
    "condition": "Condition",
    "prescription": "MedicationRequest",
    "dispense": "MedicationDispense",
    "observation": "Observation",
    "procedure": "Procedure",
    "immunization": "Immunization",
    "allergy": "AllergyIntolerance",
    "care_plan": "CarePlan",
    "device_use": "Device",
    "imaging_study": "ImagingStudy",
    "supply_use": "SupplyDelivery",
    "appointment": "Appointment",
    "consent": "Consent",
}


def run(
    *names: str, stats: FhirStats | None = None
) -> tuple[dict[str, list[dict[str, Any]]], list[Rejection]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    rejections: list[Rejection] = []
    for item in read_fhir([FIXTURES / n for n in names], stats=stats):
        if isinstance(item, Rejection):
            rejections.append(item)
        else:
            assert item.table is not None
            rows.setdefault(item.entity, []).extend(item.table.to_pylist())
    return rows, rejections


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in rows}


# --- hand-made fixtures ----------------------------------------------------------------------------


def test_good_bundle_maps_every_resource() -> None:
    stats = FhirStats()
    rows, rejections = run("good_bundle.json", stats=stats)
    assert rejections == []
    st = stats.files[str(FIXTURES / "good_bundle.json")]
    assert sum(st.resources.values()) == 26
    assert st.resources == st.mapped
    assert set(rows) == {*ENTITY_TYPE, "patient_identifier", "raw_record"}


def test_batches_have_canonical_columns_and_line_file() -> None:
    for item in read_fhir([FIXTURES / "good_bundle.json"]):
        assert isinstance(item, StagedBatch) and item.table is not None
        fields = [s.name for s in field_specs(entities()[item.entity]) if s.name != "source"]
        assert item.table.column_names == [*fields, "_line", "_file"]
        assert item.table.schema.field("_line").type == pa.int64()
        assert item.table.schema.field("_file").type == pa.string()
        assert item.source == "fhir"


def test_patient_chinese_name_identifiers_and_phone() -> None:
    rows, _ = run("good_bundle.json")
    patient = rows["patient"][0]
    assert patient["name"] == "张三"  # official name, family + given, the old name ignored
    assert patient["phone"] == "+86 138 0013 8000"  # the mobile, passed through for the pipeline
    assert patient["id_number"] == "11010519491231002x"
    assert patient["death_date"] == "2020-03-01"
    assert patient["address"] == "西湖区文三路100号"
    assert (patient["province"], patient["city"], patient["postal_code"]) == ("浙江省", "杭州市", "310012")
    assert patient["marital_status"] == "M"
    kinds = [(r["key"], r["kind"]) for r in rows["patient_identifier"]]
    assert kinds == [
        ("pat-1/identifier/1", "other"),
        ("pat-1/identifier/2", "his_number"),
        ("pat-1/identifier/3", "id_number"),
        ("pat-1/identifier/4", "passport"),
        ("pat-1/identifier/5", "other"),  # DL
        ("pat-1/identifier/6", "other"),  # US SSN: not a Chinese resident ID
    ]
    dl = rows["patient_identifier"][4]
    assert (dl["valid_from"], dl["valid_to"]) == ("2015-01-01", "2025-01-01")
    assert all(r["patient_key"] == "pat-1" and r["_line"] == 5 for r in rows["patient_identifier"])


def test_western_name_and_us_phone_pass_through() -> None:
    rows, _ = run("bad_bundle.json")
    patient = by_key(rows["patient"])["p-ok"]
    assert patient["name"] == "John Q Smith"
    assert patient["phone"] == "555-123-4567"


def test_conditional_references_resolve_to_identifier_keys() -> None:
    rows, _ = run("good_bundle.json")
    assert rows["organization"][0]["key"] == "org-1"  # keyed by identifier, not by id
    doctor = rows["doctor"][0]
    assert doctor["key"] == "9999000001"  # NPI
    assert (doctor["org_key"], doctor["specialty"]) == ("org-1", "Endocrinology")  # from PractitionerRole
    assert doctor["name"] == "李医生"
    org = rows["organization"][0]
    assert (org["latitude"], org["longitude"]) == (30.28, 120.16)  # from the Location it manages
    enc = by_key(rows["encounter"])["enc-1"]
    assert (enc["patient_key"], enc["org_key"], enc["doctor_key"]) == ("pat-1", "org-1", "9999000001")
    assert by_key(rows["encounter"])["enc-2"]["patient_key"] == "pat-1"  # Patient/<id>


def test_encounter_class_and_reason() -> None:
    rows, _ = run("good_bundle.json", "bad_bundle.json")
    enc = by_key(rows["encounter"])
    assert enc["enc-1"]["encounter_class"] == "outpatient"
    assert enc["enc-2"]["encounter_class"] == "online"
    assert enc["e-ok"]["encounter_class"] == "other"  # a local class system
    assert (enc["enc-1"]["reason_code"], enc["enc-1"]["start"]) == ("E11.9", "2023-05-01T09:00:00+08:00")


def test_clinical_mappings() -> None:
    rows, _ = run("good_bundle.json")
    cond = rows["condition"][0]
    assert (cond["code"], cond["code_system"], cond["onset"]) == ("E11.9", "ICD-10", "2023-05-01")
    rx = rows["prescription"][0]
    assert (rx["drug_code"], rx["code_system"], rx["status"]) == ("860975", "RxNorm", "active")
    assert (rx["days_supply"], rx["refills"], rx["quantity"], rx["reason_code"]) == (30, 2, 60.0, "E11.9")
    assert rx["doctor_key"] == "9999000001"
    disp = rows["dispense"][0]
    assert (disp["prescription_key"], disp["org_key"], disp["days_supply"]) == ("rx-1", "org-1", 30)
    cp = rows["care_plan"][0]
    assert (cp["code"], cp["reason_code"], cp["start"]) == ("698360004", "E11.9", "2023-05-01")
    allergy = rows["allergy"][0]
    assert (allergy["category"], allergy["reaction"], allergy["severity"]) == (
        "medication",
        "Rash",
        "moderate",
    )
    assert rows["device_use"][0]["start"] == "2023-04-10T00:00:00+08:00"
    assert rows["imaging_study"][0]["modality"] == "DX"
    assert rows["supply_use"][0]["used_at"] == "2023-05-01"
    appt = rows["appointment"][0]
    assert (appt["status"], appt["patient_key"], appt["doctor_key"]) == ("no_show", "pat-1", "9999000001")
    consent = rows["consent"][0]
    assert (consent["purpose"], consent["status"], consent["key"]) == ("marketing", "granted", "consent-1")


def test_observation_values_and_components() -> None:
    rows, _ = run("good_bundle.json")
    obs = by_key(rows["observation"])
    assert "obs-bp" not in obs  # a panel without a value of its own: only its components
    assert (obs["obs-bp/8480-6"]["value_num"], obs["obs-bp/8480-6"]["unit"]) == (142.0, "mm[Hg]")
    assert obs["obs-bp/8462-4"]["code"] == "8462-4"
    assert obs["obs-bp/8462-4"]["effective_at"] == "2023-05-01T09:05:00+08:00"
    assert (obs["obs-glu"]["value_num"], obs["obs-glu"]["source_kind"]) == (7.8, "lab")
    assert obs["obs-smoke"]["value_text"] == "Never smoker"


def test_everything_else_is_a_raw_record() -> None:
    rows, _ = run("good_bundle.json")
    raw = by_key(rows["raw_record"])
    assert {k: r["record_type"] for k, r in raw.items()} == {
        "loc-1": "fhir:Location",
        "role-1": "fhir:PractitionerRole",
        "med-1": "fhir:Medication",
        "obs-group": "fhir:Observation",  # its subject is a Group: no patient
        "consent-2": "fhir:Consent",  # draft: no decision, never a granted consent
        "claim-1": "fhir:Claim",
    }
    claim = raw["claim-1"]
    assert (claim["patient_key"], claim["occurred_at"]) == ("pat-1", "2023-05-01T09:30:00+08:00")
    assert json.loads(claim["payload"])["resourceType"] == "Claim"


def test_bad_resources_are_rejected_with_element_and_reason() -> None:
    stats = FhirStats()
    rows, rejections = run("bad_bundle.json", stats=stats)
    got = {(r.entity, r.line, r.field) for r in rejections}
    assert got == {
        ("fhir:Patient", 1, "Patient.gender"),
        ("fhir:Encounter", 2, "Encounter.status"),
        ("fhir:Encounter", 3, "Encounter.class.code"),
        ("fhir:Condition", 4, "Condition.clinicalStatus.coding[0].code"),
        ("fhir:Patient", 5, "Patient.birthDate"),
        ("fhir:Spaceship", 8, "resourceType"),
        ("fhir:Bundle.entry", 10, None),
    }
    assert [r.line for r in rejections] == sorted(r.line or 0 for r in rejections)  # file order
    reasons = {r.field: r.reason for r in rejections}
    assert "male, female, other, unknown" in reasons["Patient.gender"]
    assert "robot" not in reasons["Patient.gender"]  # never the value itself
    assert "required" in reasons["Encounter.status"]
    assert "AMB" in reasons["Encounter.class.code"] and "SPACESHIP" not in reasons["Encounter.class.code"]
    assert "1990-13-01" not in reasons["Patient.birthDate"]
    robot = next(r for r in rejections if r.field == "Patient.gender")
    assert robot.raw["gender"] == "robot" and robot.source == "fhir"  # the resource verbatim
    # R4-only type kept unvalidated; the rest accounted for
    assert by_key(rows["raw_record"])["mp-1"]["record_type"] == "fhir:MedicinalProduct"
    st = stats.files[str(FIXTURES / "bad_bundle.json")]
    assert all(st.resources[t] == st.mapped[t] + st.rejected[t] for t in st.resources)


def test_malformed_json_file_is_one_rejection() -> None:
    stats = FhirStats()
    rows, rejections = run("malformed.json", stats=stats)
    assert rows == {}
    assert len(rejections) == 1
    r = rejections[0]
    assert (r.entity, r.line, r.field) == ("fhir:unparseable", None, None)
    assert r.reason.startswith("file is not valid JSON") and isinstance(r.raw, bytes)
    assert stats.files[str(FIXTURES / "malformed.json")].rejected["unparseable"] == 1


def test_ndjson_bad_line_is_rejected_alone() -> None:
    rows, rejections = run("resources.ndjson")
    assert [(r.line, r.entity) for r in rejections] == [(4, "fhir:unparseable")]
    assert isinstance(rejections[0].raw, str)
    assert [(r["key"], r["_line"]) for r in rows["observation"]] == [("nd-obs-1", 2), ("nd-obs-3", 5)]
    assert rows["patient"][0]["key"] == "nd-1"


def test_single_resource_file() -> None:
    rows, rejections = run("single_patient.json")
    assert rejections == []
    assert rows["patient"] == [
        {**rows["patient"][0], "key": "single-1", "name": "匿名", "sex": "unknown", "_line": 1}
    ]


def test_output_is_deterministic_and_input_untouched() -> None:
    before = (FIXTURES / "good_bundle.json").read_bytes()
    first = [
        i.table.to_pylist() if isinstance(i, StagedBatch) and i.table else i for i in read_fhir([FIXTURES])
    ]
    second = [
        i.table.to_pylist() if isinstance(i, StagedBatch) and i.table else i for i in read_fhir([FIXTURES])
    ]
    assert first == second
    assert (FIXTURES / "good_bundle.json").read_bytes() == before


def test_value_set_checks_only_the_bound_system() -> None:
    other_system = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://example.org/local", "code": "whatever"}]},
    }
    assert check_value_sets(other_system) is None
    bad = {"resourceType": "Appointment", "status": "booked", "participant": [{"status": "maybe"}]}
    violation = check_value_sets(bad)
    assert violation is not None and violation.path == "Appointment.participant[0].status"
    assert code_system_name("http://hl7.org/fhir/sid/icd-10-cm") == "ICD-10"
    assert code_system_name("http://snomed.info/sct") == "SNOMED-CT"
    assert code_system_name(None) == "local"


# --- the shared Synthea bundles --------------------------------------------------------------------


def _shared_files() -> list[Path]:
    if not SHARED_FHIR.is_dir():
        pytest.skip(f"../shared/data/synthea not present: {SHARED_FHIR} is missing")
    return sorted(SHARED_FHIR.glob("*.json"))


@pytest.fixture(scope="module")
def shared() -> tuple[list[Path], list[StagedBatch | Rejection], FhirStats]:
    files = _shared_files()
    stats = FhirStats()
    return files, list(read_fhir(files, stats=stats)), stats


@pytest.mark.shared_data
def test_shared_every_resource_is_accounted_for(
    shared: tuple[list[Path], list[StagedBatch | Rejection], FhirStats],
) -> None:
    files, items, stats = shared
    assert len(files) == 8
    for path in files:
        resources = [e["resource"] for e in json.loads(path.read_text("utf-8"))["entry"]]
        expected = Counter(r["resourceType"] for r in resources)
        st = stats.files[str(path)]
        assert st.resources == expected, path.name
        assert all(st.resources[t] == st.mapped[t] + st.rejected[t] for t in expected), path.name

        # independently of the stats: distinct resources seen in the batches, per resource type
        seen: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        obs_rows = 0
        for item in items:
            if isinstance(item, Rejection):
                if item.file == str(path):
                    rejected[item.entity.removeprefix("fhir:")] += 1
                continue
            assert item.table is not None
            table = item.table.filter(pc.equal(item.table["_file"], str(path)))
            if table.num_rows == 0:
                continue
            assert item.table.num_rows == table.num_rows  # one batch per entity per file
            if item.entity == "raw_record":
                seen.update(table["record_type"].to_pylist())
            elif item.entity == "observation":
                obs_rows += table.num_rows
                seen["fhir:Observation"] += len({k.split("/")[0] for k in table["key"].to_pylist()})
            elif item.entity != "patient_identifier":
                assert len(set(table["key"].to_pylist())) == table.num_rows
                seen[f"fhir:{ENTITY_TYPE[item.entity]}"] += table.num_rows
        for rtype, n in expected.items():
            assert seen[f"fhir:{rtype}"] + rejected[rtype] == n, (path.name, rtype)

        # observation component expansion, counted from the JSON
        obs = [r for r in resources if r["resourceType"] == "Observation"]
        own = sum(1 for r in obs if "component" not in r or any(k.startswith("value") for k in r))
        components = sum(len(r.get("component", [])) for r in obs)
        assert st.component_rows == components
        assert obs_rows == own + components


@pytest.mark.shared_data
def test_shared_rejections_are_few_and_explained(
    shared: tuple[list[Path], list[StagedBatch | Rejection], FhirStats],
) -> None:
    _, items, _ = shared
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert len(rejections) <= 5
    for r in rejections:
        assert r.field and r.reason.startswith(r.field) and len(r.reason) < 300
        assert isinstance(r.raw, dict) and r.line is not None


@pytest.mark.shared_data
def test_shared_references_resolve_across_files(
    shared: tuple[list[Path], list[StagedBatch | Rejection], FhirStats],
) -> None:
    _, items, _ = shared
    keys: dict[str, set[str]] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if isinstance(item, StagedBatch) and item.table is not None:
            rows = item.table.to_pylist()
            tables.setdefault(item.entity, []).extend(rows)
            keys.setdefault(item.entity, set()).update(r["key"] for r in rows)
    assert len(keys["patient"]) == 6 and len(keys["organization"]) == 173 and len(keys["doctor"]) == 173
    for enc in tables["encounter"]:
        assert enc["patient_key"] in keys["patient"]
        assert enc["org_key"] in keys["organization"]
        assert enc["doctor_key"] in keys["doctor"]
        assert enc["encounter_class"] in {"outpatient", "emergency", "inpatient"}
    for entity in ("observation", "condition", "procedure", "immunization", "prescription", "care_plan"):
        for row in tables[entity]:
            assert row["patient_key"] in keys["patient"], entity
            assert row["encounter_key"] is None or row["encounter_key"] in keys["encounter"], entity
    assert all(d["org_key"] in keys["organization"] for d in tables["doctor"])
    assert all(c["code_system"] == "SNOMED-CT" for c in tables["condition"])
    assert all(p["code_system"] == "RxNorm" for p in tables["prescription"])
    # one SSN per patient, kind other (US numbers are not resident IDs)
    ssn = [r for r in tables["patient_identifier"] if r["system"] == "http://hl7.org/fhir/sid/us-ssn"]
    assert len(ssn) == 6 and {r["kind"] for r in ssn} == {"other"}
