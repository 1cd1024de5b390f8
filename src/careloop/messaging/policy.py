"""The send-time policy: every message passes it; no journey, API call or setting skips it.

In order, a send is blocked (and the reason recorded) when:

1. its content has no approved, unexpired version (``content_missing``, ``content_not_approved``,
   ``content_expired``) or is written for another channel (``content_channel_mismatch``);
2. the patient unsubscribed from the channel or from all messages — for marketing, also from marketing
   (``unsubscribed``) — or switched personalisation off (PIPL Art 24: an opt-out, or a refused /
   withdrawn ``personalisation`` consent) and the message is personalised (``personalisation_opt_out``);
3. there is no valid consent for the purpose and channel (``no_consent``, ``consent_withdrawn``,
   ``consent_refused``, ``consent_expired``, ``sensitive_consent_required``, and for children under 14
   ``guardian_consent_required``) — `ConsentSource` answers; the default, `LedgerConsents`
   (careloop.privacy.consent), reads the consent ledger and the ingested consent records. A ``service``
   message (one the patient asked for, e.g. an appointment confirmation) is also covered by a consent
   to ``care_follow_up`` communication, and the outbox channel accepts any channel's consent;
4. it is quiet hours in the patient's local time and the purpose is not exempt (``quiet_hours``, with the
   time it may go: journeys wait until then);
5. it would exceed a frequency cap — per patient per local day and per 7 days over all journeys, and the
   journey's own caps (``cap_day``, ``cap_week``, ``cap_journey_day``, ``cap_journey_week``). Caps are
   checked inside the transaction that reserves the send, with the patients locked (PostgreSQL advisory
   locks), so concurrent journeys and workers cannot overrun them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.messaging.content import ContentItem, sendable
from careloop.privacy.consent import LedgerConsents
from careloop.storage import WorkspaceStore


@dataclass(frozen=True)
class SendIntent:
    key: str  # idempotency key: the same intent is never sent twice
    person_id: str
    channel: str  # sms | wechat | app_push | email | outbox
    content_id: str
    purpose: str  # care_follow_up | service | marketing | research
    journey: str | None = None
    node: str | None = None
    entry_id: str | None = None
    personalised: bool = True
    journey_cap_day: int | None = None
    journey_cap_week: int | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    defer_until: datetime | None = None  # quiet hours: when it may go
    content: ContentItem | None = None


class ConsentSource(Protocol):
    def decide(
        self, store: WorkspaceStore, persons: Sequence[str], purpose: str, channel: str, at: datetime
    ) -> dict[str, tuple[bool, str]]:
        """person -> (may we, why) for this purpose and channel at `at`."""


def quiet_window(text: str) -> tuple[time, time] | None:
    """'21:00-08:00' -> (21:00, 08:00); '' -> None."""
    if not text:
        return None
    try:
        start, end = (time.fromisoformat(p.strip()) for p in text.split("-"))
    except ValueError:
        raise ConfigError(f"CARELOOP_QUIET_HOURS {text!r}: HH:MM-HH:MM, e.g. 21:00-08:00") from None
    return start, end


def quiet_until(at: datetime, window: tuple[time, time] | None, tz: ZoneInfo) -> datetime | None:
    """When the quiet hours `at` falls in end (local), or None outside them."""
    if window is None:
        return None
    start, end = window
    local = at.astimezone(tz)
    now = local.time()
    inside = (start <= now or now < end) if start > end else (start <= now < end)
    if not inside:
        return None
    day = local.date() if now < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)


def check(
    store: WorkspaceStore,
    intents: Sequence[SendIntent],
    at: datetime,
    *,
    consents: ConsentSource | None = None,
) -> dict[str, Decision]:
    """Rules 1-4 for each intent (key -> decision); caps (rule 5) are `reserve`'s, in the writing transaction."""
    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    consents = consents or LedgerConsents()
    contents = sendable(store, {i.content_id for i in intents}, at)
    persons = sorted({i.person_id for i in intents})
    optouts = _optouts(store, persons)
    consent: dict[tuple[str, str], dict[str, tuple[bool, str]]] = {}
    for purpose, channel in sorted({(i.purpose, i.channel) for i in intents}):
        group = sorted({i.person_id for i in intents if (i.purpose, i.channel) == (purpose, channel)})
        consent[(purpose, channel)] = consents.decide(store, group, purpose, channel, at)
    personalised = sorted({i.person_id for i in intents if i.personalised})
    personalisation_off = (
        {  # PIPL Art 24: an explicit refusal or withdrawal switches it off; no record, on
            p
            for p, (_, why) in consents.decide(store, personalised, "personalisation", "*", at).items()
            if why == "consent_withdrawn"
        }
        if personalised
        else set()
    )
    window = quiet_window(settings.quiet_hours)
    out = {}
    for i in intents:
        content = contents.get(i.content_id)
        if not isinstance(content, ContentItem):
            out[i.key] = Decision(False, content or "content_missing")
            continue
        if content.kind != i.channel:
            out[i.key] = Decision(False, "content_channel_mismatch", content=content)
            continue
        mine = optouts.get(i.person_id, set())
        scopes = {"all"} | ({"marketing"} if i.purpose == "marketing" else set())
        if any((s, c) in mine for s in scopes for c in (i.channel, "*")):
            out[i.key] = Decision(False, "unsubscribed", content=content)
            continue
        if i.personalised and (("personalisation", "*") in mine or i.person_id in personalisation_off):
            out[i.key] = Decision(False, "personalisation_opt_out", content=content)
            continue
        ok, why = consent[(i.purpose, i.channel)][i.person_id]
        if not ok:
            out[i.key] = Decision(False, why, content=content)
            continue
        until = None if i.purpose in settings.quiet_hours_exempt else quiet_until(at, window, tz)
        if until is not None:
            out[i.key] = Decision(False, "quiet_hours", defer_until=until, content=content)
            continue
        out[i.key] = Decision(True, "allowed", content=content)
    return out


