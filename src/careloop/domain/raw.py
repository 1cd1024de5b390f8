"""Records of a kind careloop does not model (yet), kept verbatim so that nothing is lost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from careloop.domain.base import Record, entity
from careloop.domain.fields import DataClass, meta, ref


@entity("raw_record", "a source record of a type careloop does not model yet (e.g. FHIR Claim), verbatim")
class RawRecord(Record):
    record_type: str = meta(required=True, description="e.g. fhir:Claim, fhir:Provenance")
    payload: dict[str, Any] = meta(data_class=DataClass.HEALTH, required=True)
    patient_key: str | None = ref("patient")
    occurred_at: datetime | None = meta()
