"""FHIR R4 connector: Bundles, single resources and NDJSON files -> `StagedBatch`es and `Rejection`s.

Reading
    A ``.ndjson`` / ``.jsonl`` file holds one resource per line (`_line` = line number). Any other file
    holds one JSON document: a Bundle of any type (its entries' ``resource``; `_line` = 1-based entry
    index) or a single resource (`_line` = 1). A directory stands for its ``*.json`` / ``*.ndjson`` files.
    A file that is not JSON is one Rejection; in NDJSON, each unreadable line is one Rejection.

Checking
    Each resource is validated with the `fhir.resources` R4B model of its type (R4B is the closest
    release the package ships to R4; Synthea's R4 bundles validate unchanged). R4 resource types that
    R4B dropped (`R4_ONLY_TYPES`: MedicinalProduct*, Substance{NucleicAcid,...}, *EvidenceSynthesis)
    cannot be validated and are kept as raw_record. Then the required value sets the package does not
    enforce are checked (`careloop.ingest.fhir_valuesets`). A failing resource becomes a Rejection naming
    the first failing element; reasons never quote element values.

Keys and references
    `key` is the resource id (else the uuid of a ``urn:uuid:`` fullUrl). Organization and Practitioner
    are keyed by their first identifier's value when they have one, so that the conditional references
    Synthea writes (``Organization?identifier=https://github.com/synthetichealth/synthea|<id>``,
    ``Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|<npi>``) resolve across files. References
    resolve through the file's fullUrls first; then ``Type/id`` -> id, ``urn:uuid:x`` -> x,
    ``Type?identifier=system|value`` -> value, a logical reference (``identifier``) -> its value.

Mapping
    Organization -> organization (lat/lon from a Location it manages in the same file), Practitioner ->
    doctor (org_key / specialty from its first PractitionerRole in the same file), Patient -> patient +
    one patient_identifier per identifier (key ``<patient>/identifier/<n>``), Encounter, Condition,
    MedicationRequest (prescription), MedicationDispense (dispense), Observation (a component becomes
    its own row keyed ``<id>/<component code>``; a panel without a value of its own yields only those),
    Procedure, Immunization, AllergyIntolerance (allergy), CarePlan (care_plan), Device (device_use;
    R4 Device has no period of use, so `start` is its manufactureDate), ImagingStudy, SupplyDelivery
    (supply_use), Appointment, Consent. Everything else -- and a resource of those types that names no
    patient, or a Consent that records no decision or no purpose careloop knows -- becomes a raw_record
    holding the resource as JSON text. Nothing is dropped: per file, every resource is either mapped or
    rejected (`FhirStats`).

Values
    Tables carry every canonical field of the entity (null when the resource says nothing) plus
    ``_line`` and ``_file``. Dates and date-times are the FHIR strings (offsets kept; a `date` field
    taken from a dateTime keeps its local date part); int / float fields are typed, the rest strings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
import pyarrow as pa
from pydantic import ValidationError

from careloop.domain import entities, field_specs
from careloop.domain.identifiers import IdentifierError, normalize_id_number
from careloop.ingest import fhir_valuesets as vs
from careloop.ingest.batch import Rejection, StagedBatch

T = TypeVar("T")
Row = dict[str, Any]
Mapped = list[tuple[str, Row]]

#: R4 resource types that R4B removed: no R4B model to validate them with, kept as raw_record
R4_ONLY_TYPES = frozenset(
    {
        "EffectEvidenceSynthesis",
        "RiskEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
    }
)
#: resource types keyed by their first identifier value (the target of Synthea's conditional references)
IDENTIFIER_KEYED = frozenset({"Organization", "Practitioner"})
UNPARSEABLE = "unparseable"
NDJSON_SUFFIXES = (".ndjson", ".jsonl")

_US_CORE = "http://hl7.org/fhir/us/core/"
_ETHNICITY_URL = _US_CORE + "StructureDefinition/us-core-ethnicity"
_CAREPLAN_CATEGORY = _US_CORE + "CodeSystem/careplan-category"
_CJK = re.compile(r"[\u3400-\u9fff]")


# --- counts ----------------------------------------------------------------------------------------


@dataclass
class FhirFileStats:
    """What one file held and what became of it.

    For every resource type ``resources[t] == mapped[t] + rejected[t]``: a resource is mapped when it
    produced rows (of whatever entity), rejected when it became a Rejection; unreadable records count
    under ``unparseable`` / ``Bundle.entry``. `rows` counts rows per careloop entity. Rows beyond one
    per resource are counted apart: `component_rows` (observation rows made from
    Observation.component; a panel without a value of its own yields only those) and
    `identifier_rows` (patient_identifier rows made from Patient.identifier).
    """

    resources: Counter[str] = field(default_factory=Counter)
    mapped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    component_rows: int = 0
    identifier_rows: int = 0


@dataclass
class FhirStats:
    """Per-file counts of a `read_fhir` run, keyed by the file path as given in `_file`."""

    files: dict[str, FhirFileStats] = field(default_factory=dict)

    def file(self, name: str) -> FhirFileStats:
        return self.files.setdefault(name, FhirFileStats())


# --- entry point -----------------------------------------------------------------------------------


def read_fhir(
    paths: list[Path], *, source: str = "fhir", stats: FhirStats | None = None
) -> Iterator[StagedBatch | Rejection]:
    """Read FHIR R4 JSON / NDJSON files: one StagedBatch per entity per file, plus Rejections.

    Output is deterministic: files in the order given (a directory's files sorted), within a file the
    rejections in file order, then the batches in careloop's entity order, rows in file order.
    """
    stats = stats if stats is not None else FhirStats()
    for path in _expand(paths):
        yield from _read_file(path, source, stats.file(str(path)))


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".json", *NDJSON_SUFFIXES)
            )
        else:
            yield p


@dataclass
class _Entry:
    line: int
    full_url: str | None
    resource: dict[str, Any]
    rtype: str
    key: str | None = None


def _read_file(path: Path, source: str, st: FhirFileStats) -> Iterator[StagedBatch | Rejection]:
    fname = str(path)

    def reject(rtype: str, line: int | None, fld: str | None, reason: str, raw: Any) -> Rejection:
        st.rejected[rtype] += 1
        return Rejection(f"fhir:{rtype}", source, fname, line, fld, reason, raw)

    valid: list[_Entry] = []
    for e in _load(path):
        st.resources[e.rtype] += 1
        if isinstance(e, _Unreadable):
            yield reject(e.rtype, e.line, None, e.reason, e.raw)
            continue
        problem = _check(e)
        if problem is not None:
            yield reject(e.rtype, e.line, problem[0], problem[1], e.resource)
            continue
        e.key = _key(e)
        if e.key is None:
            yield reject(
                e.rtype, e.line, f"{e.rtype}.id", "resource has no id and no urn:uuid fullUrl", e.resource
            )
            continue
        valid.append(e)

    ctx = _Context(valid)
    rows: dict[str, list[Row]] = {}
    for e in valid:
        assert e.key is not None
        mapped = _map(e, ctx)
        st.mapped[e.rtype] += 1
        for entity, row in mapped:
            row["_line"] = e.line
            row["_file"] = fname
            rows.setdefault(entity, []).append(row)
            st.rows[entity] += 1
            if e.rtype == "Observation" and entity == "observation" and row.get("_component"):
                st.component_rows += 1
            if entity == "patient_identifier":
                st.identifier_rows += 1

    for entity in entities():
        if entity in rows:
            yield StagedBatch(entity=entity, source=source, table=_table(entity, rows[entity]))


# --- loading ---------------------------------------------------------------------------------------


@dataclass
class _Unreadable:
    line: int | None
    reason: str
    raw: Any
    rtype: str = UNPARSEABLE


def _load(path: Path) -> Iterator[_Entry | _Unreadable]:
    data = path.read_bytes()
    if path.suffix.lower() in NDJSON_SUFFIXES:
        for n, raw_line in enumerate(data.splitlines(), 1):
            if not raw_line.strip():
                continue
            try:
                doc = orjson.loads(raw_line)
            except orjson.JSONDecodeError as e:
                yield _Unreadable(n, f"line is not valid JSON: {e.msg} (column {e.colno})", _text(raw_line))
                continue
            yield _as_entry(doc, n, None, raw_line)
        return
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        yield _Unreadable(None, f"file is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", data)
        return
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        bundle_entries = doc.get("entry", [])
        if not isinstance(bundle_entries, list):
            yield _Unreadable(None, "Bundle.entry is not a list", data, "Bundle")
            return
        for i, ent in enumerate(bundle_entries, 1):
            if not isinstance(ent, dict) or not isinstance(ent.get("resource"), dict):
                what = "has no resource" if isinstance(ent, dict) else "is not an object"
                yield _Unreadable(i, f"Bundle.entry[{i - 1}] {what}", ent, "Bundle.entry")
                continue
            url = ent.get("fullUrl")
            yield _as_entry(ent["resource"], i, url if isinstance(url, str) else None, ent)
        return
    yield _as_entry(doc, 1, None, data)


def _as_entry(doc: Any, line: int, full_url: str | None, raw: Any) -> _Entry | _Unreadable:
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        return _Unreadable(
            line, "not a FHIR resource (no resourceType)", _text(raw) if isinstance(raw, bytes) else raw
        )
    return _Entry(line, full_url, doc, doc["resourceType"])


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


# --- checking --------------------------------------------------------------------------------------


def _model(rtype: str) -> type[Any] | None:
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        cls = get_fhir_model_class(rtype)
    except ValueError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Resource) else None


def _check(e: _Entry) -> tuple[str, str] | None:
    """(element path, reason) of the first structural or value-set problem, or None."""
    if e.rtype in R4_ONLY_TYPES:
        return None
    model = _model(e.rtype)
    if model is None:
        return "resourceType", "not a FHIR R4B resource type"
    try:
        model.model_validate(e.resource)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        path = _loc_path(e.rtype, first["loc"])
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return path, f"{path}: {_safe_msg(first['msg'], first.get('input'))}{more}"
    violation = vs.check_value_sets(e.resource)
    if violation is not None:
        return violation.path, violation.reason
    return None


def _loc_path(rtype: str, loc: tuple[int | str, ...]) -> str:
    path = rtype
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _safe_msg(msg: str, value: Any) -> str:
    """The validator's message with the offending value blanked out (it may be personal data)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 2 and text in msg:
            msg = msg.replace(text, "<value>")
    return msg[:200]


def _key(e: _Entry) -> str | None:
    if e.rtype in IDENTIFIER_KEYED:
        for ident in _list(e.resource.get("identifier")):
            value = _dict(ident).get("value")
            if isinstance(value, str) and value:
                return value
    rid = e.resource.get("id")
    if isinstance(rid, str) and rid:
        return rid
    if e.full_url and e.full_url.startswith("urn:uuid:"):
        return e.full_url[len("urn:uuid:") :]
    return None


# --- context and references ------------------------------------------------------------------------


class _Context:
    """What a file knows about itself: fullUrl / Type+id -> key, roles and locations for enrichment."""

    def __init__(self, valid: list[_Entry]) -> None:
        self.by_url: dict[str, _Entry] = {}
        self.by_type_id: dict[tuple[str, str], _Entry] = {}
        self.roles: dict[str, dict[str, Any]] = {}  # practitioner key -> first PractitionerRole
        self.role_practitioner: dict[str, str] = {}  # PractitionerRole key -> practitioner key
        self.locations: dict[str, dict[str, Any]] = {}  # organization key -> first Location with position
        for e in valid:
            if e.full_url:
                self.by_url.setdefault(e.full_url, e)
            rid = e.resource.get("id")
            if isinstance(rid, str):
                self.by_type_id.setdefault((e.rtype, rid), e)
        for e in valid:
            if e.rtype == "PractitionerRole":
                doc = self.ref(e.resource.get("practitioner"), "Practitioner")
                if doc is not None:
                    self.roles.setdefault(doc, e.resource)
                    if e.key is not None:
                        self.role_practitioner[e.key] = doc
            elif e.rtype == "Location" and "position" in e.resource:
                org = self.ref(e.resource.get("managingOrganization"), "Organization")
                if org is not None:
                    self.locations.setdefault(org, e.resource)

    def resolve(self, ref: Any) -> tuple[str | None, str | None, _Entry | None]:
        """(type, key, entry in this file) of a Reference; unknown parts are None."""
        r = _dict(ref)
        rtype = r.get("type") if isinstance(r.get("type"), str) else None
        s = r.get("reference")
        if isinstance(s, str) and s:
            if s.startswith("#"):
                return rtype, None, None  # contained: no key of its own
            hit = self.by_url.get(s)
            if hit is not None:
                return hit.rtype, hit.key, hit
            if "?" in s:
                target, _, query = s.partition("?")
                target_type = target.rstrip("/").rsplit("/", 1)[-1] or rtype
                idents = parse_qs(query).get("identifier")
                value = idents[0].rsplit("|", 1)[-1] if idents else None
                return target_type, value or None, None
            if s.startswith(("urn:uuid:", "urn:oid:")):
                return rtype, s.split(":", 2)[2], None
            parts = s.rstrip("/").split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            if len(parts) >= 2:
                t, rid = parts[-2], parts[-1]
                hit = self.by_type_id.get((t, rid))
                return t, hit.key if hit else rid, hit
            return rtype, s, None
        ident = _dict(r.get("identifier")).get("value")
        if isinstance(ident, str) and ident:
            return rtype, ident, None
        return rtype, None, None

    def ref(self, ref: Any, *types: str) -> str | None:
        """Key of a reference to one of `types` (a reference of unknown type is accepted)."""
        rtype, key, _ = self.resolve(ref)
        if rtype == "PractitionerRole" and "Practitioner" in types and key is not None:
            return self.role_practitioner.get(key)
        return key if rtype is None or rtype in types else None

    def patient(self, ref: Any) -> str | None:
        return self.ref(ref, "Patient")

    def target(self, ref: Any, container: dict[str, Any]) -> dict[str, Any] | None:
        """The resource a reference points at, when it is contained or in this file."""
        s = _dict(ref).get("reference")
        if isinstance(s, str) and s.startswith("#"):
            for c in _list(container.get("contained")):
                if _dict(c).get("id") == s[1:]:
                    return _dict(c)
            return None
        _, _, hit = self.resolve(ref)
        return hit.resource if hit is not None else None


# --- small helpers over JSON -----------------------------------------------------------------------


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) and x != "" else None


