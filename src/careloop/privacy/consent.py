"""The consent ledger (PIPL): append-only consent records and the one question "may we?".

A consent record says that a person granted, withdrew or refused processing for a purpose (care follow-up,
service, marketing, research, sharing with a named third party, personalisation), a data category
(personal, health, location, ...) and a channel (or every channel), with the notice version shown, where
it was given, when, until when, and a reference to the proof. Records are only ever appended: a withdrawal
is a new record, and nothing here updates or deletes one (`consent_record` has no update path).

`may` answers "may we do X to patient P via channel C now?" with the reason; `may_many` answers it for a
batch in one query (the send-time policy asks through `LedgerConsents`). The rules, in order:

- the records that apply are the person's records for the purpose (a ``service`` question is also answered
  by ``care_follow_up`` consent), for the channel or every channel (``outbox`` and ``*`` accept any
  channel's), for the data category or every category, effective at the time asked. A question about basic
  ``personal`` data is also answered by a consent for a more specific category of the same purpose (one
  cannot consent to health data being used without the name and contact it belongs to): each category is
  decided on its own and any that allows, allows;
- the newest applicable record decides (at the same instant a withdrawal or refusal beats a grant): none ->
  ``no_consent``; a withdrawal -> ``consent_withdrawn``; a refusal -> ``consent_refused``; an expired grant
  -> ``consent_expired``;
- a grant for a sensitive category (health, location, financial, biometric — PIPL Art 28) counts only as a
  *separate* consent (``sensitive``, Art 29) -> else ``sensitive_consent_required``;
- a person under 14 on the day asked (age from the golden record's birth date, else from the birth date in
  the resident ID number) needs a consent given by the guardian (Art 31) -> else
  ``guardian_consent_required``; all of a child's data is sensitive, and a guardian's consent is recorded
  as a separate one. When neither birth date nor ID number is known the person is taken to be an adult;
- ``personalisation_off`` is the PIPL Art 24 switch: the newest personalisation record (any channel or
  category) is a withdrawal or refusal, or the person opted out of personalisation.

The consent records careloop ingests from source systems (the ``consent`` entity, per patient record) are
read beside the ledger, joined to persons through identity links at the time asked, so there is nothing to
import or keep in step (docs/decisions/0019-consent-ledger.md). A ledger record follows its person through
identity changes: when a person was merged into another, its records answer for the surviving person; when
records were split off into a new person, the old person's withdrawals and refusals (never its grants) carry
over to the new one.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
import secrets
import time as timer
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.domain.identifiers import IdentifierError, id_birth_date
from careloop.errors import CareloopError, ConfigError, NotFoundError
from careloop.storage.workspace import WorkspaceStore

CARE_FOLLOW_UP, SERVICE, MARKETING, RESEARCH = "care_follow_up", "service", "marketing", "research"
THIRD_PARTY_SHARING, PERSONALISATION = "third_party_sharing", "personalisation"
PURPOSES = (CARE_FOLLOW_UP, SERVICE, MARKETING, RESEARCH, THIRD_PARTY_SHARING, PERSONALISATION)
#: a question about a purpose -> the purposes whose consent answers it: a service message the patient asked
#: for (an appointment confirmation) is covered by their consent to care communication too
COVERED_BY: dict[str, tuple[str, ...]] = {SERVICE: (SERVICE, CARE_FOLLOW_UP)}

PERSONAL = "personal"
DATA_CATEGORIES = (PERSONAL, "health", "location", "financial", "biometric", "behaviour")
#: sensitive personal information (PIPL Art 28): needs a separate consent (Art 29)
SENSITIVE_CATEGORIES = frozenset({"health", "location", "financial", "biometric"})

CHANNELS = ("sms", "wechat", "app_push", "email", "phone_call")
#: channels a question may name that accept any channel's consent: the outbox stands in for a real
#: channel in demos and relays; ``*`` means "any channel"
ANY_CHANNEL = frozenset({"outbox", "*"})

GRANT, WITHDRAW, REFUSE = "grant", "withdraw", "refuse"
ACTIONS = (GRANT, WITHDRAW, REFUSE)
SOURCES = ("wechat_form", "app", "paper", "api", "import", "cli")
INGESTED = "ingested"  # the source of records read from the ingested `consent` entity
GUARDIAN_RELATIONS = ("parent", "mother", "father", "grandparent", "legal_guardian", "other")
GUARDIAN_AGE = 14  # PIPL Art 31

# reasons
ALLOWED = "granted"
NO_CONSENT = "no_consent"
WITHDRAWN = "consent_withdrawn"
REFUSED = "consent_refused"
EXPIRED = "consent_expired"
SENSITIVE_REQUIRED = "sensitive_consent_required"
GUARDIAN_REQUIRED = "guardian_consent_required"
REASONS = (ALLOWED, NO_CONSENT, WITHDRAWN, REFUSED, EXPIRED, SENSITIVE_REQUIRED, GUARDIAN_REQUIRED)

#: the data category each message purpose needs consent for, in the send-time policy (`LedgerConsents`):
#: care messages carry health information; a service message or a marketing message needs the person's
#: contact data. Deployments whose marketing is targeted on health traits pass {"marketing": "health"}.
MESSAGE_CATEGORIES: dict[str, str] = {
    CARE_FOLLOW_UP: "health",
    SERVICE: PERSONAL,
    MARKETING: PERSONAL,
    RESEARCH: "health",
    THIRD_PARTY_SHARING: "health",
}

_STATUS_ACTION = {"granted": GRANT, "withdrawn": WITHDRAW, "refused": REFUSE}
_HISTORY_CARRY = {"merged": "all", "manual_merge": "all", "created": "stops"}
_MAX_IDENTITY_HOPS = 8


@dataclass(frozen=True)
class ConsentRecord:
    """One record of the ledger, or one ingested consent record read beside it."""

    record_id: str
    person_id: str
    purpose: str
    action: str
    effective_at: datetime
    recorded_at: datetime
    source: str
    data_category: str | None = None  # None: every category (withdrawals and refusals)
    channel: str | None = None  # None: every channel
    recipient: str | None = None
    sensitive: bool = False
    by_guardian: bool = False
    guardian_relation: str | None = None
    notice_version: str | None = None
    proof: str | None = None
    expires_at: datetime | None = None
    recorded_by: str | None = None
    #: where a record that answers for this person came from: the source record (SOURCE:KEY) of an ingested
    #: consent, or the person id it was recorded under before an identity change; None for the person's own
    origin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """The answer to "may we?" for one person, with the reason and the record that decided it."""

    allowed: bool
    reason: str
    record_id: str | None
    person_id: str
    purpose: str
    channel: str | None
    data_category: str
    at: datetime
    under_14: bool = False
    record: ConsentRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["record"] = self.record.to_dict() if self.record else None
        return d


@dataclass
class _Facts:
    """What the ledger, the ingested records, the golden record and identity history say about a person."""

    records: list[ConsentRecord] = field(default_factory=list)
    birth_date: date | None = None
    id_number: str | None = None  # ciphertext


# ---- reading ----------------------------------------------------------------------------------------

_LEDGER_COLUMNS = (
    "r.record_id, r.purpose, r.recipient, r.data_category, r.channel, r.action, r.sensitive, "
    "r.by_guardian, r.guardian_relation, r.notice_version, r.source, r.proof, r.effective_at, "
    "r.recorded_at, r.expires_at, r.recorded_by"
)
_NO_RECORD = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
_NO_PERSON = "NULL, NULL, NULL"

# One statement: the ledger's records, the golden record's birth date (and ID number, for when it has no
# birth date), the ingested records through identity links, and the identity changes that carry records over
# (for predecessors: whether they still hold records). The ledger branch comes first so that it types each
# column (PostgreSQL resolves UNION types pairwise, left to right).
_LEDGER_BRANCH = (
    f"SELECT 'ledger' AS kind, r.person_id, {_LEDGER_COLUMNS}, {_NO_PERSON} FROM consent_record r "  # noqa: S608 - fixed column lists only
    "WHERE r.person_id = ANY(:p) AND r.effective_at <= :at{purpose_r}"
)
_PERSON_BRANCH = (
    f"SELECT 'person', p.person_id, {_NO_RECORD}, p.birth_date, p.id_number, NULL "  # noqa: S608 - fixed column lists only
    "FROM person p WHERE p.person_id = ANY(:p)"
)
_INGESTED_BRANCH = (
    "SELECT 'ingested', l.person_id, c.source || ':' || c.key, c.purpose, c.recipient, "  # noqa: S608 - fixed column lists only
    "COALESCE(c.data_category, 'health'), c.channel, c.status, NULL, COALESCE(c.by_guardian, FALSE), NULL, "
    "c.notice_version, c.capture_source, c.proof, c.recorded_at, COALESCE(c._ingested_at, c.recorded_at), "
    f"c.expires_at, c.source || ':' || c.patient_key, {_NO_PERSON} "
    "FROM consent c JOIN identity_link l ON l.source = c.source AND l.patient_key = c.patient_key "
    "WHERE l.person_id = ANY(:p) AND c.recorded_at <= :at{purpose_c}"
)
_HISTORY_BRANCH = (
    "SELECT 'history', h.person_id, NULL, NULL, NULL, NULL, NULL, h.action, NULL, NULL, NULL, NULL, NULL, "
    "NULL, h.at, NULL, NULL, NULL, NULL, NULL, CAST(h.other_person_ids AS TEXT) FROM identity_history h "
    "WHERE h.person_id = ANY(:p) AND h.action IN ('merged', 'manual_merge', 'created') AND h.at <= :at "
    "AND CAST(h.other_person_ids AS TEXT) NOT IN ('[]', 'null')"
)
_ALIVE_BRANCH = (
    f"SELECT 'alive', l.person_id, {_NO_RECORD}, {_NO_PERSON} FROM identity_link l "  # noqa: S608 - fixed column lists only
    "WHERE l.person_id = ANY(:p)"
)


def _query(*, first: bool, purposes: bool) -> str:
    """The persons asked about (`first`): ledger, golden record, ingested records, identity history; their
    predecessors: ledger, identity history, and whether they still hold records."""
    branches = [_LEDGER_BRANCH.format(purpose_r=" AND r.purpose = ANY(:purposes)" if purposes else "")]
    if first:
        branches.append(_PERSON_BRANCH)
        branches.append(
            _INGESTED_BRANCH.format(purpose_c=" AND c.purpose = ANY(:purposes)" if purposes else "")
        )
    else:
        branches.append(_ALIVE_BRANCH)
    branches.append(_HISTORY_BRANCH)
    return " UNION ALL ".join(branches)


def _record(row: Sequence[Any], person: str, origin: str | None) -> ConsentRecord:
    (
        _,
        _,
        rid,
        purpose,
        recipient,
        category,
        channel,
        action,
        sensitive,
        by_guardian,
        relation,
        notice,
        source,
        proof,
        effective,
        recorded,
        expires,
        recorded_by,
    ) = row[:18]
    return ConsentRecord(
        record_id=str(rid),
        person_id=person,
        purpose=str(purpose),
        action=str(action),
        effective_at=effective,
        recorded_at=recorded,
        source=str(source),
        data_category=category,
        channel=channel or None,
        recipient=recipient,
        sensitive=bool(sensitive),
        by_guardian=bool(by_guardian),
        guardian_relation=relation,
        notice_version=notice,
        proof=proof,
        expires_at=expires,
        recorded_by=recorded_by,
        origin=origin,
    )


def _ingested(row: Sequence[Any], person: str) -> ConsentRecord:
    """An ingested consent record in the ledger's terms. Its source system keeps one record per purpose and
    data category, so a record for a sensitive category is taken as that category's separate consent; a
    guardian's consent for a child is a separate consent too."""
    r = list(row)
    category, status, by_guardian = r[5], r[7], bool(r[9])
    r[7] = _STATUS_ACTION.get(str(status), REFUSE)  # an unknown status never allows
    r[8] = category in SENSITIVE_CATEGORIES or by_guardian
    capture = r[12]
    r[12] = INGESTED
    r[17] = f"ingested ({capture})" if capture else INGESTED  # where the source system says it was given
    return _record(r, person, origin=str(row[17]))


