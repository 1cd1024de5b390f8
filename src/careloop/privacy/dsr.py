"""Data-subject requests (PIPL Art 44-47): the register with its deadline, access / copy, correction, erasure.

**Register.** Each request is a `dsr_request` row: id, pseudonymous person id, kind (access | copy |
correction | deletion), received and due time, status (open -> done -> closed, or rejected), notes and
what was done. ``due_at = received_at + CARELOOP_DSR_DUE_DAYS`` (15 days by default: PIPL Art 50 says
"promptly"; 15 days is the practice of GB/T 35273-2020 §8.7 and of the regulators' app inspections).

**The walk.** Everything about a person is found generically from the schema (`person_walk`), so a table
added later is included without touching this module:

- every table with a ``person_id`` column;
- every table with ``source`` + ``patient_key``, through the person's records in ``identity_link``;
- the source patient records themselves (``patient``: ``source`` + ``key``);
- tables with an ``entry_id`` and no ``person_id`` (journey steps), through the person's journey entries;
- manual identity overrides naming one of the person's records (``record_a`` / ``record_b``).

Access / copy exports that walk with identifiers decrypted (the person's own data). Erasure deletes it,
plus the quarantined rows of the person's sources that carry one of the person's record keys or ids, flags
saved models trained while the person's data was held for retraining, writes a deletion certificate (SHA-256
over its canonical JSON) into the register and keeps only suppression hashes (`dsr_suppression`, keyed blind
indexes) so that re-ingesting a source file or a live event cannot bring the person back (see
`ingest_checks` and `suppressed_events`).

Kept on purpose (`RETAINED`): the register itself, the suppression hashes and the append-only audit chain,
whose entries name the pseudonymous person id and never an identifier; rewriting the chain would break
`careloop audit verify`.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings, get_settings
from careloop.errors import ConfigError, NotFoundError, PrivacyError
from careloop.privacy.fields import FieldCipher
from careloop.storage.schema import Table, all_tables, table
from careloop.storage.workspace import WorkspaceStore

REQUEST_KINDS = ("access", "copy", "correction", "deletion")
STATUSES = ("open", "done", "closed", "rejected")
EXPORT_FORMAT = "careloop.dsr.export/1"
CERTIFICATE_FORMAT = "careloop.dsr.deletion/1"
SUPPRESSED_PREFIX = "erased by data-subject request "

#: Tables the erasure keeps, and why (they hold no identifier; the person id in them is pseudonymous).
RETAINED: dict[str, str] = {
    "dsr_request": "the register: proof the request was received and carried out (PIPL Art 50)",
    "dsr_suppression": "keyed blind indexes only, so that re-ingesting a source does not resurrect the person",
    "audit_entry": "the append-only audit chain (entries name the pseudonymous person id, never an "
    "identifier); rewriting it would break `careloop audit verify`",
}
#: The patient record table: its own (source, key) is the record identity_link points at.
RECORD_TABLE = "patient"
#: Tables that name a record as 'source:patient_key' text, with those columns.
RECORD_REF_COLUMNS: dict[str, tuple[str, ...]] = {"identity_override": ("record_a", "record_b")}
#: Golden-record fields a correction may change, with the personal-data kind of the encrypted ones.
CORRECTABLE: dict[str, str | None] = {
    "name": "name",
    "phone": "phone",
    "id_number": "id_number",
    "address": "address",
    "sex": None,
    "birth_date": None,
    "province": None,
    "city": None,
    "district": None,
    "postal_code": None,
}
#: Patient-identifier kinds not used for suppression: shared within households, they would suppress others.
SHARED_IDENTIFIER_KINDS = frozenset({"phone"})
_SEP = "\x1f"
_IDENTIFIER_LIKE = re.compile(r"(?<!\d)(1[3-9]\d{9}|\d{17}[\dXx]|\d{15})(?!\d)")


# ---- the walk ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonWalk:
    """Which tables hold what about a person, and through which columns (derived from the schema)."""

    by_person: tuple[str, ...]
    by_record: tuple[str, ...]
    record_table: str
    by_entry: tuple[str, ...]
    by_record_ref: dict[str, tuple[str, ...]]

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(
            self.by_person + self.by_record + (self.record_table,) + self.by_entry + tuple(self.by_record_ref)
        )


def person_walk(tables: Iterable[Table] | None = None) -> PersonWalk:
    """The walk over `tables` (default: every table this careloop declares) minus `RETAINED`."""
    by_person, by_record, by_entry = [], [], []
    for t in tables if tables is not None else all_tables():
        if not t.scoped or t.name in RETAINED:
            continue
        cols = set(t.column_names)
        if "person_id" in cols:
            by_person.append(t.name)
        if {"source", "patient_key"} <= cols:
            by_record.append(t.name)
        if "entry_id" in cols and "person_id" not in cols:
            by_entry.append(t.name)
    return PersonWalk(
        by_person=tuple(by_person),
        by_record=tuple(by_record),
        record_table=RECORD_TABLE,
        by_entry=tuple(by_entry),
        by_record_ref=dict(RECORD_REF_COLUMNS),
    )


@dataclass
class PersonScope:
    """The keys the walk follows for one person."""

    person_id: str
    records: dict[str, list[str]]  # source -> patient keys (identity_link)
    entry_ids: list[str]

    @property
    def refs(self) -> list[str]:
        return [f"{s}:{k}" for s, keys in sorted(self.records.items()) for k in keys]


def person_scope(store: WorkspaceStore, person_id: str) -> PersonScope:
    records: dict[str, list[str]] = defaultdict(list)
    for source, key in store.tuples(
        "SELECT source, patient_key FROM identity_link WHERE person_id = :p ORDER BY source, patient_key",
        {"p": person_id},
    ):
        records[source].append(key)
    entries = [
        r[0]
        for r in store.tuples(
            "SELECT entry_id FROM journey_entry WHERE person_id = :p ORDER BY entry_id", {"p": person_id}
        )
    ]
    return PersonScope(person_id, dict(records), entries)


def _conditions(t: str, walk: PersonWalk, scope: PersonScope) -> list[tuple[str, dict[str, Any]]]:
    """The WHERE clauses (with parameters) that find the person's rows in table `t`."""
    out: list[tuple[str, dict[str, Any]]] = []
    if t in walk.by_person:
        out.append(("person_id = :p", {"p": scope.person_id}))
    if t in walk.by_record or t == walk.record_table:
        column = "patient_key" if t in walk.by_record else "key"
        for source, keys in sorted(scope.records.items()):
            out.append((f"source = :s AND {column} = ANY(:k)", {"s": source, "k": keys}))
    if t in walk.by_entry and scope.entry_ids:
        out.append(("entry_id = ANY(:e)", {"e": scope.entry_ids}))
    if t in walk.by_record_ref and scope.refs:
        cols = walk.by_record_ref[t]
        out.append((" OR ".join(f"{c} = ANY(:r)" for c in cols), {"r": scope.refs}))
    return out


