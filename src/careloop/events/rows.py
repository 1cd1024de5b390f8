"""From a checked message to the event row careloop stores.

The whole message is kept, encrypted (`event.message`), so nothing a sender sent is lost or changed.
The queryable columns carry no personal identifier in clear: userId and openid are encrypted with a
keyed blind index beside them; properties, traits and context lose their personal keys (phone, name,
ID number, address, openid, ...) and long digit runs in free text are masked. The identifiers needed
to find the patient travel as blind indexes (`event.identity`), never as values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from careloop.events.sources import Source
from careloop.events.spec import Accepted
from careloop.ingest.quarantine import mask_text
from careloop.patients.lookup import normalise_phone
from careloop.privacy.fields import FieldCipher, pii_kind

#: identifiers in traits that can find a patient, and the field-level blind-index kind of each
_LOOKUP_KINDS = ("phone", "id_number", "email", "unionid", "openid")


def scrub(value: Any) -> Any:
    """A copy with personal keys removed and long digit runs masked (nested objects included)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if pii_kind(str(k)) is None}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def traits_of(msg: dict[str, Any]) -> dict[str, Any]:
    """The traits a message states about its sender: identify traits, or context.traits on any call."""
    found: dict[str, Any] = {}
    ctx = msg.get("context")
    if isinstance(ctx, dict) and isinstance(ctx.get("traits"), dict):
        found.update(ctx["traits"])
    if msg.get("type") == "identify" and isinstance(msg.get("traits"), dict):
        found.update(msg["traits"])
    return found


def identity_hints(acc: Accepted, source: Source, cipher: FieldCipher) -> dict[str, Any]:
    """Blind indexes of every identifier the message carries, for attribution (no value in clear)."""
    hints: dict[str, Any] = {}
    if acc.user_id is not None:
        hints["user"] = user_hint(acc.user_id, source, cipher)
    if acc.anonymous_id is not None:
        hints["anon"] = cipher.blind_index(acc.anonymous_id, "identifier")
    if acc.type == "alias":
        prev = str(acc.message.get("previousId")).strip()
        hints["previous"] = {
            "user": user_hint(prev, source, cipher)["bidx"],
            "anon": cipher.blind_index(prev, "identifier"),
        }
    ids = []
    for key, value in traits_of(acc.message).items():
        kind = pii_kind(str(key))
        if kind in _LOOKUP_KINDS and isinstance(value, str | int) and str(value).strip():
            ids.append(_id_hint(kind, str(value).strip(), cipher))
    if ids:
        hints["ids"] = ids
    return hints


def user_hint(user_id: str, source: Source, cipher: FieldCipher) -> dict[str, Any]:
    hint = {"ns": source.user_namespace, "bidx": cipher.blind_index(user_id, "identifier")}
    if source.user_id_kind not in ("user_id", "person_id"):
        hint.update(_id_hint(source.user_id_kind, user_id, cipher))
        hint["system"] = source.user_id_system
    elif source.user_id_kind == "person_id":
        hint["person_id"] = user_id
    return hint


def _id_hint(kind: str, value: str, cipher: FieldCipher) -> dict[str, Any]:
    """`fbidx`: the blind index of a patient column (phone_bidx, ...); `ibidx`: of patient_identifier.value."""
    if kind == "phone":
        value = normalise_phone(value)
    elif kind == "id_number":
        value = value.upper()
    hint: dict[str, Any] = {"kind": kind, "ibidx": cipher.blind_index(value, "identifier")}
    if kind in ("phone", "id_number", "email"):
        hint["fbidx"] = cipher.blind_index(value, kind)
    return hint


def event_rows(
    items: Sequence[tuple[Accepted, Source]],
    cipher: FieldCipher,
    received_at: datetime,
    hints: Sequence[dict[str, Any]],
    violations: Sequence[list[str]],
    persons: Sequence[str | None],
) -> list[dict[str, Any]]:
    """The `event` rows of accepted messages (encryption done per column, in one call each)."""
    users = [acc.user_id for acc, _ in items]
    openids = [acc.user_id if src.user_id_kind == "openid" else None for acc, src in items]
    user_ct, user_bx = (
        cipher.encrypt_many(users, "app_user_id"),
        cipher.blind_index_many(users, "app_user_id"),
    )
    open_ct, open_bx = cipher.encrypt_many(openids, "openid"), cipher.blind_index_many(openids, "openid")
    messages = cipher.encrypt_many([orjson.dumps(acc.message).decode() for acc, _ in items], "raw")
    rows = []
    for i, (acc, source) in enumerate(items):
        msg = acc.message
        props = msg.get("traits") if acc.type in ("identify", "group") else msg.get("properties")
        if acc.type == "group":
            props = {**(props or {}), "groupId": msg.get("groupId")}
        rows.append(
            {
                "source": source.name,
                "key": acc.message_id,
                "event_type": acc.type,
                "name": acc.name,
                "occurred_at": acc.occurred_at,
                "channel": source.channel,
                "user_id": user_ct[i],
                "user_id_bidx": user_bx[i],
                "anonymous_id": acc.anonymous_id,
                "openid": open_ct[i],
                "openid_bidx": open_bx[i],
                "properties": orjson.dumps(scrub(props or {})).decode(),
                "person_id": persons[i],
                "received_at": received_at,
                "context": orjson.dumps(scrub(msg.get("context") or {})).decode(),
                "message": messages[i],
                "identity": orjson.dumps(hints[i]).decode(),
                "plan_violations": orjson.dumps(violations[i]).decode() if violations[i] else None,
                "_run_id": "live",
                "_ingested_at": received_at,
                "_updated_at": received_at,
            }
        )
    return rows