def _facts(
    store: WorkspaceStore, persons: Sequence[str], at: datetime, purposes: Sequence[str] | None
) -> dict[str, _Facts]:
    """Records (own, ingested and carried over), birth date and ID number of each person, in one query
    (plus one per level of identity changes, only when a person has a predecessor)."""
    facts = {p: _Facts() for p in persons}
    params: dict[str, Any] = {"p": sorted(facts), "at": at}
    if purposes is not None:
        params["purposes"] = sorted(set(purposes))
    # predecessor id -> [(successor, what carries over: "all" or "stops")]
    pending: dict[str, list[tuple[str, str]]] = {}
    for row in store.tuples(_query(first=True, purposes=purposes is not None), params):
        kind, pid = row[0], row[1]
        f = facts[pid]
        if kind == "ledger":
            f.records.append(_record(row, pid, None))
        elif kind == "ingested":
            f.records.append(_ingested(row, pid))
        elif kind == "person":
            f.birth_date, f.id_number = row[18], row[19]
        else:
            _predecessors(row, pid, pending)
    visited: set[str] = set()
    for _ in range(_MAX_IDENTITY_HOPS):
        pending = {old: to for old, to in pending.items() if old not in visited}
        if not pending:
            break
        visited |= set(pending)
        rows = store.tuples(
            _query(first=False, purposes=purposes is not None), {**params, "p": sorted(pending)}
        )
        # a predecessor that still holds records (it lost some to a split) passes on its withdrawals and
        # refusals only: its grants may be another human's
        alive = {row[1] for row in rows if row[0] == "alive"}
        nxt: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            old = row[1]
            for successor, carry in pending[old]:
                how = "stops" if old in alive else carry
                if row[0] == "ledger":
                    rec = _record(row, successor, origin=old)
                    if how == "all" or rec.action != GRANT:
                        facts[successor].records.append(rec)
                elif row[0] == "history":  # the predecessor's own predecessors answer for the successor too
                    up: dict[str, list[tuple[str, str]]] = {}
                    _predecessors(row, old, up)
                    for older, via in up.items():
                        for _, step in via:
                            nxt.setdefault(older, []).append(
                                (successor, "stops" if "stops" in (how, step) else "all")
                            )
        pending = nxt
    return facts


