"""`careloop patient show|find|index` on both engines: JSON shape, masking, errors that say what to do."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.config import get_settings
from careloop.patients import PatientView, Viewer, Visibility
from tests.patients.conftest import Linked

runner = CliRunner()


@pytest.fixture
def cli_store(linked: Linked, monkeypatch: pytest.MonkeyPatch) -> Linked:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", linked.backend.url)
    get_settings.cache_clear()
    return linked


def test_show_find_and_errors(cli_store: Linked) -> None:
    pid = cli_store.busiest_person()
    clear = PatientView(cli_store.store, viewer=Viewer(default=Visibility.CLEAR)).show(pid)
    planted = {f: clear["golden"]["fields"][f]["value"] for f in ("name", "phone", "id_number")}
    result = runner.invoke(app, ["patient", "show", pid, "--json", "--events", "3"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["person_id"] == pid and len(doc["events"]["items"]) <= 3
    assert {"identifiers", "golden", "sources", "medications", "household", "history"} <= set(doc)
    table = runner.invoke(app, ["patient", "show", doc["sources"][0]["ref"]])
    assert table.exit_code == 0 and "golden record" in table.stdout and pid in table.stdout
    for value in (planted["name"], planted["phone"], planted["id_number"]):
        if value:
            assert value not in result.stdout and value not in table.stdout
            assert value.removeprefix("+86") not in result.stdout
    if planted["phone"]:
        found = runner.invoke(app, ["patient", "find", "--phone", planted["phone"], "--json"])
        assert found.exit_code == 0, found.output
        assert pid in {f["person_id"] for f in orjson.loads(found.stdout)}
        assert planted["phone"].removeprefix("+86") not in found.stdout
    missing = runner.invoke(app, ["patient", "show", "his_h001:nobody"])
    assert missing.exit_code == 1 and "careloop patient find" in missing.output
    both = runner.invoke(app, ["patient", "find"])
    assert both.exit_code == 2 and "--phone or --id-number" in both.output
    wrong_ws = runner.invoke(app, ["patient", "show", pid, "--workspace", "nowhere"])
    assert wrong_ws.exit_code != 0 and "careloop workspace create" in wrong_ws.output


def test_index_command_creates_and_drops_duckdb_lookup_indexes(cli_store: Linked) -> None:
    created = runner.invoke(app, ["patient", "index", "--json"])
    assert created.exit_code == 0, created.output
    out = orjson.loads(created.stdout)
    if out["engine"] == "duckdb":
        assert "ix_p360_event_patient_key" in out["created"]
        again = orjson.loads(runner.invoke(app, ["patient", "index", "--json"]).stdout)
        assert again["created"] == []
        dropped = orjson.loads(runner.invoke(app, ["patient", "index", "--drop", "--json"]).stdout)
        assert set(dropped["dropped"]) == set(out["created"])
    else:
        assert out == {"engine": "postgres", "created": []}
