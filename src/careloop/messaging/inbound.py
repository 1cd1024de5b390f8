"""What comes back from patients and providers: delivery receipts, opens and clicks as events; opt-outs
from 回T退订 replies and e-mail unsubscribe links.

- `record_receipts` stores each receipt as an event of the patient the send was for (``message_delivered``,
  ``message_failed``, ``message_opened``, ``message_clicked``; source ``channel:KIND``, keyed by the
  provider's message id and the event, so a provider's retried callback is stored once) and hands them to
  the journeys (a wait for ``message_clicked``, a goal).
- `record_replies` turns SMS replies into opt-outs: a reply that is an unsubscribe word (T, TD, N, 退订,
  STOP, …) opts every person holding that phone out of marketing SMS (Chinese practice for 回T退订).
  Aliyun (SmsUp) and Tencent Cloud reply callbacks are read, and a plain ``{phone, text, at}`` form.
- `unsubscribe_token` / `unsubscribe` are the e-mail link: the token names the person and channel and is
  a keyed HMAC of both (the key ring's blind-index key), so it cannot be forged or altered.

Phones are never logged; the person is found through the phone's blind index.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from careloop.channels.base import Receipt
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError
from careloop.journeys import engine
from careloop.patients.lookup import find
from careloop.privacy.fields import FieldCipher
from careloop.storage import WorkspaceStore

STOP_WORDS = ("T", "TD", "N", "0000", "STOP", "UNSUBSCRIBE", "退订", "取消", "退", "不要再发")
_WORD = re.compile(r"^[\s\W_]*(.*?)[\s\W_]*$", re.S)


def record_receipts(
    store: WorkspaceStore, kind: str, receipts: Sequence[Receipt], *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, int]:
    """Store receipts as events of their patients; returns stored / unknown (no send matches) counts."""
    if not receipts:
        return {"stored": 0, "unknown": 0}
    keys = sorted({r.idempotency_key for r in receipts if r.idempotency_key})
    ids = sorted({r.provider_message_id for r in receipts})
    owner: dict[str, str] = {}
    for key, pid, person in store.tuples(
        "SELECT idempotency_key, provider_message_id, person_id FROM message_send "
        "WHERE idempotency_key = ANY(:k) OR provider_message_id = ANY(:ids)",
        {"k": keys, "ids": ids},
    ):
        owner[key] = person
        if pid:
            owner[pid] = person
    now = clock.now()
    rows, arrivals = [], []
    for r in receipts:
        person = owner.get(r.idempotency_key or "") or owner.get(r.provider_message_id)
        if person is None:
            continue
        rows.append(
            {
                "source": f"channel:{kind}",
                "key": f"{r.provider_message_id}:{r.event}",
                "event_type": "track",
                "name": r.event,
                "occurred_at": r.at,
                "channel": kind,
                "person_id": person,
                "received_at": now,
                "properties": orjson.dumps(r.properties()).decode(),
            }
        )
        arrivals.append((person, r.event, r.at))
    new = store.insert_new("event", rows, ["source", "key"]) if rows else []
    fresh = {k for _, k in new}
    engine.on_events(
        store, [a for a, row in zip(arrivals, rows, strict=True) if row["key"] in fresh], clock=clock
    )
    return {"stored": len(new), "unknown": len(receipts) - len(rows)}


def is_stop(text: str) -> bool:
    """Whether a reply asks to stop (the word alone, any case, surrounding punctuation ignored)."""
    m = _WORD.match(text or "")
    word = (m.group(1) if m else "").strip().upper()
    return word in {w.upper() for w in STOP_WORDS}


def parse_replies(payload: Any) -> list[tuple[str, str, datetime | None]]:
    """(phone, text, time) of each reply in an Aliyun SmsUp, Tencent Cloud or plain callback body."""
    items = payload if isinstance(payload, list) else [payload]
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError("a reply is a JSON object (or a list of them)")
        phone = item.get("phone_number") or item.get("mobile") or item.get("phone")
        text = item.get("content") or item.get("text")
        when = item.get("send_time") or item.get("reply_time") or item.get("time") or item.get("at")
        if not isinstance(phone, str | int) or not isinstance(text, str):
            raise ConfigError(
                "a reply needs the phone (phone_number / mobile / phone) and the text (content / text)"
            )
        at = None
        if isinstance(when, int | float):
            at = datetime.fromtimestamp(float(when)).astimezone()
        elif isinstance(when, str) and when:
            try:
                at = datetime.fromisoformat(when.replace(" ", "T"))
            except ValueError:
                at = None
        out.append((str(phone), text, at))
    return out


def opt_out(
    store: WorkspaceStore,
    persons: Iterable[str],
    *,
    scope: str,
    channel: str,
    source: str,
    reason: str = "",
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Record opt-outs (scope marketing | all | personalisation, a channel kind or *); idempotent."""
    if scope not in ("marketing", "all", "personalisation"):
        raise ConfigError("an opt-out's scope is marketing, all or personalisation")
    rows = [
        {
            "person_id": p,
            "scope": scope,
            "channel": channel,
            "source": source,
            "reason": reason,
            "at": clock.now(),
        }
        for p in sorted(set(persons))
    ]
    return len(store.insert_new("contact_optout", rows, ["person_id", "scope", "channel"])) if rows else 0


def record_replies(
    store: WorkspaceStore,
    cipher: FieldCipher,
    replies: Sequence[tuple[str, str, datetime | None]],
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, int]:
    """Opt the senders of unsubscribe replies out of marketing SMS; other replies are counted, not kept."""
    stops = [phone for phone, text, _ in replies if is_stop(text)]
    persons = {m.person_id for phone in stops for m in find(store, cipher, phone=phone) if m.person_id}
    added = opt_out(
        store, persons, scope="marketing", channel="sms", source="sms_reply", reason="回T退订", clock=clock
    )
    return {"replies": len(replies), "unsubscribe": len(stops), "persons": len(persons), "new_optouts": added}


def unsubscribe_token(cipher: FieldCipher, person: str, channel: str) -> str:
    return f"{person}.{channel}.{cipher.blind_index(f'{person}|{channel}', 'unsubscribe')}"


def unsubscribe(
    store: WorkspaceStore, cipher: FieldCipher, token: str, *, clock: Clock = SYSTEM_CLOCK
) -> tuple[str, str]:
    """Check an unsubscribe link's token and opt its person out of marketing on its channel."""
    try:
        person, channel, mac = token.rsplit(".", 2)
    except ValueError:
        raise ConfigError("this unsubscribe link is not valid") from None
    expected = unsubscribe_token(cipher, person, channel).rsplit(".", 1)[1]
    if not hmac.compare_digest(mac, expected):
        raise ConfigError("this unsubscribe link is not valid")
    opt_out(store, [person], scope="marketing", channel=channel, source="email_link", clock=clock)
    return person, channel