def _predecessors(row: Sequence[Any], pid: str, into: dict[str, list[tuple[str, str]]]) -> None:
    """From an identity_history row about `pid`: the ids whose ledger records answer for it, and how much
    of them (a merge: everything; records split off into a new person: withdrawals and refusals only)."""
    carry = _HISTORY_CARRY.get(str(row[7]))
    if carry is None or not row[20]:
        return
    try:
        others = orjson.loads(row[20])
    except orjson.JSONDecodeError:
        return
    for other in others if isinstance(others, list) else []:
        if isinstance(other, str) and other != pid:
            into.setdefault(other, []).append((pid, carry))


# ---- deciding ---------------------------------------------------------------------------------------


def local_day(at: datetime) -> date:
    """The calendar day `at` falls on in careloop's time zone (ages change at local midnight)."""
    return at.astimezone(ZoneInfo(get_settings().timezone)).date()


def age_on(birth: date, day: date) -> int:
    """Completed years on `day` (a person born on 29 February turns a year older on 1 March)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


class _Births:
    """Birth dates of persons, from the golden record or, when it has none, from the resident ID number
    (decrypted in memory only; a missing key ring or an invalid number leaves the birth date unknown)."""

    def __init__(self) -> None:
        self._cipher: Any = None
        self._failed = False

    def of(self, f: _Facts) -> date | None:
        if f.birth_date is not None:
            return f.birth_date
        if f.id_number is None or self._failed:
            return None
        try:
            if self._cipher is None:
                from careloop.privacy.fields import FieldCipher
                from careloop.privacy.keys import load_keyring

                s = get_settings()
                self._cipher = FieldCipher(load_keyring(s.key_file, environment=s.environment))
            value = self._cipher.decrypt(f.id_number, "id_number")
            return id_birth_date(value) if value else None
        except IdentifierError:
            return None
        except CareloopError:
            self._failed = True
            return None


def _channel_applies(record: str | None, asked: str | None) -> bool:
    if asked is None:
        return record is None
    return record is None or asked in ANY_CHANNEL or record == asked


def _recipient_applies(r: ConsentRecord, purpose: str, recipient: str | None) -> bool:
    if purpose != THIRD_PARTY_SHARING:
        return True
    return r.recipient == recipient or (r.recipient is None and r.action != GRANT)


_NEVER = (datetime.min.replace(tzinfo=UTC), 0, datetime.min.replace(tzinfo=UTC), "")


def _order(r: ConsentRecord | None) -> tuple[datetime, int, datetime, str]:
    """Newest last; at the same instant a withdrawal or refusal is newer than a grant."""
    if r is None:
        return _NEVER
    return (r.effective_at, 0 if r.action == GRANT else 1, r.recorded_at, r.record_id)


def _judge(
    newest: ConsentRecord | None, category: str, under_14: bool, at: datetime
) -> tuple[bool, str, ConsentRecord | None]:
    if newest is None:
        return False, GUARDIAN_REQUIRED if under_14 else NO_CONSENT, None
    if newest.action == WITHDRAW:
        return False, WITHDRAWN, newest
    if newest.action != GRANT:
        return False, REFUSED, newest
    if newest.expires_at is not None and newest.expires_at <= at:
        return False, EXPIRED, newest
    if under_14 and not newest.by_guardian:
        return False, GUARDIAN_REQUIRED, newest
    if (category in SENSITIVE_CATEGORIES or under_14) and not newest.sensitive:
        return False, SENSITIVE_REQUIRED, newest
    return True, ALLOWED, newest


def _decide(
    person: str,
    records: Sequence[ConsentRecord],
    purpose: str,
    channel: str | None,
    category: str,
    recipient: str | None,
    at: datetime,
    under_14: bool,
) -> Decision:
    purposes = COVERED_BY.get(purpose, (purpose,))
    applicable = [
        r
        for r in records
        if r.purpose in purposes
        and r.effective_at <= at
        and _channel_applies(r.channel, channel)
        and _recipient_applies(r, purpose, recipient)
    ]
    if not applicable:
        return Decision(
            False,
            GUARDIAN_REQUIRED if under_14 else NO_CONSENT,
            None,
            person,
            purpose,
            channel,
            category,
            at,
            under_14,
        )
    # each (purpose, category) is decided by its own newest record; any that allows, allows
    categories = (
        sorted({r.data_category for r in applicable if r.data_category is not None} | {PERSONAL})
        if category == PERSONAL
        else [category]
    )
    outcomes: list[tuple[bool, str, ConsentRecord | None]] = []
    for p in purposes:
        for c in categories:
            basis = [r for r in applicable if r.purpose == p and r.data_category in (None, c)]
            outcomes.append(_judge(max(basis, key=_order) if basis else None, category, under_14, at))
    allowed = [o for o in outcomes if o[0]]
    # allowed: by the newest allowing record; else say why by the newest deciding record (none: no consent)
    ok, reason, rec = max(allowed or outcomes, key=lambda o: _order(o[2]))
    return Decision(
        allowed=ok,
        reason=reason,
        record_id=rec.record_id if rec else None,
        person_id=person,
        purpose=purpose,
        channel=channel,
        data_category=category,
        at=at,
        under_14=under_14,
        record=rec,
    )


def _check_question(purpose: str, channel: str | None, category: str, recipient: str | None) -> None:
    if purpose not in PURPOSES:
        raise ConfigError(f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}")
    if channel is not None and channel not in CHANNELS and channel not in ANY_CHANNEL:
        raise ConfigError(
            f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}, outbox or * (any channel)"
        )
    if category not in DATA_CATEGORIES:
        raise ConfigError(f"unknown data category {category!r}; use one of {', '.join(DATA_CATEGORIES)}")
    if purpose == THIRD_PARTY_SHARING and not recipient:
        raise ConfigError("sharing with a third party is consented per recipient: name the recipient")
    if recipient is not None and "\x00" in recipient:
        raise ConfigError("a recipient may not contain a NUL (\\x00) character")


def may_many(
    store: WorkspaceStore,
    persons: Iterable[str],
    purpose: str,
    channel: str | None,
    at: datetime,
    *,
    data_category: str = "health",
    recipient: str | None = None,
) -> dict[str, Decision]:
    """`may` for many persons at once, in one query: person -> decision."""
    _check_question(purpose, channel, data_category, recipient)
    wanted = sorted(set(persons))
    if not wanted:
        return {}
    facts = _facts(store, wanted, at, COVERED_BY.get(purpose, (purpose,)))
    births = _Births()
    day = local_day(at)
    out = {}
    for p in wanted:
        f = facts[p]
        birth = births.of(f)
        young = birth is not None and age_on(birth, day) < GUARDIAN_AGE
        out[p] = _decide(p, f.records, purpose, channel, data_category, recipient, at, young)
    return out


def may(
    store: WorkspaceStore,
    person: str,
    purpose: str,
    channel: str | None = None,
    *,
    at: datetime,
    data_category: str = "health",
    recipient: str | None = None,
) -> Decision:
    """May we process `person`'s `data_category` data for `purpose` via `channel` at `at`? With the reason.

    `channel` None asks about processing that uses no channel (research, sharing): only records for every
    channel answer it. `recipient` names the third party of a ``third_party_sharing`` question.
    """
    return may_many(store, [person], purpose, channel, at, data_category=data_category, recipient=recipient)[
        person
    ]


def personalisation_off_many(
    store: WorkspaceStore, persons: Iterable[str], *, at: datetime | None = None, optouts: bool = True
) -> dict[str, bool]:
    """The PIPL Art 24 switch per person: True when the newest personalisation record (any channel, any
    category) is a withdrawal or refusal — or, with `optouts`, the person opted out of personalisation
    (`contact_optout`, e.g. from a message link). No record: personalisation stays on."""
    wanted = sorted(set(persons))
    if not wanted:
        return {}
    when = at or store.backend.clock.now()
    facts = _facts(store, wanted, when, [PERSONALISATION])
    out = {}
    for p in wanted:
        recs = [r for r in facts[p].records if r.purpose == PERSONALISATION and r.effective_at <= when]
        out[p] = bool(recs) and max(recs, key=_order).action != GRANT
    if optouts:
        for (pid,) in store.tuples(
            "SELECT DISTINCT person_id FROM contact_optout WHERE person_id = ANY(:p) "
            "AND scope = 'personalisation' AND (at IS NULL OR at <= :at)",
            {"p": wanted, "at": when},
        ):
            out[pid] = True
    return out


def personalisation_off(store: WorkspaceStore, person: str, *, at: datetime | None = None) -> bool:
    """Did the person switch personalised processing off (PIPL Art 24)? See `personalisation_off_many`."""
    return personalisation_off_many(store, [person], at=at)[person]


def history(store: WorkspaceStore, person: str, *, at: datetime | None = None) -> list[ConsentRecord]:
    """Every record that answers for the person (own, ingested, carried over), oldest first."""
    when = at or store.backend.clock.now()
    return sorted(_facts(store, [person], when, None)[person].records, key=_order)


def under_14(store: WorkspaceStore, person: str, *, at: datetime) -> bool:
    """Is the person under 14 on the local day of `at` (unknown birth date: no)?"""
    f = _Facts()
    for birth, id_number in store.tuples(
        "SELECT birth_date, id_number FROM person WHERE person_id = :p", {"p": person}
    ):
        f.birth_date, f.id_number = birth, id_number
    born = _Births().of(f)
    return born is not None and age_on(born, local_day(at)) < GUARDIAN_AGE


def state(store: WorkspaceStore, person: str, *, at: datetime | None = None) -> list[Decision]:
    """The current answer for each purpose x recipient x data category x channel the person's records name."""
    when = at or store.backend.clock.now()
    f = _facts(store, [person], when, None)[person]
    birth = _Births().of(f)
    young = birth is not None and age_on(birth, local_day(when)) < GUARDIAN_AGE
    keys = sorted(
        {(r.purpose, r.recipient or "", r.data_category or PERSONAL, r.channel or "") for r in f.records}
    )
    return [
        _decide(person, f.records, purpose, channel or None, category, recipient or None, when, young)
        for purpose, recipient, category, channel in keys
        if purpose in PURPOSES and category in DATA_CATEGORIES
    ]


