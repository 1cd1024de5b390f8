"""The patient 360: everything careloop knows about one person, in one call.

`PatientView(store).show(id)` resolves the id and reads the person's linked records and golden row in
one statement (`careloop.patients.lookup`), then everything else — the records themselves, their
identifiers, every list, the household and the identity history — in a second one: a UNION ALL of
indexed look-ups (`careloop.patients.batch`), whatever the number of sources. Identifiers are revealed
through the viewer (`careloop.patients.viewer`). Lists are newest first with their total count; events
are cut to `events_limit`, other lists to `list_limit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from careloop.config import get_settings
from careloop.errors import PrivacyError
from careloop.patients.batch import Branch, Part, fetch
from careloop.patients.lookup import (
    LinkedRecord,
    RecordRef,
    Resolved,
    find,
    in_list,
    records_predicate,
    resolve,
)
from careloop.patients.viewer import MASKED_VIEWER, Revealer, Viewer
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage.workspace import WorkspaceStore


@dataclass(frozen=True)
class ListSpec:
    """One list section: the entity table, the columns shown and the time it is ordered by."""

    table: str
    columns: tuple[str, ...]
    order: str


_REF = ("source", "patient_key", "key")
LISTS: dict[str, ListSpec] = {
    "encounters": ListSpec(
        "encounter",
        (
            *_REF,
            "encounter_class",
            "start",
            "end",
            "org_key",
            "department_key",
            "doctor_key",
            "code",
            "description",
            "reason_code",
            "reason_description",
            "cost",
        ),
        "start",
    ),
    "conditions": ListSpec(
        "condition",
        (*_REF, "code", "code_system", "description", "onset", "abatement", "encounter_key"),
        "onset",
    ),
    "prescriptions": ListSpec(
        "prescription",
        (
            *_REF,
            "drug_code",
            "drug_name",
            "drug_class",
            "written_at",
            "stopped_at",
            "status",
            "days_supply",
            "quantity",
            "refills",
            "reason_code",
            "encounter_key",
        ),
        "written_at",
    ),
    "dispenses": ListSpec(
        "dispense",
        (
            *_REF,
            "drug_code",
            "drug_name",
            "drug_class",
            "dispensed_at",
            "days_supply",
            "channel",
            "org_key",
            "quantity",
            "amount",
            "prescription_key",
        ),
        "dispensed_at",
    ),
    "appointments": ListSpec(
        "appointment",
        (
            *_REF,
            "scheduled_at",
            "status",
            "booked_at",
            "channel",
            "org_key",
            "department_key",
            "doctor_key",
            "cancelled_at",
            "encounter_key",
        ),
        "scheduled_at",
    ),
    "events": ListSpec(
        "event",
        (*_REF, "event_type", "name", "occurred_at", "channel", "properties"),
        "occurred_at",
    ),
    "consents": ListSpec(
        "consent",
        (
            *_REF,
            "purpose",
            "status",
            "recorded_at",
            "data_category",
            "channel",
            "recipient",
            "notice_version",
            "capture_source",
            "expires_at",
            "by_guardian",
        ),
        "recorded_at",
    ),
    "messages": ListSpec(
        "message",
        (
            *_REF,
            "channel",
            "status",
            "created_at",
            "campaign_key",
            "template",
            "sent_at",
            "block_reason",
            "is_holdout",
        ),
        "created_at",
    ),
}
#: 360 section -> the list(s) it shows
SECTION_LISTS: dict[str, tuple[str, ...]] = {
    "encounters": ("encounters",),
    "conditions": ("conditions",),
    "medications": ("prescriptions", "dispenses"),
    "appointments": ("appointments",),
    "events": ("events",),
    "consents": ("consents",),
    "messages": ("messages",),
}
#: golden-record fields stored encrypted, with their PII kind
_GOLDEN_PII = {"name": "name", "id_number": "id_number", "phone": "phone", "address": "address"}
_GOLDEN_PLAIN = ("sex", "birth_date", "province", "city", "district", "postal_code")
_RECORD_COLUMNS = (
    "source",
    "key",
    "name",
    "sex",
    "birth_date",
    "phone",
    "phone_bidx",
    "id_number",
    "id_number_bidx",
    "email",
    "email_bidx",
    "registered_at",
)
_IDENT_COLUMNS = ("source", "patient_key", "kind", "system", "value", "value_bidx", "valid_from", "valid_to")
_HISTORY_COLUMNS = (
    "id",
    "at",
    "action",
    "person_id",
    "other_person_ids",
    "records",
    "actor",
    "reason",
    "evidence",
    "run_id",
)
#: identifiers a source record carries in its own columns
_RECORD_PII = (("phone", "phone"), ("id_number", "id_number"), ("email", "email"))


def _json(value: Any) -> Any:
    """JSON columns come back as text from DuckDB and parsed from PostgreSQL."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def default_cipher() -> FieldCipher:
    s = get_settings()
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


