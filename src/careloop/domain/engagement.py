"""Engagement: appointments, behavioural events, consents, feedback, campaigns, messages, touches."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from careloop.domain.base import Record, entity
from careloop.domain.enums import (
    AppointmentStatus,
    BookingChannel,
    ConsentPurpose,
    ConsentStatus,
    EventChannel,
    EventType,
    MessageChannel,
    MessageStatus,
    TouchType,
)
from careloop.domain.fields import DataClass, PiiKind, meta, pii, ref

_BEH = DataClass.BEHAVIOUR
_COM = DataClass.COMMERCIAL


@entity("appointment", "a booked appointment and what became of it")
class Appointment(Record):
    patient_key: str = ref("patient", required=True)
    scheduled_at: datetime = meta(required=True)
    status: AppointmentStatus = meta(required=True)
    booked_at: datetime | None = meta()
    channel: BookingChannel | None = meta()
    org_key: str | None = ref("organization")
    department_key: str | None = ref("department")
    doctor_key: str | None = ref("doctor")
    cancelled_at: datetime | None = meta()
    encounter_key: str | None = ref("encounter", description="the visit it led to")


@entity("event", "a behavioural event from app, WeChat, web or call centre (Segment-spec shaped)")
class Event(Record):
    event_type: EventType = meta(EventType.TRACK, data_class=_BEH)
    name: str = meta(data_class=_BEH, required=True, description="event or page / screen name")
    occurred_at: datetime = meta(data_class=_BEH, required=True)
    channel: EventChannel = meta(data_class=_BEH, required=True)
    patient_key: str | None = ref("patient")
    user_id: str | None = pii(PiiKind.APP_USER_ID, description="the sender's user id")
    anonymous_id: str | None = meta(data_class=_BEH, description="device / cookie id before login")
    openid: str | None = pii(PiiKind.OPENID)
    properties: dict[str, Any] | None = meta(data_class=_BEH)


@entity("consent", "a consent record: patient x purpose x data category x channel")
class Consent(Record):
    patient_key: str = ref("patient", required=True)
    purpose: ConsentPurpose = meta(required=True)
    status: ConsentStatus = meta(required=True)
    recorded_at: datetime = meta(required=True)
    data_category: str = meta("health", description="personal / health / location / ...")
    channel: MessageChannel | None = meta(description="channel the consent covers; empty = all")
    recipient: str | None = meta(description="third party for sharing consents")
    notice_version: str | None = meta(description="version of the notice text shown")
    capture_source: str | None = meta(description="where it was given: wechat form, paper, app")
    expires_at: datetime | None = meta()
    proof: str | None = meta(description="reference to the proof: form id, signature hash")
    by_guardian: bool = meta(False, description="given by a guardian (patients under 14)")


@entity("feedback", "patient feedback: satisfaction score and free text")
class Feedback(Record):
    patient_key: str = ref("patient", required=True)
    submitted_at: datetime = meta(data_class=_BEH, required=True)
    score: float | None = meta(data_class=_BEH, description="satisfaction / NPS score")
    scale_max: float | None = meta(data_class=_BEH, description="top of the score scale (5, 10)")
    text: str | None = meta(data_class=_BEH)
    channel: EventChannel | None = meta(data_class=_BEH)
    encounter_key: str | None = ref("encounter")
    org_key: str | None = ref("organization")


@entity("campaign", "a marketing or patient-programme campaign")
class Campaign(Record):
    name: str = meta(data_class=_COM, required=True)
    objective: str | None = meta(data_class=_COM, description="refill, follow-up, education, ...")
    channel: MessageChannel | None = meta(data_class=_COM)
    owner_org_key: str | None = ref("organization")
    start: datetime | None = meta(data_class=_COM)
    end: datetime | None = meta(data_class=_COM)
    budget: Decimal | None = meta(data_class=_COM, description="yuan")
    cost: Decimal | None = meta(data_class=_COM, description="spent, yuan")


@entity("message", "a message sent (or blocked) to a patient")
class Message(Record):
    patient_key: str = ref("patient", required=True)
    channel: MessageChannel = meta(data_class=_BEH, required=True)
    status: MessageStatus = meta(data_class=_BEH, required=True)
    created_at: datetime = meta(data_class=_BEH, required=True)
    campaign_key: str | None = ref("campaign")
    template: str | None = meta(data_class=_BEH)
    content: str | None = meta(data_class=_BEH)
    sent_at: datetime | None = meta(data_class=_BEH)
    block_reason: str | None = meta(data_class=_BEH)
    cost: Decimal | None = meta(data_class=_COM)
    is_holdout: bool = meta(False, data_class=_BEH, description="patient was in the holdout group")


@entity("touch", "a response to a message: delivered, opened, clicked, converted, opted out")
class Touch(Record):
    patient_key: str = ref("patient", required=True)
    touch_type: TouchType = meta(data_class=_BEH, required=True)
    occurred_at: datetime = meta(data_class=_BEH, required=True)
    message_key: str | None = ref("message")
    campaign_key: str | None = ref("campaign")
    channel: MessageChannel | None = meta(data_class=_BEH)
    value: Decimal | None = meta(data_class=_COM, description="conversion value, yuan")
