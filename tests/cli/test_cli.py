"""The CLI as a user meets it: --json everywhere, errors that say what to do and exit non-zero."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.config import get_settings

runner = CliRunner()


def _json(args: list[str]) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "patient.csv"
    path.write_text(
        "key,name,sex,phone,birth_date\np1,张三,male,13812345678,1950-01-01\np2,李四,robot,,1960-01-01\n",
        encoding="utf-8",
    )
    return path


def test_ingest_json_summary_and_quarantine_commands(tmp_path: Path) -> None:
    summary = _json(["ingest", str(_csv(tmp_path)), "--format", "csv"])
    assert isinstance(summary, dict)
    assert summary["entities"]["patient"] == {
        "rows": 2,
        "accepted": 1,
        "updated": 0,
        "duplicates": 0,
        "quarantined": 1,
    }
    listed = _json(["quarantine", "list"])
    assert isinstance(listed, dict) and listed["total"] == 1
    qid = listed["rows"][0]["id"]
    shown = _json(["quarantine", "show", qid])
    assert isinstance(shown, dict) and shown["raw"]["name"] == "李*" and "robot" in shown["reason"]
    out = tmp_path / "bad.csv"
    exported = _json(["quarantine", "export", "--output", str(out)])
    assert exported == {"rows": 1, "output": str(out)}
    text = out.read_text(encoding="utf-8")
    assert "robot" in text and "李四" not in text
    runs = _json(["runs"])
    assert isinstance(runs, list) and runs[0]["rows"] == 2 and runs[0]["status"] == "completed"


def test_human_output_masks_and_summarises(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(_csv(tmp_path)), "--format", "csv"])
    assert result.exit_code == 0
    assert "quarantined" in result.output and "13812345678" not in result.output


def test_db_status_schema_and_workspaces(tmp_path: Path) -> None:
    _json(["ingest", str(_csv(tmp_path)), "--format", "csv"])
    status = _json(["db", "status"])
    assert isinstance(status, dict) and status["rows"]["patient"] == 1 and status["workspace"] == "default"
    schema = _json(["schema", "patient"])
    assert isinstance(schema, dict)
    phone = next(c for c in schema["patient"]["columns"] if c["name"] == "phone")
    assert phone["pii"] == "phone" and phone["encrypted"] and phone["level"] == 4
    assert _json(["workspace", "create", "brand-x"]) == {"workspace": "brand-x", "created": True}
    assert "brand-x" in _json(["workspace", "list"])  # type: ignore[operator]


def test_config_hides_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", "postgresql://app:s3cret@db.internal:5432/careloop")
    get_settings.cache_clear()
    out = _json(["config"])
    assert isinstance(out, dict) and out["database_url"] == "postgresql://app@db.internal:5432/careloop"
    assert "s3cret" not in str(out)


def test_errors_say_what_to_do_and_exit_nonzero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--format", "csv"])
    assert result.exit_code != 0 and "does not exist" in result.output
    result = runner.invoke(app, ["ingest", str(_csv(tmp_path)), "--format", "xlsx"])
    assert result.exit_code != 0 and "csv, parquet, jsonl, fhir, synthea" in result.output
    result = runner.invoke(app, ["quarantine", "show", "no-such-id"])
    assert result.exit_code != 0 and "careloop quarantine list" in result.output
    result = runner.invoke(app, ["demo", "--as-of", "yesterday", "--no-serve"])
    assert result.exit_code == 2 and "--as-of must be a date" in result.output
    result = runner.invoke(app, ["bench", "nonsense"])
    assert result.exit_code == 2 and "unknown scenario" in result.output
    result = runner.invoke(app, ["schema", "nothing"])
    assert result.exit_code != 0 and "no entity" in result.output


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["ingest", "--help"],
        ["quarantine", "list", "--help"],
        ["synth", "--help"],
        ["demo", "--help"],
        ["bench", "--help"],
        ["db", "status", "--help"],
        ["serve", "--help"],
        ["persona", "build", "--help"],
        ["lookalike", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, args
        assert "Usage" in result.output


@pytest.mark.slow
def test_demo_builds_persons_a_user_can_open(tmp_path: Path) -> None:
    """The README's first command without serving: network -> ingest -> identity -> a patient 360."""
    out = _json(["demo", "--no-serve", "--patients", "300", "--data-dir", str(tmp_path / "data")])
    assert isinstance(out, dict)
    assert out["ingest"]["quarantined"] == 0 and out["ingest"]["rows"] > 10_000
    identity = out["identity"]
    assert 250 <= identity["persons"] < identity["records"]
    view = _json(["patient", "show", identity["example_person"]])
    assert isinstance(view, dict) and len(view["sources"]) > 3
    # the demo's event source: an event for one of the app's users lands on that user's person
    import base64

    from fastapi.testclient import TestClient

    from careloop.api import create_app
    from careloop.storage import connect

    events = out["events"]
    key = Path(events["write_key_file"]).read_text().strip()
    backend = connect()
    try:
        with TestClient(create_app(backend=backend)) as client:
            r = client.post(
                "/v1/track",
                json={"userId": events["example_user_id"], "event": "app_opened", "messageId": "demo-1"},
                headers={"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
            )
            assert r.status_code == 200, r.text
        store = backend.workspace("default")
        person = store.scalar("SELECT person_id FROM event WHERE key = 'demo-1'")
        app_source = store.scalar(
            "SELECT source FROM patient_identifier WHERE patient_key = :k AND kind = 'app_user_id'",
            {"k": events["example_user_id"]},
        )
        linked = store.scalar(
            "SELECT person_id FROM identity_link WHERE source = :s AND patient_key = :k",
            {"s": app_source, "k": events["example_user_id"]},
        )
        assert person is not None and person == linked
    finally:
        backend.close()
