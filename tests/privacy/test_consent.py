"""The consent ledger on DuckDB and PostgreSQL: append-only records, the newest applicable record decides,
expiry, channels, separate consent for sensitive data, the guardian rule around the 14th birthday, the
personalisation switch, ingested records and identity changes, file imports, the CLI and the API."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from careloop.api import create_app
from careloop.cli import app
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.domain.identifiers import id_check_char
from careloop.errors import ConfigError, NotFoundError
from careloop.messaging.policy import ConsentSource
from careloop.privacy import consent as ledger
from careloop.privacy.consent import InvalidRecord, LedgerConsents, may, may_many
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage import Backend, WorkspaceStore
from tests.authn import key_headers

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # the `clock` fixture's time
runner = CliRunner()


def _cipher() -> FieldCipher:
    s = get_settings()
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


def _id_number(birth: date, seq: str = "001") -> str:
    first = f"110105{birth:%Y%m%d}{seq}"
    return first + id_check_char(first)


def _person(
    store: WorkspaceStore,
    pid: str,
    *,
    birth: date | None = None,
    id_number: str | None = None,
    phone: str | None = None,
    link: bool = True,
) -> str:
    row: dict[str, Any] = {"person_id": pid, "birth_date": birth}
    if id_number or phone:
        c = _cipher()
        if id_number:
            row["id_number"] = c.encrypt(id_number, "id_number")
            row["id_number_bidx"] = c.blind_index(id_number, "id_number")
        if phone:
            row["phone"] = c.encrypt(phone, "phone")
            row["phone_bidx"] = c.blind_index(phone, "phone")
    store.insert("person", [row])
    if link:
        store.insert(
            "identity_link", [{"source": "his", "patient_key": f"k_{pid}", "person_id": pid, "rule": "alone"}]
        )
    return pid


def _grant(store: WorkspaceStore, pid: str, purpose: str, at: datetime, **kw: Any) -> ledger.ConsentRecord:
    kw.setdefault("data_category", "personal")
    return ledger.record(store, pid, purpose, "grant", clock=FixedClock(at), **kw)


def _withdraw(store: WorkspaceStore, pid: str, purpose: str, at: datetime, **kw: Any) -> ledger.ConsentRecord:
    return ledger.record(store, pid, purpose, "withdraw", clock=FixedClock(at), **kw)


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


def _why(store: WorkspaceStore, pid: str, purpose: str, channel: str | None, at: datetime, **kw: Any) -> str:
    d = may(store, pid, purpose, channel, at=at, **kw)
    assert d.allowed == (d.reason == "granted")
    return d.reason


def test_append_only_newest_record_decides(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    assert _why(store, p, "marketing", "sms", T0, data_category="personal") == "no_consent"
    g = _grant(store, p, "marketing", T0, channel="sms", notice_version="v2026.1", proof="form-0042")
    first = store.rows("SELECT * FROM consent_record")
    assert _why(store, p, "marketing", "sms", T0 + timedelta(hours=1), data_category="personal") == "granted"
    w = _withdraw(store, p, "marketing", T0 + timedelta(days=1))
    assert _why(store, p, "marketing", "sms", T0 + timedelta(days=2), data_category="personal") == (
        "consent_withdrawn"
    )
    # asked as at a time before the withdrawal, the grant still answers (past processing stays lawful)
    d = may(store, p, "marketing", "sms", at=T0 + timedelta(hours=12), data_category="personal")
    assert d.allowed and d.record_id == g.record_id
    r = _grant(store, p, "marketing", T0 + timedelta(days=3), channel="sms")
    d = may(store, p, "marketing", "sms", at=T0 + timedelta(days=4), data_category="personal")
    assert d.allowed and d.record_id == r.record_id and d.record is not None and d.record.channel == "sms"
    # nothing was changed: three records, the first exactly as written
    assert store.count("consent_record") == 3
    assert [x for x in store.rows("SELECT * FROM consent_record") if x["record_id"] == g.record_id] == first
    assert [h.record_id for h in ledger.history(store, p, at=T0 + timedelta(days=5))] == [
        g.record_id,
        w.record_id,
        r.record_id,
    ]
    # the module has no way to change or remove a record
    names = {n for n, _ in inspect.getmembers(ledger, inspect.isfunction)}
    assert not {n for n in names if n.startswith(("update", "delete", "remove", "edit"))}
    # at the same instant, a withdrawal beats a grant
    t = T0 + timedelta(days=10)
    _grant(store, p, "research", t, data_category="health", sensitive=True)
    _withdraw(store, p, "research", t)
    assert _why(store, p, "research", None, t) == "consent_withdrawn"


def test_expiry_and_refusal(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    _grant(
        store, p, "research", T0, data_category="health", sensitive=True, expires_at=T0 + timedelta(days=30)
    )
    assert _why(store, p, "research", None, T0 + timedelta(days=29)) == "granted"
    d = may(store, p, "research", None, at=T0 + timedelta(days=30))
    assert (d.allowed, d.reason) == (False, "consent_expired") and d.record is not None
    ledger.record(store, p, "marketing", "refuse", clock=FixedClock(T0))
    assert _why(store, p, "marketing", "sms", T0 + timedelta(days=1), data_category="personal") == (
        "consent_refused"
    )


def test_channel_specific_and_all_channel_records(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    _grant(store, p, "marketing", T0)  # every channel
    _withdraw(store, p, "marketing", T0 + timedelta(days=1), channel="sms")
    later = T0 + timedelta(days=2)
    assert _why(store, p, "marketing", "sms", later, data_category="personal") == "consent_withdrawn"
    assert _why(store, p, "marketing", "wechat", later, data_category="personal") == "granted"
    # a question without a channel is answered by every-channel records only
    assert _why(store, p, "marketing", None, later, data_category="personal") == "granted"
    # the outbox (and `*`) accept any channel's record: the newest, the sms withdrawal, decides
    assert _why(store, p, "marketing", "outbox", later, data_category="personal") == "consent_withdrawn"
    q = _person(store, "P2")
    _grant(store, q, "marketing", T0, channel="wechat")
    assert _why(store, q, "marketing", "sms", later, data_category="personal") == "no_consent"
    assert _why(store, q, "marketing", None, later, data_category="personal") == "no_consent"
    assert _why(store, q, "marketing", "*", later, data_category="personal") == "granted"
    # a withdrawal of everything after a channel grant; then a channel re-grant wins for that channel only
    _withdraw(store, q, "marketing", T0 + timedelta(days=3))
    _grant(store, q, "marketing", T0 + timedelta(days=4), channel="sms")
    late = T0 + timedelta(days=5)
    assert _why(store, q, "marketing", "sms", late, data_category="personal") == "granted"
    assert _why(store, q, "marketing", "wechat", late, data_category="personal") == "consent_withdrawn"
    with pytest.raises(ConfigError, match="unknown channel"):
        may(store, q, "marketing", "fax", at=late)


def test_sensitive_data_needs_a_separate_consent(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    _grant(store, p, "care_follow_up", T0, data_category="health")  # bundled: not a separate consent
    assert _why(store, p, "care_follow_up", "sms", T0 + timedelta(hours=1)) == "sensitive_consent_required"
    # ... but it does cover the person's basic (non-sensitive) data for that purpose
    assert _why(store, p, "care_follow_up", "sms", T0 + timedelta(hours=1), data_category="personal") == (
        "granted"
    )
    _grant(store, p, "care_follow_up", T0 + timedelta(days=1), data_category="health", sensitive=True)
    assert _why(store, p, "care_follow_up", "sms", T0 + timedelta(days=2)) == "granted"
    # categories are separate: a health consent says nothing about location data
    assert _why(store, p, "care_follow_up", "sms", T0 + timedelta(days=2), data_category="location") == (
        "no_consent"
    )
    # a service message is covered by care follow-up consent
    assert _why(store, p, "service", "sms", T0 + timedelta(days=2), data_category="personal") == "granted"
    # withdrawing health data (every channel) stops health processing; a personal-data grant still stands
    _grant(store, p, "care_follow_up", T0 + timedelta(days=3), data_category="personal")
    _withdraw(store, p, "care_follow_up", T0 + timedelta(days=4), data_category="health")
    t = T0 + timedelta(days=5)
    assert _why(store, p, "care_follow_up", "sms", t) == "consent_withdrawn"
    assert _why(store, p, "care_follow_up", "sms", t, data_category="personal") == "granted"


def test_guardian_rule_around_the_14th_birthday(store: WorkspaceStore) -> None:
    birth = date(2012, 11, 3)
    child = _person(store, "C1", birth=birth)
    # the 14th birthday starts at local (Shanghai) midnight: 2026-11-02T16:00Z
    eve, birthday = datetime(2026, 11, 2, 15, 59, tzinfo=UTC), datetime(2026, 11, 2, 16, 0, tzinfo=UTC)
    d = may(store, child, "care_follow_up", "sms", at=eve)
    assert (d.allowed, d.reason, d.under_14) == (False, "guardian_consent_required", True)
    own = _grant(store, child, "care_follow_up", T0, data_category="health", sensitive=True)
    d = may(store, child, "care_follow_up", "sms", at=eve)
    assert (d.reason, d.record_id) == ("guardian_consent_required", own.record_id)
    d = may(store, child, "care_follow_up", "sms", at=birthday)
    assert (d.allowed, d.under_14) == (True, False)  # 14 today: their own consent counts
    assert ledger.under_14(store, child, at=eve) and not ledger.under_14(store, child, at=birthday)
    # a guardian's consent is a separate consent for the child's (all sensitive) data
    g = _grant(
        store,
        child,
        "care_follow_up",
        T0 + timedelta(days=1),
        data_category="health",
        guardian_relation="mother",
    )
    assert g.by_guardian and g.sensitive
    d = may(store, child, "care_follow_up", "sms", at=eve)
    assert d.allowed and d.record_id == g.record_id
    _withdraw(store, child, "care_follow_up", T0 + timedelta(days=2))
    assert _why(store, child, "care_follow_up", "sms", eve) == "consent_withdrawn"
    # no birth date on the golden record: the ID number's
    by_id = _person(store, "C2", id_number=_id_number(date(2015, 6, 1)))
    assert (
        _why(store, by_id, "marketing", "sms", NOW, data_category="personal") == "guardian_consent_required"
    )
    _grant(store, by_id, "marketing", T0, guardian_relation="legal_guardian")
    assert _why(store, by_id, "marketing", "sms", NOW, data_category="personal") == "granted"
    adult_by_id = _person(store, "A1", id_number=_id_number(date(1980, 1, 1)))
    assert _why(store, adult_by_id, "marketing", "sms", NOW, data_category="personal") == "no_consent"
    unknown = _person(store, "U1")  # no birth date, no ID number: taken as an adult
    assert not may(store, unknown, "marketing", "sms", at=NOW).under_14


def test_personalisation_switch(store: WorkspaceStore) -> None:
    p, q, r = _person(store, "P1"), _person(store, "P2"), _person(store, "P3")
    assert ledger.personalisation_off_many(store, [p, q, r], at=NOW) == {p: False, q: False, r: False}
    _grant(store, p, "personalisation", T0, data_category="behaviour")
    _withdraw(store, q, "personalisation", T0, channel="wechat")
    store.insert(
        "contact_optout",
        [{"person_id": r, "scope": "personalisation", "channel": "*", "source": "api", "at": T0}],
    )
    assert ledger.personalisation_off_many(store, [p, q, r], at=NOW) == {p: False, q: True, r: True}
    assert ledger.personalisation_off(store, q, at=NOW)
    _withdraw(store, p, "personalisation", T0 + timedelta(days=1))
    assert ledger.personalisation_off(store, p, at=NOW)
    assert not ledger.personalisation_off(store, p, at=T0 + timedelta(hours=1))
    # what the send-time policy asks (its contact_optout check is its own)
    src: ConsentSource = LedgerConsents()
    assert src.decide(store, [p, q, r], "personalisation", "*", NOW) == {
        p: (False, "consent_withdrawn"),
        q: (False, "consent_withdrawn"),
        r: (True, "granted"),
    }


def test_ingested_records_and_identity_changes(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    store.insert(
        "consent",
        [
            {
                "source": "his",
                "key": "c1",
                "patient_key": "k_P1",
                "purpose": "care_follow_up",
                "status": "granted",
                "recorded_at": T0,
                "data_category": "health",
                "capture_source": "paper",
            },
            {
                "source": "his",
                "key": "c2",
                "patient_key": "k_P1",
                "purpose": "marketing",
                "status": "granted",
                "recorded_at": T0,
                "data_category": "personal",
                "channel": "sms",
            },
        ],
    )
    d = may(store, p, "care_follow_up", "sms", at=NOW)
    assert d.allowed and d.record is not None
    assert (d.record.source, d.record.origin, d.record.sensitive) == ("ingested", "his:k_P1", True)
    assert may(store, p, "service", "wechat", at=NOW, data_category="personal").allowed
    # a ledger withdrawal after the ingested grant wins
    _withdraw(store, p, "marketing", T0 + timedelta(days=1), channel="sms")
    assert _why(store, p, "marketing", "sms", NOW, data_category="personal") == "consent_withdrawn"
    # P1 merged into P9 (P1's records relinked): P1's ledger records answer for P9; its ingested ones
    # follow the identity links
    _person(store, "P9")
    store.execute("UPDATE identity_link SET person_id = 'P9' WHERE person_id = 'P1'")
    store.insert(
        "identity_history",
        [
            {
                "id": "h1",
                "at": T0 + timedelta(days=2),
                "action": "merged",
                "person_id": "P9",
                "other_person_ids": '["P1"]',
                "records": "[]",
            }
        ],
    )
    d = may(store, "P9", "marketing", "sms", at=NOW, data_category="personal")
    assert d.reason == "consent_withdrawn" and d.record is not None and d.record.origin == "P1"
    assert may(store, "P9", "care_follow_up", "sms", at=NOW).allowed  # the ingested grant, relinked
    # records split off into a new person Q: P9's withdrawals carry over to Q, its grants do not
    _grant(store, "P9", "research", T0 + timedelta(days=3), data_category="health", sensitive=True)
    _withdraw(store, "P9", "personalisation", T0 + timedelta(days=3))
    _person(store, "Q1")
    store.insert(
        "identity_history",
        [
            {
                "id": "h2",
                "at": T0 + timedelta(days=4),
                "action": "created",
                "person_id": "Q1",
                "other_person_ids": '["P9"]',
                "records": "[]",
            }
        ],
    )
    assert _why(store, "Q1", "research", None, NOW) == "no_consent"
    assert ledger.personalisation_off(store, "Q1", at=NOW)
    # ... and transitively: Q1 also inherits P1's withdrawal (through P9), as a stop only
    assert _why(store, "Q1", "marketing", "sms", NOW, data_category="personal") == "consent_withdrawn"


def test_batch_is_one_query_and_agrees(store: WorkspaceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    persons = [_person(store, f"P{i}", birth=date(2000 + i, 1, 1)) for i in range(20)]
    for i, p in enumerate(persons):
        if i % 2:
            _grant(store, p, "marketing", T0, channel="sms" if i % 3 else None)
        if i % 5 == 0:
            _withdraw(store, p, "marketing", T0 + timedelta(days=1))
    calls: list[str] = []
    real = store.tuples

    def counting(query: str, params: Any = None) -> Any:
        calls.append(query)
        return real(query, params)

    monkeypatch.setattr(store, "tuples", counting)
    batch = may_many(store, persons, "marketing", "sms", NOW, data_category="personal")
    assert len(calls) == 1
    monkeypatch.undo()
    assert {p: (d.allowed, d.reason) for p, d in batch.items()} == {
        p: (d.allowed, d.reason)
        for p in persons
        for d in [may(store, p, "marketing", "sms", at=NOW, data_category="personal")]
    }
    # under 14 on NOW (2026-11-01): born 2013 or later
    assert {p for p, d in batch.items() if d.under_14} == {f"P{i}" for i in range(13, 20)}
    assert may_many(store, [], "marketing", "sms", NOW) == {}


def test_third_party_sharing_names_the_recipient(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    _grant(store, p, "third_party_sharing", T0, data_category="health", sensitive=True, recipient="PharmaCo")
    assert _why(store, p, "third_party_sharing", None, NOW, recipient="PharmaCo") == "granted"
    assert _why(store, p, "third_party_sharing", None, NOW, recipient="OtherCo") == "no_consent"
    with pytest.raises(ConfigError, match="name the recipient"):
        may(store, p, "third_party_sharing", at=NOW)
    _withdraw(store, p, "third_party_sharing", T0 + timedelta(days=1))  # every recipient
    assert _why(store, p, "third_party_sharing", None, NOW, recipient="PharmaCo") == "consent_withdrawn"


def test_records_are_checked(store: WorkspaceStore) -> None:
    p = _person(store, "P1")
    clock = FixedClock(NOW)
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"action": "grant"}, "data_category", "names its data category"),
        ({"action": "grant", "data_category": "health", "proof": "signed by 13812345678"}, "proof", "mobile"),
        (
            {"action": "grant", "data_category": "health", "proof": _id_number(date(1980, 1, 1))},
            "proof",
            "ID",
        ),
        ({"action": "grant", "data_category": "health", "proof": "a@b.com"}, "proof", "e-mail"),
        ({"action": "withdraw", "expires_at": NOW + timedelta(days=1)}, "expires", "only a grant"),
        (
            {"action": "grant", "data_category": "health", "effective_at": NOW + timedelta(days=1)},
            "time",
            "future",
        ),
        ({"action": "grant", "data_category": "health", "guardian_relation": "uncle"}, "guardian", "unknown"),
        ({"action": "grant", "data_category": "dreams"}, "data_category", "unknown data category"),
        ({"action": "grant", "data_category": "health", "recipient": "X"}, "recipient", "third_party"),
        ({"action": "grant", "data_category": "health", "channel": "outbox"}, "channel", "unknown channel"),
    ]
    for fields, field, words in bad:
        action = fields.pop("action")
        with pytest.raises(InvalidRecord, match=words) as e:
            ledger.record(store, p, "marketing", action, clock=clock, **fields)
        assert e.value.field == field
    ok = ledger.record(
        store, p, "marketing", "grant", clock=clock, data_category="personal", proof="sha256:" + "ab" * 32
    )
    assert ok.proof and store.count("consent_record") == 1
    with pytest.raises(NotFoundError, match="no person"):
        ledger.record(store, "nobody", "marketing", "grant", clock=clock, data_category="personal")
    # every change is on the audit chain, with ids and codes only
    rows = store.rows("SELECT action, target_id, purpose, detail FROM audit_entry")
    assert [(r["action"], r["target_id"], r["purpose"]) for r in rows] == [("consent.grant", p, "marketing")]
    assert ok.record_id in str(rows[0]["detail"]) and "ab" * 32 not in str(rows[0]["detail"])


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return path


MAPPING = """
columns:
  person_id: 患者ID
  phone: 手机号
  record: 病历
  purpose: 用途
  action: 操作
  time: 时间
  channel: 渠道
  notice_version: 告知书版本
  proof: 凭证
  guardian: 监护人
