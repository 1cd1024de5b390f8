"""Store-level identity resolution: stable ids, overrides that survive re-runs, incremental runs,
rules files, and accuracy against the synthetic network's truth."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from careloop.clock import FixedClock
from careloop.errors import ConfigError, NotFoundError
from careloop.identity import overrides
from careloop.identity.evaluate import pairwise_scores
from careloop.identity.resolve import resolve
from careloop.identity.rules import load_rules, parse_rules
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend, WorkspaceStore
from careloop.synth import generate_network

PATIENT_ENTITIES = {"patient", "patient_identifier"}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tmp_path_factory.mktemp("net") / "net"
    generate_network(net, 300, seed=5, chunk_size=1000)
    return net


def _subset(net: Path, out: Path, sources: set[str] | None) -> Path:
    """A copy of the network's patient files (of `sources`, or all) with a matching mapping."""
    mapping = yaml.safe_load((net / "careloop-mapping.yaml").read_text(encoding="utf-8"))
    keep = [
        f for f in mapping["files"]
        if f["entity"] in PATIENT_ENTITIES and (sources is None or f["source"] in sources)
    ]  # fmt: skip
    for f in keep:
        (out / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(net / f["path"], out / f["path"])
    (out / "careloop-mapping.yaml").write_text(
        yaml.safe_dump({**mapping, "files": keep}, allow_unicode=True), encoding="utf-8"
    )
    return out


def _ingest(backend: Backend, path: Path) -> WorkspaceStore:
    Ingestor(backend, "default", clock=backend.clock).ingest(path, "parquet")
    return backend.workspace("default")


def _links(store: WorkspaceStore) -> dict[tuple[str, str], str]:
    return {
        (r["source"], r["patient_key"]): r["person_id"] for r in store.rows("SELECT * FROM identity_link")
    }


def _partition(links: dict[tuple[str, str], str]) -> set[frozenset[tuple[str, str]]]:
    groups: dict[str, set[tuple[str, str]]] = {}
    for rec, pid in links.items():
        groups.setdefault(pid, set()).add(rec)
    return {frozenset(g) for g in groups.values()}


def test_resolve_is_stable_and_overrides_survive(
    backend: Backend, network: Path, tmp_path: Path, clock: FixedClock
) -> None:
    store = _ingest(backend, _subset(network, tmp_path / "all", None))
    first = resolve(store, clock=clock)
    assert first.mode == "full" and first.records == store.count("patient")
    links = _links(store)
    assert len(links) == first.records and len(set(links.values())) == first.persons
    assert first.created == first.persons
    assert store.scalar("SELECT count(*) FROM identity_history WHERE action = 'created'") == first.persons
    assert store.scalar("SELECT count(*) FROM person") == first.persons  # golden records were built

    clock.advance(timedelta(hours=1))
    again = resolve(store, clock=clock, full=True)
    assert _links(store) == links  # unchanged data: no id changes
    assert (again.created, again.merged, again.split, again.retired) == (0, 0, 0, 0)
    assert store.scalar("SELECT count(*) FROM identity_run") == 2

    # split: take one record out of a multi-record person
    sizes: dict[str, list[tuple[str, str]]] = {}
    for rec, pid in links.items():
        sizes.setdefault(pid, []).append(rec)
    person, recs = next((p, sorted(r)) for p, r in sorted(sizes.items()) if len(r) >= 3)
    out = f"{recs[0][0]}:{recs[0][1]}"
    result = overrides.split(store, person, [out], reason="different person", actor="dr.wang", clock=clock)
    new_id = result["new_person_id"]
    assert _links(store)[recs[0]] == new_id
    assert {"manual_split", "created"} <= {h["action"] for h in overrides.history(store, person)[1:]}

    clock.advance(timedelta(hours=1))
    rerun = resolve(store, clock=clock, full=True)
    after = _links(store)
    assert after[recs[0]] == new_id and all(after[r] == person for r in recs[1:])  # the split survives
    assert rerun.split == 0 and rerun.merged == 0

    # merge them back: the merge wins over the split and survives too
    overrides.merge(store, person, new_id, reason="same person after all", actor="dr.li", clock=clock)
    assert _links(store)[recs[0]] == person
    resolve(store, clock=clock, full=True)
    assert _links(store)[recs[0]] == person
    assert {o["action"]: o["active"] for o in overrides.list_overrides(store)}["split"] is False
    with pytest.raises(NotFoundError):
        overrides.merge(store, person, "Pnobody", reason="x", actor="y", clock=clock)


def test_incremental_matches_full_and_keeps_ids(
    backend: Backend, network: Path, tmp_path: Path, clock: FixedClock
) -> None:
    # the new records: call-centre callers, each at most one person's (no bridging of existing persons)
    first_sources = {
        "his_h001", "his_h002", "his_h003", "his_h004", "his_jc", "pharmacy", "dtp", "internet_hospital",
        "wechat_oa", "wechat_mp", "app", "crm",
    }  # fmt: skip
    first, everything = (
        _subset(network, tmp_path / "a", first_sources),
        _subset(network, tmp_path / "b", None),
    )

    # default rules and the model: the new records are matched with the saved model; no id changes
    store = _ingest(backend, first)
    base = resolve(store, clock=clock, downstream=False)
    before = _links(store)
    _ingest(backend, everything)
    inc = resolve(store, clock=clock, downstream=False)
    assert inc.mode == "incremental" and inc.new_records == inc.records - base.records > 0, inc.mode_reason
    assert inc.pairs_scored > 0 and inc.merged == inc.split == inc.retired == 0
    after = _links(store)
    assert all(after[r] == pid for r, pid in before.items())  # existing ids do not change
    assert any(pid in set(before.values()) for r, pid in after.items() if r[0] == "call_centre")
    nothing = resolve(store, clock=clock, downstream=False)
    assert nothing.mode == "incremental" and nothing.new_records == 0 and _links(store) == after

    # a simple case (identifier rules alone; the phone rule can change its mind when a record with
    # another birth year arrives): incremental gives the persons a full run gives
    simple = parse_rules(
        {
            **load_rules().model_dump(),
            "probabilistic": False,
            "rules": [r.model_dump() for r in load_rules().joins() if not r.names_agree],
        }
    )
    inc_store = backend.workspace("incremental")
    Ingestor(backend, "incremental", clock=clock).ingest(first, "parquet")
    resolve(inc_store, clock=clock, rules=simple, downstream=False)
    Ingestor(backend, "incremental", clock=clock).ingest(everything, "parquet")
    assert resolve(inc_store, clock=clock, rules=simple, downstream=False).mode == "incremental"
    full_store = backend.workspace("fresh")
    Ingestor(backend, "fresh", clock=clock).ingest(everything, "parquet")
    assert resolve(full_store, clock=clock, rules=simple, downstream=False).mode == "full"
    assert _partition(_links(full_store)) == _partition(_links(inc_store))


def test_changed_rules_force_a_full_run(
    backend: Backend, network: Path, tmp_path: Path, clock: FixedClock
) -> None:
    rules = parse_rules({**load_rules().model_dump(), "probabilistic": False})
    store = _ingest(backend, _subset(network, tmp_path / "a", {"his_h001", "crm"}))
    resolve(store, clock=clock, rules=rules, downstream=False)
    stricter = parse_rules({**rules.model_dump(), "threshold": 0.95})
    assert resolve(store, clock=clock, rules=stricter, downstream=False).mode == "full"


def test_bad_rules_files_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\] \(phone\)\.max_group_size"):
        parse_rules({"rules": [{"name": "phone", "kind": "field", "field": "phone", "max_group_size": 1}]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_rules({"rules": [{"name": "x", "kind": "identifier", "identifier": "unionid", "maxsize": 3}]})
    with pytest.raises(ConfigError, match="field: one of"):
        parse_rules({"rules": [{"name": "x", "kind": "field", "field": "email"}]})
    with pytest.raises(ConfigError, match="appear twice"):
        parse_rules({"rules": [{"name": "x", "kind": "identifier", "identifier": "a"}] * 2})
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")
    assert [r.name for r in load_rules().joins()][:2] == ["id_number", "unionid"]


@pytest.mark.slow
def test_accuracy_on_the_synthetic_network(tmp_path: Path, clock: FixedClock) -> None:
    """DuckDB only: the matching itself runs on DuckDB whichever engine holds the store."""
    from careloop.storage import connect

    net = tmp_path / "net"
    generate_network(net, 2000, seed=11)
    backend = connect(f"duckdb:///{tmp_path / 'store.duckdb'}", clock=clock)
    try:
        store = _ingest(backend, _subset(net, tmp_path / "all", None))
        resolve(store, clock=clock, downstream=False)
        links = store.sql("SELECT source, patient_key, person_id FROM identity_link")
    finally:
        backend.close()
    con = duckdb.connect()
    con.register("l", links)
    rows = con.execute(
        f"SELECT l.person_id, t.person_id, h.household_id FROM l "
        f"JOIN read_parquet('{net / 'truth/identity.parquet'}') t USING (source, patient_key) "
        f"JOIN read_parquet('{net / 'truth/households.parquet'}') h ON h.person_id = t.person_id"
    ).fetchall()
    scores = pairwise_scores([r[0] for r in rows], [r[1] for r in rows])
    # measured 2026-11-26 (with the booking rule): precision 1.000, recall 0.979, F1 0.989
    assert scores.precision >= 0.998 and scores.f1 >= 0.98, scores
    members: dict[str, set[str]] = {}
    for pid, true_pid, _ in rows:
        members.setdefault(pid, set()).add(true_pid)
    household = {r[1]: r[2] for r in rows}
    merged_family = [
        p
        for p, truth in members.items()
        if len(truth) > 1 and len({household[t] for t in truth}) < len(truth)
    ]
    assert merged_family == []


def test_cli_resolve_history_split_merge_overrides(network: Path, tmp_path: Path) -> None:
    """The commands on the configured (DuckDB) store: JSON output, overrides that hold, clear errors."""
    import orjson
    from typer.testing import CliRunner

    from careloop.cli import app
    from careloop.storage import connect

    with connect() as backend:
        Ingestor(backend, "default").ingest(_subset(network, tmp_path / "all", None), "parquet")
    runner = CliRunner()
    res = runner.invoke(app, ["identity", "resolve", "--json"])
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout)
    assert summary["mode"] == "full" and summary["persons"] == summary["created"] > 0
    again = orjson.loads(runner.invoke(app, ["identity", "resolve", "--json"]).stdout)
    assert again["mode"] == "incremental" and again["new_records"] == 0 and again["created"] == 0

    with connect() as backend:
        rows = backend.workspace("default").rows(
            "SELECT person_id, source, patient_key FROM identity_link ORDER BY person_id, source, patient_key"
        )
    by_person: dict[str, list[str]] = {}
    for r in rows:
        by_person.setdefault(r["person_id"], []).append(f"{r['source']}:{r['patient_key']}")
    person, recs = next((p, r) for p, r in by_person.items() if len(r) >= 2)
    res = runner.invoke(
        app,
        [
            "identity",
            "split",
            person,
            "--records",
            recs[0],
            "--reason",
            "two people",
            "--actor",
            "qa",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    new_id = orjson.loads(res.stdout)["new_person_id"]
    hist = orjson.loads(runner.invoke(app, ["identity", "history", new_id, "--json"]).stdout)
    assert hist["records"] == [recs[0]] and hist["history"][-1]["actor"] == "qa"
    res = runner.invoke(app, ["identity", "merge", person, new_id, "--reason", "same after all", "--json"])
    assert res.exit_code == 0, res.output
    listed = orjson.loads(runner.invoke(app, ["identity", "overrides", "--json"]).stdout)
    assert {o["action"] for o in listed} == {"split", "merge"}
    assert runner.invoke(app, ["identity", "resolve", "--full"]).exit_code == 0

    res = runner.invoke(app, ["identity", "history", "Pnobody"])
    assert res.exit_code == 1 and "no history" in res.output
    res = runner.invoke(app, ["identity", "split", person, "--records", "nocolon", "--reason", "x"])
    assert res.exit_code == 2 and "SOURCE:PATIENT_KEY" in res.output
    bad = tmp_path / "rules.yaml"
    bad.write_text("threshold: 2\n", encoding="utf-8")
    res = runner.invoke(app, ["identity", "resolve", "--rules", str(bad)])
    assert res.exit_code == 2 and "threshold" in res.output