def _date(x: Any) -> str | None:
    """The date part of a FHIR date / dateTime (local to the source's offset)."""
    s = _str(x)
    return s[:10] if s else None


def _coding(cc: Any, *prefer: str) -> dict[str, Any] | None:
    """The coding of a CodeableConcept to use: first of a preferred system, else the first with a code."""
    codings = [_dict(c) for c in _list(_dict(cc).get("coding")) if _str(_dict(c).get("code"))]
    for name in prefer:
        for c in codings:
            if vs.code_system_name(_str(c.get("system"))) == name:
                return c
    return codings[0] if codings else None


def _code(cc: Any, *prefer: str) -> str | None:
    c = _coding(cc, *prefer)
    return _str(c.get("code")) if c else None


def _display(cc: Any, *prefer: str) -> str | None:
    text = _str(_dict(cc).get("text"))
    if text:
        return text
    c = _coding(cc, *prefer)
    return _str(c.get("display")) if c else None


def _first(*values: T | None) -> T | None:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _choice(res: dict[str, Any], prefix: str) -> str | None:
    """Start of a choice element ``<prefix>[DateTime|Period|Instant]``."""
    return _first(
        _str(res.get(prefix + "DateTime")),
        _str(_dict(res.get(prefix + "Period")).get("start")),
        _str(res.get(prefix + "Instant")),
    )


