"""Finding a person: by unified id, by record reference (``SOURCE:KEY``), by phone or ID number.

Look-ups use equality on indexed columns only — `person_id`, `patient_key` / `key`, and the keyed
blind indexes (`phone_bidx`, `id_number_bidx`, `value_bidx`) — so finding someone never decrypts
anything; only the rows shown are decrypted, by the viewer's rules (`careloop.patients.viewer`).

Queries are shaped for both engines (see docs/patient-360.md, "Speed"): on DuckDB, which scans an
ART index only when the table scan carries exactly one filter, the indexed column gets the only
pushable predicate (``patient_key IN (...)``) and the exact (source, key) pairs are checked with a
row-value predicate DuckDB does not push into the scan; on PostgreSQL the pairs' sources are added
so the (workspace_id, source, patient_key) index is used on all its columns. IN lists are padded to
a few fixed sizes so that each statement's text — and its cached workspace rewrite — repeats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from careloop.errors import ConfigError, NotFoundError
from careloop.patients.batch import Branch, fetch
from careloop.privacy.fields import FieldCipher
from careloop.storage.workspace import WorkspaceStore

FIND_HINT = (
    "give a unified person id, or a record as SOURCE:KEY (e.g. his_h001:3191761627); "
    "find ids with `careloop patient find --phone NUMBER` or `--id-number NUMBER` "
    "(API: GET /v1/patients?phone=...)"
)


@dataclass(frozen=True)
class RecordRef:
    """One source record of a patient: the source system and the patient's key there."""

    source: str
    key: str

    def __str__(self) -> str:
        return f"{self.source}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> RecordRef:
        source, sep, key = text.partition(":")
        if not sep or not source.strip() or not key.strip():
            raise ConfigError(f"{text!r} is not a record reference SOURCE:KEY; {FIND_HINT}")
        return cls(source.strip(), key.strip())


@dataclass(frozen=True)
class LinkedRecord:
    """A record and what put it in its person (None when identity resolution has not linked it)."""

    ref: RecordRef
    rule: str | None = None
    match_probability: float | None = None
    linked_at: Any = None


@dataclass(frozen=True)
class Resolved:
    """What an id names: a person (its records and golden row), or one record not linked to any person yet."""

    person_id: str | None
    records: tuple[LinkedRecord, ...]
    person: dict[str, Any] | None = None


#: the golden-record columns a 360 shows
PERSON_COLUMNS = (
    "person_id",
    "name",
    "sex",
    "birth_date",
    "id_number",
    "phone",
    "address",
    "province",
    "city",
    "district",
    "postal_code",
    "household_id",
    "record_count",
    "sources",
    "provenance",
    "first_seen_at",
    "updated_at",
)
_LINK_COLUMNS = ("person_id", "source", "patient_key", "rule", "match_probability", "linked_at")


def _size(n: int) -> int:
    size = 4
    while size < n:
        size *= 2
    return size


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:p0, :p1, ...)`` padded (by repeating the last value) to a fixed size, and its parameters."""
    if not values:
        raise ValueError("in_list needs at least one value")
    padded = list(values) + [values[-1]] * (_size(len(values)) - len(values))
    names = [f"{prefix}{i}" for i in range(len(padded))]
    return "(" + ", ".join(f":{n}" for n in names) + ")", dict(zip(names, padded, strict=True))


def records_predicate(dialect: str, refs: Sequence[RecordRef], column: str) -> tuple[str, dict[str, Any]]:
    """A WHERE condition selecting exactly `refs`, with `column` holding the record key."""
    padded = list(refs) + [refs[-1]] * (_size(len(refs)) - len(refs))
    params: dict[str, Any] = {}
    pairs, keys, sources = [], [], []
    for i, r in enumerate(padded):
        params[f"rs{i}"], params[f"rk{i}"] = r.source, r.key
        pairs.append(f"(:rs{i}, :rk{i})")
        keys.append(f":rk{i}")
        sources.append(f":rs{i}")
    where = f"{column} IN ({', '.join(keys)}) AND (source, {column}) IN ({', '.join(pairs)})"
    if dialect != "duckdb":
        where = f"source IN ({', '.join(sources)}) AND " + where
    return where, params


def _links(store: WorkspaceStore, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT person_id, source, patient_key, rule, match_probability, linked_at FROM identity_link "  # noqa: S608 - placeholders and fixed names only
        f"WHERE {where}",
        params,
    )


def _linked(rows: Sequence[dict[str, Any]]) -> list[LinkedRecord]:
    return sorted(
        (
            LinkedRecord(
                RecordRef(r["source"], r["patient_key"]), r["rule"], r["match_probability"], r["linked_at"]
            )
            for r in rows
        ),
        key=lambda x: (x.ref.source, x.ref.key),
    )


def person_bundle(store: WorkspaceStore, person_id: str) -> tuple[list[LinkedRecord], dict[str, Any] | None]:
    """A person's linked records and golden row, in one statement."""
    parts = fetch(
        store,
        [
            Branch("links", "identity_link", _LINK_COLUMNS, "person_id = :p", tiebreak=None),
            Branch("person", "person", PERSON_COLUMNS, "person_id = :p", tiebreak=None),
        ],
        {"p": person_id},
    )
    person = parts["person"].rows[0] if parts["person"].rows else None
    return _linked(parts["links"].rows), person