class PatientView:
    """Builds patient 360s and look-ups for one workspace, as one viewer sees them."""

    def __init__(
        self,
        store: WorkspaceStore,
        *,
        cipher: FieldCipher | None = None,
        viewer: Viewer = MASKED_VIEWER,
        events_limit: int = 20,
        list_limit: int = 200,
    ) -> None:
        if events_limit < 0 or list_limit < 1:
            raise ValueError("events_limit must be >= 0 and list_limit >= 1")
        self.store = store
        self.cipher = cipher or default_cipher()
        self.viewer = viewer
        self.reveal = Revealer(viewer, self.cipher)
        self.events_limit = events_limit
        self.list_limit = list_limit

    # ---- the 360 ------------------------------------------------------------------------------
    def show(self, ident: str) -> dict[str, Any]:
        """The 360 of a person id or a ``SOURCE:KEY`` record; NotFoundError says how to find ids."""
        resolved = resolve(self.store, ident, records=self.viewer.records)
        pid, person = resolved.person_id, resolved.person
        may = self.viewer.may_see
        hid = person["household_id"] if person else None
        if pid is not None and hid is None and may("household"):
            hid = self.store.scalar(
                "SELECT household_id FROM household_member WHERE person_id = :p", {"p": pid}
            )
        parts = fetch(self.store, *self._branches([r.ref for r in resolved.records], pid, hid))
        records = {RecordRef(r["source"], r["key"]): r for r in parts["records"].rows}
        doc: dict[str, Any] = {
            "person_id": pid,
            "workspace": self.store.workspace,
            "viewer": self.viewer.role,
            "linked": pid is not None,
        }
        if pid is None:
            doc["note"] = (
                "this record is not linked to a person yet: run identity resolution to see it with the "
                "person's other records"
            )
        if may("identifiers"):
            doc["identifiers"] = self._identifiers(records, parts["identifiers"].rows)
        if may("golden"):
            doc["golden"] = self._golden(person) if person else None
        if may("sources"):
            doc["sources"] = self._sources(resolved, records)
        for section, lists in SECTION_LISTS.items():
            if may(section):
                shown = {
                    name: {"total": parts[name].total, "items": self._unref(parts[name].rows, "patient_key")}
                    for name in lists
                }
                doc[section] = shown[lists[0]] if len(lists) == 1 else shown
        if may("household"):
            doc["household"] = (
                self._household(pid, hid, parts) if pid is not None and hid is not None else None
            )
        if may("history"):
            doc["history"] = self._unref(
                parts["history"].rows if "history" in parts else [], "records", "evidence"
            )
        return doc

    def _unref(self, rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
        """`rows` without the record references in `keys` when the viewer is pseudonymous."""
        if self.viewer.records:
            return rows
        return [{k: v for k, v in r.items() if k not in keys} for r in rows]

    def _branches(
        self, refs: Sequence[RecordRef], pid: str | None, hid: str | None
    ) -> tuple[list[Branch], dict[str, Any]]:
        """Everything a 360 reads once the person's records are known, as branches of one statement."""
        dialect = self.store.backend.dialect.name
        by_key, params = records_predicate(dialect, refs, "key")
        by_patient, _ = records_predicate(dialect, refs, "patient_key")  # the same parameters
        may = self.viewer.may_see
        branches = [Branch("records", "patient", _RECORD_COLUMNS, by_key, tiebreak=None)]
        if may("identifiers"):
            branches.append(
                Branch("identifiers", "patient_identifier", _IDENT_COLUMNS, by_patient, tiebreak=None)
            )
        for section, lists in SECTION_LISTS.items():
            if may(section):
                for name in lists:
                    spec = LISTS[name]
                    limit = self.events_limit if name == "events" else self.list_limit
                    branches.append(
                        Branch(name, spec.table, spec.columns, by_patient, spec.order, limit=limit)
                    )
        if pid is not None and may("history"):
            params["p"] = pid
            branches.append(
                Branch("history", "identity_history", _HISTORY_COLUMNS, "person_id = :p", "at", "id", 100)
            )
        if hid is not None and may("household"):
            params["h"] = hid
            member = ("person_id", "role")
            branches.append(Branch("members", "household_member", member, "household_id = :h", tiebreak=None))
            who = ("person_id", "name", "sex", "birth_date")
            branches.append(Branch("member_persons", "person", who, "household_id = :h", tiebreak=None))
        return branches, params

    def find(self, *, phone: str | None = None, id_number: str | None = None) -> list[dict[str, Any]]:
        """Persons (and unlinked records) carrying a phone or ID number, as summaries."""
        if not self.viewer.records:
            raise PrivacyError(
                f"viewer {self.viewer.role!r} is pseudonymous: it may not look persons up by an identifier"
            )
        matches = find(self.store, self.cipher, phone=phone, id_number=id_number)
        pids = [m.person_id for m in matches if m.person_id]
        persons: dict[str, dict[str, Any]] = {}
        if pids:
            lst, params = in_list("p", pids)
            for r in self.store.rows(
                f"SELECT person_id, name, sex, birth_date, record_count, sources FROM person "  # noqa: S608 - placeholders and fixed names only
                f"WHERE person_id IN {lst}",
                params,
            ):
                persons[r["person_id"]] = r
        loose = [m.records[0] for m in matches if m.person_id is None]
        records = self._records(loose) if loose else {}
        out = []
        for m in matches:
            if m.person_id is not None:
                p = persons.get(m.person_id, {})
                name, sex, birth = p.get("name"), p.get("sex"), p.get("birth_date")
                sources = _json(p["sources"]) if p.get("sources") is not None else None
            else:
                rec = records.get(m.records[0], {})
                name, sex, birth, sources = rec.get("name"), rec.get("sex"), rec.get("birth_date"), None
            out.append(
                {
                    "person_id": m.person_id,
                    "show": m.person_id or str(m.records[0]),
                    "name": self.reveal.ciphertext(name, "name"),
                    "sex": sex,
                    "birth_date": birth,
                    "sources": sources,
                    "matched": m.via,
                }
            )
        return out

    # ---- sections -----------------------------------------------------------------------------
    def _records(self, refs: Sequence[RecordRef]) -> dict[RecordRef, dict[str, Any]]:
        where, params = records_predicate(self.store.backend.dialect.name, refs, "key")
        rows = self.store.rows(
            "SELECT source, key, name, sex, birth_date, phone, phone_bidx, id_number, id_number_bidx, email, "  # noqa: S608 - placeholders and fixed names only
            f"email_bidx, registered_at FROM patient WHERE {where}",
            params,
        )
        return {RecordRef(r["source"], r["key"]): r for r in rows}

    def _identifiers(
        self, records: dict[RecordRef, dict[str, Any]], idents: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Every identifier of every record, one entry per distinct (kind, value) with its records."""
        entries: dict[tuple[str, str], dict[str, Any]] = {}

        def add(kind: str, same: str, value: str | None, ref: RecordRef, **extra: Any) -> None:
            entry = entries.setdefault((kind, same), {"kind": kind, "value": value, **extra, "records": []})
            if str(ref) not in entry["records"]:
                entry["records"].append(str(ref))

        key_bidx = dict(
            zip(
                records,
                self.cipher.blind_index_many([ref.key for ref in records], "identifier"),
                strict=True,
            )
        )
        described = {
            (i["source"], i["patient_key"])
            for i in idents
            if i["value_bidx"] == key_bidx.get(RecordRef(i["source"], i["patient_key"]))
        }
        for ref in records:
            if (ref.source, ref.key) not in described:
                kind = "his_number" if ref.source.startswith("his") else "record_key"
                add(kind, ref.key, self.reveal.plain(ref.key, kind), ref, system=ref.source)
        for ref, rec in records.items():
            for col, kind in _RECORD_PII:
                if rec[col] is not None:
                    add(kind, rec[f"{col}_bidx"] or rec[col], self.reveal.ciphertext(rec[col], kind), ref)
        for i in idents:
            ref = RecordRef(i["source"], i["patient_key"])
            add(
                i["kind"],
                i["value_bidx"] or i["value"],
                self.reveal.ciphertext(i["value"], "identifier", shown_as=i["kind"]),
                ref,
                system=i["system"],
            )
        found = sorted(entries.values(), key=lambda e: (e["kind"], e["records"][0], e["value"] or ""))
        return self._unref(found, "records")

    def _golden(self, person: dict[str, Any]) -> dict[str, Any]:
        provenance = _json(person["provenance"]) or {}
        fields: dict[str, Any] = {}
        for f in (*_GOLDEN_PII, *_GOLDEN_PLAIN):
            value = person[f]
            if f in _GOLDEN_PII:
                value = self.reveal.ciphertext(value, _GOLDEN_PII[f])
            fields[f] = {"value": value, **(provenance.get(f) or {})}
            if not self.viewer.records:
                fields[f].pop("patient_key", None)
        return {
            "person_id": person["person_id"],
            "record_count": person["record_count"],
            "sources": _json(person["sources"]),
            "first_seen_at": person["first_seen_at"],
            "updated_at": person["updated_at"],
            "fields": fields,
        }

    def _sources(self, resolved: Resolved, records: dict[RecordRef, dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for link in resolved.records:
            rec = records.get(link.ref)
            out.append(_source_entry(link, rec, self.reveal.ciphertext(rec["name"], "name") if rec else None))
        return self._unref(out, "key", "ref")

    def _household(self, person_id: str, hid: str, parts: dict[str, Part]) -> dict[str, Any]:
        people = {p["person_id"]: p for p in parts["member_persons"].rows}
        out = []
        for m in sorted(parts["members"].rows, key=lambda m: m["person_id"]):
            p = people.get(m["person_id"], {})
            birth = p.get("birth_date")
            out.append(
                {
                    "person_id": m["person_id"],
                    "role": m["role"],
                    "name": self.reveal.ciphertext(p.get("name"), "name"),
                    "sex": p.get("sex"),
                    "birth_year": birth.year if birth is not None else None,
                    "is_self": m["person_id"] == person_id,
                }
            )
        return {"household_id": hid, "members": out}


def _source_entry(link: LinkedRecord, rec: dict[str, Any] | None, name: str | None) -> dict[str, Any]:
    return {
        "source": link.ref.source,
        "key": link.ref.key,
        "ref": str(link.ref),
        "rule": link.rule,
        "match_probability": link.match_probability,
        "linked_at": link.linked_at,
        "name": name,
        "sex": rec["sex"] if rec else None,
        "birth_date": rec["birth_date"] if rec else None,
        "registered_at": rec["registered_at"] if rec else None,
        "found": rec is not None,
    }
