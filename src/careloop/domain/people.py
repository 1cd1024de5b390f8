"""Patients, their identifiers of every kind, households and insurance coverage."""

from __future__ import annotations

from datetime import date, datetime

from careloop.domain.base import Record, entity
from careloop.domain.enums import IdentifierKind, Relationship, Sex
from careloop.domain.fields import DataClass, PiiKind, meta, pii, ref

_DEMO = DataClass.DEMOGRAPHIC


@entity("patient", "a patient as one source system knows them")
class Patient(Record):
    name: str | None = pii(PiiKind.NAME)
    sex: Sex | None = meta(data_class=_DEMO)
    birth_date: date | None = meta(data_class=_DEMO)
    death_date: date | None = meta(data_class=DataClass.HEALTH)
    id_number: str | None = pii(PiiKind.ID_NUMBER, description="resident ID (身份证), GB 11643")
    phone: str | None = pii(PiiKind.PHONE, description="mobile, E.164")
    email: str | None = pii(PiiKind.EMAIL)
    address: str | None = pii(PiiKind.ADDRESS)
    province: str | None = meta(data_class=_DEMO)
    city: str | None = meta(data_class=_DEMO)
    district: str | None = meta(data_class=_DEMO)
    postal_code: str | None = meta(data_class=_DEMO)
    ethnicity: str | None = meta(data_class=_DEMO)
    marital_status: str | None = meta(data_class=_DEMO)
    household_key: str | None = meta(data_class=_DEMO, description="household (家庭) this record belongs to")
    relationship: Relationship | None = meta(data_class=_DEMO, description="to the household head")
    guardian_key: str | None = ref("patient", description="guardian's patient key (minors)")
    registered_at: datetime | None = meta(description="when the source first saw the patient")


@entity("patient_identifier", "one identifier of a patient: HIS number, openid, unionid, app id, ...")
class PatientIdentifier(Record):
    patient_key: str = ref("patient", required=True)
    kind: IdentifierKind = meta(required=True)
    system: str | None = meta(description="issuer: hospital code, WeChat app id, app name")
    value: str = pii(PiiKind.IDENTIFIER, required=True)
    valid_from: date | None = meta()
    valid_to: date | None = meta()


@entity("coverage", "a patient's insurance coverage period")
class Coverage(Record):
    patient_key: str = ref("patient", required=True)
    payer_key: str | None = ref("payer")
    member_id: str | None = pii(PiiKind.IDENTIFIER)
    plan: str | None = meta(data_class=DataClass.COMMERCIAL)
    start_date: date | None = meta()
    end_date: date | None = meta()
