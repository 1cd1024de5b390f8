"""careloop's domain: pure data models, no I/O, nothing imported from the rest of careloop.

Every entity is a `Record` registered by name; `field_specs` exposes the metadata (types, keys,
references, personal-data kind, data class and level) that storage and ingestion build on.
"""

from careloop.domain import organisation, people, clinical, engagement, raw  # noqa: I001 (registration order)
from careloop.domain.base import FieldSpec, Record, entities, entity_model, field_specs
from careloop.domain.clinical import (
    Allergy,
    CarePlan,
    Condition,
    Consultation,
    DeviceUse,
    Dispense,
    Encounter,
    ImagingStudy,
    Immunization,
    Observation,
    Prescription,
    Procedure,
    SupplyUse,
)
from careloop.domain.engagement import (
    Appointment,
    Campaign,
    Consent,
    Event,
    Feedback,
    Message,
    Touch,
)
from careloop.domain.fields import DataClass, PiiKind
from careloop.domain.organisation import Department, Doctor, Organization, Payer
from careloop.domain.people import Coverage, Patient, PatientIdentifier
from careloop.domain.raw import RawRecord

__all__ = [
    "Allergy",
    "Appointment",
    "Campaign",
    "CarePlan",
    "Condition",
    "Consent",
    "Consultation",
    "Coverage",
    "DataClass",
    "Department",
    "DeviceUse",
    "Dispense",
    "Doctor",
    "Encounter",
    "Event",
    "Feedback",
    "FieldSpec",
    "ImagingStudy",
    "Immunization",
    "Message",
    "Observation",
    "Organization",
    "Patient",
    "PatientIdentifier",
    "Payer",
    "PiiKind",
    "Prescription",
    "Procedure",
    "RawRecord",
    "Record",
    "SupplyUse",
    "Touch",
    "clinical",
    "engagement",
    "entities",
    "entity_model",
    "field_specs",
    "organisation",
    "people",
    "raw",
]