class LedgerConsents:
    """The send-time policy's `ConsentSource` (careloop.messaging.policy): the ledger and the ingested
    records, with the guardian rule for children. A message needs consent for its purpose, channel and the
    data category `categories` names for the purpose (default `MESSAGE_CATEGORIES`). The policy asks about
    ``personalisation`` to learn whether the Art 24 switch is off: the answer is then ``consent_withdrawn``."""

    def __init__(self, categories: Mapping[str, str] | None = None) -> None:
        self.categories = dict(MESSAGE_CATEGORIES if categories is None else categories)

    def decide(
        self, store: WorkspaceStore, persons: Sequence[str], purpose: str, channel: str, at: datetime
    ) -> dict[str, tuple[bool, str]]:
        if purpose == PERSONALISATION:
            off = personalisation_off_many(store, persons, at=at, optouts=False)
            return {p: (not off[p], WITHDRAWN if off[p] else ALLOWED) for p in persons}
        decisions = may_many(
            store, persons, purpose, channel, at, data_category=self.categories.get(purpose, "health")
        )
        return {p: (d.allowed, d.reason) for p, d in decisions.items()}


# ---- writing ----------------------------------------------------------------------------------------

_HEX_PROOF = re.compile(r"(?:sha256:|sha-256:)?[0-9a-fA-F]{32,128}")
_PERSONAL_PROOF = (
    (re.compile(r"(?<![0-9A-Za-z])(?:\+?86)?1[3-9][0-9]{9}(?![0-9])"), "a mobile number"),
    (re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])"), "an ID number"),
    (re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"), "an e-mail address"),
)


