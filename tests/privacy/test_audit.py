"""The audit chain on both engines: appends, every kind of tampering found at the entry it hit, concurrent
appends without gaps, no personal identifiers in entries, and the CLI / API reads that write entries."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.config import get_settings
from careloop.errors import PrivacyError, StorageError
from careloop.privacy.audit import (
    GENESIS,
    AuditEvent,
    AuditLog,
    ChainSigner,
    audit_event,
    entries,
    entry_hash,
    verify,
)
from careloop.privacy.keys import KeyRing
from careloop.storage import Backend, WorkspaceStore, connect
from tests.patients.conftest import Linked, make_linked, small_network  # noqa: F401 - a session fixture

runner = CliRunner()
WS = "default"


def _p(backend: Backend, sql: str) -> str:
    return sql.replace("?", "%s") if backend.dialect.name == "postgres" else sql


def _fill(store: WorkspaceStore, n: int, *, every: int = 5) -> AuditLog:
    """`n` entries (the first 4 one by one, the rest in one batch), a checkpoint every `every`."""
    log = AuditLog(store, checkpoint_every=every)
    for i in range(min(n, 4)):
        log.append(
            AuditEvent(f"cli:user{i}", "read.patient", "person", f"P{i:016x}", detail={"via": "cli", "n": i})
        )
    log.append_many(
        [
            AuditEvent(
                "api:anonymous", "send", "send_batch", None, detail={"sent": i, "channels": {"sms": 1}}
            )
            for i in range(4, n)
        ]
    )
    return log


def _update(backend: Backend, sql: str, params: list[Any]) -> None:
    backend.execute(_p(backend, sql), params)


def _cli_verify(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", backend.url)
    get_settings.cache_clear()
    result = runner.invoke(app, ["audit", "verify", "--json"])
    return result.exit_code, orjson.loads(result.stdout)


def test_chain_appends_and_verifies(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = backend.workspace(WS)
    _fill(store, 23)
    rows = backend.fetch_rows(
        _p(backend, "SELECT seq, prev_hash, hash FROM audit_entry WHERE workspace_id = ? ORDER BY seq"), [WS]
    )
    assert [r[0] for r in rows] == list(range(1, 24))
    assert rows[0][1] == GENESIS and all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows)))
    cps = backend.fetch_rows("SELECT seq FROM audit_checkpoint ORDER BY seq")
    assert [r[0] for r in cps] == [5, 10, 15, 20]
    report = verify(store)
    assert report.ok and report.entries == 23 and report.last_checkpoint == 20 and report.unsigned_tail == 3
    newest = entries(store, limit=2)
    assert [e.seq for e in newest] == [23, 22] and newest[0].as_dict()["detail"] == {
        "channels": {"sms": 1},
        "sent": 22,
    }
    assert [e.seq for e in entries(store, action="read*")] == [4, 3, 2, 1]
    assert [e.seq for e in entries(store, actor="cli:user2")] == [3]
    assert [e.seq for e in entries(store, target=f"P{1:016x}")] == [2]
    code, out = _cli_verify(backend, monkeypatch)
    assert code == 0 and out["ok"] and out["entries"] == 23 and out["first_problem"] is None
    # the on-demand checkpoint signs the head, once
    cp = AuditLog(store).checkpoint()
    assert cp is not None and cp.seq == 23 and AuditLog(store).checkpoint() == cp
    # another workspace has its own chain
    other = backend.workspace("other")
    audit_event(other, actor="cli:x", action="export", target_kind="segment", target_id="老年")
    assert [e.seq for e in entries(other)] == [1] and verify(other).ok and verify(store).ok


@pytest.mark.parametrize(
    ("column", "edit"),
    [
        ("detail", lambda v: v.replace('"sent":7', '"sent":8')),
        ("actor", lambda v: v[:-1] + chr(ord(v[-1]) + 1)),
        ("hash", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1")),
        ("target_kind", lambda v: v + "x"),
    ],
)
def test_editing_one_byte_fails_at_that_entry(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, column: str, edit: Any
) -> None:
    store = backend.workspace(WS)
    _fill(store, 12)
    (value,) = backend.fetch_rows(_p(backend, f"SELECT {column} FROM audit_entry WHERE seq = ?"), [8])[0]
    changed = edit(value)
    assert changed != value
    _update(backend, f"UPDATE audit_entry SET {column} = ? WHERE seq = ?", [changed, 8])
    report = verify(store)
    assert not report.ok and report.first is not None and report.first.seq == 8
    if column == "hash":
        assert report.first.kind == "hash_changed" and "stored hash was changed" in report.first.message
    else:
        assert report.first.message == "entry 8: hash mismatch — its content was changed"
    assert len(report.problems) == 1, report.problems  # the break is reported once, not down the chain
    code, out = _cli_verify(backend, monkeypatch)
    assert code == 1 and out["first_problem"]["seq"] == 8 and not out["ok"]


def test_deleted_swapped_and_inserted_entries(backend: Backend) -> None:
    store = backend.workspace(WS)
    _fill(store, 30, every=10)
    _update(backend, "DELETE FROM audit_entry WHERE seq = ?", [7])
    report = verify(store)
    assert (
        report.first is not None
        and report.first.message == "entry 7 missing (seq gap) — deleted from the log"
    )
    assert [p.seq for p in report.problems] == [7]

    # swap entries 12 and 13 (via a free seq: PostgreSQL's unique index checks each row)
    for a, b in ((12, -1), (13, 12), (-1, 13)):
        _update(backend, "UPDATE audit_entry SET seq = ? WHERE seq = ? AND workspace_id = ?", [b, a, WS])
    report = verify(store)
    swapped = [p for p in report.problems if p.seq in (12, 13)]
    assert swapped[0].message == "entry 12: holds what was written as entry 13 — entries were reordered"
    assert swapped[1].message == "entry 13: holds what was written as entry 12 — entries were reordered"
    assert report.first is not None and report.first.seq == 7  # the earlier deletion is still the first break

    # an entry added at the end by SQL, chained properly but not through careloop
    last = backend.fetch_rows(
        _p(backend, "SELECT hash FROM audit_entry WHERE workspace_id = ? AND seq = 30"), [WS]
    )[0][0]
    at = backend.clock.now()
    forged = entry_hash(WS, 31, at, "cli:mallory", None, "export", "segment", "s", None, None, last)
    _update(
        backend,
        'INSERT INTO audit_entry (workspace_id, seq, "at", actor, action, target_kind, target_id, prev_hash, hash) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [WS, 31, at, "cli:mallory", "export", "segment", "s", last, forged],
    )
    assert any(
        p.message == "entry 31 was added outside careloop (the chain head says 30)"
        for p in verify(store).problems
    )


def test_duplicated_entry(backend: Backend) -> None:
    store = backend.workspace(WS)
    _fill(store, 9)
    cols = 'workspace_id, seq, "at", actor, role, action, target_kind, target_id, purpose, detail, prev_hash, hash'
    copy = f"INSERT INTO audit_entry ({cols}) SELECT {cols} FROM audit_entry WHERE seq = 6"
    if backend.dialect.name == "postgres":  # the unique index refuses a second entry 6 outright
        with pytest.raises(StorageError, match="duplicate key"):
            backend.execute(copy)
        return
    backend.execute(copy)
    report = verify(store)
    assert report.first is not None
    assert report.first.message == "entry 6 appears more than once — an entry was inserted or copied"


def test_forged_checkpoint_and_rewritten_chain(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = backend.workspace(WS)
    _fill(store, 25, every=10)
    good = backend.fetch_rows("SELECT signature FROM audit_checkpoint WHERE seq = 20")[0][0]
    _update(backend, "UPDATE audit_checkpoint SET signature = ? WHERE seq = ?", ["0" * 64, 20])
    report = verify(store)
    assert report.first is not None
    assert (
        report.first.message == "checkpoint at 20: signature invalid — the checkpoint was forged or altered"
    )
    _update(backend, "UPDATE audit_checkpoint SET signature = ? WHERE seq = ?", [good, 20])
    assert verify(store).ok

    # a checkpoint signed with another key (a forger's) is not trusted either
    foreign = verify(store, signer=ChainSigner(b"k" * 32)).first
    assert (
        foreign is not None
        and foreign.kind == "checkpoint_key"
        and "signed with audit key" in foreign.message
    )

    # someone who can write the database edits entry 14 and re-hashes everything after it: the chain is
    # consistent again, but entry 20 no longer has the hash its checkpoint signed
    cols = 'seq, "at", actor, role, action, target_kind, target_id, purpose, detail, prev_hash'
    rows = backend.fetch_rows(
        _p(backend, f"SELECT {cols} FROM audit_entry WHERE workspace_id = ? AND seq >= 14 ORDER BY seq"), [WS]
    )
    prev = backend.fetch_rows(
        _p(backend, "SELECT hash FROM audit_entry WHERE workspace_id = ? AND seq = 13"), [WS]
    )[0][0]
    for r in rows:
        detail = '{"sent":999}' if r[0] == 14 else r[8]
        h = entry_hash(WS, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], detail, prev)
        _update(
            backend,
            "UPDATE audit_entry SET detail = ?, prev_hash = ?, hash = ? WHERE workspace_id = ? AND seq = ?",
            [detail, prev, h, WS, r[0]],
        )
        prev = h
    _update(backend, "UPDATE audit_head SET hash = ? WHERE workspace_id = ?", [prev, WS])
    report = verify(store)
    assert report.first is not None and report.first.kind == "checkpoint_mismatch"
    assert report.first.message == (
        "checkpoint at 20: entry 20 no longer has the signed hash — entries 11–20 were rewritten"
    )
    code, out = _cli_verify(backend, monkeypatch)
    assert code == 1 and out["first_problem"]["kind"] == "checkpoint_mismatch"


def test_truncated_tail_and_head(backend: Backend) -> None:
    store = backend.workspace(WS)
    _fill(store, 24, every=10)
    _update(backend, "DELETE FROM audit_entry WHERE workspace_id = ? AND seq > ?", [WS, 21])
    report = verify(store)
    assert report.first is not None and report.first.kind == "truncated"
    assert report.first.message.startswith("entries 22–24 missing at the end (the chain head says 24)")
    # appending after a cut does not hide it: the head still continues from 24
    audit_event(store, actor="cli:x", action="export", target_kind="segment", target_id="s")
    assert not verify(store).ok
    assert backend.fetch_rows("SELECT max(seq) FROM audit_entry")[0][0] == 25


def test_concurrent_appends_make_one_chain_without_gaps(backend: Backend, tmp_path: Path) -> None:
    store = backend.workspace(WS)
    log = AuditLog(store, checkpoint_every=7)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                if i % 5 == 4:
                    log.append_many(
                        [AuditEvent(f"cli:t{t}", "send", "send_batch", None, detail={"i": i})] * 3
                    )
                else:
                    log.append(AuditEvent(f"cli:t{t}", "read.patient", "person", f"P{t}-{i}"))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    n = 6 * (12 + 3 * 3)
    report = verify(store)
    assert report.ok, report.problems
    assert report.entries == n and report.last_seq == n and report.checkpoints == n // 7

    if backend.dialect.name == "postgres":
        # two processes on their own connections, against the same chain
        script = (
            "import sys, time\n"
            "from careloop.storage import connect\n"
            "from careloop.privacy.audit import AuditEvent, AuditLog\n"
            "b = connect(sys.argv[1])\n"
            "log = AuditLog(b.workspace('default'), checkpoint_every=7)\n"
            "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # both start together\n"
            "for i in range(150):\n"
            "    log.append(AuditEvent('worker:' + sys.argv[2], 'send', 'send_batch', None, detail={'i': i}))\n"
            "b.close()\n"
        )
        env = {**os.environ, "CARELOOP_KEY_FILE": str(get_settings().key_file)}
        go = str(time.time() + 4)
        procs = [
            subprocess.Popen([sys.executable, "-c", script, backend.url, str(k), go], env=env)
            for k in range(2)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        report = verify(store)
        assert report.ok, report.problems
        assert report.entries == n + 300 and report.last_seq == n + 300
    else:
        # a second Backend object on the same DuckDB file shares the chain's lock
        second = connect(backend.url)
        try:
            other = AuditLog(second.workspace(WS))
            threads = [
                threading.Thread(
                    target=lambda lg=lg: [lg.append(AuditEvent("cli:z", "export")) for _ in range(20)]
                )
                for lg in (log, other)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            second.close()
        report = verify(store)
        assert report.ok, report.problems
        assert report.last_seq == n + 40


def test_entries_refuse_personal_identifiers(backend: Backend) -> None:
    store = backend.workspace(WS)
    with pytest.raises(PrivacyError, match="phone or ID number"):
        audit_event(
            store, actor="cli:x", action="read.patient", target_kind="person", target_id="13812345678"
        )
    with pytest.raises(PrivacyError, match="personal identifier"):
        audit_event(
            store, actor="cli:x", action="export", target_kind="segment", target_id="s", detail={"phone": "x"}
        )
    with pytest.raises(PrivacyError, match="phone or ID number"):
        audit_event(
            store,
            actor="cli:x",
            action="export",
            target_kind="segment",
            target_id="s",
            detail={"ids": ["11010519491231002X"]},
        )
    with pytest.raises(ValueError, match="unknown audit action"):
        audit_event(store, actor="cli:x", action="read.everything", target_kind=None, target_id=None)
    audit_event(
        store, actor="cli:x", action="dsr.delete", target_kind="person", target_id="P0123456789abcdef"
    )
    assert [e.action for e in entries(store)] == ["dsr.delete"]


def test_audit_signing_key_of_older_key_files() -> None:
    ring = KeyRing.generate()
    assert ring.audit_key is not None and KeyRing.from_json(ring.to_json(), "t").audit_key == ring.audit_key
    old = orjson.loads(ring.to_json())
    del old["audit_key"]
    older = KeyRing.from_json(orjson.dumps(old).decode(), "t")
    assert older.audit_key is None and "audit_key" not in older.to_json()
    assert older.audit_signing_key == KeyRing.from_json(orjson.dumps(old).decode(), "t").audit_signing_key
    assert older.audit_signing_key not in (older.bidx_key, ring.audit_key)


@pytest.fixture
def network(backend: Backend, request: pytest.FixtureRequest) -> Linked:
    """The small synthetic network, ingested and linked (tests/patients/conftest.py)."""
    return make_linked(backend, request.getfixturevalue("small_network"))


def test_patient_reads_and_lookups_are_audited(network: Linked, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from careloop.api import create_app
    from tests.authn import key_headers

    backend, store = network.backend, network.store
    pid = network.busiest_person()
    monkeypatch.setenv("CARELOOP_DATABASE_URL", backend.url)
    get_settings.cache_clear()
    shown = runner.invoke(app, ["patient", "show", pid, "--json"])
    assert shown.exit_code == 0, shown.output
    (e,) = entries(store, action="read.patient")
    assert e.actor.startswith("cli:") and e.target_kind == "person" and e.target_id == pid
    assert e.as_dict()["detail"] == {"via": "cli", "viewer": "masked"}
    ref = orjson.loads(shown.stdout)["sources"][0]["ref"]
    with TestClient(create_app(backend=backend), headers=key_headers(backend)) as client:
        assert client.get(f"/v1/patients/{ref}").status_code == 200
        assert client.get("/v1/patients", params={"phone": "13900000000"}).status_code == 200
    api = entries(store, action="read*", limit=10)
    assert api[0].action == "read.patients" and api[0].target_kind == "lookup"
    assert api[0].as_dict()["detail"] == {"via": "api", "by": "phone", "matches": 0}
    assert api[1].action == "read.patient" and api[1].target_id == pid and api[1].actor.startswith("api:key:")
    assert api[1].role == "admin"
    # every other read of person-level data through the API: one person's details, or a list of persons
    from careloop.profiles.segments import refresh, save_segment

    save_segment(store, "所有人", {"trait": "age", "op": "missing"})
    refresh(store, "所有人")
    with TestClient(create_app(backend=backend), headers=key_headers(backend, "dpo")) as client:
        for path in ("traits", "tags", "consents"):
            assert client.get(f"/v1/patients/{pid}/{path}").status_code == 200, path
        assert client.get(f"/v1/segments/所有人/explain/{pid}").status_code == 200
        assert client.get("/v1/segments/所有人/members", params={"limit": 5}).status_code == 200
        assert client.get("/v1/tasks").status_code == 200
    reads = entries(store, action="read*", limit=6)
    got = {(e.action, e.target_id, e.as_dict()["detail"]["what"], e.role) for e in reads}
    assert got == {
        ("read.patient", pid, "traits", "dpo"),
        ("read.patient", pid, "tags", "dpo"),
        ("read.patient", pid, "consents", "dpo"),
        ("read.patient", pid, "explain:所有人", "dpo"),
        ("read.list", "所有人", "members", "dpo"),
        ("read.list", None, "tasks", "dpo"),
    }
    assert [e.as_dict()["detail"]["rows"] for e in reads if e.action == "read.list"] == [0, 5]
    # nothing personal in the log: no stored identifier's plaintext appears in any entry
    listed = runner.invoke(app, ["audit", "show", "--json", "--limit", "100"])
    assert listed.exit_code == 0 and pid in listed.stdout
    assert "13900000000" not in listed.stdout and verify(store).ok


def test_bench_privacy_on_a_tiny_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import careloop.bench.privacy_bench as pb

    monkeypatch.setattr(pb, "SAMPLE", 12)
    monkeypatch.setattr(pb, "CHAIN_ENTRIES", 1200)
    monkeypatch.setattr(pb, "SINGLE_APPENDS", 30)
    p360, chain = pb.bench_privacy(150, 3, tmp_path, get_settings(), 1)
    assert p360.scenario == "privacy" and p360.unit == "µs p95" and "12 random" in p360.size
    with_us, without_us = p360.details["with_us"], p360.details["without_us"]
    assert isinstance(with_us, dict) and isinstance(without_us, dict)
    assert 0 < with_us["p50"] <= with_us["p95"] and round(p360.figure) == with_us["p95"] and p360.baseline > 0
    assert chain.scenario == "privacy-audit-chain" and chain.figure > 0 and chain.baseline > 0
    assert chain.details["verify_ok"] == 1.0 and chain.details["verified_entries"] == 1230
    # the bench's reads were audited like the API's: 12 warm-up + 12 timed read.patient entries
    backend = connect(f"duckdb:///{tmp_path / 'patient360-150-3' / 'store.duckdb'}")
    try:
        store = backend.workspace("bench", create=False)
        assert len(entries(store, action="read.patient", limit=1000)) == 24 and verify(store).ok
    finally:
        backend.close()


def test_every_action_is_documented() -> None:
    from careloop.privacy.audit import ACTIONS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "privacy.md").read_text(encoding="utf-8")
    missing = [a for a in ACTIONS if f"`{a}`" not in doc]
    assert not missing, f"docs/privacy.md does not list the audit action(s) {missing}"


def test_configuration_changes_are_audited(backend: Backend) -> None:
    """Segments, journeys and content versions: each write names who made it and which version."""
    from careloop.journeys.engine import save_journey, set_status
    from careloop.messaging.content import move, save_content
    from careloop.profiles.segments import save_segment

    store = backend.workspace(WS)
    save_segment(store, "高血压", {"trait": "age", "op": ">=", "value": 18})
    save_segment(
        store, "高血压", {"trait": "age", "op": ">=", "value": 65}, actor="api:user:amy", role="marketer"
    )
    save_content(store, "note", kind="outbox", body={"zh": "随访通知"}, purpose="service")
    move(store, "note", 1, "submit", by="amy", actor="api:user:amy")
    move(store, "note", 1, "approve", by="rex", actor="console:user:rex", role="reviewer")
    spec = {
        "name": "随访",
        "trigger": {"type": "api"},
        "start": "send",
        "nodes": {
            "send": {
                "type": "send",
                "channel": "outbox",
                "content": "note",
                "purpose": "service",
                "next": "end",
            },
            "end": {"type": "exit"},
        },
    }
    save_journey(store, spec)
    save_journey(store, spec)  # unchanged: nothing written, nothing recorded
    set_status(store, "随访", "published")
    set_status(store, "随访", "paused", actor="api:key:ops:1")
    got = [
        (e.action, e.target_id, orjson.loads(e.detail or "{}").get("version"), e.actor, e.role)
        for e in reversed(entries(store, limit=100))
    ]
    me = got[0][3]
    assert me.startswith("cli:")  # library calls from commands name the command-line user
    assert got == [
        ("segment.save", "高血压", 1, me, None),
        ("segment.save", "高血压", 2, "api:user:amy", "marketer"),
        ("content.save", "note", 1, me, None),
        ("content.submit", "note", 1, "api:user:amy", None),
        ("content.approve", "note", 1, "console:user:rex", "reviewer"),
        ("journey.save", "随访", 1, me, None),
        ("journey.publish", "随访", 1, me, None),
        ("journey.pause", "随访", 1, "api:key:ops:1", None),
    ]
    assert verify(store).ok


def test_model_fits_on_files_are_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model kept from a transaction file is a `model.fit` entry with source `file`."""
    monkeypatch.setenv("CARELOOP_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    log = tmp_path / "tx.csv"
    log.write_text(
        "customer,date,amount\n"
        + "".join(f"c{i},2026-0{m}-1{i},{10 * (i + m)}\n" for i in range(6) for m in range(1, 1 + i % 4 + 1)),
        encoding="utf-8",
    )
    args = ["--transactions", str(log), "--customer-col", "customer", "--as-of", "2026-10-31"]
    result = runner.invoke(app, ["models", "rfm", "score", *args, "--save", "rfm_file"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["audit", "show", "--action", "model.fit", "--json"])
    fits = orjson.loads(shown.stdout)
    assert [(e["target_id"], e["detail"]["family"], e["detail"]["source"]) for e in fits] == [
        ("rfm_file", "rfm", "file")
    ]
