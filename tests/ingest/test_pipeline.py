"""Ingestion on every backend: good rows in, each bad row quarantined with a reason, nothing lost."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from careloop.config import get_settings
from careloop.errors import IngestError, MappingError
from careloop.ingest.pipeline import Ingestor
from careloop.ingest.quarantine import QuarantineView
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage import Backend

HEADER = "key,name,sex,birth_date,id_number,phone,registered_at\n"
GOOD = [
    "p1,张三,male,1949-12-31,11010519491231002X,13812345678,2024-01-01 10:00:00\n",
    "p2,李四,female,1988-01-01,440524188001010014,+86 139-1234-5678,2024-01-01T10:00:00+08:00\n",
    "p3,赵六,,,11010519491231002x,,\n",  # sex and birth date derived from the ID number
]
BROKEN = {
    "bad_date": "b1,钱七,male,1990-02-30,,13912345678,\n",
    "bad_checksum": "b2,孙八,male,,110105194912310021,,\n",
    "unknown_code": "b3,周九,robot,,,,\n",
    "missing_required": ",吴十,male,,,,\n",
    "too_many_columns": "b5,x,male,,,,,extra,\n",
}


def _write_broken(tmp: Path) -> Path:
    path = tmp / "patient.csv"
    with path.open("wb") as f:
        f.write(HEADER.encode())
        for line in GOOD[:2]:
            f.write(line.encode())
        for line in BROKEN.values():
            f.write(line.encode())
        f.write("b6,张三,male,,,,\n".encode("gbk"))  # wrong encoding
        f.write(GOOD[2].encode())
    return path


def _ingest(backend: Backend, path: Path, fmt: str, **kw: object) -> dict[str, object]:
    return Ingestor(backend, "default", clock=backend.clock).ingest(path, fmt, **kw).to_dict()  # type: ignore[arg-type]


def test_broken_file_keeps_good_rows_and_quarantines_each_bad_one(backend: Backend, tmp_path: Path) -> None:
    summary = _ingest(backend, _write_broken(tmp_path), "csv")
    counts = summary["entities"]["patient"]  # type: ignore[index]
    assert counts == {"rows": 9, "accepted": 3, "updated": 0, "duplicates": 0, "quarantined": 6}
    store = backend.workspace("default")
    assert sorted(r["key"] for r in store.rows("SELECT key FROM patient")) == ["p1", "p2", "p3"]
    q = {r["line"]: r for r in store.rows("SELECT line, field, reason, entity, source, file FROM quarantine")}
    assert set(q) == {4, 5, 6, 7, 8, 9}
    assert "birth_date" in q[4]["reason"] and q[4]["field"] == "birth_date"
    assert "check character" in q[5]["reason"] and q[5]["field"] == "id_number"
    assert "unknown value 'robot'" in q[6]["reason"]
    assert q[7]["field"] == "key" and "required" in q[7]["reason"]
    assert "column" in q[8]["reason"].lower()
    assert "encoding" in q[9]["reason"] and "gb18030" in q[9]["reason"]
    assert all(r["entity"] == "patient" and r["file"].endswith("patient.csv") for r in q.values())


def test_derived_and_normalised_values(backend: Backend, tmp_path: Path) -> None:
    _ingest(backend, _write_broken(tmp_path), "csv")
    rows = {
        r["key"]: r for r in backend.workspace("default").rows("SELECT key, sex, birth_date FROM patient")
    }
    assert rows["p3"]["sex"] == "female" and str(rows["p3"]["birth_date"]) == "1949-12-31"


def test_reingest_changes_nothing_and_changed_rows_update(backend: Backend, tmp_path: Path) -> None:
    path = _write_broken(tmp_path)
    _ingest(backend, path, "csv")
    again = _ingest(backend, path, "csv")["entities"]["patient"]  # type: ignore[index]
    assert again == {"rows": 9, "accepted": 0, "updated": 0, "duplicates": 3, "quarantined": 6}
    store = backend.workspace("default")
    assert store.count("patient") == 3
    path.write_text(HEADER + GOOD[0].replace("张三", "张叁") + GOOD[1], encoding="utf-8")
    changed = _ingest(backend, path, "csv")["entities"]["patient"]  # type: ignore[index]
    assert changed == {"rows": 2, "accepted": 0, "updated": 1, "duplicates": 1, "quarantined": 0}
    assert store.count("patient") == 3


def test_personal_identifiers_are_encrypted_with_blind_index(backend: Backend, tmp_path: Path) -> None:
    _ingest(backend, _write_broken(tmp_path), "csv")
    s = get_settings()
    cipher = FieldCipher(load_keyring(s.key_file, environment="test"))
    row = backend.workspace("default").rows(
        "SELECT name, phone, phone_bidx, id_number FROM patient WHERE key = 'p1'"
    )[0]
    assert row["phone"].startswith("v1:") and "13812345678" not in row["phone"]
    assert cipher.decrypt(row["phone"], "phone") == "+8613812345678"
    assert cipher.decrypt(row["name"], "name") == "张三"
    assert row["phone_bidx"] == cipher.blind_index("+8613812345678", "phone")
    raw = backend.workspace("default").rows("SELECT raw FROM quarantine")
    assert all(r["raw"].startswith("v1:") for r in raw)


def test_duckdb_file_holds_no_plaintext_identifiers(tmp_path: Path) -> None:
    from careloop.storage import connect

    db = tmp_path / "at-rest.duckdb"
    backend = connect(f"duckdb:///{db}")
    _ingest(backend, _write_broken(tmp_path), "csv")
    backend.execute("CHECKPOINT")
    backend.close()
    data = db.read_bytes()
    for secret in ["13812345678", "11010519491231002X", "张三".encode().decode()]:
        assert secret.encode() not in data


def test_quarantine_show_masks_original_values(backend: Backend, tmp_path: Path) -> None:
    _ingest(backend, _write_broken(tmp_path), "csv")
    view = QuarantineView(backend.workspace("default"))
    row = next(r for r in view.list(limit=None) if r["line"] == 4)
    shown = view.show(row["id"])
    assert shown is not None
    assert shown["raw"]["name"] == "钱*"
    assert shown["raw"]["phone"] == "139****5678"
    assert shown["raw"]["birth_date"] == "1990-02-30"


def test_icd10_codes_checked_and_normalised(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "condition.csv"
    path.write_text(
        "key,patient_key,code,code_system\n"
        "c1,p1,E119,ICD-10\nc2,p1,I10,ICD-10\nc3,p1,XYZ,ICD-10\nc4,p1,44054006,SNOMED-CT\nc5,p1,,ICD-10\n",
        encoding="utf-8",
    )
    counts = _ingest(backend, path, "csv")["entities"]["condition"]  # type: ignore[index]
    assert counts["accepted"] == 3 and counts["quarantined"] == 2
    store = backend.workspace("default")
    assert {r["key"]: r["code"] for r in store.rows("SELECT key, code FROM condition")} == {
        "c1": "E11.9",
        "c2": "I10",
        "c4": "44054006",
    }
    reasons = {r["line"]: r["reason"] for r in store.rows("SELECT line, reason FROM quarantine")}
    assert "ICD-10" in reasons[4] and "required" in reasons[6]


def test_mapping_with_chinese_headers_and_gb18030(backend: Backend, tmp_path: Path) -> None:
    data = tmp_path / "his.csv"
    data.write_bytes(
        (
            "病历号,姓名,性别,出生日期,联系电话\n"
            "M001,张三,男,1960/05/01,13812345678\n"
            "M002,李四,女,1975/11/30,\n"
        ).encode("gb18030")
        + b"M003,\xff\xfe,\xc4\xd0,1980/01/01,\n"
    )
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "source: his_h01\nfiles:\n  - path: his.csv\n    entity: patient\n    encoding: gb18030\n"
        "    columns:\n      key: 病历号\n      name: 姓名\n"
        "      sex: {column: 性别, map: {男: male, 女: female}}\n"
        "      birth_date: {column: 出生日期, format: '%Y/%m/%d'}\n      phone: 联系电话\n",
        encoding="utf-8",
    )
    counts = _ingest(backend, data, "csv", mapping=mapping)["entities"]["patient"]  # type: ignore[index]
    assert counts["accepted"] == 2 and counts["rows"] == 3 and counts["quarantined"] == 1
    rows = backend.workspace("default").rows("SELECT source, key, sex, birth_date FROM patient ORDER BY key")
    assert [(r["source"], r["key"], r["sex"], str(r["birth_date"])) for r in rows] == [
        ("his_h01", "M001", "male", "1960-05-01"),
        ("his_h01", "M002", "female", "1975-11-30"),
    ]


def test_jsonl_with_a_broken_line(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "event.jsonl"
    lines = [
        {
            "key": "e1",
            "name": "app_open",
            "occurred_at": "2026-10-01T08:00:00+08:00",
            "channel": "app",
            "properties": {"screen": "home"},
        },
        "{not json",
        {"key": "e2", "name": "article_view", "occurred_at": "2026-10-01T09:00:00+08:00", "channel": "fax"},
        {
            "key": "e3",
            "name": "refill_reminder_clicked",
            "occurred_at": "2026-10-02 09:00:00",
            "channel": "wechat_mp",
        },
    ]
    path.write_bytes(b"\n".join(x.encode() if isinstance(x, str) else orjson.dumps(x) for x in lines) + b"\n")
    counts = _ingest(backend, path, "jsonl")["entities"]["event"]  # type: ignore[index]
    assert counts == {"rows": 4, "accepted": 2, "updated": 0, "duplicates": 0, "quarantined": 2}
    store = backend.workspace("default")
    props = store.scalar("SELECT properties FROM event WHERE key = 'e1'")
    assert (
        orjson.loads(props) == {"screen": "home"} if isinstance(props, str) else props == {"screen": "home"}
    )
    reasons = sorted(r["reason"] for r in store.rows("SELECT reason FROM quarantine"))
    assert any("malformed JSON" in r for r in reasons) and any("'fax'" in r for r in reasons)


def test_parquet_with_typed_columns(backend: Backend, tmp_path: Path) -> None:
    import datetime as dt

    path = tmp_path / "dispense.parquet"
    tz = dt.timezone(dt.timedelta(hours=8))
    pq.write_table(
        pa.table(
            {
                "key": ["d1", "d2", "d3"],
                "patient_key": ["p1", "p1", None],
                "drug_code": ["amlodipine", "amlodipine", "metformin"],
                "drug_class": ["CCB", "CCB", "biguanide"],
                "dispensed_at": [
                    dt.datetime(2026, 1, 1, 9, tzinfo=tz),
                    dt.datetime(2026, 1, 31, 9, tzinfo=tz),
                    dt.datetime(2026, 2, 1, tzinfo=tz),
                ],
                "days_supply": [30, 30, 30],
                "channel": ["hospital", "dtp", "retail"],
                "amount": [35.5, 35.5, 12.0],
            }
        ),
        path,
    )
    counts = _ingest(backend, path, "parquet")["entities"]["dispense"]  # type: ignore[index]
    assert counts == {"rows": 3, "accepted": 2, "updated": 0, "duplicates": 0, "quarantined": 1}
    assert backend.workspace("default").scalar("SELECT sum(days_supply) FROM dispense") == 60


def test_mapping_errors_say_what_to_do(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("entity: patient\ncolumns:\n  key: nope\n", encoding="utf-8")
    with pytest.raises(MappingError, match="its columns are: a, b"):
        _ingest(backend, path, "csv", mapping=mapping)
    mapping.write_text("entity: patient\ncolumns:\n  colour: a\n", encoding="utf-8")
    with pytest.raises(MappingError, match="has no field"):
        _ingest(backend, path, "csv", mapping=mapping)
    with pytest.raises(MappingError, match="cannot tell which entity"):
        _ingest(backend, path, "csv")
    with pytest.raises(IngestError, match="does not exist"):
        _ingest(backend, tmp_path / "missing.csv", "csv")


def test_workspaces_keep_ingests_apart(backend: Backend, tmp_path: Path) -> None:
    path = _write_broken(tmp_path)
    Ingestor(backend, "hospital-a").ingest(path, "csv")
    assert backend.workspace("hospital-a").count("patient") == 3
    assert backend.workspace("hospital-b").count("patient") == 0
    assert backend.workspace("hospital-b").count("quarantine") == 0