class InvalidRecord(ConfigError):
    """A consent record breaks a ledger rule; `field` names the field to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def check_proof(proof: str | None) -> str | None:
    """A proof reference, checked to hold no identifier in clear (a form id or a signature hash will do)."""
    if proof is None or not proof.strip():
        return None
    text = _no_nul(proof.strip(), "proof")
    if len(text) > 200:
        raise InvalidRecord(
            "proof", "proof: at most 200 characters (a reference to the proof, not the proof)"
        )
    if _HEX_PROOF.fullmatch(text):
        return text
    for pattern, what in _PERSONAL_PROOF:
        if pattern.search(text):
            raise InvalidRecord(
                "proof",
                f"proof looks like it holds {what}: store a reference (form id, signature hash), "
                "never personal data in clear",
            )
    return text


def _no_nul(value: str, field_name: str) -> str:
    """Text with a NUL character cannot be stored on every backend (PostgreSQL refuses it)."""
    if "\x00" in value:
        raise InvalidRecord(
            field_name, f"{field_name.replace('_', ' ')} may not contain a NUL (\\x00) character"
        )
    return value


def _text(value: str | None, field_name: str, limit: int = 200) -> str | None:
    if value is None or not str(value).strip():
        return None
    v = _no_nul(str(value).strip(), field_name)
    if len(v) > limit:
        raise InvalidRecord(field_name, f"{field_name.replace('_', ' ')}: at most {limit} characters")
    return v


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(get_settings().timezone))


def _one_of(field_name: str, value: str, allowed: Sequence[str], extra: str = "") -> None:
    if value not in allowed:
        raise InvalidRecord(
            field_name,
            f"unknown {field_name.replace('_', ' ')} {value!r}; use one of {', '.join(allowed)}{extra}",
        )


def build_record(
    person: str,
    purpose: str,
    action: str,
    *,
    now: datetime,
    channel: str | None = None,
    data_category: str | None = None,
    recipient: str | None = None,
    notice_version: str | None = None,
    source: str = "api",
    proof: str | None = None,
    guardian_relation: str | None = None,
    sensitive: bool = False,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    recorded_by: str | None = None,
    record_id: str | None = None,
) -> ConsentRecord:
    """A validated record (not stored yet): every rule a record must meet, with a message saying what to fix.

    `channel` None: every channel. `data_category` None (withdrawals and refusals only): every category.
    `guardian_relation` marks a guardian's consent for a child (recorded as a separate consent).
    `effective_at` (default now) is when the person gave, withdrew or refused it.
    """
    _one_of("purpose", purpose, PURPOSES)
    _one_of("action", action, ACTIONS)
    if channel is not None:
        _one_of("channel", channel, CHANNELS, ", or none for every channel")
    if data_category is not None:
        _one_of("data_category", data_category, DATA_CATEGORIES)
    if action == GRANT and data_category is None:
        raise InvalidRecord(
            "data_category", "a grant names its data category: one consent per category (PIPL Art 14, 29)"
        )
    _one_of("source", source, SOURCES)
    recipient = _text(recipient, "recipient")
    if purpose == THIRD_PARTY_SHARING and action == GRANT and recipient is None:
        raise InvalidRecord(
            "recipient", "a consent to share with a third party names the recipient (PIPL Art 23)"
        )
    if purpose != THIRD_PARTY_SHARING and recipient is not None:
        raise InvalidRecord("recipient", "a recipient belongs to third_party_sharing consents only")
    relation = _text(guardian_relation, "guardian")
    if relation is not None:
        _one_of("guardian", relation, GUARDIAN_RELATIONS)
    effective = _aware(effective_at) if effective_at is not None else now
    if effective > now + timedelta(minutes=5):
        raise InvalidRecord("time", "a consent cannot take effect in the future; record it when it is given")
    expires = _aware(expires_at) if expires_at is not None else None
    if expires is not None and action != GRANT:
        raise InvalidRecord(
            "expires", "only a grant expires; a withdrawal or refusal stands until a new grant"
        )
    if expires is not None and expires <= effective:
        raise InvalidRecord("expires", "the expiry must come after the time the consent was given")
    return ConsentRecord(
        record_id=record_id or f"cr{now:%Y%m%d%H%M%S}{secrets.token_hex(6)}",
        person_id=person,
        purpose=purpose,
        action=action,
        effective_at=effective,
        recorded_at=now,
        source=source,
        data_category=data_category,
        channel=channel,
        recipient=recipient,
        # a guardian's consent for a child is a separate consent: all of a child's data is sensitive
        sensitive=bool(sensitive or relation is not None) if action == GRANT else False,
        by_guardian=relation is not None,
        guardian_relation=relation,
        notice_version=_text(notice_version, "notice_version", 100),
        proof=check_proof(proof),
        expires_at=expires,
        recorded_by=_text(recorded_by, "recorded_by", 100),
    )


def _row(r: ConsentRecord, run_id: str | None = None) -> dict[str, Any]:
    d = r.to_dict()
    d.pop("origin")
    d["run_id"] = run_id
    return d


def resolve_person(store: WorkspaceStore, ident: str) -> str:
    """The person a person id or a record reference (SOURCE:KEY) names; NotFoundError / ConfigError say
    how to find one."""
    from careloop.patients.lookup import resolve

    if "\x00" in ident:
        raise ConfigError("a person id may not contain a NUL (\\x00) character")
    found = resolve(store, ident)
    if found.person_id is None:
        raise ConfigError(
            f"record {ident.strip()} is not linked to a person yet; run `careloop identity resolve` first"
        )
    return found.person_id


def person_exists(store: WorkspaceStore, person: str) -> bool:
    return bool(
        store.scalar(
            "SELECT count(*) FROM (SELECT person_id FROM person WHERE person_id = :p "
            "UNION ALL SELECT person_id FROM identity_link WHERE person_id = :p) x",
            {"p": person},
        )
    )


def append(store: WorkspaceStore, record: ConsentRecord, *, role: str | None = None) -> ConsentRecord:
    """Append a validated record for an existing person (the ledger's only write) and its audit entry."""
    if not person_exists(store, record.person_id):
        raise NotFoundError(
            f"no person {record.person_id!r} in workspace {store.workspace!r}; "
            "find one with `careloop patient find --phone ...`"
        )
    store.insert("consent_record", [_row(record)])
    _audit(store, [record], role=role)
    return record


def _audit(store: WorkspaceStore, records: Sequence[ConsentRecord], *, role: str | None = None) -> None:
    """One audit-chain entry per record: ``consent.grant``, or ``consent.withdraw`` for a withdrawal or a
    refusal (the detail says which); ids and codes only, never the proof or a personal value."""
    from careloop.privacy.audit import AuditEvent, audit_log

    audit_log(store).append_many(
        [
            AuditEvent(
                actor=r.recorded_by or "unknown",
                action="consent.grant" if r.action == GRANT else "consent.withdraw",
                target_kind="person",
                target_id=r.person_id,
                purpose=r.purpose,
                role=role,
                detail={
                    "record_id": r.record_id,
                    "action": r.action,
                    "channel": r.channel,
                    "data_category": r.data_category,
                    "source": r.source,
                    "sensitive": r.sensitive,
                    "by_guardian": r.by_guardian,
                    "notice_version": r.notice_version,
                },
            )
            for r in records
        ]
    )


def record(
    store: WorkspaceStore,
    person: str,
    purpose: str,
    action: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    role: str | None = None,
    **fields: Any,
) -> ConsentRecord:
    """Validate and append one record (grant, withdraw or refuse); see `build_record` for the fields.
    `role` is the recording caller's role, for the audit entry."""
    return append(store, build_record(person, purpose, action, now=clock.now(), **fields), role=role)


def grant(store: WorkspaceStore, person: str, purpose: str, **fields: Any) -> ConsentRecord:
    fields.setdefault("data_category", "health")
    return record(store, person, purpose, GRANT, **fields)


def withdraw(store: WorkspaceStore, person: str, purpose: str, **fields: Any) -> ConsentRecord:
    """A withdrawal: of every channel and category of the purpose unless they are named."""
    return record(store, person, purpose, WITHDRAW, **fields)


def refuse(store: WorkspaceStore, person: str, purpose: str, **fields: Any) -> ConsentRecord:
    return record(store, person, purpose, REFUSE, **fields)


# ---- importing files --------------------------------------------------------------------------------

#: the fields a consent file may carry; a person is named by one of the first four
IMPORT_FIELDS = (
    "person_id",
    "record",
    "phone",
    "id_number",
    "purpose",
    "action",
    "time",
    "channel",
    "data_category",
    "recipient",
    "notice_version",
    "source",
    "proof",
    "guardian",
    "sensitive",
    "expires",
    "recorded_by",
)
_IDENTITY_FIELDS = ("person_id", "record", "phone", "id_number")
_TRUE = {"1", "true", "yes", "y", "t", "是", "有"}
_FALSE = {"0", "false", "no", "n", "f", "否", "无", ""}


@dataclass(frozen=True)
class ImportMapping:
    """How a consent file's columns and values map to the ledger's fields (docs/consent.md)."""

    columns: dict[str, str] = field(default_factory=dict)  # field -> column
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {file value: careloop value}
    defaults: dict[str, str] = field(default_factory=dict)  # field -> value when the file has none
    timezone: str | None = None

    @classmethod
    def load(cls, path: Path | None) -> ImportMapping:
        if path is None:
            return cls()
        if not path.exists():
            raise ConfigError(f"mapping {path} does not exist")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"mapping {path} is not YAML: {e}") from e
        if not isinstance(spec, dict) or set(spec) - {"columns", "values", "defaults", "timezone"}:
            raise ConfigError(f"mapping {path}: top-level keys are columns, values, defaults and timezone")
        for key in ("columns", "values", "defaults"):
            part = spec.get(key) or {}
            unknown = set(part) - set(IMPORT_FIELDS) if isinstance(part, dict) else {"?"}
            if unknown:
                raise ConfigError(
                    f"mapping {path}: {key} names unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                    f"fields are {', '.join(IMPORT_FIELDS)}"
                )
        values = spec.get("values") or {}
        if not all(isinstance(v, dict) for v in values.values()):
            raise ConfigError(f"mapping {path}: each entry of values maps file values to careloop values")
        tz = spec.get("timezone")
        if tz is not None:
            try:
                ZoneInfo(str(tz))
            except (KeyError, ValueError) as e:
                raise ConfigError(f"mapping {path}: unknown time zone {tz!r}") from e
        return cls(
            columns={str(k): str(v) for k, v in (spec.get("columns") or {}).items()},
            values={
                str(k): {str(a): "" if b is None else str(b) for a, b in v.items()} for k, v in values.items()
            },
            defaults={str(k): "" if v is None else str(v) for k, v in (spec.get("defaults") or {}).items()},
            timezone=str(tz) if tz is not None else None,
        )

    def get(self, row: Mapping[str, str | None], name: str) -> str | None:
        column = self.columns.get(name, name)
        raw = row.get(column)
        text = raw.strip() if isinstance(raw, str) else None
        if not text:
            text = self.defaults.get(name) or None
        if text is not None and name in self.values:
            text = self.values[name].get(text, text) or None
        return text