def _number(x: Any) -> float | int | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _days(q: Any) -> float | int | None:
    """A Duration / Quantity in days (d, day(s), wk)."""
    qd = _dict(q)
    value = _number(qd.get("value"))
    unit = str(qd.get("code") or qd.get("unit") or "d").lower()
    if value is None:
        return None
    if unit in ("d", "day", "days"):
        return value
    if unit in ("wk", "week", "weeks"):
        return value * 7
    return None


def _reason(res: dict[str, Any], ctx: _Context) -> tuple[str | None, str | None]:
    """(code, text) of the first reasonCode, else of the Condition a reasonReference points at."""
    for cc in _list(res.get("reasonCode")):
        if _code(cc):
            return _code(cc, "ICD-10", "SNOMED-CT"), _display(cc)
    for ref in _list(res.get("reasonReference")):
        target = ctx.target(ref, res)
        if target is not None and target.get("code"):
            return _code(target["code"], "ICD-10", "SNOMED-CT"), _display(target["code"])
    return None, None


def _human_name(names: Any) -> str | None:
    """ "given family" (Western) or family+given (Chinese) of the official name, else the first."""
    candidates = [_dict(n) for n in _list(names)]
    if not candidates:
        return None
    usable = [n for n in candidates if n.get("use") not in ("old", "maiden")] or candidates
    name = next((n for n in usable if n.get("use") == "official"), usable[0])
    family = _str(name.get("family")) or ""
    given = [g for g in _list(name.get("given")) if isinstance(g, str) and g]
    if not family and not given:
        return _str(name.get("text"))
    if _CJK.search(family + "".join(given)):
        return family + "".join(given)
    return " ".join([*given, family]).strip()


