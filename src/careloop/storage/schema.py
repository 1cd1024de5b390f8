"""Physical tables, derived from the domain model plus careloop's operational tables.

Entity tables get, besides the entity's fields:
- ``workspace_id`` — the tenant; every read and write is scoped to one (see `workspace.py`);
- for each personal identifier, the ciphertext in the field's own column and, for look-up kinds,
  a keyed blind index in ``<field>_bidx`` (see `careloop.privacy.fields`);
- ``_run_id``, ``_row_hash`` (63-bit keyed hash of the normalised input, to tell changed rows from repeats),
  ``_ingested_at`` and ``_updated_at``.
The unique key of every entity table is (workspace_id, source, key).

Column types are logical (`LogicalType`); each dialect names them. Migrations freeze a snapshot of
these specs; `tests/backends/test_schema.py` fails when the domain changes without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache

from careloop.domain import entities, field_specs
from careloop.domain.fields import INDEXED_PII, DataClass


class LogicalType(StrEnum):
    TEXT = "text"
    BIGINT = "bigint"
    DOUBLE = "double"
    DECIMAL = "decimal"  # DECIMAL(18, 2): money in yuan
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMPTZ = "timestamptz"
    JSON = "json"


_PY_TO_LOGICAL: dict[type, LogicalType] = {
    str: LogicalType.TEXT,
    int: LogicalType.BIGINT,
    float: LogicalType.DOUBLE,
    Decimal: LogicalType.DECIMAL,
    bool: LogicalType.BOOLEAN,
    date: LogicalType.DATE,
    datetime: LogicalType.TIMESTAMPTZ,
    dict: LogicalType.JSON,
    list: LogicalType.JSON,
}


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = True
    data_class: str = DataClass.OPERATIONAL.value
    level: int = 2
    pii: str | None = None  # PiiKind of an encrypted column
    blind_index_of: str | None = None  # set on `<field>_bidx` columns


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()
    scoped: bool = True  # has workspace_id and is only reachable through a workspace
    entity: str | None = None
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


WORKSPACE = Column("workspace_id", LogicalType.TEXT, nullable=False)
AUDIT_COLUMNS = (
    Column("_run_id", LogicalType.TEXT),
    Column("_row_hash", LogicalType.BIGINT),
    Column("_ingested_at", LogicalType.TIMESTAMPTZ),
    Column("_updated_at", LogicalType.TIMESTAMPTZ),
)


#: Columns the live collection API (careloop.events) maintains on the event table besides the entity's
#: fields; ingestion mappings cannot target them.
LIVE_EVENT_COLUMNS = (
    Column("person_id", LogicalType.TEXT),  # unified patient the event is attributed to
    Column("received_at", LogicalType.TIMESTAMPTZ),  # when careloop acknowledged it
    Column("context", LogicalType.JSON),  # Segment context / integrations, personal keys removed
    Column("message", LogicalType.TEXT, data_class=DataClass.IDENTIFIER.value, level=4, pii="raw"),
    Column("identity", LogicalType.JSON),  # blind indexes of the identifiers the event carried
    Column("plan_violations", LogicalType.JSON),  # tracking-plan findings (flagged, never dropped)
)


def entity_table(name: str) -> Table:
    """The physical table of one domain entity."""
    model = entities()[name]
    cols: list[Column] = [WORKSPACE]
    indexes: list[tuple[str, ...]] = []
    for spec in field_specs(model):
        cols.append(
            Column(
                spec.name,
                LogicalType.TEXT if spec.pii else _PY_TO_LOGICAL[spec.py_type],
                nullable=not spec.required,
                data_class=spec.data_class.value,
                level=spec.level,
                pii=spec.pii.value if spec.pii else None,
            )
        )
        if spec.pii and spec.pii in INDEXED_PII:
            bidx = f"{spec.name}_bidx"
            cols.append(
                Column(
                    bidx, LogicalType.TEXT, data_class=DataClass.OPERATIONAL.value, blind_index_of=spec.name
                )
            )
            indexes.append(("workspace_id", bidx))
        if spec.ref == "patient" and spec.name == "patient_key":
            indexes.append(("workspace_id", "source", "patient_key"))
    cols.extend(AUDIT_COLUMNS)
    if name == "event":
        cols.extend(LIVE_EVENT_COLUMNS)
        indexes.extend([("workspace_id", "person_id"), ("workspace_id", "anonymous_id")])
    return Table(
        name=name,
        columns=tuple(cols),
        unique=("workspace_id", "source", "key"),
        entity=name,
        indexes=tuple(indexes),
    )


def _op(name: str, typ: LogicalType, nullable: bool = True) -> Column:
    return Column(name, typ, nullable=nullable)


T, BI, TS, J = LogicalType.TEXT, LogicalType.BIGINT, LogicalType.TIMESTAMPTZ, LogicalType.JSON

OPERATIONAL_TABLES: tuple[Table, ...] = (
    Table(
        "workspace",
        (_op("id", T, False), _op("name", T), _op("created_at", TS)),
        unique=("id",),
        scoped=False,
    ),
    Table(
        "ingest_run",
        (
            WORKSPACE,
            _op("run_id", T, False),
            _op("source", T),
            _op("path", T),
            _op("format", T),
            _op("mapping", T),
            _op("status", T),
            _op("started_at", TS),
            _op("finished_at", TS),
            _op("summary", J),
        ),
        unique=("workspace_id", "run_id"),
    ),
    Table(
        "quarantine",
        (
            WORKSPACE,
            _op("id", T, False),
            _op("run_id", T),
            _op("source", T),
            _op("entity", T),
            _op("file", T),
            _op("line", BI),
            _op("field", T),
            _op("reason", T),
            Column("raw", T, data_class=DataClass.IDENTIFIER.value, level=4, pii="raw"),
            _op("created_at", TS),
            _op("event_type", T),  # live events: the call type the sender claimed (track, identify, ...)
        ),
        unique=("workspace_id", "id"),
        indexes=(("workspace_id", "run_id"),),
    ),
)


def _pii(name: str, kind: str) -> Column:
    return Column(name, LogicalType.TEXT, data_class=DataClass.IDENTIFIER.value, level=4, pii=kind)


def _bidx(name: str) -> Column:
    return Column(f"{name}_bidx", LogicalType.TEXT, blind_index_of=name)


B, D, DT = LogicalType.BOOLEAN, LogicalType.DOUBLE, LogicalType.DATE

#: Identity resolution (careloop.identity): which source records are one person, that person's golden
#: record, households, manual overrides, the history of every merge and split, and each resolution run.
IDENTITY_TABLES: tuple[Table, ...] = (
    Table(
        "identity_link",
        (
            WORKSPACE,
            _op("source", T, False),
            _op("patient_key", T, False),
            _op("person_id", T, False),
            _op(
                "rule", T
            ),  # what put the record in its person: a deterministic rule, 'probabilistic', 'manual', 'alone'
            _op("match_probability", D),
            _op("run_id", T),
            _op("linked_at", TS),
        ),
        unique=("workspace_id", "source", "patient_key"),
        indexes=(("workspace_id", "person_id"),),
    ),
    Table(
        "person",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _pii("name", "name"),
            _bidx("name"),
            _op("sex", T),
            _op("birth_date", DT),
            _pii("id_number", "id_number"),
            _bidx("id_number"),
            _pii("phone", "phone"),
            _bidx("phone"),
            _pii("address", "address"),
            _op("province", T),
            _op("city", T),
            _op("district", T),
            _op("postal_code", T),
            _op("household_id", T),
            _op("record_count", BI),
            _op("sources", J),  # sorted list of source names
            _op("provenance", J),  # field -> {source, patient_key, rule, at}
            _op("first_seen_at", TS),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "person_id"),
        indexes=(
            ("workspace_id", "phone_bidx"),
            ("workspace_id", "id_number_bidx"),
            ("workspace_id", "household_id"),
        ),
    ),
    Table(
        "household_member",
        (
            WORKSPACE,
            _op("household_id", T, False),
            _op("person_id", T, False),
            _op("role", T),  # head, spouse, child, parent, member
            _op("evidence", J),  # what links the person to the household
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "person_id"),
        indexes=(("workspace_id", "household_id"),),
    ),
    Table(
        "identity_override",
        (
            WORKSPACE,
            _op("id", T, False),
            _op("action", T, False),  # 'merge' (must link) or 'split' (must not link)
            _op("record_a", T, False),  # 'source:patient_key'
            _op("record_b", T, False),
            _op("actor", T),
            _op("reason", T),
            _op("created_at", TS),
            _op("active", B),
        ),
        unique=("workspace_id", "id"),
    ),
    Table(
        "identity_history",
        (
            WORKSPACE,
            _op("id", T, False),
            _op("at", TS),
            _op("action", T, False),  # created, merged, split, manual_merge, manual_split, retired
            _op("person_id", T),
            _op("other_person_ids", J),
            _op("records", J),  # the records concerned, 'source:patient_key'
            _op("actor", T),  # a user, or 'resolver' for a resolution run
            _op("reason", T),
            _op("evidence", J),  # rules and probabilities of the links that decided it
            _op("run_id", T),
        ),
        unique=("workspace_id", "id"),
        indexes=(("workspace_id", "person_id"),),
    ),
    Table(
        "identity_run",
        (
            WORKSPACE,
            _op("run_id", T, False),
            _op("mode", T),  # full or incremental
            _op("started_at", TS),
            _op("finished_at", TS),
            _op("settings", J),  # rules and threshold used
            _op("model", J),  # the trained Splink model (JSON), reused by incremental runs
            _op("summary", J),
        ),
        unique=("workspace_id", "run_id"),
    ),
)


#: Live event collection (careloop.events): sources and their write keys, the identities events were
#: attributed through, repeated deliveries, and per-person activity kept current by the stream.
EVENT_TABLES: tuple[Table, ...] = (
    Table(
        "event_source",
        (
            WORKSPACE,
            _op("name", T, False),
            _op("write_key_hash", T, False),  # SHA-256 of the write key; the key itself is shown once
            _op("key_hint", T),  # last characters of the key, to tell keys apart
            _op("channel", T),  # app, wechat_mp, web, call_centre, ...
            _op("user_id_kind", T),  # what the sender's userId is: app_user_id, his_number, openid, ...
            _op("user_id_system", T),  # issuer of those ids (hospital code, WeChat app id, app name)
            _op("plan", J),  # tracking plan: declared events and property types
            _op("created_at", TS),
            _op("active", B),
        ),
        unique=("workspace_id", "name"),
        indexes=(("write_key_hash",),),
    ),
    Table(
        "event_identity",
        (
            WORKSPACE,
            _op("namespace", T, False),  # 'anonymous_id' or the user-id namespace of a source
            _op("id_bidx", T, False),  # keyed blind index of the id
            _op("person_id", T, False),
            _op("via", T),  # how the id was tied to the person
            _op("first_seen_at", TS),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "namespace", "id_bidx"),
        indexes=(("workspace_id", "person_id"),),
    ),
    Table(
        "event_duplicate",
        (
            WORKSPACE,
            _op("source", T, False),
            _op("message_id", T, False),
            _op("event_type", T),
            _op("received_at", TS),
        ),
        indexes=(("workspace_id", "source"),),
    ),
    Table(
        "live_activity",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _op("channel", T, False),
            _op("first_event_at", TS),
            _op("last_event_at", TS),
            _op("last_event_name", T),
            _op("events", BI),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "person_id", "channel"),
    ),
    Table(
        "stream_checkpoint",
        (
            WORKSPACE,
            _op("consumer", T, False),
            _op("position", TS),  # received_at of the last event the consumer finished
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "consumer"),
    ),
)


#: Profiles (careloop.profiles): trait values per unified patient. A trait may be keyed (e.g. PDC per
#: drug class); scalar traits have key ''. One typed slot holds the value: number, text or time.
PROFILE_TABLES: tuple[Table, ...] = (
    Table(
        "trait_value",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _op("trait", T, False),
            _op("key", T, False),
            # values are derived from visits, fills, diagnoses and adherence (conditions, current
            # medications, PDC, 5A stage): health data, like their snapshots in trait_history
            Column("value_num", D, data_class=DataClass.HEALTH.value, level=3),
            Column("value_text", T, data_class=DataClass.HEALTH.value, level=3),
            Column("value_time", TS, data_class=DataClass.HEALTH.value, level=3),
            _op("computed_at", TS),
            _op("as_of", TS),  # the date the value describes (windows end there)
        ),
        unique=("workspace_id", "person_id", "trait", "key"),
        indexes=(("workspace_id", "trait"),),
    ),
    # snapshots of the traits declared with `history: true` (e.g. stage_5a), one per local as-of day:
    # what flows between stages are computed from. Values are derived from visits, fills and diagnoses,
    # so they are graded as health data.
    Table(
        "trait_history",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _op("trait", T, False),
            _op("key", T, False),
            _op("as_of", DT, False),  # the patients' local day the snapshot describes
            Column("value_text", T, data_class=DataClass.HEALTH.value, level=3),
            Column("value_num", D, data_class=DataClass.HEALTH.value, level=3),
            _op("computed_at", TS),
        ),
        unique=("workspace_id", "trait", "key", "as_of", "person_id"),
        indexes=(("workspace_id", "person_id"),),
    ),
    Table(
        "person_tag",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _op("tag", T, False),
            _op("label_en", T),
            _op("tagset_version", BI),
            _op("rule", T),  # the rule as text, as it was when the tag was given
            _op("evidence", J),  # the trait values that made the rule hold
            _op("as_of", TS),
            _op("assigned_at", TS),
        ),
        unique=("workspace_id", "person_id", "tag"),
        indexes=(("workspace_id", "tag"),),
    ),
    Table(
        "segment",
        (
            WORKSPACE,
            _op("name", T, False),
            _op("description", T),
            _op("definition", J),  # the condition tree (docs/segments.md)
            _op("version", BI),  # bumped when the definition changes
            _op("created_at", TS),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "name"),
    ),
    Table(
        "segment_member",
        (
            WORKSPACE,
            _op("segment", T, False),
            _op("person_id", T, False),
            _op("version", BI),
            _op("entered_at", TS),
        ),
        unique=("workspace_id", "segment", "person_id"),
        indexes=(("workspace_id", "person_id"),),
    ),
    Table(
        "segment_change",
        (
            WORKSPACE,
            _op("segment", T, False),
            _op("person_id", T, False),
            _op("change", T, False),  # entered | left
            _op("version", BI),
            _op("at", TS),
            _op("cause", T),  # refresh (batch) or event (the stream)
        ),
        indexes=(("workspace_id", "segment"), ("workspace_id", "person_id")),
    ),
)


#: Personas (careloop.profiles.personas): each clustering run with its criterion scores and the clusters'
#: generated descriptions, and the person -> cluster assignments of the latest run.
PERSONA_TABLES: tuple[Table, ...] = (
    Table(
        "persona_run",
        (
            WORKSPACE,
            _op("run_id", T, False),
            _op("seq", BI),  # 1, 2, ... in the order runs were stored: the latest has the largest
            _op("computed_at", TS),
            _op("as_of", TS),  # the traits' as-of day
            _op("k", BI),
            _op("criterion", T),  # how k was chosen (docs/personas.md)
            _op("scores", J),  # criterion score per k tried
            _op("persons", BI),
            _op("features", J),  # the columns, their transform and imputation
            _op("clusters", J),  # size, share, defining traits, descriptions (zh, en)
            _op("settings", J),  # seed, sample size, k range, algorithm
            _op("seconds", D),
        ),
        unique=("workspace_id", "run_id"),
    ),
    Table(
        "persona_member",
        (
            WORKSPACE,
            _op("run_id", T, False),
            _op("person_id", T, False),
            _op("cluster", BI, False),
            _op("distance", D),  # to the cluster's centre, in standardised units
        ),
        unique=("workspace_id", "run_id", "person_id"),
        indexes=(("workspace_id", "person_id"),),
    ),
)


#: Journeys (careloop.journeys) and the send ledger (careloop.messaging): definitions with versions, one
#: state row per patient entry (durable: the worker resumes from it), the step log, every send attempt with
#: its idempotency key and outcome (sent, blocked with the reason, dead-lettered), the content library with
#: approval status, opt-outs (unsubscribe replies, the PIPL Art 24 personalisation switch) and staff tasks.
JOURNEY_TABLES: tuple[Table, ...] = (
    Table(
        "journey",
        (
            WORKSPACE,
            _op("name", T, False),
            _op("version", BI),
            _op("status", T),  # draft | published | paused | archived
            _op("definition", J),
            _op("created_at", TS),
            _op("updated_at", TS),
            _op("published_at", TS),
        ),
        unique=("workspace_id", "name"),
    ),
    Table(
        "journey_entry",
        (
            WORKSPACE,
            _op("entry_id", T, False),
            _op("journey", T, False),
            _op("version", BI),
            _op("person_id", T, False),
            _op("node", T),  # the node the entry is at (or finished on)
            _op("status", T),  # active | waiting | done | exited | failed
            _op("wake_at", TS),  # when a waiting entry is due
            _op("wait_event", T),  # the event a waiting entry listens for
            _op("arm", T),  # split arm or 'holdout'
            _op("entered_at", TS),
            _op("updated_at", TS),
            _op("finished_at", TS),
            _op("exit_reason", T),  # goal | end | no_edge | holdout | removed | error
            _op("lease_owner", T),  # the worker holding the entry
            _op("lease_until", TS),  # ... until then (a crashed worker's entries are taken over after it)
            _op("context", J),  # trigger payload, branch results
        ),
        unique=("workspace_id", "entry_id"),
        indexes=(("workspace_id", "status", "wake_at"), ("workspace_id", "person_id")),
    ),
    Table(
        "journey_step",
        (
            WORKSPACE,
            _op("entry_id", T, False),
            _op("journey", T),
            _op("node", T),
            _op("kind", T),
            _op("outcome", T),
            _op("at", TS),
            _op("detail", J),
        ),
        indexes=(("workspace_id", "journey", "node"), ("workspace_id", "entry_id")),
    ),
    Table(
        "message_send",
        (
            WORKSPACE,
            _op("idempotency_key", T, False),
            _op("entry_id", T),
            _op("journey", T),
            _op("node", T),
            _op("person_id", T, False),
            _op("channel", T),
            _op("purpose", T),  # service | marketing | care | research
            _op("content_id", T),
            _op("content_version", BI),
            _op("status", T),  # pending | sent | blocked | failed | dead
            _op("reason", T),  # why blocked / failed
            _op("attempts", BI),
            _op("next_attempt_at", TS),
            _op("provider_message_id", T),
            _op("segments", BI),  # SMS segments billed
            _op("created_at", TS),
            _op("sent_at", TS),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "idempotency_key"),
        indexes=(("workspace_id", "person_id"), ("workspace_id", "status", "next_attempt_at")),
    ),
    Table(
        "content_item",
        (
            WORKSPACE,
            _op("content_id", T, False),
            _op("version", BI, False),
            _op("status", T),  # draft | in_review | approved | rejected | retired
            _op("kind", T),  # sms | wechat | app_push | email | task
            _op("purpose", T),
            _op("title", T),
            _op("body", J),  # {"zh": ..., "en": ...} and for email {"subject_zh": ...}
            _op("template_code", T),  # provider-side template id (SMS, WeChat)
            _op("approved_by", T),
            _op("approved_at", TS),
            _op("expires_at", TS),
            _op("created_at", TS),
        ),
        unique=("workspace_id", "content_id", "version"),
    ),
    Table(
        "contact_optout",
        (
            WORKSPACE,
            _op("person_id", T, False),
            _op("scope", T, False),  # marketing | all | personalisation
            _op("channel", T, False),  # a channel kind, or * for every channel
            _op("source", T),  # sms_reply | email_link | api | cli
            _op("reason", T),
            _op("at", TS),
        ),
        unique=("workspace_id", "person_id", "scope", "channel"),
    ),
    Table(
        "staff_task",
        (
            WORKSPACE,
            _op("task_id", T, False),
            _op("entry_id", T),
            _op("journey", T),
            _op("person_id", T, False),
            _op("kind", T),  # e.g. follow_up_call
            _op("title", T),
            _op("assignee", T),
            _op("due_at", TS),
            _op("status", T),  # open | done | cancelled
            _op("outcome", T),
            _op("created_at", TS),
            _op("completed_at", TS),
        ),
        unique=("workspace_id", "task_id"),
        indexes=(("workspace_id", "assignee", "status"),),
    ),
)


#: Channels (careloop.channels): the outbox channel — the demo default and a relay point for systems that send
#: themselves — writes each message here once per idempotency key. The address is never stored; subject and
#: body may carry health information (a drug name, an appointment), so they are graded health / sensitive.
MESSAGING_TABLES: tuple[Table, ...] = (
    Table(
        "outbox_message",
        (
            WORKSPACE,
            _op("idempotency_key", T, False),
            _op("person_id", T, False),
            _op("channel", T),  # the channel instance's name
            _op("kind", T),  # the kind it stands in for: outbox, or sms | wechat | app_push | email
            Column("subject", T, data_class=DataClass.HEALTH.value, level=3),
            Column("body", T, data_class=DataClass.HEALTH.value, level=3),
            _op("template_code", T),
            Column("template_params", J, data_class=DataClass.HEALTH.value, level=3),
            _op("purpose", T),
            _op("created_at", TS),
        ),
        unique=("workspace_id", "idempotency_key"),
        indexes=(("workspace_id", "person_id"),),
    ),
)


#: Access control (careloop.privacy.auth): console users (argon2 password hashes), API keys for machines
#: (SHA-256 of the secret, looked up by a key id) and failed-login counters. Per workspace: a user or key
#: acts in the workspace that holds it. Signing keys for tokens are never stored (settings / key ring).
AUTH_TABLES: tuple[Table, ...] = (
    Table(
        "app_user",
        (
            WORKSPACE,
            _op("username", T, False),
            Column("password_hash", T, level=4),  # argon2id, PHC string
            _op("role", T, False),
            _op("disabled", B),
            _op("created_at", TS),
            _op("updated_at", TS),
            _op("password_changed_at", TS),
            _op(
                "tokens_after", TS
            ),  # tokens issued before this are refused (disable, role or password change)
            _op("last_login_at", TS),
        ),
        unique=("workspace_id", "username"),
    ),
    Table(
        "api_key",
        (
            WORKSPACE,
            _op("key_id", T, False),  # the public prefix a key is looked up by
            _op("name", T, False),
            Column("secret_hash", T, level=4),  # SHA-256 of the whole key; the key is shown once
            _op("role", T, False),
            _op("scopes", J),  # permissions the key is narrowed to (null: the role's)
            _op("created_at", TS),
            _op("created_by", T),
            _op("expires_at", TS),
            _op("revoked_at", TS),
            _op("last_used_at", TS),
        ),
        unique=("workspace_id", "key_id"),
        indexes=(("workspace_id", "name"),),
    ),
    Table(
        "login_throttle",
        (
            WORKSPACE,
            _op("username", T, False),  # counted whether or not the user exists (no user enumeration)
            _op("failures", BI),
            _op("last_failure_at", TS),
            _op("locked_until", TS),
        ),
        unique=("workspace_id", "username"),
    ),
)


#: Audit chain and key rotation (careloop.privacy.audit, careloop.privacy.rotation): the append-only,
#: hash-chained audit log of each workspace (``detail`` is the canonical JSON text that was hashed, kept as
#: text so no engine re-formats it), its signed checkpoints, the chain head that appends lock (one row per
#: workspace), and the key rotations of the installation (the key ring is not per workspace).
AUDIT_TABLES: tuple[Table, ...] = (
    Table(
        "audit_entry",
        (
            WORKSPACE,
            _op("seq", BI, False),  # 1, 2, ... per workspace, no gaps
            _op("at", TS, False),
            _op("actor", T, False),  # cli:<os user>, api:<user or key>, worker:<name>
            _op("role", T),
            _op("action", T, False),  # careloop.privacy.audit.ACTIONS
            _op("target_kind", T),  # person, record, segment, key, send_batch, ...
            _op("target_id", T),  # a person id or pseudonymous reference, never an identifier
            _op("purpose", T),
            _op("detail", T),  # canonical JSON (sorted keys): counts and ids only
            _op("prev_hash", T, False),
            _op("hash", T, False),  # SHA-256 over every field above and prev_hash
        ),
        unique=("workspace_id", "seq"),
        indexes=(("workspace_id", "target_id"), ("workspace_id", "action")),
    ),
    Table(
        "audit_checkpoint",
        (
            WORKSPACE,
            _op("seq", BI, False),  # the entry signed
            _op("hash", T, False),  # that entry's hash
            _op("at", TS),
            _op("key_id", T),  # fingerprint of the signing key
            _op("signature", T, False),  # HMAC-SHA256 with the key ring's audit key
        ),
        unique=("workspace_id", "seq"),
    ),
    Table(
        "audit_head",
        (WORKSPACE, _op("seq", BI, False), _op("hash", T, False), _op("updated_at", TS)),
        unique=("workspace_id",),
    ),
    Table(
        "key_rotation",
        (
            _op("rotation_id", T, False),
            _op("to_key", T, False),  # the key everything is re-encrypted to
            _op("from_keys", J),  # the key ids it replaces
            _op("status", T),  # running | done | abandoned
            _op("actor", T),
            _op("started_at", TS),
            _op("finished_at", TS),
            _op("progress", J),  # table.column -> ciphertexts re-encrypted
            _op("rows", BI),
        ),
        unique=("rotation_id",),
        scoped=False,
    ),
)


#: The consent ledger (careloop.privacy.consent): append-only — a withdrawal, a refusal or a correction is a
#: new record, never an UPDATE or DELETE. One record per person x purpose (x recipient) x data category x
#: channel; NULL channel = every channel, NULL category (withdrawals and refusals only) = every category.
#: `proof` references the proof (form id, signature hash), never personal data in clear.
CONSENT_TABLES: tuple[Table, ...] = (
    Table(
        "consent_record",
        (
            WORKSPACE,
            _op("record_id", T, False),
            _op("person_id", T, False),
            _op(
                "purpose", T, False
            ),  # care_follow_up | service | marketing | research | third_party_sharing | ...
            _op("recipient", T),  # the named third party of a sharing consent
            _op("data_category", T),  # personal | health | location | ...
            _op("channel", T),  # sms | wechat | app_push | email | phone_call
            _op("action", T, False),  # grant | withdraw | refuse
            _op("sensitive", B, False),  # a separate consent for sensitive personal information (PIPL Art 29)
            _op("by_guardian", B, False),  # given by the guardian of a child under 14 (PIPL Art 31)
            _op("guardian_relation", T),
            _op("notice_version", T),  # the version of the notice text shown
            _op("source", T, False),  # wechat_form | app | paper | api | import | cli
            Column("proof", T, level=3),
            _op("effective_at", TS, False),  # when the person gave, withdrew or refused it
            _op("recorded_at", TS, False),  # when careloop appended it
            _op("expires_at", TS),
            _op("recorded_by", T),  # the actor (user, API key, import)
            _op("run_id", T),  # the import run that wrote it
        ),
        unique=("workspace_id", "record_id"),
        indexes=(("workspace_id", "person_id"),),
    ),
)


#: The web console (careloop.console): answers to the capability self-assessment (seed 002's five dimensions:
#: 患者体验, 数字化触点, 数据应用, 营销技术, 团队能力), one row per submitted questionnaire. Organisational
#: data only: the answers are levels 1-5, never anything about a patient.
CONSOLE_TABLES: tuple[Table, ...] = (
    Table(
        "capability_assessment",
        (
            WORKSPACE,
            _op("assessment_id", T, False),
            _op("title", T),  # what was assessed (a hospital, a department), as the user typed it
            _op("created_at", TS),
            _op("created_by", T),  # the console user who submitted it
            _op("questionnaire", T),  # version of the question set (careloop.console.assessment)
            _op("answers", J),  # question id -> level 1..5
            _op("scores", J),  # dimension -> mean level
        ),
        unique=("workspace_id", "assessment_id"),
    ),
)


#: Data-subject requests (careloop.privacy.dsr, PIPL Art 44-47): the register with its deadline and the
#: deletion certificate, and the suppression list that keeps erased persons from coming back on re-ingest.
#: The register holds no identifier in clear (the person id is pseudonymous; notes are the operator's); the
#: suppression list holds only keyed blind indexes (HMAC-SHA256 under the key ring's blind-index key).
DSR_TABLES: tuple[Table, ...] = (
    Table(
        "dsr_request",
        (
            WORKSPACE,
            _op("request_id", T, False),
            _op("person_id", T, False),
            _op("kind", T, False),  # access | copy | correction | deletion
            _op("received_at", TS, False),
            _op("due_at", TS, False),  # received_at + CARELOOP_DSR_DUE_DAYS (15 by default)
            _op("status", T, False),  # open | done (carried out, not yet closed) | closed | rejected
            _op("closed_at", TS),
            _op("actor", T),  # who opened it
            _op("notes", J),  # [{at, actor, note}]: the operator's notes, no identifiers
            _op("result", J),  # what was done: export digest, corrected fields, deleted counts
            _op("certificate", J),  # deletion certificate (canonical JSON object)
            _op("certificate_sha256", T),
            _op("updated_at", TS),
        ),
        unique=("workspace_id", "request_id"),
        indexes=(("workspace_id", "person_id"), ("workspace_id", "status", "due_at")),
    ),
    Table(
        "dsr_suppression",
        (
            WORKSPACE,
            _op("kind", T, False),  # record | id_number | phone_name | identifier | event_id
            _op("value_hash", T, False),  # keyed blind index, never the value
            _op("request_id", T, False),  # the deletion request that put it here
            _op("created_at", TS),
        ),
        unique=("workspace_id", "kind", "value_hash"),
        indexes=(("workspace_id", "value_hash"),),
    ),
)


def entity_tables() -> tuple[Table, ...]:
    return tuple(entity_table(n) for n in entities())


@cache
def all_tables() -> tuple[Table, ...]:
    """Every table careloop's current code expects, in creation order (fixed while the process runs)."""
    return (
        OPERATIONAL_TABLES
        + entity_tables()
        + IDENTITY_TABLES
        + EVENT_TABLES
        + PROFILE_TABLES
        + PERSONA_TABLES
        + JOURNEY_TABLES
        + MESSAGING_TABLES
        + CONSENT_TABLES
        + AUDIT_TABLES
        + AUTH_TABLES
        + CONSOLE_TABLES
        + DSR_TABLES
    )


def table(name: str) -> Table:
    for t in all_tables():
        if t.name == name:
            return t
    raise KeyError(f"no table {name!r}")


@cache
def scoped_table_names() -> frozenset[str]:
    return frozenset(t.name for t in all_tables() if t.scoped)
