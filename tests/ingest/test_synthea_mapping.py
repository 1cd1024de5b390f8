"""The built-in Synthea CSV mapping: it parses, covers every file of an export, names existing columns."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb
import pytest

from careloop.errors import IngestError
from careloop.ingest.batch import Rejection
from careloop.ingest.mapping import ColumnSpec, Mapping, parse_mapping
from careloop.ingest.synthea import synthea_mapping, synthea_mapping_data

REPO = Path(__file__).resolve().parents[2]
SHARED_CSV = REPO.parent / "shared" / "data" / "synthea" / "csv"

#: every CSV of a standard Synthea export and the entity it feeds
STANDARD = {
    "patients.csv": {"patient", "patient_identifier"},
    "encounters.csv": {"encounter"},
    "conditions.csv": {"condition"},
    "medications.csv": {"prescription"},
    "observations.csv": {"observation"},
    "procedures.csv": {"procedure"},
    "immunizations.csv": {"immunization"},
    "allergies.csv": {"allergy"},
    "careplans.csv": {"care_plan"},
    "devices.csv": {"device_use"},
    "supplies.csv": {"supply_use"},
    "imaging_studies.csv": {"imaging_study"},
    "organizations.csv": {"organization"},
    "providers.csv": {"doctor"},
    "payers.csv": {"payer"},
    "payer_transitions.csv": {"coverage"},
}


def shared_dir() -> Path:
    if not SHARED_CSV.is_dir():
        pytest.skip(f"../shared/data/synthea not present: {SHARED_CSV} is missing")
    return SHARED_CSV


def referenced_columns(spec: ColumnSpec) -> set[str]:
    if spec.column is not None:
        return {spec.column}
    if spec.columns is not None:
        return set(spec.columns)
    if spec.expr is not None:
        return set(re.findall(r'"([^"]+)"', spec.expr))
    return set()


def header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


def test_packaged_mapping_parses_and_covers_the_standard_export() -> None:
    mapping = parse_mapping(synthea_mapping_data(), origin="synthea.yaml")
    assert mapping.source == "synthea"
    entities: dict[str, set[str]] = {}
    for f in mapping.files:
        entities.setdefault(f.path, set()).add(f.entity)
        assert "key" in f.columns, f.path
    assert entities == STANDARD


def test_files_without_id_are_keyed_by_row_hash() -> None:
    mapping = parse_mapping(synthea_mapping_data())
    hashed = {f.path for f in mapping.files if f.column_specs()["key"].row_hash}
    assert hashed == {
        "conditions.csv",
        "medications.csv",
        "observations.csv",
        "procedures.csv",
        "immunizations.csv",
        "allergies.csv",
        "devices.csv",
        "supplies.csv",
        "payer_transitions.csv",
    }
    imaging = next(f for f in mapping.files if f.entity == "imaging_study").column_specs()["key"]
    assert (imaging.columns, imaging.join) == (["Id", "SERIES_UID", "INSTANCE_UID"], "|")


def test_absent_files_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "patients.csv").write_text("Id,BIRTHDATE\n", encoding="utf-8")
    mapping = synthea_mapping(tmp_path)
    assert isinstance(mapping, Mapping)
    assert [(f.path, f.entity) for f in mapping.files] == [
        ("patients.csv", "patient"),
        ("patients.csv", "patient_identifier"),  # SSN
        ("patients.csv", "patient_identifier"),  # driver's licence, where filled
        ("patients.csv", "patient_identifier"),  # passport, where filled
    ]
    assert mapping.base_dir == tmp_path


def test_folder_without_synthea_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no Synthea CSV file"):
        synthea_mapping(tmp_path)


@pytest.mark.shared_data
def test_shared_export_every_csv_is_mapped_with_existing_columns() -> None:
    directory = shared_dir()
    mapping = synthea_mapping(directory)
    present = sorted(p.name for p in directory.glob("*.csv"))
    assert sorted({f.path for f in mapping.files}) == present
    assert "observations.csv" not in present  # absent from the sample: its entry was dropped
    for f in mapping.files:
        columns = set(header(directory / f.path))
        for field, spec in f.column_specs().items():
            missing = referenced_columns(spec) - columns
            assert not missing, f"{f.path}: {field} names missing column(s) {missing}"


@pytest.mark.shared_data
def test_shared_export_reads_through_the_tabular_reader() -> None:
    from careloop.ingest.tabular import TabularReader

    directory = shared_dir()
    mapping = synthea_mapping(directory)
    con = duckdb.connect()
    reader = TabularReader(con, "csv")
    try:
        counts: list[tuple[str, str, int]] = []
        for item in reader.read(mapping, directory):
            assert not isinstance(item, Rejection), item.reason
            assert item.sql is not None and item.source == "synthea"
            table = con.sql(item.sql).to_arrow_table()
            counts.append((item.entity, table["_file"][0].as_py(), table.num_rows))
            assert "_line" in table.column_names
            assert len(set(table["key"].to_pylist())) == table.num_rows
    finally:
        reader.close()
        con.close()
    # entries with a `where:` filter read only matching rows (checked in test_shared_data.py)
    for entry, (entity, file, n) in zip(mapping.files, counts, strict=True):
        if entry.where:
            continue
        with Path(file).open(encoding="utf-8", newline="") as f:
            assert n == sum(1 for _ in csv.reader(f)) - 1, entity
