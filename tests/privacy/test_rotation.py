"""Key rotation on both engines: every ciphertext re-encrypted to the new key, data still readable, resumable
after an interruption, old keys retired only once nothing uses them; the CLI end to end."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from careloop.cli import app
from careloop.config import get_settings
from careloop.errors import NotFoundError, PrivacyError
from careloop.patients import PatientView, Viewer, Visibility
from careloop.privacy.audit import entries, verify
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import KeyRing, load_keyring
from careloop.privacy.rotation import (
    EncryptedColumn,
    KeyRotation,
    encrypted_columns,
    key_status,
    key_usage,
    retire_key,
    totals_by_key,
)
from careloop.storage import Backend
from tests.patients.conftest import Linked, make_linked, small_network  # noqa: F401 - a session fixture

runner = CliRunner()


class Interrupted(Exception):
    pass


@pytest.fixture
def network(backend: Backend, request: pytest.FixtureRequest) -> Linked:
    """The small synthetic network, ingested and linked (tests/patients/conftest.py)."""
    return make_linked(backend, request.getfixturevalue("small_network"))


def _ring() -> KeyRing:
    s = get_settings()
    return load_keyring(s.key_file, environment=s.environment)


def _tokens(backend: Backend) -> dict[str, list[str]]:
    """Every stored ciphertext of every encrypted column."""
    out: dict[str, list[str]] = {}
    for col in encrypted_columns():
        rows = backend.fetch_rows(
            f'SELECT "{col.column}" FROM "{col.table}" WHERE "{col.column}" IS NOT NULL'
        )
        out[col.name] = [r[0] for r in rows]
    return out


def _clear_360(network: Linked, pid: str) -> Any:
    """The person's 360, every identifier decrypted with the current key ring (lists in a stable order:
    an UPDATE may move rows, and rows that tie on their sort key come back in storage order)."""
    view = PatientView(network.store, cipher=FieldCipher(_ring()), viewer=Viewer(default=Visibility.CLEAR))
    return _stable(view.show(pid))


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_stable(v) for v in value), key=lambda v: orjson.dumps(v, default=str))
    return value


def test_rotation_reencrypts_every_column_and_data_still_reads(network: Linked) -> None:
    backend = network.backend
    pid = network.busiest_person()
    before_doc = _clear_360(network, pid)
    before = _tokens(backend)
    n = sum(len(v) for v in before.values())
    assert n > 500 and {t.split(":")[1] for v in before.values() for t in v} == {"k1"}
    assert {name for name, v in before.items() if v} >= {"patient.name", "patient.phone", "person.phone"}

    batches: list[tuple[str, int]] = []
    report = KeyRotation(
        backend, actor="cli:tester", batch_size=97, progress=lambda c, k, _t: batches.append((c.name, k))
    ).run()
    assert report.status == "done" and report.to_key == "k2" and report.from_keys == ["k1"]
    assert not report.resumed and report.remaining == {} and report.usage == {"k2": n}
    # batches of at most 97 ciphertexts (rows sharing a ciphertext move together), each its own transaction
    for name, tokens in before.items():
        assert sum(1 for c, _ in batches if c == name) >= -(-len(set(tokens)) // 97), name
    ring = _ring()
    assert ring.active == "k2" and set(ring.keys) == {"k1", "k2"}

    after = _tokens(backend)
    for name, tokens in after.items():
        assert len(tokens) == len(before[name]), name
        assert all(t.startswith("v1:k2:") for t in tokens), name
        assert not set(tokens) & set(before[name]), name  # every value has a new ciphertext
    # the 360, decrypted with the new ring, shows exactly what it showed before
    assert _clear_360(network, pid) == before_doc
    # values ingestion encrypted once and reused stay equal to each other (one new token per old token)
    assert len(set(after["patient_identifier.value"])) == len(set(before["patient_identifier.value"]))
    assert backend.fetch_rows("SELECT status, rows FROM key_rotation")[0] == ("done", n)
    (finished, started) = entries(network.store, action="key.rotate")
    assert (started.target_id, finished.target_id) == ("k2", "k2")
    assert [orjson.loads(e.detail or "{}")["phase"] for e in (started, finished)] == ["started", "finished"]
    assert verify(network.store).ok


def test_interrupted_rotation_resumes_and_retire_waits(network: Linked) -> None:
    backend = network.backend
    n = sum(totals_by_key(key_usage(backend)).values())
    seen = 0

    def crash(col: EncryptedColumn, k: int, total: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        KeyRotation(backend, batch_size=150, progress=crash).run()
    mixed = totals_by_key(key_usage(backend))
    assert set(mixed) == {"k1", "k2"} and mixed["k2"] == 450 and sum(mixed.values()) == n
    assert backend.fetch_rows("SELECT status, to_key, rows FROM key_rotation")[0] == ("running", "k2", 450)
    assert "k2" in _ring().keys and _ring().active == "k2"

    # an old key cannot go while ciphertexts use it, nor can the active one, nor one that does not exist
    with pytest.raises(PrivacyError, match=rf"{mixed['k1']:,} ciphertext\(s\) still use key k1"):
        retire_key(backend, "k1")
    with pytest.raises(PrivacyError, match="k2 is the active key"):
        retire_key(backend, "k2")
    with pytest.raises(NotFoundError, match="no key 'k9'"):
        retire_key(backend, "k9")
    st = key_status(backend)
    assert [(k["id"], k["active"], k["ciphertexts"]) for k in st["keys"]] == [
        ("k1", False, mixed["k1"]),
        ("k2", True, mixed["k2"]),
    ]
    assert st["rotations"][0]["status"] == "running"

    report = KeyRotation(backend, batch_size=5000).run()  # runs on from where it stopped: no third key
    assert report.resumed and report.to_key == "k2" and report.status == "done"
    assert report.ciphertexts == n and set(_ring().keys) == {"k1", "k2"}
    assert totals_by_key(key_usage(backend)) == {"k2": n}

    out = retire_key(backend, "k1", actor="cli:tester")
    assert out == {"retired": "k1", "keys": ["k2"], "active": "k2", "key_file": str(get_settings().key_file)}
    assert set(_ring().keys) == {"k2"}
    pid = network.busiest_person()
    golden = _clear_360(network, pid)["golden"]["fields"]
    assert golden["name"]["value"] and "*" not in golden["name"]["value"]
    phases = [
        orjson.loads(e.detail or "{}").get("phase") for e in reversed(entries(network.store, action="key.*"))
    ]
    assert phases == ["started", "resumed", "finished", None]  # the last: key.retire
    assert verify(network.store).ok

    # the next rotation makes k3 (ids are never reused)
    assert KeyRotation(backend).run().to_key == "k3"


def test_cli_status_rotate_retire(network: Linked, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", network.backend.url)
    get_settings.cache_clear()
    status = runner.invoke(app, ["keys", "status", "--json"])
    assert status.exit_code == 0, status.output
    st = orjson.loads(status.stdout)
    assert st["active"] == "k1" and st["audit_key"] == "stored" and st["by_column"]["patient.phone"]["k1"] > 0
    rotated = runner.invoke(app, ["keys", "rotate", "--json", "--batch-size", "400"])
    assert rotated.exit_code == 0, rotated.output
    out = orjson.loads(rotated.stdout)
    assert out["status"] == "done" and out["to_key"] == "k2" and set(out["usage"]) == {"k2"}
    table = runner.invoke(app, ["keys", "status"])
    assert table.exit_code == 0 and "k2" in table.stdout and "yes" in table.stdout
    retired = runner.invoke(app, ["keys", "retire", "k1"])
    assert retired.exit_code == 0 and "retired k1" in retired.stdout
    again = runner.invoke(app, ["keys", "retire", "k2"])
    assert again.exit_code == 1 and "careloop keys rotate" in again.output
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0 and "OK" in verified.stdout

    # a ring given as CARELOOP_KEYS: careloop cannot add a key to it; the operator does, then re-encrypts
    ring = _ring()
    monkeypatch.setenv("CARELOOP_KEYS", ring.to_json())
    refused = runner.invoke(app, ["keys", "rotate"])
    assert refused.exit_code == 1 and "--reencrypt-only" in refused.output
    assert totals_by_key(key_usage(network.backend)).keys() == {"k2"}
    d = json.loads(ring.to_json())
    d["keys"]["k7"], d["active"] = base64.b64encode(os.urandom(32)).decode(), "k7"
    monkeypatch.setenv("CARELOOP_KEYS", json.dumps(d))
    report = KeyRotation(network.backend).run(add_key=False)
    assert report.status == "done" and report.to_key == "k7" and set(report.usage) == {"k7"}
    with pytest.raises(PrivacyError, match="edit the JSON"):
        retire_key(network.backend, "k2")