def _telecom(res: dict[str, Any], system: str) -> str | None:
    """First mobile (then any) contact point of `system`, skipping ones marked old."""
    points = [
        _dict(t)
        for t in _list(res.get("telecom"))
        if _dict(t).get("system") in ((system, "sms") if system == "phone" else (system,))
        and _dict(t).get("use") != "old"
        and _str(_dict(t).get("value"))
    ]
    mobile = [p for p in points if p.get("use") == "mobile"]
    best = mobile or points
    return _str(best[0].get("value")) if best else None


def _address(addresses: Any) -> Row:
    cands = [_dict(a) for a in _list(addresses)]
    cands = [a for a in cands if a.get("use") != "old"] or cands
    if not cands:
        return {}
    a = next((a for a in cands if a.get("use") == "home"), cands[0])
    lines = [x for x in _list(a.get("line")) if isinstance(x, str) and x]
    sep = "" if _CJK.search("".join(lines)) else " "
    return {
        "address": sep.join(lines) or _str(a.get("text")),
        "city": _str(a.get("city")),
        "province": _str(a.get("state")),
        "district": _str(a.get("district")),
        "postal_code": _str(a.get("postalCode")),
    }


def _extension_text(res: dict[str, Any], url: str) -> str | None:
    for ext in _list(res.get("extension")):
        if _dict(ext).get("url") == url:
            for sub in _list(_dict(ext).get("extension")):
                if _dict(sub).get("url") == "text":
                    return _str(_dict(sub).get("valueString"))
            return _display(_dict(ext).get("valueCodeableConcept"))
    return None