def persons_of_records(store: WorkspaceStore, refs: Sequence[RecordRef]) -> dict[RecordRef, str]:
    """The person each record is linked to (records not linked are absent)."""
    out: dict[RecordRef, str] = {}
    for chunk in _chunks(refs, 256):
        where, params = records_predicate(store.backend.dialect.name, chunk, "patient_key")
        for r in _links(store, where, params):
            out[RecordRef(r["source"], r["patient_key"])] = r["person_id"]
    return out


def record_exists(store: WorkspaceStore, ref: RecordRef) -> bool:
    where, params = records_predicate(store.backend.dialect.name, [ref], "key")
    return bool(store.scalar(f"SELECT count(*) FROM patient WHERE {where}", params) > 0)  # noqa: S608 - placeholders and fixed names only


def resolve(store: WorkspaceStore, text: str, *, records: bool = True) -> Resolved:
    """A person id or (unless `records` is False: person ids only) a ``SOURCE:KEY`` record reference
    -> the person and its records.

    Raises NotFoundError (saying how to find ids) when the id names nothing in this workspace.
    """
    ident = text.strip()
    if not ident:
        raise ConfigError(f"an empty id names no patient; {FIND_HINT}")
    links, person = person_bundle(store, ident)
    if links:
        return Resolved(ident, tuple(links), person)
    if not records:
        raise NotFoundError(
            f"no person {ident!r} in workspace {store.workspace!r}; this viewer is pseudonymous and names "
            "persons by their person id only (record references SOURCE:KEY are identifiers)"
        )
    if ":" in ident:
        ref = RecordRef.parse(ident)
        owner = persons_of_records(store, [ref]).get(ref)
        if owner is not None:
            links, person = person_bundle(store, owner)
            return Resolved(owner, tuple(links), person)
        if record_exists(store, ref):
            return Resolved(None, (LinkedRecord(ref),))
    raise NotFoundError(
        f"no person or patient record {ident!r} in workspace {store.workspace!r}; {FIND_HINT}"
    )


_PHONE_NOISE = re.compile(r"[\s()\-.]")


def normalise_phone(text: str) -> str:
    """The form ingestion stores (and blind-indexes) a phone in: mainland numbers in E.164."""
    d = _PHONE_NOISE.sub("", text.strip())
    if re.fullmatch(r"(\+86|0086|86)?1[3-9][0-9]{9}", d):
        return "+86" + d[-11:]
    if re.fullmatch(r"0[1-9][0-9]{8,10}", d):
        return "+86" + d[1:]
    if re.fullmatch(r"00[1-9][0-9]{6,14}", d):
        return "+" + d[2:]
    return d


@dataclass
class Match:
    """A person (or a record not linked to one) found by a look-up, and through which fields."""

    person_id: str | None
    records: list[RecordRef]
    via: list[str]


def find(
    store: WorkspaceStore, cipher: FieldCipher, *, phone: str | None = None, id_number: str | None = None
) -> list[Match]:
    """Persons whose golden record, or any of whose records, carries this phone or ID number.

    Compares blind indexes only: the person's (`person.<field>_bidx`), each source record's
    (`patient.<field>_bidx`) and identifiers' (`patient_identifier.value_bidx`).
    """
    if (phone is None) == (id_number is None):
        raise ConfigError("give exactly one of a phone number or an ID number to look up")
    if phone is not None:
        field, value, id_kinds = "phone", normalise_phone(phone), {"phone"}
    else:
        field, value, id_kinds = "id_number", (id_number or "").strip().upper(), {"id_number"}
    if not value:
        raise ConfigError(f"an empty {field.replace('_', ' ')} matches nobody")
    bidx = cipher.blind_index(value, field)
    by_person: dict[str, Match] = {}
    loose: dict[RecordRef, Match] = {}

    def person_match(pid: str) -> Match:
        return by_person.setdefault(pid, Match(pid, [], []))

    for r in store.rows(f"SELECT person_id FROM person WHERE {field}_bidx = :b", {"b": bidx}):  # noqa: S608 - placeholders and fixed names only
        person_match(r["person_id"]).via.append(f"golden {field}")
    hits: dict[RecordRef, str] = {}
    for r in store.rows(f"SELECT source, key FROM patient WHERE {field}_bidx = :b", {"b": bidx}):  # noqa: S608 - placeholders and fixed names only
        hits[RecordRef(r["source"], r["key"])] = f"record {field}"
    values = sorted({value, (phone or id_number or "").strip()} - {""})
    ident_bidx = cipher.blind_index_many(values, "identifier")
    lst, params = in_list("v", [b for b in ident_bidx if b is not None])
    rows = store.rows(
        f"SELECT source, patient_key, kind FROM patient_identifier WHERE value_bidx IN {lst}",  # noqa: S608 - placeholders only
        params,
    )
    for r in rows:
        if r["kind"] in id_kinds:
            hits.setdefault(RecordRef(r["source"], r["patient_key"]), f"identifier {r['kind']}")
    owners = persons_of_records(store, list(hits)) if hits else {}
    for ref, via in sorted(hits.items(), key=lambda kv: (kv[0].source, kv[0].key)):
        pid = owners.get(ref)
        m = person_match(pid) if pid is not None else loose.setdefault(ref, Match(None, [ref], []))
        if pid is not None:
            m.records.append(ref)
        m.via.append(f"{ref} {via}")
    return sorted(by_person.values(), key=lambda m: m.person_id or "") + list(loose.values())


def _chunks(items: Sequence[RecordRef], size: int) -> Iterable[Sequence[RecordRef]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