values:
  action: {同意: grant, 撤回: withdraw, 拒绝: refuse}
  purpose: {营销: marketing, 随访: care_follow_up}
  channel: {短信: sms, 微信: wechat, 全部: ""}
defaults:
  source: paper
  data_category: personal
"""


def test_import_is_idempotent_and_quarantines_bad_rows(store: WorkspaceStore, tmp_path: Path) -> None:
    _person(store, "P1", phone="+8613812345678")
    _person(store, "P2")
    _person(store, "P3", birth=date(2016, 1, 1))
    header = ["患者ID", "手机号", "病历", "用途", "操作", "时间", "渠道", "告知书版本", "凭证", "监护人"]
    rows = [
        header,
        ["", "138 1234 5678", "", "营销", "同意", "2026-03-01 10:00", "短信", "v2026.1", "form-1", ""],
        ["P2", "", "", "随访", "同意", "2026-03-02", "全部", "v2026.1", "form-2", ""],
        ["", "", "his:k_P2", "营销", "撤回", "2026/03/05 09:00", "", "", "", ""],
        ["P3", "", "", "营销", "同意", "2026-03-01T10:00:00+08:00", "微信", "v2026.1", "form-3", "mother"],
        ["P404", "", "", "营销", "同意", "2026-03-01", "", "", "", ""],  # no such person
        ["", "13900000000", "", "营销", "同意", "2026-03-01", "", "", "", ""],  # no person with this phone
        ["P2", "", "", "旅游", "同意", "2026-03-01", "", "", "", ""],  # unknown purpose
        ["P2", "", "", "营销", "同意", "yesterday", "", "", "", ""],  # not a time
        ["P2", "", "", "营销", "同意", "2026-03-01", "", "", "ID 11010519491231002X", ""],  # proof with an ID
        ["", "", "", "营销", "同意", "2026-03-01", "", "", "", ""],  # names nobody
        ["P2", "", "", "营销", "同意", "2026-03-01", "", "", "form\x00", ""],  # a NUL character
    ]
    csv_path = _write_csv(tmp_path / "consents.csv", rows)
    mapping = tmp_path / "map.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    clock = FixedClock(NOW)
    first = ledger.import_records(store, csv_path, mapping=mapping, clock=clock, recorded_by="dpo")
    assert (first.read, first.recorded, first.duplicates, len(first.rejected)) == (11, 4, 0, 7)
    assert [(r.line, r.field) for r in first.rejected] == [
        (6, "person_id"),
        (7, "phone"),
        (8, "purpose"),
        (9, "time"),
        (10, "proof"),
        (11, "person"),
        (12, "proof"),
    ]
    q = store.rows("SELECT line, field, reason, raw, entity, run_id FROM quarantine ORDER BY line")
    assert [r["line"] for r in q] == [6, 7, 8, 9, 10, 11, 12] and {r["entity"] for r in q} == {
        "consent_record"
    }
    assert all("13900000000" not in r["raw"] and "11010519491231002X" not in r["raw"] for r in q)
    run = store.rows("SELECT format, status, summary FROM ingest_run WHERE run_id = :r", {"r": first.run_id})
    assert run[0]["format"] == "consent_csv" and run[0]["status"] == "completed"
    assert _why(store, "P1", "marketing", "sms", NOW, data_category="personal") == "granted"
    assert _why(store, "P2", "marketing", "sms", NOW, data_category="personal") == "consent_withdrawn"
    assert _why(store, "P3", "marketing", "wechat", NOW, data_category="personal") == "granted"  # guardian
    recs = {r.record_id: r for r in ledger.history(store, "P1", at=NOW)}
    (only,) = recs.values()
    assert (only.source, only.notice_version, only.proof, only.recorded_by) == (
        "paper",
        "v2026.1",
        "form-1",
        "dpo",
    )
    # the same file again records nothing twice
    again = ledger.import_records(store, csv_path, mapping=mapping, clock=clock, recorded_by="dpo")
    assert (again.recorded, again.duplicates, len(again.rejected)) == (0, 4, 7)
    assert store.count("consent_record") == 4
    with pytest.raises(ConfigError, match="no column names the person"):
        ledger.import_records(store, _write_csv(tmp_path / "x.csv", [["a", "b"], ["1", "2"]]), clock=clock)
    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text("columns: {colour: 颜色}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown field"):
        ledger.import_records(store, csv_path, mapping=bad_map, clock=clock)


@pytest.fixture
def cli(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkspaceStore]:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", backend.url)
    get_settings.cache_clear()
    yield backend.workspace("default")


def test_cli_grant_withdraw_check_show_import(cli: WorkspaceStore, tmp_path: Path) -> None:
    p = _person(cli, "P1", birth=date(1980, 5, 5))
    child = _person(cli, "C1", birth=date(2020, 5, 5))
    r = runner.invoke(
        app,
        ["consent", "grant", p, "--purpose", "marketing", "--channel", "sms", "--category", "personal",
         "--notice-version", "v2026.1", "--proof", "form-7", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.stdout)
    assert out["record"]["action"] == "grant" and out["now"]["allowed"] is True
    assert out["record"]["recorded_by"].startswith("cli:")
    check = ["consent", "check", p, "--purpose", "marketing", "--channel", "sms", "--category", "personal"]
    assert runner.invoke(app, check).exit_code == 0
    r = runner.invoke(app, ["consent", "withdraw", "his:k_P1", "--purpose", "marketing"])
    assert r.exit_code == 0 and "withdrew marketing" in r.stdout and "consent_withdrawn" in r.stdout
    r = runner.invoke(app, [*check, "--json"])
    assert r.exit_code == 3 and orjson.loads(r.stdout)["reason"] == "consent_withdrawn"
    # a child: blocked until the guardian consents
    r = runner.invoke(app, ["consent", "check", child, "--purpose", "care_follow_up", "--channel", "sms"])
    assert r.exit_code == 3 and "guardian_consent_required" in r.stdout
    r = runner.invoke(
        app,
        [
            "consent",
            "grant",
            child,
            "--purpose",
            "care_follow_up",
            "--guardian",
            "father",
            "--expires",
            "2027-12-31",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        runner.invoke(app, ["consent", "check", child, "--purpose", "care_follow_up", "-c", "sms"]).exit_code
        == 0
    )
    r = runner.invoke(app, ["consent", "show", child, "--json"])
    doc = orjson.loads(r.stdout)
    assert doc["under_14"] is True and doc["history"][0]["guardian_relation"] == "father"
    assert doc["history"][0]["expires_at"].startswith("2028-01-01T00:00:00+08:00")
    assert [(s["purpose"], s["allowed"]) for s in doc["state"]] == [("care_follow_up", True)]
    table = runner.invoke(app, ["consent", "show", p])
    assert table.exit_code == 0 and "history (2 records" in table.stdout
    # errors say what to do
    r = runner.invoke(app, ["consent", "grant", p, "--purpose", "spam"])
    assert r.exit_code == 2 and "use one of" in r.output
    r = runner.invoke(app, ["consent", "show", "P404"])
    assert r.exit_code == 1 and "careloop patient find" in r.output
    csv_path = _write_csv(
        tmp_path / "c.csv",
        [
            ["person_id", "purpose", "action", "time"],
            [p, "research", "refuse", "2026-03-01"],
            ["P404", "research", "grant", "2026-03-01"],
        ],
    )
    r = runner.invoke(app, ["consent", "import", str(csv_path), "--source", "paper", "--json"])
    assert r.exit_code == 0, r.output
    summary = orjson.loads(r.stdout)
    assert (summary["recorded"], summary["rejected"]) == (1, 1)
    q = runner.invoke(app, ["quarantine", "list", "--run", summary["run_id"], "--json"])
    assert q.exit_code == 0 and "no person with this id" in q.stdout


def test_api_routes(backend: Backend) -> None:
    store = backend.workspace("default")
    p = _person(store, "P1", birth=date(1980, 5, 5))
    child = _person(store, "C1", birth=date(2020, 5, 5))
    clock = FixedClock(NOW)
    with TestClient(create_app(backend=backend, clock=clock), headers=key_headers(backend, "dpo")) as client:
        r = client.post(
            f"/v1/patients/{p}/consents",
            json={"action": "grant", "purpose": "marketing", "channel": "sms", "data_category": "personal",
                  "notice_version": "v2026.1", "proof": "form-9"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        rec = r.json()
        assert rec["action"] == "grant" and rec["recorded_by"].startswith("key:")
        check = client.get(
            f"/v1/patients/{p}/consents/check",
            params={"purpose": "marketing", "channel": "sms", "data_category": "personal"},
        ).json()
        assert check["allowed"] is True and check["record_id"] == rec["record_id"]
        clock.advance(timedelta(minutes=1))
        r = client.post(
            f"/v1/patients/his:k_{p}/consents", json={"action": "withdraw", "purpose": "marketing"}
        )
        assert r.status_code == 201 and r.json()["data_category"] is None and r.json()["channel"] is None
        check = client.get(
            f"/v1/patients/{p}/consents/check",
            params={"purpose": "marketing", "channel": "sms", "data_category": "personal"},
        ).json()
        assert (check["allowed"], check["reason"]) == (False, "consent_withdrawn")
        # as at a past time, the grant answers
        past = client.get(
            f"/v1/patients/{p}/consents/check",
            params={"purpose": "marketing", "channel": "sms", "data_category": "personal",
                    "at": (NOW + timedelta(seconds=30)).isoformat()},
        ).json()  # fmt: skip
        assert past["allowed"] is True
        listed = client.get(f"/v1/patients/{p}/consents").json()
        assert [h["action"] for h in listed["history"]] == ["grant", "withdraw"]
        assert listed["under_14"] is False and listed["personalisation_off"] is False
        kid = client.get(
            f"/v1/patients/{child}/consents/check", params={"purpose": "care_follow_up", "channel": "sms"}
        )
        assert kid.json()["reason"] == "guardian_consent_required"
        # no update path: records are only ever appended
        assert client.put(f"/v1/patients/{p}/consents", json={}).status_code == 405
        assert client.delete(f"/v1/patients/{p}/consents").status_code == 405
        # errors
        assert (
            client.post(f"/v1/patients/{p}/consents", json={"action": "grant", "purpose": "spam"}).status_code
            == 422
        )
        r = client.post(
            f"/v1/patients/{p}/consents",
            json={"action": "grant", "purpose": "marketing", "proof": "tel 13812345678"},
        )
        assert r.status_code == 400 and "never personal data" in r.json()["detail"]
        r = client.post(
            f"/v1/patients/{p}/consents",
            json={"action": "grant", "purpose": "marketing", "proof": "form\x00"},
        )
        assert r.status_code == 400 and "NUL" in r.json()["detail"]
        assert client.get("/v1/patients/P404/consents").status_code == 404
        r = client.get(f"/v1/patients/{p}/consents/check", params={"purpose": "third_party_sharing"})
        assert r.status_code == 400 and "recipient" in r.json()["detail"]
    # roles: a marketer reads consents but records none; an analyst does neither
    with TestClient(create_app(backend=backend, clock=clock)) as client:
        marketer, analyst = key_headers(backend, "marketer"), key_headers(backend, "analyst")
        assert client.get(f"/v1/patients/{p}/consents", headers=marketer).status_code == 200
        r = client.post(
            f"/v1/patients/{p}/consents", json={"action": "withdraw", "purpose": "research"}, headers=marketer
        )
        assert r.status_code == 403
        assert client.get(f"/v1/patients/{p}/consents", headers=analyst).status_code == 403
        assert client.get(f"/v1/patients/{p}/consents").status_code == 401
