"""Clinical records: encounters, conditions, prescriptions and dispenses, observations and the rest.

All of it is health data, sensitive personal information under PIPL Art 28.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from careloop.domain.base import Record, entity
from careloop.domain.enums import (
    ConsultationMode,
    DispenseChannel,
    EncounterClass,
    ObservationSource,
    RxStatus,
)
from careloop.domain.fields import DataClass, health, meta, ref

_MONEY = DataClass.COMMERCIAL


@entity("encounter", "a visit: outpatient, inpatient, emergency, online consultation, follow-up")
class Encounter(Record):
    patient_key: str = ref("patient", required=True)
    encounter_class: EncounterClass = health(required=True)
    start: datetime = health(required=True)
    end: datetime | None = health()
    org_key: str | None = ref("organization")
    department_key: str | None = ref("department")
    doctor_key: str | None = ref("doctor")
    payer_key: str | None = ref("payer")
    code: str | None = health(description="encounter type code")
    description: str | None = health()
    reason_code: str | None = health(description="ICD-10 (or source system) reason code")
    reason_description: str | None = health()
    cost: Decimal | None = meta(data_class=_MONEY, description="total cost, yuan")
    payer_coverage: Decimal | None = meta(data_class=_MONEY)


@entity("condition", "a diagnosis (ICD-10 by default)")
class Condition(Record):
    patient_key: str = ref("patient", required=True)
    encounter_key: str | None = ref("encounter")
    code: str = health(required=True)
    code_system: str = health("ICD-10", description="ICD-10, SNOMED-CT, ...")
    description: str | None = health()
    onset: date | None = health()
    abatement: date | None = health()


@entity("prescription", "a medication order (处方) written by a doctor")
class Prescription(Record):
    patient_key: str = ref("patient", required=True)
    drug_code: str = health(required=True)
    drug_name: str | None = health()
    drug_class: str | None = health(description="therapeutic class used for adherence (PDC)")
    code_system: str = health("local", description="local catalogue, RxNorm, ATC, ...")
    written_at: datetime = health(required=True)
    stopped_at: datetime | None = health()
    status: RxStatus = health(RxStatus.ACTIVE)
    encounter_key: str | None = ref("encounter")
    doctor_key: str | None = ref("doctor")
    payer_key: str | None = ref("payer")
    days_supply: int | None = health(description="days per fill")
    quantity: float | None = health()
    refills: int | None = health(description="refills / dispenses authorised")
    reason_code: str | None = health()
    reason_description: str | None = health()
    cost: Decimal | None = meta(data_class=_MONEY)
    payer_coverage: Decimal | None = meta(data_class=_MONEY)


@entity("dispense", "a fill of a prescription at a hospital, retail, DTP or online pharmacy")
class Dispense(Record):
    patient_key: str = ref("patient", required=True)
    drug_code: str = health(required=True)
    dispensed_at: datetime = health(required=True)
    days_supply: int = health(required=True)
    drug_name: str | None = health()
    drug_class: str | None = health()
    prescription_key: str | None = ref("prescription")
    channel: DispenseChannel = health(DispenseChannel.HOSPITAL)
    org_key: str | None = ref("organization", description="dispensing pharmacy / hospital")
    quantity: float | None = health()
    amount: Decimal | None = meta(data_class=_MONEY, description="paid, yuan")


@entity("observation", "a measurement: labs, vitals and home-device readings (glucose, blood pressure)")
class Observation(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True, description="LOINC or local code")
    effective_at: datetime = health(required=True)
    name: str | None = health()
    value_num: float | None = health()
    value_text: str | None = health()
    unit: str | None = health()
    source_kind: ObservationSource = health(ObservationSource.CLINIC)
    device_id: str | None = health()
    encounter_key: str | None = ref("encounter")


@entity("procedure", "a procedure performed")
class Procedure(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    start: datetime = health(required=True)
    end: datetime | None = health()
    description: str | None = health()
    encounter_key: str | None = ref("encounter")
    reason_code: str | None = health()
    cost: Decimal | None = meta(data_class=_MONEY)


@entity("immunization", "a vaccination")
class Immunization(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    occurred_at: datetime = health(required=True)
    description: str | None = health()
    encounter_key: str | None = ref("encounter")
    cost: Decimal | None = meta(data_class=_MONEY)


@entity("allergy", "an allergy or intolerance")
class Allergy(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    start: date | None = health()
    end: date | None = health()
    description: str | None = health()
    category: str | None = health()
    reaction: str | None = health()
    severity: str | None = health()
    encounter_key: str | None = ref("encounter")


@entity("care_plan", "a care plan, e.g. a chronic-disease management or follow-up plan (随访计划)")
class CarePlan(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    start: date = health(required=True)
    end: date | None = health()
    description: str | None = health()
    reason_code: str | None = health()
    encounter_key: str | None = ref("encounter")


@entity("device_use", "a device assigned to a patient (CGM, BP cuff, implant)")
class DeviceUse(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    start: datetime = health(required=True)
    end: datetime | None = health()
    description: str | None = health()
    udi: str | None = health(description="unique device identifier")
    encounter_key: str | None = ref("encounter")


@entity("supply_use", "supplies used in care")
class SupplyUse(Record):
    patient_key: str = ref("patient", required=True)
    code: str = health(required=True)
    used_at: date = health(required=True)
    description: str | None = health()
    quantity: float | None = health()
    encounter_key: str | None = ref("encounter")


@entity("imaging_study", "an imaging study (one series instance)")
class ImagingStudy(Record):
    patient_key: str = ref("patient", required=True)
    performed_at: datetime = health(required=True)
    modality: str | None = health()
    body_site: str | None = health()
    procedure_code: str | None = health()
    description: str | None = health()
    encounter_key: str | None = ref("encounter")


@entity("consultation", "an online consultation (互联网诊疗): follow-up visits of diagnosed conditions")
class Consultation(Record):
    patient_key: str = ref("patient", required=True)
    started_at: datetime = health(required=True)
    mode: ConsultationMode = health(ConsultationMode.TEXT)
    is_follow_up: bool = health(True, description="online care is for follow-up visits (复诊) only")
    org_key: str | None = ref("organization")
    doctor_key: str | None = ref("doctor")
    department_key: str | None = ref("department")
    ended_at: datetime | None = health()
    complaint: str | None = health(description="chief complaint text")
    prescribed: bool | None = health(description="the doctor wrote a prescription")
    fee: Decimal | None = meta(data_class=_MONEY)