def _json(res: dict[str, Any]) -> str:
    return orjson.dumps(res).decode("utf-8")


# --- mapping per resource type ---------------------------------------------------------------------


def _raw(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    patient = None
    for element in ("subject", "patient", "beneficiary"):
        if element in res:
            patient = ctx.patient(res[element])
            break
    if patient is None and e.rtype == "Appointment":
        patient = _appointment_actor(res, ctx, "Patient")
    occurred = _first(
        _choice(res, "effective"),
        _choice(res, "occurrence"),
        _choice(res, "performed"),
        _choice(res, "onset"),
        _str(res.get("authoredOn")),
        _str(res.get("issued")),
        _str(res.get("recorded")),
        _str(res.get("created")),
        _str(res.get("dateTime")),
        _str(res.get("date")),
        _str(res.get("whenHandedOver")),
        _str(res.get("started")),
        _str(res.get("start")),
        _str(_dict(res.get("period")).get("start")),
        _str(_dict(res.get("billablePeriod")).get("start")),
    )
    return [
        (
            "raw_record",
            {
                "key": e.key,
                "record_type": f"fhir:{e.rtype}",
                "payload": _json(res),
                "patient_key": patient,
                "occurred_at": occurred,
            },
        )
    ]


def _organization(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    codes = [c for cc in _list(res.get("type")) if (c := _code(cc))]
    org_type = next((vs.ORG_TYPE_MAP[c] for c in codes if c in vs.ORG_TYPE_MAP), "other" if codes else None)
    position = _dict(ctx.locations.get(e.key or "", {}).get("position"))
    row: Row = {
        "key": e.key,
        "name": _str(res.get("name")),
        "org_type": org_type,
        **_address(res.get("address")),
        "phone": _telecom(res, "phone"),
        "latitude": _number(position.get("latitude")),
        "longitude": _number(position.get("longitude")),
    }
    return [("organization", row)]


def _practitioner(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    role = ctx.roles.get(e.key or "", {})
    license_number = None
    for ident in _list(res.get("identifier")):
        if {_code(_dict(ident).get("type"))} & {"MD", "LN"}:
            license_number = _str(_dict(ident).get("value"))
            break
    specialty = next((d for cc in _list(role.get("specialty")) if (d := _display(cc))), None)
    return [
        (
            "doctor",
            {
                "key": e.key,
                "name": _human_name(res.get("name")),
                "org_key": ctx.ref(role.get("organization"), "Organization"),
                "specialty": specialty,
                "sex": _str(res.get("gender")),
                "license_number": license_number,
                "phone": _telecom(res, "phone"),
                "email": _telecom(res, "email"),
            },
        )
    ]


def _identifier_kind(codes: list[str], value: str) -> tuple[str, bool]:
    """(careloop IdentifierKind, is a valid Chinese resident ID) of an identifier."""
    for code in codes:
        if code in vs.IDENTIFIER_KIND_MAP:
            return vs.IDENTIFIER_KIND_MAP[code], False
        if code in vs.NATIONAL_ID_CODES or code.startswith("NN"):
            try:
                normalize_id_number(value)
            except IdentifierError:
                return "other", False
            return "id_number", True
    return "other", False


def _patient(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    marital = _dict(res.get("maritalStatus"))
    row: Row = {
        "key": e.key,
        "name": _human_name(res.get("name")),
        "sex": _str(res.get("gender")),
        "birth_date": _str(res.get("birthDate")),
        "death_date": _date(res.get("deceasedDateTime")),
        "id_number": None,
        "phone": _telecom(res, "phone"),
        "email": _telecom(res, "email"),
        **_address(res.get("address")),
        "ethnicity": _extension_text(res, _ETHNICITY_URL),
        "marital_status": _code(marital) or _str(marital.get("text")),
    }
    out: Mapped = [("patient", row)]
    for i, ident in enumerate(_list(res.get("identifier")), 1):
        ident = _dict(ident)
        value = _str(ident.get("value"))
        if value is None:
            continue
        codes = [
            c
            for c in (_str(_dict(x).get("code")) for x in _list(_dict(ident.get("type")).get("coding")))
            if c
        ]
        kind, resident_id = _identifier_kind(codes, value)
        if resident_id and row["id_number"] is None:
            row["id_number"] = value
        period = _dict(ident.get("period"))
        out.append(
            (
                "patient_identifier",
                {
                    "key": f"{e.key}/identifier/{i}",
                    "patient_key": e.key,
                    "kind": kind,
                    "system": _str(ident.get("system")),
                    "value": value,
                    "valid_from": _date(period.get("start")),
                    "valid_to": _date(period.get("end")),
                },
            )
        )
    return out


def _encounter(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    cls = _dict(res.get("class"))
    if cls.get("system") in (None, vs.ENCOUNTER_CLASS.system):
        encounter_class = vs.ENCOUNTER_CLASS_MAP.get(str(cls.get("code")), "other")
    else:
        encounter_class = "other"
    doctor = None
    participants = [_dict(p) for p in _list(res.get("participant"))]
    primary = [p for p in participants if {_code(t) for t in _list(p.get("type"))} & {"PPRF", "ATND"}]
    for p in primary + participants:
        doctor = ctx.ref(p.get("individual"), "Practitioner")
        if doctor is not None:
            break
    encounter_type = next(iter(_list(res.get("type"))), None)
    reason_code, reason_text = _reason(res, ctx)
    period = _dict(res.get("period"))
    return [
        (
            "encounter",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "encounter_class": encounter_class,
                "start": _str(period.get("start")),
                "end": _str(period.get("end")),
                "org_key": ctx.ref(res.get("serviceProvider"), "Organization"),
                "doctor_key": doctor,
                "code": _code(encounter_type),
                "description": _display(encounter_type),
                "reason_code": reason_code,
                "reason_description": reason_text,
            },
        )
    ]


def _condition(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    coding = _coding(res.get("code"), "ICD-10", "SNOMED-CT")
    return [
        (
            "condition",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
                "code": _str(coding.get("code")) if coding else None,
                "code_system": vs.code_system_name(_str(coding.get("system"))) if coding else None,
                "description": _display(res.get("code"), "ICD-10", "SNOMED-CT"),
                "onset": _date(_choice(res, "onset")),
                "abatement": _date(_choice(res, "abatement")),
            },
        )
    ]


def _medication(res: dict[str, Any], ctx: _Context) -> tuple[str | None, str | None, str | None]:
    """(code, name, code system) of medication[x], following a medicationReference when it resolves."""
    cc = res.get("medicationCodeableConcept")
    if cc is None and "medicationReference" in res:
        target = ctx.target(res["medicationReference"], res)
        cc = target.get("code") if target else None
        if cc is None:
            return None, _str(_dict(res["medicationReference"]).get("display")), None
    coding = _coding(cc, "RxNorm", "ATC")
    system = vs.code_system_name(_str(coding.get("system"))) if coding else None
    return (_str(coding.get("code")) if coding else None), _display(cc, "RxNorm", "ATC"), system


def _prescription(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    code, name, system = _medication(res, ctx)
    dispense = _dict(res.get("dispenseRequest"))
    reason_code, reason_text = _reason(res, ctx)
    return [
        (
            "prescription",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "drug_code": code,
                "drug_name": name,
                "code_system": system,
                "written_at": _str(res.get("authoredOn")),
                "status": vs.RX_STATUS_MAP.get(str(res.get("status"))),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
                "doctor_key": ctx.ref(res.get("requester"), "Practitioner"),
                "days_supply": _days(dispense.get("expectedSupplyDuration")),
                "quantity": _number(_dict(dispense.get("quantity")).get("value")),
                "refills": _number(dispense.get("numberOfRepeatsAllowed")),
                "reason_code": reason_code,
                "reason_description": reason_text,
            },
        )
    ]


def _dispense(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    code, name, _ = _medication(res, ctx)
    org = None
    for p in _list(res.get("performer")):
        actor = _dict(p).get("actor")
        if ctx.resolve(actor)[0] == "Organization":
            org = ctx.ref(actor, "Organization")
            break
    return [
        (
            "dispense",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "drug_code": code,
                "drug_name": name,
                "dispensed_at": _first(_str(res.get("whenHandedOver")), _str(res.get("whenPrepared"))),
                "days_supply": _days(res.get("daysSupply")),
                "prescription_key": next(
                    (
                        k
                        for r in _list(res.get("authorizingPrescription"))
                        if (k := ctx.ref(r, "MedicationRequest"))
                    ),
                    None,
                ),
                "org_key": org,
                "quantity": _number(_dict(res.get("quantity")).get("value")),
            },
        )
    ]


def _observation_value(x: dict[str, Any]) -> Row:
    q = _dict(x.get("valueQuantity"))
    if q:
        return {"value_num": _number(q.get("value")), "unit": _str(q.get("unit")) or _str(q.get("code"))}
    if "valueInteger" in x:
        return {"value_num": _number(x["valueInteger"])}
    if "valueCodeableConcept" in x:
        cc = x["valueCodeableConcept"]
        return {"value_text": _display(cc) or _code(cc)}
    if "valueBoolean" in x:
        return {"value_text": "true" if x["valueBoolean"] else "false"}
    for name in ("valueString", "valueDateTime", "valueTime"):
        if name in x:
            return {"value_text": _str(x[name])}
    return {}


def _has_value(x: dict[str, Any]) -> bool:
    return any(k.startswith("value") for k in x)


def _observation(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    categories = {c for cc in _list(res.get("category")) if (c := _code(cc))}
    base: Row = {
        "patient_key": ctx.patient(res.get("subject")),
        "effective_at": _first(_choice(res, "effective"), _str(res.get("issued"))),
        "source_kind": "lab" if "laboratory" in categories else None,
        "device_id": ctx.ref(res.get("device"), "Device", "DeviceMetric"),
        "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
    }
    out: Mapped = []
    components = [_dict(c) for c in _list(res.get("component"))]
    if not components or _has_value(res):
        out.append(
            (
                "observation",
                {
                    "key": e.key,
                    **base,
                    "code": _code(res.get("code"), "LOINC"),
                    "name": _display(res.get("code"), "LOINC"),
                    **_observation_value(res),
                },
            )
        )
    seen: Counter[str] = Counter()
    for i, comp in enumerate(components):
        code = _code(comp.get("code"), "LOINC")
        suffix = code or f"component-{i + 1}"
        seen[suffix] += 1
        if seen[suffix] > 1:
            suffix = f"{suffix}/{seen[suffix]}"
        out.append(
            (
                "observation",
                {
                    "key": f"{e.key}/{suffix}",
                    **base,
                    "code": code,
                    "name": _display(comp.get("code"), "LOINC"),
                    **_observation_value(comp),
                    "_component": True,
                },
            )
        )
    return out


def _procedure(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    reason_code, _ = _reason(res, ctx)
    return [
        (
            "procedure",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "code": _code(res.get("code"), "SNOMED-CT"),
                "start": _choice(res, "performed"),
                "end": _str(_dict(res.get("performedPeriod")).get("end")),
                "description": _display(res.get("code"), "SNOMED-CT"),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
                "reason_code": reason_code,
            },
        )
    ]


def _immunization(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    return [
        (
            "immunization",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("patient")),
                "code": _code(res.get("vaccineCode"), "CVX"),
                "occurred_at": _str(res.get("occurrenceDateTime")),
                "description": _display(res.get("vaccineCode"), "CVX"),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
            },
        )
    ]


def _allergy(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    reaction = _dict(next(iter(_list(res.get("reaction"))), None))
    manifestation = next(iter(_list(reaction.get("manifestation"))), None)
    return [
        (
            "allergy",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("patient")),
                "code": _code(res.get("code"), "SNOMED-CT"),
                "start": _date(_first(_choice(res, "onset"), _str(res.get("recordedDate")))),
                "description": _display(res.get("code"), "SNOMED-CT"),
                "category": _str(next(iter(_list(res.get("category"))), None)),
                "reaction": _display(manifestation),
                "severity": _str(reaction.get("severity")),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
            },
        )
    ]


def _care_plan(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    categories = [_dict(cc) for cc in _list(res.get("category"))]
    specific = [
        cc
        for cc in categories
        if any(_dict(c).get("system") != _CAREPLAN_CATEGORY for c in _list(cc.get("coding")))
    ]
    category = next((cc for cc in specific + categories if _code(cc)), None)
    reason = None
    for ref in _list(res.get("addresses")):
        target = ctx.target(ref, res)
        if target is not None and (reason := _code(target.get("code"), "ICD-10", "SNOMED-CT")):
            break
    period = _dict(res.get("period"))
    return [
        (
            "care_plan",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "code": _code(category),
                "start": _date(period.get("start")),
                "end": _date(period.get("end")),
                "description": _first(
                    _display(category), _str(res.get("title")), _str(res.get("description"))
                ),
                "reason_code": reason,
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
            },
        )
    ]


def _device(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    udi = _dict(next(iter(_list(res.get("udiCarrier"))), None))
    name = _dict(next(iter(_list(res.get("deviceName"))), None))
    return [
        (
            "device_use",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("patient")),
                "code": _code(res.get("type"), "SNOMED-CT"),
                # R4 Device has no period of use; manufactureDate is the earliest date of use (Synthea
                # writes it three weeks before the device was assigned).
                "start": _str(res.get("manufactureDate")),
                "description": _first(_display(res.get("type")), _str(name.get("name"))),
                "udi": _first(_str(udi.get("carrierHRF")), _str(udi.get("deviceIdentifier"))),
            },
        )
    ]


def _imaging_study(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    series = _dict(next(iter(_list(res.get("series"))), None))
    procedure = next(iter(_list(res.get("procedureCode"))), None)
    modality = _str(_dict(series.get("modality")).get("code")) or _str(
        _dict(next(iter(_list(res.get("modality"))), None)).get("code")
    )
    return [
        (
            "imaging_study",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("subject")),
                "performed_at": _first(_str(res.get("started")), _str(series.get("started"))),
                "modality": modality,
                "body_site": _str(_dict(series.get("bodySite")).get("code")),
                "procedure_code": _code(procedure),
                "description": _first(_str(res.get("description")), _display(procedure)),
                "encounter_key": ctx.ref(res.get("encounter"), "Encounter"),
            },
        )
    ]


def _supply(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    item = _dict(res.get("suppliedItem"))
    cc = item.get("itemCodeableConcept")
    return [
        (
            "supply_use",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("patient")),
                "code": _code(cc, "SNOMED-CT"),
                "used_at": _date(_choice(res, "occurrence")),
                "description": _display(cc),
                "quantity": _number(_dict(item.get("quantity")).get("value")),
            },
        )
    ]


