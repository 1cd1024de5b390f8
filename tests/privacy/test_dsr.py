"""Data-subject requests: register and deadlines, access export, correction, erasure that stays erased."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from careloop.bench.patient360_bench import link_from_truth
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.errors import ConfigError, PrivacyError
from careloop.ingest.pipeline import Ingestor
from careloop.privacy import dsr
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage import Backend, WorkspaceStore
from careloop.storage.schema import WORKSPACE, Column, LogicalType, Table, all_tables
from careloop.synth import generate_network


def _cipher() -> FieldCipher:
    s = get_settings()
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dsr-net") / "net"
    generate_network(out, patients=80, seed=7, as_of=date(2026, 10, 31), chunk_size=100, quiet=True)
    return out


def _ingested(backend: Backend, network: Path, clock: FixedClock) -> WorkspaceStore:
    Ingestor(backend, "default", clock=clock).ingest(network, "parquet")
    store = backend.workspace("default")
    link_from_truth(store, network, clock)
    return store


def _busiest(store: WorkspaceStore) -> str:
    rows = store.tuples(
        "SELECT person_id, count(*) AS n FROM identity_link GROUP BY person_id ORDER BY n DESC, person_id LIMIT 1"
    )
    return str(rows[0][0])


def _person_rows(store: WorkspaceStore, person: str, refs: dict[str, list[str]]) -> dict[str, int]:
    """Rows naming the person in any table of the schema (independent of the walk under test)."""
    found: dict[str, int] = {}
    for t in all_tables():
        if not t.scoped or t.name in dsr.RETAINED or not store.backend.existing_columns(t.name):
            continue
        cols = set(t.column_names)
        n = 0
        if "person_id" in cols:
            n += int(store.scalar(f"SELECT count(*) FROM {t.name} WHERE person_id = :p", {"p": person}))
        key = "patient_key" if "patient_key" in cols else ("key" if t.name == "patient" else None)
        if key and "source" in cols:
            for s, keys in refs.items():
                n += int(
                    store.scalar(
                        f"SELECT count(*) FROM {t.name} WHERE source = :s AND {key} = ANY(:k)",
                        {"s": s, "k": keys},
                    )
                )
        if n:
            found[t.name] = n
    return found


def test_walk_covers_every_person_bearing_table() -> None:
    walk = dsr.person_walk()
    for t in all_tables():
        cols = set(t.column_names)
        if t.scoped and t.name not in dsr.RETAINED and ("person_id" in cols or "patient_key" in cols):
            assert t.name in walk.tables, t.name
    assert "journey_step" in walk.by_entry
    assert "patient" in walk.tables
    # a table added later is picked up without touching the DSR code
    extra = Table("future_scores", (WORKSPACE, Column("person_id", LogicalType.TEXT)))
    assert "future_scores" in dsr.person_walk((*all_tables(), extra)).by_person


def test_register_deadline_and_overdue(backend: Backend, clock: FixedClock, network: Path) -> None:
    store = _ingested(backend, network, clock)
    person = _busiest(store)
    req = dsr.open_request(store, person, "access", clock=clock, note="request by letter, identity checked")
    assert req.due_at - req.received_at == timedelta(days=15)
    late = dsr.open_request(store, person, "copy", received_at=clock.now() - timedelta(days=20), clock=clock)
    overdue = dsr.list_requests(store, overdue=True, clock=clock)
    assert [r.request_id for r in overdue] == [late.request_id]
    with pytest.raises(PrivacyError):
        dsr.add_note(store, req.request_id, "call back on 13812345678", clock=clock)
    with pytest.raises(ConfigError, match="not been carried out"):
        dsr.close_request(store, req.request_id, clock=clock)
    closed = dsr.close_request(
        store, late.request_id, reject=True, note="requester could not be verified", clock=clock
    )
    assert closed.status == "rejected"
    assert dsr.list_requests(store, overdue=True, clock=clock) == []


def test_access_export_contains_every_person_table(
    backend: Backend, clock: FixedClock, network: Path, tmp_path: Path
) -> None:
    store = _ingested(backend, network, clock)
    person = _busiest(store)
    req = dsr.open_request(store, person, "copy", clock=clock)
    out = tmp_path / "copy.json"
    result = dsr.access(store, req.request_id, out, cipher=_cipher(), clock=clock)
    export = json.loads(out.read_text(encoding="utf-8"))
    assert set(export["tables"]) == {t for t in dsr.person_walk().tables if backend.existing_columns(t)}
    assert export["tables"]["person"][0]["person_id"] == person
    phone = export["tables"]["person"][0]["phone"]
    assert phone and phone.startswith("+86")  # decrypted: the person's own data
    assert len(export["tables"]["patient"]) == result["tables"]["patient"] >= 2
    assert export["tables"]["encounter"], "source records of the person are in the copy"
    assert dsr.get_request(store, req.request_id).status == "done"
    dsr.access(store, req.request_id, tmp_path / "copy.zip", cipher=_cipher(), clock=clock)
    assert (tmp_path / "copy.zip").read_bytes()[:2] == b"PK"


def test_correction_reencrypts_and_reindexes(backend: Backend, clock: FixedClock, network: Path) -> None:
    store = _ingested(backend, network, clock)
    person = _busiest(store)
    c = _cipher()
    old = c.decrypt(store.scalar("SELECT phone FROM person WHERE person_id = :p", {"p": person}), "phone")
    req = dsr.open_request(store, person, "correction", clock=clock)
    out = dsr.correct(
        store,
        req.request_id,
        "phone",
        "139 0000 1234",
        reason="patient changed number",
        cipher=c,
        clock=clock,
    )
    assert out["source_records"] >= 1
    new_bidx = c.blind_index("+8613900001234", "phone")
    assert store.scalar("SELECT person_id FROM person WHERE phone_bidx = :b", {"b": new_bidx}) == person
    assert (
        store.scalar(
            "SELECT count(*) FROM person WHERE phone_bidx = :b AND person_id = :p",
            {"b": c.blind_index(old, "phone"), "p": person},
        )
        == 0
    )
    stored = store.scalar("SELECT phone FROM person WHERE person_id = :p", {"p": person})
    assert "13900001234" not in stored and c.decrypt(stored, "phone") == "+8613900001234"
    hist = store.rows(
        "SELECT reason FROM identity_history WHERE person_id = :p AND action = 'corrected'", {"p": person}
    )
    assert hist == [{"reason": "patient changed number"}]
    with pytest.raises(ConfigError):
        dsr.correct(store, req.request_id, "household_id", "x", reason="no", cipher=c, clock=clock)


def test_erased_person_is_gone_and_stays_gone(
    backend: Backend, clock: FixedClock, network: Path, tmp_path: Path
) -> None:
    store = _ingested(backend, network, clock)
    person = _busiest(store)
    c = _cipher()
    scope = dsr.person_scope(store, person)
    assert len(scope.refs) >= 2
    before = _person_rows(store, person, scope.records)
    assert {"person", "patient", "identity_link", "encounter"} <= set(before)
    patients_before = store.count("patient")
    tie = c.blind_index("app-user-1", "identifier")
    store.insert(
        "event_identity", [{"namespace": "careapp", "id_bidx": tie, "person_id": person, "via": "test"}]
    )
    req = dsr.open_request(store, person, "deletion", clock=clock)
    cert = dsr.erase(store, req.request_id, cipher=c, clock=clock, models_dir=tmp_path / "models")
    assert _person_rows(store, person, scope.records) == {}
    assert set(before) <= {t for t, n in cert["tables"].items() if n}
    assert cert["rows_deleted"] == sum(cert["tables"].values())
    assert dsr.verify_certificate(store, req.request_id)
    assert store.count("patient") == patients_before - len(scope.refs)
    suppressed = store.tuples("SELECT kind, value_hash FROM dsr_suppression")
    assert ("record", dsr.record_hash(c, *scope.refs[0].split(":", 1))) in {tuple(r) for r in suppressed}

    # live events whose userId was the person's are suppressed; others are not
    hints = [{"user": {"ns": "careapp", "bidx": tie}}, {"user": {"ns": "careapp", "bidx": "someone-else"}}]
    assert dsr.suppressed_events(store, hints) == [req.request_id, None]

    # the same source files again: the person does not come back, the rows are quarantined without values
    summary = Ingestor(backend, "default", clock=clock).ingest(network, "parquet")
    assert _person_rows(store, person, scope.records) == {}
    assert store.count("patient") == patients_before - len(scope.refs)
    q = store.rows(
        "SELECT entity, reason, raw FROM quarantine WHERE run_id = :r AND reason LIKE 'erased by%'",
        {"r": summary.run_id},
    )
    assert q and all(
        r["reason"] == f"erased by data-subject request {req.request_id}" and r["raw"] is None for r in q
    )
    assert {"patient", "encounter"} <= {r["entity"] for r in q}
    assert summary.entities["patient"].quarantined >= len(scope.refs)
    # nobody else was suppressed
    assert sum(c.quarantined for c in summary.entities.values()) == len(q) + sum(
        1
        for _ in store.tuples(
            "SELECT 1 FROM quarantine WHERE run_id = :r AND reason NOT LIKE 'erased by%'",
            {"r": summary.run_id},
        )
    )


def test_erasure_flags_models_and_refuses_twice(
    backend: Backend, clock: FixedClock, network: Path, tmp_path: Path
) -> None:
    from careloop.models.base import ModelCard, ModelRegistry

    store = _ingested(backend, network, clock)
    person = _busiest(store)
    reg = ModelRegistry(tmp_path / "models", "default")
    reg.save(ModelCard("churn", "lightgbm", "1", {}, "h", clock.now() + timedelta(days=1)), {"m": 1})
    req = dsr.open_request(store, person, "deletion", clock=clock)
    cert = dsr.erase(store, req.request_id, cipher=_cipher(), clock=clock, models_dir=tmp_path / "models")
    assert cert["models_flagged_for_retraining"] == ["churn"]
    assert reg.needs_retraining()["churn"][0]["request_id"] == req.request_id
    reg.save(ModelCard("churn", "lightgbm", "1", {}, "h2", clock.now()), {"m": 2})
    assert reg.needs_retraining() == {}
    with pytest.raises(ConfigError):
        dsr.erase(store, req.request_id, cipher=_cipher(), clock=clock)


def test_trait_history_is_in_the_copy_and_erased(
    backend: Backend, clock: FixedClock, network: Path, tmp_path: Path
) -> None:
    from careloop.profiles.traits import compute_traits

    store = _ingested(backend, network, clock)
    person = _busiest(store)
    for day in (date(2026, 8, 2), date(2026, 10, 31)):  # two 5A snapshots of everyone
        compute_traits(store, as_of=day, clock=clock, current=False)
    persons = store.count("person")
    assert store.count("trait_history") == 2 * persons
    copy = dsr.open_request(store, person, "copy", clock=clock)
    dsr.access(store, copy.request_id, tmp_path / "copy.json", cipher=_cipher(), clock=clock)
    export = json.loads((tmp_path / "copy.json").read_text(encoding="utf-8"))
    assert sorted(r["as_of"][:10] for r in export["tables"]["trait_history"]) == ["2026-08-02", "2026-10-31"]
    assert {r["person_id"] for r in export["tables"]["trait_history"]} == {person}
    req = dsr.open_request(store, person, "deletion", clock=clock)
    cert = dsr.erase(store, req.request_id, cipher=_cipher(), clock=clock, models_dir=tmp_path / "models")
    assert cert["tables"]["trait_history"] == 2
    assert store.scalar("SELECT count(*) FROM trait_history WHERE person_id = :p", {"p": person}) == 0
    assert store.count("trait_history") == 2 * (persons - 1)  # nobody else's snapshots went
