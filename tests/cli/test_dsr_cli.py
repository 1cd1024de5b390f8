"""`careloop dsr`, `retention`, `export aggregate` and `schema --markdown` end to end on the configured store."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
from typer.testing import CliRunner

from careloop.bench.patient360_bench import link_from_truth
from careloop.cli import app
from careloop.config import get_settings
from careloop.ingest.pipeline import Ingestor
from careloop.storage import connect
from careloop.synth import generate_network

runner = CliRunner()


def test_dsr_commands(tmp_path: Path) -> None:
    net = tmp_path / "net"
    generate_network(net, patients=30, seed=3, as_of=date(2026, 10, 31), chunk_size=100, quiet=True)
    with connect(get_settings().database_url) as backend:
        Ingestor(backend, "default").ingest(net, "parquet")
        store = backend.workspace("default")
        link_from_truth(store, net, backend.clock)
        person = store.scalar("SELECT min(person_id) FROM person")
    r = runner.invoke(app, ["dsr", "open", person, "--kind", "copy", "--json"])
    assert r.exit_code == 0, r.output
    copy_id = orjson.loads(r.stdout)["request_id"]
    r = runner.invoke(app, ["dsr", "access", copy_id, "--output", str(tmp_path / "copy.json"), "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads((tmp_path / "copy.json").read_bytes())["person_id"] == person
    assert runner.invoke(app, ["dsr", "close", copy_id]).exit_code == 0
    r = runner.invoke(
        app, ["dsr", "open", person, "--kind", "deletion", "--received", "2020-01-01T09:00+08:00", "--json"]
    )
    del_id = orjson.loads(r.stdout)["request_id"]
    overdue = orjson.loads(runner.invoke(app, ["dsr", "list", "--overdue", "--json"]).stdout)
    assert [o["request_id"] for o in overdue] == [del_id]
    r = runner.invoke(app, ["dsr", "erase", del_id])
    assert r.exit_code != 0 and "--yes" in r.output
    r = runner.invoke(app, ["dsr", "erase", del_id, "--yes", "--json"])
    assert r.exit_code == 0, r.output
    cert = orjson.loads(r.stdout)
    assert cert["person_id"] == person and cert["tables"]["person"] == 1 and len(cert["sha256"]) == 64
    shown = orjson.loads(runner.invoke(app, ["dsr", "show", del_id]).stdout)
    assert shown["certificate_sha256"] == cert["sha256"] and shown["status"] == "done"
    plan = orjson.loads(runner.invoke(app, ["retention", "plan", "--json"]).stdout)
    assert {p["table"] for p in plan} >= {"event", "consultation", "outbox_message"}
    assert runner.invoke(app, ["retention", "purge"]).exit_code != 0
    r = runner.invoke(app, ["export", "aggregate", "--by", "age_band,sex", "--k", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["k"] == 5
    r = runner.invoke(app, ["schema", "--markdown"])
    assert r.exit_code == 0 and "### dsr_suppression" in r.stdout and "| level |" in r.stdout