def _appointment_actor(res: dict[str, Any], ctx: _Context, rtype: str) -> str | None:
    for p in _list(res.get("participant")):
        actor = _dict(p).get("actor")
        if ctx.resolve(actor)[0] == rtype:
            return ctx.ref(actor, rtype)
    return None


def _appointment(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    return [
        (
            "appointment",
            {
                "key": e.key,
                "patient_key": _appointment_actor(res, ctx, "Patient"),
                "scheduled_at": _str(res.get("start")),
                "status": vs.APPOINTMENT_STATUS_MAP.get(str(res.get("status"))),
                "booked_at": _str(res.get("created")),
                "doctor_key": _appointment_actor(res, ctx, "Practitioner"),
            },
        )
    ]


def _consent(e: _Entry, ctx: _Context) -> Mapped:
    res = e.resource
    status = vs.CONSENT_STATUS_MAP.get(str(res.get("status")))
    provision = _dict(res.get("provision"))
    if status == "granted" and provision.get("type") == "deny":
        status = "refused"
    codes = [_str(_dict(c).get("code")) for c in _list(provision.get("purpose"))]
    codes += [_code(cc) for cc in _list(res.get("category"))]
    purpose = next((vs.CONSENT_PURPOSE_MAP[c] for c in codes if c in vs.CONSENT_PURPOSE_MAP), None)
    if status is None or purpose is None:
        return _raw(e, ctx)  # no decision of the person, or a purpose careloop cannot place
    source_ref = _dict(res.get("sourceReference")).get("reference")
    return [
        (
            "consent",
            {
                "key": e.key,
                "patient_key": ctx.patient(res.get("patient")),
                "purpose": purpose,
                "status": status,
                "recorded_at": _str(res.get("dateTime")),
                "expires_at": _str(_dict(provision.get("period")).get("end")),
                "proof": _first(_str(source_ref), _str(_dict(res.get("sourceAttachment")).get("url"))),
            },
        )
    ]


_MAPPERS: dict[str, Callable[[_Entry, _Context], Mapped]] = {
    "Organization": _organization,
    "Practitioner": _practitioner,
    "Patient": _patient,
    "Encounter": _encounter,
    "Condition": _condition,
    "MedicationRequest": _prescription,
    "MedicationDispense": _dispense,
    "Observation": _observation,
    "Procedure": _procedure,
    "Immunization": _immunization,
    "AllergyIntolerance": _allergy,
    "CarePlan": _care_plan,
    "Device": _device,
    "ImagingStudy": _imaging_study,
    "SupplyDelivery": _supply,
    "Appointment": _appointment,
    "Consent": _consent,
}


@cache
def _needs_patient() -> frozenset[str]:
    return frozenset(
        name
        for name, model in entities().items()
        if any(s.name == "patient_key" and s.required for s in field_specs(model))
    )


def _map(e: _Entry, ctx: _Context) -> Mapped:
    """Rows of one valid resource; a patient record that names no patient is kept as raw_record."""
    mapper = _MAPPERS.get(e.rtype, _raw)
    out = mapper(e, ctx)
    needs_patient = _needs_patient()
    if any(entity in needs_patient and row.get("patient_key") is None for entity, row in out):
        return _raw(e, ctx)
    return out


# --- tables ----------------------------------------------------------------------------------------

_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _table(entity: str, rows: list[Row]) -> pa.Table:
    """Every canonical field of the entity but `source` (in declaration order), then _line and _file."""
    columns: dict[str, pa.Array] = {}
    for spec in field_specs(entities()[entity]):
        if spec.name != "source":
            values = [row.get(spec.name) for row in rows]
            columns[spec.name] = _array(values, _ARROW.get(spec.py_type, pa.string()))
    columns["_line"] = pa.array([row["_line"] for row in rows], type=pa.int64())
    columns["_file"] = pa.array([row["_file"] for row in rows], type=pa.string())
    return pa.table(columns)


def _array(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """Typed when every value fits (integral floats become ints), else strings for the pipeline to cast."""
    if arrow_type == pa.int64():
        values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    if arrow_type != pa.string():
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass
    return pa.array([None if v is None else v if isinstance(v, str) else str(v) for v in values], pa.string())
