"""The domain model: every entity is well-formed and carries the metadata storage needs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from careloop.domain import Encounter, Patient, entities, field_specs
from careloop.domain.fields import DataClass


def test_every_entity_has_source_key_and_classified_fields() -> None:
    assert {"patient", "encounter", "dispense", "appointment", "event", "consent", "touch"} <= set(entities())
    for name, model in entities().items():
        specs = field_specs(model)
        assert [s.name for s in specs[:2]] == ["source", "key"], name
        for s in specs:
            assert 1 <= s.level <= 4
            assert isinstance(s.data_class, DataClass)


def test_personal_identifiers_are_marked() -> None:
    pii = {s.name: s.pii for s in field_specs(Patient) if s.pii}
    assert pii == {
        "name": "name",
        "id_number": "id_number",
        "phone": "phone",
        "email": "email",
        "address": "address",
    }


def test_clinical_data_is_health_class() -> None:
    assert all(
        s.data_class == DataClass.HEALTH for s in field_specs(Encounter) if s.name == "encounter_class"
    )


def test_enums_are_closed() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    Encounter(source="his", key="e1", patient_key="p1", encounter_class="online", start=start)
    with pytest.raises(ValidationError):
        Encounter(source="his", key="e1", patient_key="p1", encounter_class="teleport", start=start)


def test_required_fields_enforced() -> None:
    with pytest.raises(ValidationError):
        Encounter(source="his", key="e1", encounter_class="online", start=datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[call-arg]