def _present(store: WorkspaceStore, names: Iterable[str]) -> list[str]:
    """The tables of `names` that exist in this database (a table declared by newer code may not yet)."""
    return [n for n in sorted(names) if store.backend.existing_columns(n)]


# ---- the register -----------------------------------------------------------------------------------


@dataclass
class Request:
    request_id: str
    person_id: str
    kind: str
    received_at: datetime
    due_at: datetime
    status: str
    closed_at: datetime | None = None
    actor: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None
    certificate_sha256: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.status == "open" and now > self.due_at

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "request_id": self.request_id,
            "person_id": self.person_id,
            "kind": self.kind,
            "received_at": self.received_at,
            "due_at": self.due_at,
            "status": self.status,
            "closed_at": self.closed_at,
            "actor": self.actor,
            "notes": self.notes,
            "result": self.result,
            "certificate": self.certificate,
            "certificate_sha256": self.certificate_sha256,
        }
        if now is not None:
            d["overdue"] = self.overdue(now)
            d["days_left"] = (self.due_at - now).days if self.status == "open" else None
        return d


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    return orjson.loads(value)


def _request(r: Mapping[str, Any]) -> Request:
    return Request(
        request_id=r["request_id"],
        person_id=r["person_id"],
        kind=r["kind"],
        received_at=r["received_at"],
        due_at=r["due_at"],
        status=r["status"],
        closed_at=r["closed_at"],
        actor=r["actor"],
        notes=_json(r["notes"]) or [],
        result=_json(r["result"]) or {},
        certificate=_json(r["certificate"]),
        certificate_sha256=r["certificate_sha256"],
    )


def check_note(note: str) -> str:
    """Notes are the operator's words about the handling: refuse ones that carry a phone or ID number."""
    text = note.strip()
    if not text:
        raise ConfigError("a note must not be empty")
    if _IDENTIFIER_LIKE.search(text.replace(" ", "")):
        raise PrivacyError(
            "the note looks like it contains a phone or ID number; the register keeps no identifier in "
            "clear — describe the request, refer to the person by person id"
        )
    return text


