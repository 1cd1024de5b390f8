"""The generated files: layout, mapping, domain conformance, keys, references, identifiers, time."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from careloop.domain import entities, field_specs
from careloop.domain.identifiers import (
    id_birth_date,
    id_sex,
    is_wechat_id,
    normalize_id_number,
    normalize_mobile,
)
from careloop.ingest.mapping import parse_mapping
from careloop.synth.files import FILES, PATIENT_SOURCES
from careloop.synth.registry import HIS_SOURCES
from tests.synth.conftest import PATIENTS, Net

REGISTRY_ENTITIES = {"organization", "department", "doctor", "payer"}
AS_OF_END = datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Shanghai"))


def canonical(net: Net, source: str, entity: str) -> pa.Table:
    """A file with canonical column names and values (the mapping applied)."""
    spec = FILES[(source, entity)]
    table = net.table(spec.path("parquet"))
    cols = {}
    for field, column in spec.columns:
        arr = table.column(column)
        if field in spec.value_maps:
            inverse = {v: k for k, v in spec.value_maps[field].items()}
            arr = pa.array(
                [inverse.get(v, v) if v is not None else None for v in arr.to_pylist()], pa.string()
            )
        cols[field] = arr
    return pa.table(cols)


def test_every_file_exists_and_the_summary_counts_rows(net: Net) -> None:
    for spec in FILES.values():
        path = net.root / spec.path("parquet")
        assert path.exists(), path
        assert net.table(spec.path("parquet")).num_rows == net.summary["files"][spec.path("parquet")]
    for name in ("identity", "households", "persons", "churn", "no_show", "adherence", "campaigns"):
        assert (net.root / "truth" / f"{name}.parquet").exists()
    assert net.summary["total_rows"] == sum(net.summary["files"].values())
    assert 30 <= net.summary["rows_per_patient"] <= 90


def test_mapping_parses_and_lists_every_file(net: Net) -> None:
    data = yaml.safe_load((net.root / "careloop-mapping.yaml").read_text(encoding="utf-8"))
    mapping = parse_mapping(data, base_dir=net.root)
    assert {f.path for f in mapping.files} == {s.path("parquet") for s in FILES.values()}
    assert all(f.source for f in mapping.files)
    his_patient = next(f for f in mapping.files if f.path == "his_h001/patient.parquet")
    specs = his_patient.column_specs()
    assert specs["key"].column == "病历号"
    assert specs["sex"].map == {"男": "male", "女": "female"}
    columns = net.table("his_h001/patient.parquet").column_names
    assert {"病历号", "姓名", "性别", "出生日期", "身份证号", "联系电话", "住址"} <= set(columns)
    assert set(net.table("his_h001/patient.parquet").column("性别").drop_null().to_pylist()) == {"男", "女"}


def test_columns_are_the_domain_fields_with_arrow_types(net: Net) -> None:
    for (source, entity), spec in FILES.items():
        fields = {s.name: s for s in field_specs(entities()[entity])}
        table = net.table(spec.path("parquet"))
        for (field, _), typ in zip(spec.columns, table.schema.types, strict=True):
            assert field in fields, (source, entity, field)
            py = fields[field].py_type.__name__
            if py == "datetime":
                assert pa.types.is_timestamp(typ) and typ.tz == "Asia/Shanghai", (source, entity, field)
            elif py == "date":
                assert typ == pa.date32(), (source, entity, field)


@pytest.mark.parametrize("key", sorted(FILES), ids=lambda k: f"{k[0]}/{k[1]}")
def test_values_conform_to_the_domain(net: Net, key: tuple[str, str]) -> None:
    source, entity = key
    table = canonical(net, source, entity)
    model = entities()[entity]
    for spec in field_specs(model):
        if spec.name not in table.column_names:
            continue
        col = table.column(spec.name)
        if spec.required:
            assert col.null_count == 0, f"{source}/{entity}.{spec.name} has nulls"
        if spec.enum:
            bad = set(pc.unique(col.drop_null()).to_pylist()) - set(spec.enum)
            assert not bad, f"{source}/{entity}.{spec.name}: {bad}"
    # a sample through the pydantic model itself
    for row in table.slice(0, 200).to_pylist():
        if "properties" in row and row["properties"] is not None:
            row["properties"] = __import__("json").loads(row["properties"])
        model.model_validate({**{k: v for k, v in row.items() if v is not None}, "source": source})


@pytest.mark.parametrize("key", sorted(FILES), ids=lambda k: f"{k[0]}/{k[1]}")
def test_keys_are_unique(net: Net, key: tuple[str, str]) -> None:
    table = canonical(net, *key)
    keys = table.column("key")
    assert keys.null_count == 0
    assert len(pc.unique(keys)) == len(keys)


def test_references_resolve(net: Net) -> None:
    registry = {e: set(canonical(net, "registry", e).column("key").to_pylist()) for e in REGISTRY_ENTITIES}
    checked = 0
    for (source, entity), _spec in FILES.items():
        table = canonical(net, source, entity)
        for spec in field_specs(entities()[entity]):
            if not spec.ref or spec.name not in table.column_names:
                continue
            values = set(table.column(spec.name).drop_null().to_pylist())
            if not values:
                continue
            if spec.ref in REGISTRY_ENTITIES:
                known = registry[spec.ref]
            else:
                assert (source, spec.ref) in FILES, f"{source}/{entity}.{spec.name} -> {spec.ref} has no file"
                known = set(canonical(net, source, spec.ref).column("key").to_pylist())
            missing = values - known
            assert not missing, (
                f"{source}/{entity}.{spec.name}: {len(missing)} unknown, e.g. {next(iter(missing))}"
            )
            checked += len(values)
    assert checked > 10_000


def test_identity_truth_matches_the_patient_files(net: Net) -> None:
    truth = net.truth("identity")
    in_truth = set(
        zip(truth.column("source").to_pylist(), truth.column("patient_key").to_pylist(), strict=True)
    )
    in_data = set()
    for source in PATIENT_SOURCES:
        for key in canonical(net, source, "patient").column("key").to_pylist():
            in_data.add((source, key))
    assert in_truth == in_data
    assert len(in_truth) == truth.num_rows
    persons = set(net.truth("persons").column("person_id").to_pylist())
    assert len(persons) == PATIENTS
    assert set(truth.column("person_id").to_pylist()) <= persons
    # everyone is somewhere, most people in several systems
    per_person = defaultdict(set)
    for s, p in zip(truth.column("source").to_pylist(), truth.column("person_id").to_pylist(), strict=True):
        per_person[p].add(s)
    assert set(per_person) == persons
    assert sum(len(v) >= 3 for v in per_person.values()) > PATIENTS * 0.4
    his_counts = [len(v & set(HIS_SOURCES)) for v in per_person.values()]
    assert max(his_counts) <= 2 and min(his_counts) >= 0


def test_identity_noise_is_planted(net: Net) -> None:
    persons = {r["person_id"]: r for r in net.truth("persons").to_pylist()}
    identity = net.truth("identity")
    person_of = dict(
        zip(
            zip(
                identity.column("source").to_pylist(), identity.column("patient_key").to_pylist(), strict=True
            ),
            identity.column("person_id").to_pylist(),
            strict=True,
        )
    )
    typos = old_phones = transposed = missing_id = total = 0
    for source in PATIENT_SOURCES:
        for row in canonical(net, source, "patient").to_pylist():
            p = persons[person_of[(source, row["key"])]]
            total += 1
            if row["name"] is not None and row["name"] != p["name"]:
                typos += 1
            phone = row["phone"] and normalize_mobile(row["phone"])
            if phone and phone == p["old_phone"]:
                old_phones += 1
            if row["birth_date"] is not None and row["birth_date"] != p["birth_date"]:
                transposed += 1
            missing_id += row["id_number"] is None
    assert 0.005 < typos / total < 0.1
    assert old_phones > 10 and transposed > 3 and missing_id > total * 0.2
    # duplicate records within a HIS
    dups = 0
    for source in HIS_SOURCES:
        seen: dict[str, int] = defaultdict(int)
        for key in canonical(net, source, "patient").column("key").to_pylist():
            seen[person_of[(source, key)]] += 1
        dups += sum(c > 1 for c in seen.values())
    assert dups > 3


def test_identifiers_are_valid(net: Net) -> None:
    persons = net.truth("persons").to_pylist()
    for p in persons:
        assert normalize_id_number(p["id_number"]) == p["id_number"]
        assert id_birth_date(p["id_number"]) == p["birth_date"]
        assert id_sex(p["id_number"]) == p["sex"]
        assert p["id_number"][:2] == "33"  # Zhejiang
    for source in PATIENT_SOURCES:
        t = canonical(net, source, "patient")
        for v in t.column("id_number").drop_null().to_pylist():
            normalize_id_number(v)
        for v in t.column("phone").drop_null().to_pylist():
            e164 = normalize_mobile(v)
            if source not in HIS_SOURCES and source not in ("pharmacy", "call_centre"):
                assert v == e164 and re.fullmatch(r"\+861[3-9]\d{9}", v)
    for source in ("wechat_oa", "wechat_mp"):
        ident = canonical(net, source, "patient_identifier").to_pylist()
        assert {r["kind"] for r in ident} == {"openid", "unionid"}
        assert all(is_wechat_id(r["value"]) for r in ident)
    oa = {
        r["patient_key"]: r["value"]
        for r in canonical(net, "wechat_oa", "patient_identifier").to_pylist()
        if r["kind"] == "unionid"
    }
    mp = {
        r["patient_key"]: r["value"]
        for r in canonical(net, "wechat_mp", "patient_identifier").to_pylist()
        if r["kind"] == "unionid"
    }
    assert not set(canonical(net, "wechat_oa", "patient").column("key").to_pylist()) & set(
        canonical(net, "wechat_mp", "patient").column("key").to_pylist()
    )  # openids are per app
    assert set(oa.values()) & set(mp.values())  # unionids link them


def test_households_truth(net: Net) -> None:
    hh = net.truth("households").to_pylist()
    persons = {p["person_id"]: p for p in net.truth("persons").to_pylist()}
    assert {r["person_id"] for r in hh} == set(persons)
    as_of = date(2026, 10, 31)
    for r in hh:
        age = (as_of - persons[r["person_id"]]["birth_date"]).days / 365.25
        if age < 14 and r["relationship"] == "child":
            assert r["guardian_person_id"] is not None
        if r["guardian_person_id"] is not None:
            g = persons[r["guardian_person_id"]]
            assert g["household_id"] == r["household_id"]
    sizes: dict[str, int] = defaultdict(int)
    for r in hh:
        sizes[r["household_id"]] += 1
    assert max(sizes.values()) >= 4 and sum(v == 1 for v in sizes.values()) > 10


def test_times_are_in_the_history(net: Net) -> None:
    start = AS_OF_END - timedelta(days=2 * 366 + 1)
    for (source, entity), spec in FILES.items():
        table = net.table(spec.path("parquet"))
        for (field, column), typ in zip(spec.columns, table.schema.types, strict=True):
            if not pa.types.is_timestamp(typ) or table.num_rows == 0:
                continue
            col = table.column(column).drop_null()
            if len(col) == 0 or field in ("registered_at", "recorded_at", "expires_at", "start_date"):
                continue
            hi = pc.max(col).as_py()
            if (entity, field) in (("appointment", "scheduled_at"), ("campaign", "end")):
                assert hi < AS_OF_END + timedelta(days=61)
            else:
                assert hi < AS_OF_END, (source, entity, field, hi)
            if entity not in ("patient", "consent", "device_use"):
                assert pc.min(col).as_py() >= start - timedelta(days=100), (source, entity, field)
    appts = canonical(net, "his_h001", "appointment")
    future = pc.greater_equal(appts.column("scheduled_at"), pa.scalar(AS_OF_END))
    assert set(pc.filter(appts.column("status"), future).to_pylist()) <= {"booked"}


def test_events_carry_json_properties_and_app_ids(net: Net) -> None:
    import json

    names = set()
    for source in ("app", "wechat_oa", "wechat_mp", "call_centre"):
        t = canonical(net, source, "event")
        names |= set(t.column("name").to_pylist())
        for v in t.column("properties").drop_null().to_pylist()[:2000]:
            assert isinstance(json.loads(v), dict)
    assert {
        "app_open",
        "article_view",
        "refill_reminder_clicked",
        "appointment_booked",
        "call_inbound",
    } <= names
    oa = canonical(net, "wechat_oa", "event")
    assert pc.all(pc.equal(oa.column("openid"), oa.column("patient_key"))).as_py()
    app = canonical(net, "app", "event")
    assert app.column("user_id").null_count == 0


def test_online_consultations_are_follow_ups_and_drugs_have_classes(net: Net) -> None:
    c = canonical(net, "internet_hospital", "consultation")
    assert c.num_rows > 0 and pc.all(c.column("is_follow_up")).as_py()
    for source in ("his_h001", "pharmacy", "dtp", "internet_hospital"):
        d = canonical(net, source, "dispense")
        assert d.column("drug_class").null_count == 0
        assert set(pc.unique(d.column("days_supply")).to_pylist()) >= (
            {28, 30, 90} if source != "dtp" else {30}
        )
    drugs = set(canonical(net, "his_h001", "prescription").column("drug_name").to_pylist())
    assert any("氨氯地平" in d for d in drugs) and any("二甲双胍" in d for d in drugs)


WHEN = {
    "encounter": "start", "appointment": "booked_at", "consent": "recorded_at", "event": "occurred_at",
    "immunization": "occurred_at", "dispense": "dispensed_at", "prescription": "written_at",
    "observation": "effective_at", "feedback": "submitted_at", "message": "created_at", "touch": "occurred_at",
    "consultation": "started_at", "condition": "onset", "care_plan": "start", "coverage": "start_date",
    "device_use": "start",
}  # fmt: skip


def test_nothing_happens_before_birth(net: Net) -> None:
    identity = net.truth("identity")
    person_of = dict(zip(zip(identity.column("source").to_pylist(), identity.column("patient_key").to_pylist(),
                             strict=True), identity.column("person_id").to_pylist(), strict=True))  # fmt: skip
    birth = {r["person_id"]: r["birth_date"] for r in net.truth("persons").to_pylist()}
    tz = ZoneInfo("Asia/Shanghai")
    checked = 0
    for (source, entity), _spec in FILES.items():
        if entity not in WHEN:
            continue
        t = canonical(net, source, entity)
        for key, when in zip(
            t.column("patient_key").to_pylist(), t.column(WHEN[entity]).to_pylist(), strict=True
        ):
            if when is None:
                continue
            day = when.astimezone(tz).date() if isinstance(when, datetime) else when
            assert day >= birth[person_of[(source, key)]], (source, entity, key, day)
            checked += 1
    assert checked > 50_000
