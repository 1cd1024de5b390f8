"""Organisations, departments, doctors (HCPs) and payers."""

from __future__ import annotations

from careloop.domain.base import Record, entity
from careloop.domain.enums import DoctorTitle, HospitalTier, OrgType, Sex
from careloop.domain.fields import DataClass, PiiKind, meta, pii, ref

_REF = DataClass.REFERENCE


@entity("organization", "hospitals, clinics, pharmacies, internet hospitals, pharma companies")
class Organization(Record):
    name: str = meta(data_class=_REF, required=True)
    org_type: OrgType = meta(OrgType.HOSPITAL, data_class=_REF)
    tier: HospitalTier | None = meta(data_class=_REF, description="三甲 / 三级 / 二级 / 基层")
    province: str | None = meta(data_class=_REF)
    city: str | None = meta(data_class=_REF)
    district: str | None = meta(data_class=_REF)
    address: str | None = meta(data_class=_REF)
    phone: str | None = meta(data_class=_REF)
    latitude: float | None = meta(data_class=_REF)
    longitude: float | None = meta(data_class=_REF)


@entity("department", "clinical departments (科室) of an organisation")
class Department(Record):
    org_key: str = ref("organization", required=True)
    name: str = meta(data_class=_REF, required=True)
    specialty: str | None = meta(data_class=_REF, description="e.g. cardiology, endocrinology")


@entity("doctor", "doctors and other health-care professionals (HCP)")
class Doctor(Record):
    name: str = meta(data_class=DataClass.IDENTIFIER, required=True, description="professional name")
    org_key: str | None = ref("organization")
    department_key: str | None = ref("department")
    title: DoctorTitle | None = meta(data_class=_REF)
    specialty: str | None = meta(data_class=_REF)
    sex: Sex | None = meta(data_class=DataClass.DEMOGRAPHIC)
    license_number: str | None = meta(data_class=_REF, description="执业证书编号")
    phone: str | None = pii(PiiKind.PHONE)
    email: str | None = pii(PiiKind.EMAIL)


@entity("payer", "insurers: basic medical insurance (医保) funds and commercial insurers")
class Payer(Record):
    name: str = meta(data_class=_REF, required=True)
    ownership: str | None = meta(data_class=_REF, description="government / commercial / ...")
    province: str | None = meta(data_class=_REF)
    city: str | None = meta(data_class=_REF)