def open_request(
    store: WorkspaceStore,
    person_id: str,
    kind: str,
    *,
    received_at: datetime | None = None,
    note: str | None = None,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
    settings: Settings | None = None,
) -> Request:
    """Register a request (the person must exist: verify the requester's identity before opening one)."""
    if kind not in REQUEST_KINDS:
        raise ConfigError(f"request kind {kind!r}: use one of {', '.join(REQUEST_KINDS)}")
    if not store.scalar("SELECT count(*) FROM person WHERE person_id = :p", {"p": person_id}):
        raise NotFoundError(f"no person {person_id!r}; find one with `careloop patient find --phone ...`")
    settings = settings or get_settings()
    now = clock.now()
    received = received_at or now
    if received.tzinfo is None:
        raise ConfigError("received_at needs a time zone")
    req = Request(
        request_id=f"dsr-{received:%Y%m%d}-{secrets.token_hex(4)}",
        person_id=person_id,
        kind=kind,
        received_at=received,
        due_at=received + timedelta(days=settings.dsr_due_days),
        status="open",
        actor=actor,
        notes=[{"at": now.isoformat(), "actor": actor, "note": check_note(note)}] if note else [],
    )
    store.insert(
        "dsr_request",
        [
            {
                "request_id": req.request_id,
                "person_id": person_id,
                "kind": kind,
                "received_at": req.received_at,
                "due_at": req.due_at,
                "status": "open",
                "actor": actor,
                "notes": orjson.dumps(req.notes).decode(),
                "result": "{}",
                "updated_at": now,
            }
        ],
    )
    _audit(store, actor, f"dsr.{kind}", person_id, {"request_id": req.request_id, "step": "opened"})
    return req


def get_request(store: WorkspaceStore, request_id: str) -> Request:
    rows = store.rows("SELECT * FROM dsr_request WHERE request_id = :r", {"r": request_id})
    if not rows:
        raise NotFoundError(f"no data-subject request {request_id!r}; `careloop dsr list` shows them")
    return _request(rows[0])