@dataclass
class Rejected:
    line: int
    field: str
    reason: str


@dataclass
class ImportSummary:
    run_id: str
    file: str
    read: int = 0
    recorded: int = 0
    duplicates: int = 0  # already in the ledger (the same record imported before)
    rejected: list[Rejected] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "file": self.file,
            "read": self.read,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejects": [asdict(r) for r in self.rejected],
        }


class _RowError(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def _parse_time(text: str | None, tz: ZoneInfo, what: str, *, end_of_day: bool = False) -> datetime | None:
    if text is None:
        return None
    t = text.strip().replace("/", "-")
    try:
        if len(t) <= 10:
            day = date.fromisoformat(t)
            at = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
        else:
            at = datetime.fromisoformat(t)
    except ValueError:
        raise _RowError(what, "not a date or time (use 2026-03-01 or 2026-03-01T09:30:00+08:00)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def _parse_bool(text: str | None, what: str) -> bool:
    t = (text or "").strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise _RowError(what, "not a yes / no value (true, false, 1, 0, 是, 否)")


def import_records(
    store: WorkspaceStore,
    path: Path,
    *,
    mapping: Path | None = None,
    source: str = "import",
    recorded_by: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ImportSummary:
    """Append the consent records of a CSV file (UTF-8, a header row), once each.

    Each row names its person by person id, record (SOURCE:KEY), phone or ID number (looked up through the
    blind indexes, never decrypted). Rows that cannot be read, name nobody or several persons, or break a
    ledger rule are quarantined with the line, field and reason (`careloop quarantine list --run RUN`);
    their values are stored encrypted. A row's record id is derived from its content, so importing the same
    file again records nothing twice.
    """
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    spec = ImportMapping.load(mapping)
    settings = get_settings()
    tz = ZoneInfo(spec.timezone or settings.timezone)
    now = clock.now()
    started = timer.perf_counter()
    run_id = f"c{now:%Y%m%d%H%M%S}{secrets.token_hex(3)}"
    summary = ImportSummary(run_id=run_id, file=str(path))
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{path} is not a UTF-8 CSV file with a header row: {type(e).__name__}") from e
    named = [c for n, c in ((n, spec.columns.get(n, n)) for n in _IDENTITY_FIELDS) if rows and c in rows[0]]
    if rows and not named:
        raise ConfigError(
            f"{path}: no column names the person; map one of {', '.join(_IDENTITY_FIELDS)} "
            "(e.g. `columns: {phone: 手机号}` in the mapping)"
        )
    store.insert(
        "ingest_run",
        [
            {
                "run_id": run_id,
                "source": source,
                "path": str(path),
                "format": "consent_csv",
                "mapping": str(mapping) if mapping else None,
                "status": "running",
                "started_at": now,
            }
        ],
    )
    people = _PersonFinder(store, spec, rows)
    good: dict[str, ConsentRecord] = {}
    bad: list[tuple[int, dict[str, str | None], Rejected]] = []
    for line, row in enumerate(rows, start=2):
        summary.read += 1
        try:
            rec = _row_record(row, spec, people, tz, now, source, recorded_by)
        except _RowError as e:
            bad.append((line, row, Rejected(line, e.field, e.reason)))
            continue
        good.setdefault(rec.record_id, rec)
    summary.duplicates = summary.read - len(bad) - len(good)
    written = store.insert_new("consent_record", [_row(r, run_id) for r in good.values()], ["record_id"])
    summary.recorded = len(written)
    new = {w[0] for w in written}
    _audit(store, [r for rid, r in good.items() if rid in new])
    summary.duplicates += len(good) - len(written)
    summary.rejected = [b[2] for b in bad]
    if bad:
        _quarantine(store, run_id, source, path, bad, now)
    counts = {k: v for k, v in summary.to_dict().items() if k != "rejects"}
    # `careloop runs` reads rows, quarantined and seconds from every run's summary
    counts |= {
        "rows": summary.read,
        "quarantined": len(bad),
        "seconds": round(timer.perf_counter() - started, 3),
    }
    store.execute(
        "UPDATE ingest_run SET status = 'completed', finished_at = :at, summary = :s WHERE run_id = :r",
        {"at": clock.now(), "s": orjson.dumps(counts).decode(), "r": run_id},
    )
    return summary


def _row_record(
    row: Mapping[str, str | None],
    spec: ImportMapping,
    people: _PersonFinder,
    tz: ZoneInfo,
    now: datetime,
    source: str,
    recorded_by: str | None,
) -> ConsentRecord:
    def get(name: str) -> str | None:
        return spec.get(row, name)

    for name in IMPORT_FIELDS:
        value = get(name)
        if value is not None and "\x00" in value:
            raise _RowError(name, "contains a NUL (\\x00) character")
    person = people.person(row)
    action = (get("action") or "").lower()
    if action not in ACTIONS:
        raise _RowError(
            "action", f"action must be one of {', '.join(ACTIONS)} (map other words under values)"
        )
    at = _parse_time(get("time"), tz, "time")
    if at is None:
        raise _RowError("time", "the time the consent was given, withdrawn or refused is missing")
    category = get("data_category")
    if category is None and action == GRANT:
        category = "health"
    try:
        rec = build_record(
            person,
            (get("purpose") or "").lower(),
            action,
            now=now,
            channel=(get("channel") or "").lower() or None,
            data_category=category.lower() if category else None,
            recipient=get("recipient"),
            notice_version=get("notice_version"),
            source=(get("source") or source).lower(),
            proof=get("proof"),
            guardian_relation=(get("guardian") or "").lower() or None,
            sensitive=_parse_bool(get("sensitive"), "sensitive"),
            expires_at=_parse_time(get("expires"), tz, "expires", end_of_day=True),
            effective_at=at,
            recorded_by=get("recorded_by") or recorded_by,
        )
    except InvalidRecord as e:
        raise _RowError(e.field, str(e)) from None
    return ConsentRecord(**{**rec.to_dict(), "record_id": _content_id(rec)})


def _content_id(r: ConsentRecord) -> str:
    """A record id derived from what the record says (no identifier: the person is named by id), so that
    the same row imported twice is one record."""
    parts = [
        r.person_id,
        r.purpose,
        r.action,
        r.effective_at.isoformat(),
        r.source,
        r.data_category,
        r.channel,
        r.recipient,
        r.sensitive,
        r.guardian_relation,
        r.notice_version,
        r.proof,
        r.expires_at.isoformat() if r.expires_at else None,
    ]
    return "ci" + hashlib.sha256(orjson.dumps(parts)).hexdigest()[:30]


class _PersonFinder:
    """Persons named by a file's rows: ids checked in one query, records through identity links, phones and
    ID numbers through blind indexes (each distinct value looked up once)."""

    def __init__(self, store: WorkspaceStore, spec: ImportMapping, rows: Sequence[Mapping[str, str | None]]):
        self.store, self.spec = store, spec
        self._cipher: Any = None
        self._found: dict[tuple[str, str], str | _RowError] = {}
        ids = sorted({v for r in rows if (v := spec.get(r, "person_id")) and "\x00" not in v})
        self.known: set[str] = set()
        for chunk in _chunks(ids, 1000):
            self.known |= {
                p
                for (p,) in store.tuples(
                    "SELECT person_id FROM person WHERE person_id = ANY(:p) "
                    "UNION SELECT person_id FROM identity_link WHERE person_id = ANY(:p)",
                    {"p": chunk},
                )
            }

    def person(self, row: Mapping[str, str | None]) -> str:
        for name in _IDENTITY_FIELDS:
            value = self.spec.get(row, name)
            if value is None:
                continue
            if name == "person_id":
                if value not in self.known:
                    raise _RowError(name, "no person with this id in the workspace")
                return value
            got = self._found.get((name, value))
            if got is None:
                got = self._found[(name, value)] = self._look_up(name, value)
            if isinstance(got, _RowError):
                raise got
            return got
        raise _RowError("person", f"no {', '.join(_IDENTITY_FIELDS)} names the person")

    def _look_up(self, name: str, value: str) -> str | _RowError:
        from careloop.patients.lookup import RecordRef, find, persons_of_records

        try:
            if name == "record":
                ref = RecordRef.parse(value)
                owner = persons_of_records(self.store, [ref]).get(ref)
                return owner or _RowError(
                    name, "no person holds this record (run `careloop identity resolve`)"
                )
            if self._cipher is None:
                from careloop.privacy.fields import FieldCipher
                from careloop.privacy.keys import load_keyring

                s = get_settings()
                self._cipher = FieldCipher(load_keyring(s.key_file, environment=s.environment))
            kind = name.replace("_", " ")
            matches = find(
                self.store, self._cipher, **({"phone": value} if name == "phone" else {"id_number": value})
            )
        except ConfigError:
            return _RowError(name, f"not a valid {name.replace('_', ' ')}")
        persons = sorted({m.person_id for m in matches if m.person_id})
        if len(persons) == 1:
            return persons[0]
        if len(persons) > 1:
            return _RowError(name, f"this {kind} belongs to {len(persons)} persons: name the person by id")
        if matches:
            return _RowError(
                name, f"this {kind} is on records not linked to a person yet (run identity resolve)"
            )
        return _RowError(name, f"no person with this {kind}")


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _quarantine(
    store: WorkspaceStore,
    run_id: str,
    source: str,
    path: Path,
    bad: Sequence[tuple[int, Mapping[str, str | None], Rejected]],
    now: datetime,
) -> None:
    from careloop.privacy.fields import FieldCipher
    from careloop.privacy.keys import load_keyring

    s = get_settings()
    cipher = FieldCipher(load_keyring(s.key_file, environment=s.environment))
    raws = cipher.encrypt_many([orjson.dumps(dict(row)).decode() for _, row, _ in bad], "raw")
    store.insert(
        "quarantine",
        [
            {
                "id": f"{run_id}-{i}",
                "run_id": run_id,
                "source": source,
                "entity": "consent_record",
                "file": str(path),
                "line": rej.line,
                "field": rej.field,
                "reason": rej.reason,
                "raw": raw,
                "created_at": now,
            }
            for i, ((_, _, rej), raw) in enumerate(zip(bad, raws, strict=True), start=1)
        ],
    )