def _optouts(store: WorkspaceStore, persons: Sequence[str]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    if persons:
        for pid, scope, channel in store.tuples(
            "SELECT person_id, scope, channel FROM contact_optout WHERE person_id = ANY(:p)",
            {"p": list(persons)},
        ):
            out[pid].add((scope, channel))
    return out


_RESERVING = threading.Lock()


@contextmanager
def reserving() -> Iterator[None]:
    """Hold around the transaction that reserves sends: threads of one process reserve one at a time
    (each DuckDB thread has its own connection, so their transactions would otherwise overlap)."""
    with _RESERVING:
        yield


def lock_persons(store: WorkspaceStore, persons: Iterable[str]) -> None:
    """Serialise cap checks per patient across processes: PostgreSQL transaction advisory locks, taken
    in a fixed order so two workers cannot deadlock (DuckDB has one writing process; `reserving` covers
    its threads)."""
    if store.backend.dialect.name != "postgres":
        return
    keys = sorted({_lock_key(store.workspace, p) for p in persons})
    for k in keys:
        store.tuples("SELECT pg_advisory_xact_lock(:k)", {"k": k})


def _lock_key(workspace: str, person: str) -> int:
    digest = hashlib.blake2b(f"{workspace}/{person}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def reserve(
    store: WorkspaceStore, intents: Sequence[SendIntent], decisions: dict[str, Decision], at: datetime
) -> dict[str, Decision]:
    """Rule 5, inside the caller's transaction: intents that passed `check` and fit the caps stay
    allowed; the rest are blocked with the cap they hit. Call `lock_persons` first."""
    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    counted = [i for i in intents if decisions[i.key].allowed and i.purpose not in settings.cap_exempt]
    if not counted:
        return decisions
    day_start = datetime.combine(at.astimezone(tz).date(), time.min, tzinfo=tz)
    week_start = at - timedelta(days=7)
    day: dict[str, int] = defaultdict(int)
    week: dict[str, int] = defaultdict(int)
    jday: dict[tuple[str, str], int] = defaultdict(int)
    jweek: dict[tuple[str, str], int] = defaultdict(int)
    for pid, journey, created in store.tuples(
        "SELECT person_id, journey, created_at FROM message_send WHERE person_id = ANY(:p) "
        "AND status IN ('pending', 'sent') AND created_at > :since AND NOT (purpose = ANY(:exempt))",
        {
            "p": sorted({i.person_id for i in counted}),
            "since": week_start,
            "exempt": list(settings.cap_exempt),
        },
    ):
        week[pid] += 1
        jweek[(pid, journey or "")] += 1
        if created >= day_start:
            day[pid] += 1
            jday[(pid, journey or "")] += 1
    out = dict(decisions)
    for i in counted:
        j = (i.person_id, i.journey or "")
        reason = (
            "cap_day"
            if day[i.person_id] >= settings.cap_per_day
            else "cap_week"
            if week[i.person_id] >= settings.cap_per_week
            else "cap_journey_day"
            if i.journey_cap_day is not None and jday[j] >= i.journey_cap_day
            else "cap_journey_week"
            if i.journey_cap_week is not None and jweek[j] >= i.journey_cap_week
            else None
        )
        if reason:
            out[i.key] = Decision(False, reason, content=decisions[i.key].content)
            continue
        day[i.person_id] += 1
        week[i.person_id] += 1
        jday[j] += 1
        jweek[j] += 1
    return out


def ledger_row(intent: SendIntent, decision: Decision, at: datetime) -> dict[str, Any]:
    """The `message_send` row recording an intent's outcome: pending (to deliver) or blocked (why)."""
    return {
        "idempotency_key": intent.key,
        "entry_id": intent.entry_id,
        "journey": intent.journey,
        "node": intent.node,
        "person_id": intent.person_id,
        "channel": intent.channel,
        "purpose": intent.purpose,
        "content_id": intent.content_id,
        "content_version": decision.content.version if decision.content else None,
        "status": "pending" if decision.allowed else "blocked",
        "reason": None if decision.allowed else decision.reason,
        "attempts": 0,
        "next_attempt_at": at if decision.allowed else None,
        "created_at": at,
        "updated_at": at,
    }
