"""FHIR R4 value sets that `fhir.resources` does not enforce, and the FHIR -> careloop code maps.

`fhir.resources` checks structure and cardinality but accepts any string in a ``code`` element
(``Patient.gender = "robot"`` validates). `check_value_sets` applies the required bindings below to a
resource dict and reports the first violation. Codings are checked only when they carry the bound
code system (or no system at all); codes from other systems are left to the mapping.

Everything here is data: to support another binding, add a line to `CHECKS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_TERM = "http://terminology.hl7.org/CodeSystem/"


@dataclass(frozen=True)
class ValueSet:
    """A required binding: its name (for messages), its codes and, for codings, the bound system."""

    name: str
    codes: tuple[str, ...]
    system: str | None = None

    def __contains__(self, code: object) -> bool:
        return code in self.codes


def _vs(name: str, codes: str, system: str | None = None) -> ValueSet:
    return ValueSet(name, tuple(codes.split()), system)


GENDER = _vs("administrative-gender", "male female other unknown")
CONTACT_POINT_SYSTEM = _vs("contact-point-system", "phone fax email pager url sms other")
CONTACT_POINT_USE = _vs("contact-point-use", "home work temp old mobile")
NAME_USE = _vs("name-use", "usual official temp nickname anonymous old maiden")
ADDRESS_USE = _vs("address-use", "home work temp old billing")
ADDRESS_TYPE = _vs("address-type", "postal physical both")
IDENTIFIER_USE = _vs("identifier-use", "usual official temp secondary old")
ENCOUNTER_STATUS = _vs(
    "encounter-status",
    "planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown",
)
#: v3 ActEncounterCode (the R4 extensible binding of Encounter.class; checked when the v3 system is used)
ENCOUNTER_CLASS = _vs(
    "v3-ActEncounterCode", "AMB EMER FLD HH IMP ACUTE NONAC OBSENC PRENC SS VR", _TERM + "v3-ActCode"
)
CONDITION_CLINICAL = _vs(
    "condition-clinical",
    "active recurrence relapse inactive remission resolved",
    _TERM + "condition-clinical",
)
CONDITION_VERIFICATION = _vs(
    "condition-ver-status",
    "unconfirmed provisional differential confirmed refuted entered-in-error",
    _TERM + "condition-ver-status",
)
MEDICATION_REQUEST_STATUS = _vs(
    "medicationrequest-status",
    "active on-hold cancelled completed entered-in-error stopped draft unknown",
)
MEDICATION_REQUEST_INTENT = _vs(
    "medicationrequest-intent",
    "proposal plan order original-order reflex-order filler-order instance-order option",
)
REQUEST_PRIORITY = _vs("request-priority", "routine urgent asap stat")
MEDICATION_DISPENSE_STATUS = _vs(
    "medicationdispense-status",
    "preparation in-progress cancelled on-hold completed entered-in-error stopped declined unknown",
)
MEDICATION_ADMIN_STATUS = _vs(
    "medication-admin-status",
    "in-progress not-done on-hold completed entered-in-error stopped unknown",
)
MEDICATION_STATEMENT_STATUS = _vs(
    "medication-statement-status",
    "active completed entered-in-error intended stopped on-hold unknown not-taken",
)
OBSERVATION_STATUS = _vs(
    "observation-status",
    "registered preliminary final amended corrected cancelled entered-in-error unknown",
)
DIAGNOSTIC_REPORT_STATUS = _vs(
    "diagnostic-report-status",
    "registered partial preliminary final amended corrected appended cancelled entered-in-error unknown",
)
PROCEDURE_STATUS = _vs(
    "event-status",
    "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
)
IMMUNIZATION_STATUS = _vs("immunization-status", "completed entered-in-error not-done")
ALLERGY_CLINICAL = _vs(
    "allergyintolerance-clinical", "active inactive resolved", _TERM + "allergyintolerance-clinical"
)
ALLERGY_VERIFICATION = _vs(
    "allergyintolerance-verification",
    "unconfirmed confirmed refuted entered-in-error",
    _TERM + "allergyintolerance-verification",
)
ALLERGY_TYPE = _vs("allergy-intolerance-type", "allergy intolerance")
ALLERGY_CATEGORY = _vs("allergy-intolerance-category", "food medication environment biologic")
ALLERGY_CRITICALITY = _vs("allergy-intolerance-criticality", "low high unable-to-assess")
REACTION_SEVERITY = _vs("reaction-event-severity", "mild moderate severe")
CARE_PLAN_STATUS = _vs("request-status", "draft active on-hold revoked completed entered-in-error unknown")
CARE_PLAN_INTENT = _vs("care-plan-intent", "proposal plan order option")
CARE_PLAN_ACTIVITY_STATUS = _vs(
    "care-plan-activity-status",
    "not-started scheduled in-progress on-hold completed cancelled stopped unknown entered-in-error",
)
CARE_TEAM_STATUS = _vs("care-team-status", "proposed active suspended inactive entered-in-error")
DEVICE_STATUS = _vs("device-status", "active inactive entered-in-error unknown")
DEVICE_USE_STATUS = _vs(
    "device-statement-status", "active completed entered-in-error intended stopped on-hold"
)
IMAGING_STUDY_STATUS = _vs("imagingstudy-status", "registered available cancelled entered-in-error unknown")
SUPPLY_DELIVERY_STATUS = _vs("supplydelivery-status", "in-progress completed abandoned entered-in-error")
APPOINTMENT_STATUS = _vs(
    "appointmentstatus",
    "proposed pending booked arrived fulfilled cancelled noshow entered-in-error checked-in waitlist",
)
PARTICIPATION_STATUS = _vs("participationstatus", "accepted declined tentative needs-action")
PARTICIPANT_REQUIRED = _vs("participantrequired", "required optional information-only")
CONSENT_STATUS = _vs("consent-state-codes", "draft proposed active rejected inactive entered-in-error")
FM_STATUS = _vs("fm-status", "active cancelled draft entered-in-error")
CLAIM_USE = _vs("claim-use", "claim preauthorization predetermination")
EOB_STATUS = _vs("explanationofbenefit-status", "active cancelled draft entered-in-error")
REMITTANCE_OUTCOME = _vs("remittance-outcome", "queued complete error partial")
DOCUMENT_REFERENCE_STATUS = _vs("document-reference-status", "current superseded entered-in-error")
COMPOSITION_STATUS = _vs("composition-status", "preliminary final amended entered-in-error")
LOCATION_STATUS = _vs("location-status", "active suspended inactive")
LOCATION_MODE = _vs("location-mode", "instance kind")

_PERSON = (
    ("gender", GENDER),
    ("name.use", NAME_USE),
    ("telecom.system", CONTACT_POINT_SYSTEM),
    ("telecom.use", CONTACT_POINT_USE),
    ("address.use", ADDRESS_USE),
    ("address.type", ADDRESS_TYPE),
    ("identifier.use", IDENTIFIER_USE),
)

#: resource type -> (element path, value set); a path walks lists transparently
CHECKS: dict[str, tuple[tuple[str, ValueSet], ...]] = {
    "Patient": (*_PERSON, ("contact.gender", GENDER)),
    "Practitioner": _PERSON,
    "RelatedPerson": _PERSON,
    "Person": _PERSON,
    "Organization": (("telecom.system", CONTACT_POINT_SYSTEM), ("telecom.use", CONTACT_POINT_USE)),
    "PractitionerRole": (("telecom.system", CONTACT_POINT_SYSTEM), ("telecom.use", CONTACT_POINT_USE)),
    "Location": (("status", LOCATION_STATUS), ("mode", LOCATION_MODE)),
    "Encounter": (
        ("status", ENCOUNTER_STATUS),
        ("class", ENCOUNTER_CLASS),
        ("statusHistory.status", ENCOUNTER_STATUS),
        ("classHistory.class", ENCOUNTER_CLASS),
    ),
    "Condition": (("clinicalStatus", CONDITION_CLINICAL), ("verificationStatus", CONDITION_VERIFICATION)),
    "MedicationRequest": (
        ("status", MEDICATION_REQUEST_STATUS),
        ("intent", MEDICATION_REQUEST_INTENT),
        ("priority", REQUEST_PRIORITY),
    ),
    "MedicationDispense": (("status", MEDICATION_DISPENSE_STATUS),),
    "MedicationAdministration": (("status", MEDICATION_ADMIN_STATUS),),
    "MedicationStatement": (("status", MEDICATION_STATEMENT_STATUS),),
    "Observation": (("status", OBSERVATION_STATUS),),
    "DiagnosticReport": (("status", DIAGNOSTIC_REPORT_STATUS),),
    "Procedure": (("status", PROCEDURE_STATUS),),
    "Immunization": (("status", IMMUNIZATION_STATUS),),
    "AllergyIntolerance": (
        ("clinicalStatus", ALLERGY_CLINICAL),
        ("verificationStatus", ALLERGY_VERIFICATION),
        ("type", ALLERGY_TYPE),
        ("category", ALLERGY_CATEGORY),
        ("criticality", ALLERGY_CRITICALITY),
        ("reaction.severity", REACTION_SEVERITY),
    ),
    "CarePlan": (
        ("status", CARE_PLAN_STATUS),
        ("intent", CARE_PLAN_INTENT),
        ("activity.detail.status", CARE_PLAN_ACTIVITY_STATUS),
    ),
    "CareTeam": (("status", CARE_TEAM_STATUS),),
    "Device": (("status", DEVICE_STATUS),),
    "DeviceUseStatement": (("status", DEVICE_USE_STATUS),),
    "ImagingStudy": (("status", IMAGING_STUDY_STATUS),),
    "SupplyDelivery": (("status", SUPPLY_DELIVERY_STATUS),),
    "Appointment": (
        ("status", APPOINTMENT_STATUS),
        ("participant.status", PARTICIPATION_STATUS),
        ("participant.required", PARTICIPANT_REQUIRED),
    ),
    "Consent": (("status", CONSENT_STATUS),),
    "Coverage": (("status", FM_STATUS),),
    "Claim": (("status", FM_STATUS), ("use", CLAIM_USE)),
    "ExplanationOfBenefit": (
        ("status", EOB_STATUS),
        ("use", CLAIM_USE),
        ("outcome", REMITTANCE_OUTCOME),
    ),
    "DocumentReference": (("status", DOCUMENT_REFERENCE_STATUS), ("docStatus", COMPOSITION_STATUS)),
}


@dataclass(frozen=True)
class Violation:
    """The first value-set violation in a resource: FHIRPath-like element path and a message.

    The message names the element, the value set and its codes, never the offending value.
    """

    path: str
    reason: str


def _walk(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, parts, f"{path}[{i}]")
        return
    if not parts:
        yield path, node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _walk(node[parts[0]], parts[1:], f"{path}.{parts[0]}")


def _coding_violation(coding: Any, vs: ValueSet) -> bool:
    if not isinstance(coding, dict) or "code" not in coding:
        return False
    if vs.system is not None and coding.get("system") not in (None, vs.system):
        return False  # another code system: not bound here
    return coding["code"] not in vs


def _bad(value: Any, vs: ValueSet) -> str | None:
    """Sub-path of the bad code inside `value` ("" for a plain code), or None when it conforms."""
    if isinstance(value, str):
        return "" if value not in vs else None
    if isinstance(value, dict) and "coding" in value:  # CodeableConcept
        for i, coding in enumerate(value.get("coding") or []):
            if _coding_violation(coding, vs):
                return f".coding[{i}].code"
        return None
    if isinstance(value, dict) and _coding_violation(value, vs):  # Coding
        return ".code"
    return None


def check_value_sets(resource: dict[str, Any]) -> Violation | None:
    """The first element of `resource` whose code is outside its required value set, if any."""
    rtype = str(resource.get("resourceType"))
    for element, vs in CHECKS.get(rtype, ()):
        for path, value in _walk(resource, element.split("."), rtype):
            sub = _bad(value, vs)
            if sub is not None:
                return Violation(
                    f"{path}{sub}",
                    f"{path}{sub}: code not in value set {vs.name} (allowed: {', '.join(vs.codes)})",
                )
    return None


# --- FHIR -> careloop code maps ------------------------------------------------------------------

#: Encounter.class (v3 ActCode) -> careloop EncounterClass; codes not listed (or other systems) -> other.
#: ACUTE / NONAC are the v3 specialisations of IMP.
ENCOUNTER_CLASS_MAP = {
    "AMB": "outpatient",
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "EMER": "emergency",
    "VR": "online",
    "HH": "home",
}

#: MedicationRequest.status -> careloop RxStatus (an order on hold or still in draft is not ended)
RX_STATUS_MAP = {
    "active": "active",
    "on-hold": "active",
    "draft": "active",
    "unknown": "active",
    "completed": "completed",
    "stopped": "stopped",
    "cancelled": "cancelled",
    "entered-in-error": "cancelled",
}

#: Appointment.status -> careloop AppointmentStatus
APPOINTMENT_STATUS_MAP = {
    "proposed": "booked",
    "pending": "booked",
    "booked": "booked",
    "waitlist": "booked",
    "arrived": "attended",
    "checked-in": "attended",
    "fulfilled": "attended",
    "noshow": "no_show",
    "cancelled": "cancelled",
    "entered-in-error": "cancelled",
}

#: Consent.status -> careloop ConsentStatus. draft / proposed / entered-in-error are no decision of the
#: person and must never count as granted: such consents are kept as raw_record instead.
CONSENT_STATUS_MAP = {"active": "granted", "rejected": "refused", "inactive": "withdrawn"}

#: Consent purpose / category codes (v3 PurposeOfUse, consentcategorycodes) -> careloop ConsentPurpose
CONSENT_PURPOSE_MAP = {
    "HMARKT": "marketing",
    "marketing": "marketing",
    "HRESCH": "research",
    "CLINTRCH": "research",
    "research": "research",
    "TREAT": "care_follow_up",
    "treatment": "care_follow_up",
    "HOPERAT": "service",
    "HPAYMT": "service",
    "PATRQT": "service",
}

#: Organization.type (organization-type) -> careloop OrgType; other codes -> other
ORG_TYPE_MAP = {"prov": "hospital", "pay": "payer", "ins": "payer"}

#: Identifier.type (v2-0203) -> careloop IdentifierKind. National-ID codes (SS, NN*, NI) become
#: id_number only when the value is a valid Chinese resident ID; otherwise `other`.
IDENTIFIER_KIND_MAP = {
    "MR": "his_number",
    "PI": "his_number",
    "PPN": "passport",
    "DL": "other",
    "MB": "insurance_number",
    "SN": "insurance_number",
}
NATIONAL_ID_CODES = frozenset({"SS", "NI", "CZ"})  # plus every NNxxx (national person identifier)

#: fragments of code-system URLs -> careloop code_system names (first match wins)
CODE_SYSTEM_NAMES = (
    ("snomed", "SNOMED-CT"),
    ("icd-10", "ICD-10"),
    ("icd10", "ICD-10"),
    ("icd-9", "ICD-9-CM"),
    ("loinc", "LOINC"),
    ("rxnorm", "RxNorm"),
    ("whocc.no/atc", "ATC"),
    ("sid/cvx", "CVX"),
    ("sid/ndc", "NDC"),
    ("nucc.org", "NUCC"),
    ("dicom.nema.org", "DICOM"),
)


def code_system_name(system: str | None) -> str:
    """careloop name of a coding system URL (the URL itself when unknown, "local" when absent)."""
    if not system:
        return "local"
    low = system.lower()
    for fragment, name in CODE_SYSTEM_NAMES:
        if fragment in low:
            return name
    return system