def list_requests(
    store: WorkspaceStore,
    *,
    status: str | None = None,
    overdue: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Request]:
    """Requests, due first; `overdue`: only open ones past their due time."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status {status!r}: use one of {', '.join(STATUSES)}")
    where: list[str] = []
    params: dict[str, Any] = {}
    if status:
        where.append("status = :st")
        params["st"] = status
    if overdue:
        where.append("status = 'open' AND due_at < :now")
        params["now"] = clock.now()
    sql = "SELECT * FROM dsr_request" + (f" WHERE {' AND '.join(where)}" if where else "")  # noqa: S608
    return [_request(r) for r in store.rows(sql + " ORDER BY due_at, request_id", params)]


def _update(store: WorkspaceStore, req: Request, now: datetime) -> None:
    store.execute(
        "UPDATE dsr_request SET status = :st, closed_at = :closed, notes = :notes, result = :result, "
        "certificate = :cert, certificate_sha256 = :sha, updated_at = :now WHERE request_id = :r",
        {
            "st": req.status,
            "closed": req.closed_at,
            "notes": orjson.dumps(req.notes).decode(),
            "result": orjson.dumps(req.result, default=str).decode(),
            "cert": orjson.dumps(req.certificate).decode() if req.certificate is not None else None,
            "sha": req.certificate_sha256,
            "now": now,
            "r": req.request_id,
        },
    )


def add_note(
    store: WorkspaceStore, request_id: str, note: str, *, actor: str = "system", clock: Clock = SYSTEM_CLOCK
) -> Request:
    req = get_request(store, request_id)
    now = clock.now()
    req.notes.append({"at": now.isoformat(), "actor": actor, "note": check_note(note)})
    _update(store, req, now)
    return req


def close_request(
    store: WorkspaceStore,
    request_id: str,
    *,
    note: str | None = None,
    reject: bool = False,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
) -> Request:
    """Close a request (answered), or reject it (a reason is required: PIPL Art 50 asks for one)."""
    req = get_request(store, request_id)
    if req.status in ("closed", "rejected"):
        raise ConfigError(f"request {request_id} is already {req.status}")
    if reject and not note:
        raise ConfigError("rejecting a request needs a note with the reason (PIPL Art 50)")
    if not reject and req.status != "done":
        raise ConfigError(
            f"request {request_id} has not been carried out yet (status {req.status}); run "
            f"`careloop dsr {_command(req.kind)} {request_id}` first, or reject it with a reason"
        )
    now = clock.now()
    if note:
        req.notes.append({"at": now.isoformat(), "actor": actor, "note": check_note(note)})
    req.status = "rejected" if reject else "closed"
    req.closed_at = now
    _update(store, req, now)
    _audit(store, actor, f"dsr.{req.kind}", req.person_id, {"request_id": req.request_id, "step": req.status})
    return req


def _command(kind: str) -> str:
    return {"access": "access", "copy": "access", "correction": "correct", "deletion": "erase"}[kind]


def _require(store: WorkspaceStore, request_id: str, kinds: Sequence[str]) -> Request:
    req = get_request(store, request_id)
    if req.kind not in kinds:
        raise ConfigError(
            f"request {request_id} is a {req.kind} request; this step carries out {' / '.join(kinds)}"
        )
    if req.status in ("closed", "rejected"):
        raise ConfigError(f"request {request_id} is {req.status}")
    return req


def _audit(store: WorkspaceStore, actor: str, action: str, person_id: str, detail: dict[str, Any]) -> None:
    from careloop.privacy.audit import audit_event

    audit_event(
        store,
        actor=actor,
        action=action,
        target_kind="person",
        target_id=person_id,
        purpose="data_subject_request",
        detail=detail,
    )


# ---- access / copy ----------------------------------------------------------------------------------


def _clean(t: str, row: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    """A stored row as the person may see it: identifiers decrypted, internal columns dropped."""
    spec = table(t)
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("workspace_id", "_row_hash") or name.endswith("_bidx"):
            continue
        try:
            kind = spec.column(name).pii
        except KeyError:
            kind = None
        if kind and isinstance(value, str):
            plain = cipher.decrypt(value, kind)
            if kind == "raw" and plain is not None:
                try:
                    out[name] = orjson.loads(plain)
                    continue
                except orjson.JSONDecodeError:
                    pass
            out[name] = plain
        else:
            out[name] = (
                _json(value) if spec.column(name).type.value == "json" and value is not None else value
            )
    return out


def person_data(
    store: WorkspaceStore, person_id: str, cipher: FieldCipher
) -> dict[str, list[dict[str, Any]]]:
    """Every row about the person, per table, identifiers decrypted (every table of the walk appears)."""
    walk = person_walk()
    scope = person_scope(store, person_id)
    out: dict[str, list[dict[str, Any]]] = {}
    for t in _present(store, walk.tables):
        seen: set[bytes] = set()
        rows: list[dict[str, Any]] = []
        for cond, params in _conditions(t, walk, scope):
            for r in store.rows(f"SELECT * FROM {t} WHERE {cond}", params):  # noqa: S608
                ident = orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS)
                if ident not in seen:
                    seen.add(ident)
                    rows.append(_clean(t, r, cipher))
        out[t] = rows
    return out


def build_export(
    store: WorkspaceStore, req: Request, cipher: FieldCipher, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    data = person_data(store, req.person_id, cipher)
    log: list[dict[str, Any]] = []
    if store.backend.existing_columns("audit_entry"):
        log = store.rows(
            'SELECT seq, "at", actor, role, action, purpose FROM audit_entry '
            "WHERE target_kind = 'person' AND target_id = :p ORDER BY seq",
            {"p": req.person_id},
        )
    return {
        "format": EXPORT_FORMAT,
        "request_id": req.request_id,
        "kind": req.kind,
        "workspace": store.workspace,
        "person_id": req.person_id,
        "generated_at": clock.now(),
        "about": (
            "Everything careloop holds about you: your unified record (person), every source record "
            "(patient, encounters, prescriptions, ...), events, traits, tags, segments, personas, journeys, "
            "messages, consents, tasks, model scores (trait_value) and dated trait snapshots (trait_history). "
            "processing_log lists who processed "
            "your data and why (the audit log)."
        ),
        "counts": {t: len(rows) for t, rows in data.items()},
        "tables": data,
        "processing_log": log,
    }


def export_bytes(export: Mapping[str, Any], *, as_zip: bool) -> bytes:
    body = orjson.dumps(export, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    if not as_zip:
        return body
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.json", body)
        for t, rows in export["tables"].items():
            z.writestr(f"tables/{t}.json", orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2))
    return buf.getvalue()


def access_export(
    store: WorkspaceStore,
    request_id: str,
    *,
    purpose: str = "data_subject_request",
    cipher: FieldCipher,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
    as_zip: bool = False,
    file_name: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Carry out an access / copy request: the export's bytes (JSON, or a zip) and what was recorded."""
    req = _require(store, request_id, ("access", "copy"))
    export = build_export(store, req, cipher, clock=clock)
    body = export_bytes(export, as_zip=as_zip)
    now = clock.now()
    digest = hashlib.sha256(body).hexdigest()
    req.result = {
        "exported_at": now.isoformat(),
        "file": file_name,
        "sha256": digest,
        "bytes": len(body),
        "rows": sum(export["counts"].values()),
        "tables": export["counts"],
    }
    req.status = "done"
    _update(store, req, now)
    _audit(
        store,
        actor,
        "export",
        req.person_id,
        {"request_id": req.request_id, "purpose": purpose, "rows": req.result["rows"], "sha256": digest},
    )
    return body, req.result


