"""Reproducibility, options, the CLI command and the CSV format."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import typer
import yaml
from typer.testing import CliRunner

from careloop.cli.synth import register
from careloop.errors import ConfigError
from careloop.ingest.mapping import parse_mapping
from careloop.synth import generate_network


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_files(tmp_path: Path) -> None:
    a = generate_network(tmp_path / "a", 400, seed=5, chunk_size=150)
    b = generate_network(tmp_path / "b", 400, seed=5, chunk_size=150)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db
    assert a["files"] == b["files"]


def test_seed_and_as_of_change_the_data(tmp_path: Path) -> None:
    generate_network(tmp_path / "a", 300, seed=5)
    generate_network(tmp_path / "b", 300, seed=6)
    generate_network(tmp_path / "c", 300, seed=5, as_of=date(2025, 6, 30), years=1)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a["his_h001/patient.parquet"] != b["his_h001/patient.parquet"]
    assert a["crm/campaign.parquet"] != c["crm/campaign.parquet"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients": 0}, "--patients"),
        ({"patients": 10, "fmt": "xml"}, "--format"),
        ({"patients": 10, "years": 0}, "--years"),
        ({"patients": 10, "seed": -1}, "--seed"),
    ],
)
def test_bad_options_raise_config_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_network(tmp_path / "x", **kwargs)  # type: ignore[arg-type]


def test_a_non_empty_folder_needs_force(tmp_path: Path) -> None:
    generate_network(tmp_path / "n", 200)
    with pytest.raises(ConfigError, match="--force"):
        generate_network(tmp_path / "n", 200)
    generate_network(tmp_path / "n", 250, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):
        generate_network(tmp_path / "other", 200, overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """test app"""

    return app


def test_cli_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["synth", "--patients", "300", "--seed", "3", "--out", str(tmp_path / "o"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["patients"] == 300 and summary["total_rows"] == sum(summary["files"].values())
    assert summary["files"]["his_h001/patient.parquet"] > 0 and "seconds" in summary


def test_cli_table_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(_app(), ["synth", "-n", "200", "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    assert "ground truth" in _flat(ok.output) and "careloop ingest" in _flat(ok.output)
    again = runner.invoke(_app(), ["synth", "-n", "200", "--out", str(tmp_path / "o")])
    assert again.exit_code == 2 and "--force" in _flat(again.output)
    bad = runner.invoke(_app(), ["synth", "-n", "200", "--out", str(tmp_path / "p"), "--as-of", "31/10/2026"])
    assert bad.exit_code == 2 and "--as-of must be a date" in _flat(bad.output)


def _flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_csv_format(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    summary = generate_network(root, 300, fmt="csv")
    mapping = parse_mapping(
        yaml.safe_load((root / "careloop-mapping.yaml").read_text(encoding="utf-8")), base_dir=root
    )
    assert all(f.path.endswith(".csv") and f.format == "csv" for f in mapping.files)
    patients = pacsv.read_csv(root / "his_h001" / "patient.csv")
    assert "病历号" in patients.column_names and patients.num_rows == summary["files"]["his_h001/patient.csv"]
    encounters = pacsv.read_csv(
        root / "his_h001" / "encounter.csv",
        convert_options=pacsv.ConvertOptions(column_types={"就诊时间": "string"}),
    )
    assert all(t.endswith("+08:00") for t in encounters.column("就诊时间").to_pylist())
    assert (root / "truth" / "identity.parquet").exists()


@pytest.mark.parametrize("patients", [1, 3, 12])
def test_tiny_networks(tmp_path: Path, patients: int) -> None:
    summary = generate_network(tmp_path / "t", patients, seed=patients)
    assert summary["truth"]["truth/persons.parquet"] == patients
    assert summary["files"]["registry/organization.parquet"] > 0