def access(
    store: WorkspaceStore,
    request_id: str,
    output: Path,
    *,
    purpose: str = "data_subject_request",
    cipher: FieldCipher,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """`access_export` written to `output` (a zip when it ends in .zip)."""
    body, result = access_export(
        store,
        request_id,
        purpose=purpose,
        cipher=cipher,
        actor=actor,
        clock=clock,
        as_zip=output.suffix == ".zip",
        file_name=output.name,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(body)
    return result


# ---- correction -------------------------------------------------------------------------------------


def _normalised(field_name: str, value: str) -> Any:
    from datetime import date

    from careloop.patients.lookup import normalise_phone

    v = value.strip()
    if not v:
        raise ConfigError(f"the corrected {field_name} must not be empty")
    if field_name == "phone":
        return normalise_phone(v)
    if field_name == "id_number":
        v = v.upper()
        if not re.fullmatch(r"\d{17}[\dX]", v):
            raise ConfigError("id_number must be an 18-character resident ID number")
        return v
    if field_name == "sex":
        if v not in ("male", "female", "unknown"):
            raise ConfigError("sex must be male, female or unknown")
        return v
    if field_name == "birth_date":
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise ConfigError("birth_date must be a date like 1980-05-17") from None
    return v


def correct(
    store: WorkspaceStore,
    request_id: str,
    field_name: str,
    value: str,
    *,
    reason: str,
    cipher: FieldCipher,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Correct a golden-record field (and the same field of the person's source records in careloop):
    encrypted again, its blind index recomputed, the reason kept in identity_history and the register.
    The corrected value is never logged or stored in clear."""
    req = _require(store, request_id, ("correction",))
    if field_name not in CORRECTABLE:
        raise ConfigError(f"field {field_name!r} cannot be corrected; use one of {', '.join(CORRECTABLE)}")
    reason = check_note(reason)
    kind = CORRECTABLE[field_name]
    plain = _normalised(field_name, value)
    stored = cipher.encrypt(str(plain), kind) if kind else plain
    bidx = cipher.blind_index(str(plain), kind) if kind and kind != "address" else None
    now = clock.now()
    scope = person_scope(store, req.person_id)
    prov = (
        _json(store.scalar("SELECT provenance FROM person WHERE person_id = :p", {"p": req.person_id})) or {}
    )
    prov[field_name] = {
        "source": "dsr",
        "request_id": req.request_id,
        "rule": "correction",
        "at": now.isoformat(),
    }
    sets = [f"{field_name} = :v", "provenance = :prov", "updated_at = :now"]
    params: dict[str, Any] = {
        "v": stored,
        "prov": orjson.dumps(prov).decode(),
        "now": now,
        "p": req.person_id,
    }
    if bidx is not None:
        sets.append(f"{field_name}_bidx = :b")
        params["b"] = bidx
    records = 0
    with store.backend.transaction():
        store.execute(f"UPDATE person SET {', '.join(sets)} WHERE person_id = :p", params)  # noqa: S608
        patient_cols = set(table(RECORD_TABLE).column_names)
        if field_name in patient_cols:
            rec_sets = [f"{field_name} = :v", "_updated_at = :now"]
            if bidx is not None and f"{field_name}_bidx" in patient_cols:
                rec_sets.append(f"{field_name}_bidx = :b")
            for source, keys in scope.records.items():
                records += int(
                    store.scalar(
                        f"SELECT count(*) FROM {RECORD_TABLE} WHERE source = :s AND key = ANY(:k)",  # noqa: S608
                        {"s": source, "k": keys},
                    )
                )
                store.execute(
                    f"UPDATE {RECORD_TABLE} SET {', '.join(rec_sets)} WHERE source = :s AND key = ANY(:k)",  # noqa: S608
                    {**{k: v for k, v in params.items() if k != "prov" and k != "p"}, "s": source, "k": keys},
                )
        store.insert(
            "identity_history",
            [
                {
                    "id": f"h-{req.request_id}-{secrets.token_hex(3)}",
                    "at": now,
                    "action": "corrected",
                    "person_id": req.person_id,
                    "records": orjson.dumps(scope.refs).decode(),
                    "actor": actor,
                    "reason": reason,
                    "evidence": orjson.dumps({"field": field_name, "request_id": req.request_id}).decode(),
                }
            ],
        )
        req.notes.append({"at": now.isoformat(), "actor": actor, "note": f"corrected {field_name}: {reason}"})
        req.result.setdefault("corrected", []).append(
            {"field": field_name, "at": now.isoformat(), "source_records": records}
        )
        req.status = "done"
        _update(store, req, now)
    _audit(
        store,
        actor,
        "dsr.correct",
        req.person_id,
        {"request_id": req.request_id, "field": field_name, "source_records": records},
    )
    return {"request_id": req.request_id, "field": field_name, "source_records": records}


# ---- erasure ----------------------------------------------------------------------------------------


def record_hash(cipher: FieldCipher, source: str, key: str) -> str:
    """Suppression hash of a source record (the same as `cl_bidx('dsr_record', ...)` in ingestion)."""
    h = cipher.blind_index(f"{source}{_SEP}{key}", "dsr_record")
    assert h is not None
    return h


def phone_name_hash(cipher: FieldCipher, phone: str, name: str) -> str:
    """Suppression hash of a phone together with a name (a phone alone is shared within households)."""
    h = cipher.blind_index(f"{phone}{_SEP}{name}", "dsr_phone_name")
    assert h is not None
    return h


def suppression_hashes(
    store: WorkspaceStore, scope: PersonScope, cipher: FieldCipher
) -> dict[tuple[str, str], None]:
    """(kind, hash) of everything that identifies the person's records (kept in insertion order)."""
    out: dict[tuple[str, str], None] = {}
    for source, keys in scope.records.items():
        for k in keys:
            out[("record", record_hash(cipher, source, k))] = None
    pairs: list[tuple[Any, Any, Any]] = [
        tuple(r)  # type: ignore[misc]
        for r in store.tuples(
            "SELECT id_number_bidx, phone, name FROM person WHERE person_id = :p", {"p": scope.person_id}
        )
    ]
    for source, keys in scope.records.items():
        pairs.extend(
            tuple(r)  # type: ignore[misc]
            for r in store.tuples(
                f"SELECT id_number_bidx, phone, name FROM {RECORD_TABLE} WHERE source = :s AND key = ANY(:k)",  # noqa: S608
                {"s": source, "k": keys},
            )
        )
    for id_bidx, phone, name in pairs:
        if id_bidx:
            out[("id_number", id_bidx)] = None
        p, n = cipher.decrypt(phone, "phone"), cipher.decrypt(name, "name")
        if p and n:
            out[("phone_name", phone_name_hash(cipher, p, n))] = None
    for source, keys in scope.records.items():
        for kind, vbidx in store.tuples(
            "SELECT kind, value_bidx FROM patient_identifier WHERE source = :s AND patient_key = ANY(:k)",
            {"s": source, "k": keys},
        ):
            if vbidx and kind not in SHARED_IDENTIFIER_KINDS:
                out[("identifier", vbidx)] = None
    for ns, bidx in store.tuples(
        "SELECT namespace, id_bidx FROM event_identity WHERE person_id = :p", {"p": scope.person_id}
    ):
        out[("event_id", f"{ns}:{bidx}")] = None
    return out


def _quarantined_rows(store: WorkspaceStore, scope: PersonScope, cipher: FieldCipher) -> list[str]:
    """Quarantined rows that belong to the person: rows of the person's sources whose original values
    contain one of the person's record keys, and live events whose userId / anonymousId the person had."""
    ids: list[str] = []
    ties = {
        bidx
        for (bidx,) in store.tuples(
            "SELECT id_bidx FROM event_identity WHERE person_id = :p", {"p": scope.person_id}
        )
    }
    sources = sorted(scope.records)
    rows = store.tuples(
        "SELECT id, source, entity, raw FROM quarantine WHERE raw IS NOT NULL AND (source = ANY(:s) OR entity = 'event')",
        {"s": sources or [""]},
    )
    for qid, source, entity, raw in rows:
        text = cipher.decrypt(raw, "raw")
        if text is None:
            continue
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(values, dict):
            continue
        if source in scope.records:
            keys = set(scope.records[source])
            if any(str(v) in keys for v in values.values() if isinstance(v, str | int)):
                ids.append(qid)
                continue
        if entity == "event" and ties:
            for name in ("userId", "anonymousId"):
                v = values.get(name)
                if v is not None and cipher.blind_index(str(v).strip(), "identifier") in ties:
                    ids.append(qid)
                    break
    return ids


def _flag_models(
    store: WorkspaceStore, person_id: str, request_id: str, now: datetime, models_dir: Path | None
) -> list[str]:
    """Saved models fitted while the person's data was held (conservatively: all fitted since it arrived)."""
    from careloop.models.base import ModelRegistry

    root = models_dir if models_dir is not None else get_settings().models_dir
    reg = ModelRegistry(root, store.workspace)
    since = store.scalar("SELECT first_seen_at FROM person WHERE person_id = :p", {"p": person_id})
    flagged = []
    for card in reg.cards():
        trained = card.trained_at
        if since is None or trained.tzinfo is None or trained >= since:
            reg.flag_retraining(card.name, request_id, now)
            flagged.append(card.name)
    return flagged


def canonical(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_SORT_KEYS)


def erase(
    store: WorkspaceStore,
    request_id: str,
    *,
    cipher: FieldCipher,
    actor: str = "system",
    clock: Clock = SYSTEM_CLOCK,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Carry out a deletion request; returns the deletion certificate (also kept in the register)."""
    req = _require(store, request_id, ("deletion",))
    if req.status != "open":
        raise ConfigError(f"request {request_id} was already carried out ({req.status})")
    if not store.scalar("SELECT count(*) FROM person WHERE person_id = :p", {"p": req.person_id}):
        raise NotFoundError(f"person {req.person_id} is no longer in the store")
    now = clock.now()
    walk = person_walk()
    scope = person_scope(store, req.person_id)
    hashes = suppression_hashes(store, scope, cipher)
    quarantined = _quarantined_rows(store, scope, cipher)
    flagged = _flag_models(store, req.person_id, req.request_id, now, models_dir)
    counts: dict[str, int] = {}
    present = _present(store, walk.tables)
    # journey steps are found through the entries: delete those tables before journey_entry
    order = [t for t in present if t in walk.by_entry] + [t for t in present if t not in walk.by_entry]
    with store.backend.transaction():
        for t in order:
            n = 0
            for cond, params in _conditions(t, walk, scope):
                n += int(store.scalar(f"SELECT count(*) FROM {t} WHERE {cond}", params))  # noqa: S608
                store.execute(f"DELETE FROM {t} WHERE {cond}", params)  # noqa: S608
            counts[t] = n
        if quarantined:
            counts["quarantine"] = len(quarantined)
            store.execute("DELETE FROM quarantine WHERE id = ANY(:q)", {"q": quarantined})
        else:
            counts["quarantine"] = 0
        _scrub_history_refs(store, scope)
        store.insert_new(
            "dsr_suppression",
            [
                {"kind": k, "value_hash": h, "request_id": req.request_id, "created_at": now}
                for (k, h) in hashes
            ],
            ("kind", "value_hash"),
        )
        # an anonymous marker: attribution caches watch identity_history and drop what they learnt
        store.insert(
            "identity_history",
            [
                {
                    "id": f"h-{req.request_id}",
                    "at": now,
                    "action": "erased",
                    "actor": actor,
                    "reason": f"{SUPPRESSED_PREFIX}{req.request_id}",
                }
            ],
        )
        by_kind: dict[str, int] = defaultdict(int)
        for k, _ in hashes:
            by_kind[k] += 1
        cert: dict[str, Any] = {
            "format": CERTIFICATE_FORMAT,
            "request_id": req.request_id,
            "workspace": store.workspace,
            "person_id": req.person_id,
            "received_at": req.received_at.isoformat(),
            "erased_at": now.isoformat(),
            "actor": actor,
            "tables": {t: n for t, n in sorted(counts.items())},
            "rows_deleted": sum(counts.values()),
            "source_records": len(scope.refs),
            "suppression_hashes": dict(sorted(by_kind.items())),
            "models_flagged_for_retraining": flagged,
            "retained": RETAINED,
        }
        req.certificate = cert
        req.certificate_sha256 = hashlib.sha256(canonical(cert)).hexdigest()
        req.result = {"rows_deleted": cert["rows_deleted"], "models_flagged_for_retraining": flagged}
        req.status = "done"
        _update(store, req, now)
    _audit(
        store,
        actor,
        "dsr.delete",
        req.person_id,
        {
            "request_id": req.request_id,
            "rows": cert["rows_deleted"],
            "certificate_sha256": req.certificate_sha256,
        },
    )
    return {**cert, "sha256": req.certificate_sha256}


def verify_certificate(store: WorkspaceStore, request_id: str) -> bool:
    """Does the stored certificate still hash to the stored SHA-256?"""
    req = get_request(store, request_id)
    if req.certificate is None or req.certificate_sha256 is None:
        raise NotFoundError(f"request {request_id} has no deletion certificate")
    return hashlib.sha256(canonical(req.certificate)).hexdigest() == req.certificate_sha256


def _scrub_history_refs(store: WorkspaceStore, scope: PersonScope) -> None:
    """Other persons' identity history may name the erased person (a merge or split): drop those mentions."""
    gone_ids = {scope.person_id}
    gone_refs = set(scope.refs)
    conds = ["CAST(other_person_ids AS TEXT) LIKE :p"]
    params: dict[str, Any] = {"p": f"%{scope.person_id}%"}
    for i, ref in enumerate(sorted(gone_refs)):
        conds.append(f"CAST(records AS TEXT) LIKE :r{i}")
        params[f"r{i}"] = f"%{ref}%"
    where = " OR ".join(conds)
    rows = store.rows(f"SELECT id, other_person_ids, records FROM identity_history WHERE {where}", params)  # noqa: S608
    for r in rows:
        others = [p for p in (_json(r["other_person_ids"]) or []) if p not in gone_ids]
        records = [x for x in (_json(r["records"]) or []) if x not in gone_refs]
        store.execute(
            "UPDATE identity_history SET other_person_ids = :o, records = :rec WHERE id = :id",
            {"o": orjson.dumps(others).decode(), "rec": orjson.dumps(records).decode(), "id": r["id"]},
        )


# ---- suppression checks (ingestion, live events) -----------------------------------------------------


def load_suppression(store: WorkspaceStore) -> list[dict[str, Any]]:
    return store.rows("SELECT kind, value_hash, request_id FROM dsr_suppression")


def ingest_checks(entity: str, columns: Iterable[str], source: str) -> list[tuple[str, str]]:
    """(suppression kind, DuckDB expression over the validated row `_ok`) for a staged batch of `entity`;
    the expressions use the staging connection's `cl_bidx` and give the same hashes as `erase` stored."""
    cols = set(columns)
    src = "'" + source.replace("'", "''") + "'"
    out: list[tuple[str, str]] = []
    key = (
        "patient_key"
        if "patient_key" in cols
        else ("key" if entity == RECORD_TABLE and "key" in cols else None)
    )
    if key:
        out.append(("record", f"cl_bidx('dsr_record', {src} || chr(31) || CAST(_ok.{key} AS VARCHAR))"))
    if entity == RECORD_TABLE and "id_number" in cols:
        out.append(("id_number", "cl_bidx('id_number', CAST(_ok.id_number AS VARCHAR))"))
    if entity == RECORD_TABLE and {"phone", "name"} <= cols:
        out.append(
            (
                "phone_name",
                "cl_bidx('dsr_phone_name', CAST(_ok.phone AS VARCHAR) || chr(31) || CAST(_ok.name AS VARCHAR))",
            )
        )
    if entity == "patient_identifier" and {"kind", "value"} <= cols:
        shared = ", ".join(f"'{k}'" for k in sorted(SHARED_IDENTIFIER_KINDS))
        out.append(
            (
                "identifier",
                f"CASE WHEN _ok.kind NOT IN ({shared}) THEN cl_bidx('identifier', CAST(_ok.value AS VARCHAR)) END",
            )
        )
    return out


def _event_candidates(h: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    user = h.get("user")
    if user:
        out.append(("event_id", f"{user['ns']}:{user['bidx']}"))
        if user.get("ibidx") and user.get("kind") not in SHARED_IDENTIFIER_KINDS:
            out.append(("identifier", user["ibidx"]))
        if user.get("kind") == "id_number" and user.get("fbidx"):
            out.append(("id_number", user["fbidx"]))
    if h.get("anon"):
        out.append(("event_id", f"anonymous_id:{h['anon']}"))
    for ident in h.get("ids") or []:
        if ident.get("kind") == "id_number":
            out.append(("id_number", ident["fbidx"]))
            out.append(("identifier", ident["ibidx"]))
    return out


def suppressed_events(store: WorkspaceStore, hints: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """For each live event's identity hints: the deletion request that suppresses it, or None."""
    cands = [_event_candidates(h) for h in hints]
    values = sorted({v for c in cands for _, v in c})
    if not values:
        return [None] * len(hints)
    found = {
        (k, v): r
        for k, v, r in store.tuples(
            "SELECT kind, value_hash, request_id FROM dsr_suppression WHERE value_hash = ANY(:h)",
            {"h": values},
        )
    }
    if not found:
        return [None] * len(hints)
    return [next((found[c] for c in cs if c in found), None) for cs in cands]
