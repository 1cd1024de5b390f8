"""The audit chain: an append-only, hash-chained log of who did what to person-level data, per workspace.

Each `audit_entry` carries ``seq`` (1, 2, ... per workspace, no gaps), the time, the actor and role, an
action from `ACTIONS`, a target (a person id or another pseudonymous reference — never an identifier), the
purpose, a ``detail`` object (counts and ids; personal identifiers are refused) and two hashes:

    hash = SHA-256( orjson([1, workspace, seq, at, actor, role, action, target_kind, target_id, purpose,
                            detail, prev_hash]) )

``at`` is written as UTC ISO-8601 with microseconds, ``detail`` as canonical JSON text (sorted keys, no
spaces; stored as that text, so no engine re-formats it), ``prev_hash`` is the previous entry's hash
(``0`` * 64 for entry 1). Editing, deleting, inserting or reordering an entry breaks the chain at that
entry. Someone who can write the database could still re-hash every entry after an edit; the **signed
checkpoints** stop that: every `CHECKPOINT_EVERY` entries (and on demand, `careloop audit checkpoint`)
the entry's seq and hash are signed with HMAC-SHA256 under the key ring's audit key — a key that lives
with the encryption keys, never in the database — so a rewritten stretch no longer matches its next
checkpoint. `verify` recomputes all of it and reports the first break precisely.

Appends are serialised per workspace: the chain head (`audit_head`, one row per workspace) is read with
``SELECT ... FOR UPDATE`` on PostgreSQL (other processes wait) and under a process lock on DuckDB (one
process owns a DuckDB file); so ``seq`` has no gaps and every ``prev_hash`` is right. `AuditLog.append_many`
writes a batch in one transaction. Other modules call `audit_event`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from careloop.errors import PrivacyError, StorageError
from careloop.privacy.fields import FieldCipher, pii_kind
from careloop.storage.base import Backend
from careloop.storage.workspace import WorkspaceStore

GENESIS = "0" * 64
HASH_VERSION = 1
#: a signed checkpoint every this many entries (besides those made on demand)
CHECKPOINT_EVERY = 1000

#: The actions careloop records, with what each means. A family ``x.*`` allows any ``x.<name>``. Add new
#: actions here (the list is the documentation: docs/privacy.md shows it).
ACTIONS: dict[str, str] = {
    "read.patient": "a person's 360 (or an unlinked record's) was shown",
    "read.patients": "a look-up (by phone, ID number, ...) returned persons; one entry per person found",
    "read.list": "a list of persons was returned (segment members, look-alikes, tasks, a quarantined row; "
    "detail: what and rows)",
    "export": "person-level data left careloop (segment members, a file, a data-subject copy)",
    "change": "person-level data was changed by hand (a correction, a merge or split)",
    "identity.merge": "two persons were merged by hand",
    "identity.split": "a person's records were split by hand",
    "consent.grant": "a consent was given (or imported)",
    "consent.withdraw": "a consent was withdrawn",
    "optout": "a person opted out of messages or of personalisation",
    "send": "a dispatcher batch delivered messages (detail: counts per outcome and channel)",
    "model.fit": "a model was fitted on person-level data",
    "model.score": "a model scored persons",
    "login": "a user signed in",
    "login.failed": "a sign-in was refused",
    "logout": "a user signed out",
    "user.*": "a console user was created, changed, disabled or given another role",
    "apikey.*": "an API key was created or revoked",
    "dsr.*": "a data-subject request: dsr.access, dsr.copy, dsr.correct, dsr.delete, dsr.deadline",
    "retention.purge": "data past its retention period was purged",
    "key.rotate": "the field-encryption keys were rotated (phase started, resumed, finished)",
    "key.retire": "an old encryption key was removed from the key ring",
    "audit.checkpoint": "a checkpoint was signed on demand",
    "segment.*": "a segment definition was created or changed (segment.save; detail: version)",
    "journey.*": "a journey was saved as a draft or changed status: journey.save, journey.publish, "
    "journey.pause, journey.archive (detail: version)",
    "content.*": "a content version was written or moved: content.save, content.submit, content.approve, "
    "content.reject, content.retire (detail: version, signer)",
}

_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_MAX_TEXT = 200
_MAX_DETAIL = 16_384
_PHONE = re.compile(r"(\+?86|0086)?1[3-9]\d{9}")
_ID_NUMBER = re.compile(r"\d{17}[\dXx]|\d{15}")
_PHONE_NOISE = re.compile(r"[\s()\-.]")


def known_action(action: str) -> bool:
    return action in ACTIONS or f"{action.split('.', 1)[0]}.*" in ACTIONS


def cli_actor() -> str:
    """The actor of a command-line call: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "cli:unknown"


def patient_target(cipher: FieldCipher, ident: str, person_id: str | None) -> tuple[str, str]:
    """The audit target of a 360: the person id, or for an unlinked record its source and the blind
    index of its key (a record key can be a HIS number, an identifier; the index is not)."""
    if person_id is not None:
        return "person", person_id
    source, _, key = ident.strip().partition(":")
    return "record", f"{source}:{cipher.blind_index(key, 'identifier')}"


@dataclass(frozen=True)
class AuditEvent:
    """What to record (the log adds seq, time and hashes)."""

    actor: str
    action: str
    target_kind: str | None = None
    target_id: str | None = None
    purpose: str | None = None
    detail: Mapping[str, Any] | None = None
    role: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry; ``detail`` is the canonical JSON text that was hashed."""

    workspace: str
    seq: int
    at: datetime
    actor: str
    role: str | None
    action: str
    target_kind: str | None
    target_id: str | None
    purpose: str | None
    detail: str | None
    prev_hash: str
    hash: str

    def computed_hash(self, seq: int | None = None) -> str:
        """The hash this entry's content gives (at `seq` instead of its own, to tell a moved entry)."""
        return entry_hash(
            self.workspace,
            self.seq if seq is None else seq,
            self.at,
            self.actor,
            self.role,
            self.action,
            self.target_kind,
            self.target_id,
            self.purpose,
            self.detail,
            self.prev_hash,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target_kind": self.target_kind,
            "target_id": self.target_id,
            "purpose": self.purpose,
            "detail": orjson.loads(self.detail) if self.detail is not None else None,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Checkpoint:
    workspace: str
    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


def utc_text(at: datetime) -> str:
    """The time as it is hashed: UTC, ISO-8601, microseconds (naive times are taken as UTC)."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    workspace: str,
    seq: int,
    at: datetime,
    actor: str,
    role: str | None,
    action: str,
    target_kind: str | None,
    target_id: str | None,
    purpose: str | None,
    detail: str | None,
    prev_hash: str,
) -> str:
    payload = [
        HASH_VERSION,
        workspace,
        seq,
        utc_text(at),
        actor,
        role,
        action,
        target_kind,
        target_id,
        purpose,
        detail,
        prev_hash,
    ]
    return hashlib.sha256(orjson.dumps(payload)).hexdigest()


class ChainSigner:
    """Signs and checks checkpoints: HMAC-SHA256 under the key ring's audit key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise PrivacyError("the audit signing key must be at least 32 bytes")
        self._key = key
        self.key_id = "hs256:" + hashlib.sha256(b"careloop-audit-key-id:" + key).hexdigest()[:16]

    @classmethod
    def from_settings(cls) -> ChainSigner:
        from careloop.config import get_settings
        from careloop.privacy.keys import load_keyring

        s = get_settings()
        return cls(load_keyring(s.key_file, environment=s.environment).audit_signing_key)

    def sign(self, workspace: str, seq: int, entry_hash_: str, at: datetime) -> str:
        payload = orjson.dumps([HASH_VERSION, "checkpoint", workspace, seq, entry_hash_, utc_text(at)])
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def valid(self, cp: Checkpoint) -> bool:
        return hmac.compare_digest(cp.signature, self.sign(cp.workspace, cp.seq, cp.hash, cp.at))


# ---- writing ------------------------------------------------------------------------------------


def _looks_like_identifier(text: str) -> bool:
    bare = _PHONE_NOISE.sub("", text.strip())
    return bool(_PHONE.fullmatch(bare) or _ID_NUMBER.fullmatch(bare))


def _check_text(value: str | None, what: str, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"an audit entry needs {what}")
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"audit {what} must be a non-empty string")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"audit {what} is longer than {_MAX_TEXT} characters")
    if _looks_like_identifier(value):
        raise PrivacyError(
            f"audit {what} looks like a phone or ID number; audit entries name persons by person id "
            "(or a pseudonymous reference), never by an identifier"
        )


def _check_detail(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"audit detail keys must be strings (at {path or 'top level'})")
            kind = pii_kind(k)
            if kind is not None:
                raise PrivacyError(
                    f"audit detail key {path + k!r} names a personal identifier ({kind}); record person "
                    "ids, counts or references, never the identifier (a value that is not personal — an "
                    "API key's or a segment's name — goes under a key that says so, e.g. key_name)"
                )
            _check_detail(v, f"{path}{k}.")
    elif isinstance(value, list | tuple):
        for v in value:
            _check_detail(v, path)
    elif isinstance(value, str):
        if _looks_like_identifier(value):
            raise PrivacyError(
                f"audit detail {path.rstrip('.') or 'value'} looks like a phone or ID number; details hold "
                "counts and ids, never personal identifiers"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"audit detail {path.rstrip('.')}: {type(value).__name__} is not JSON")


def canonical_detail(detail: Mapping[str, Any] | None) -> str | None:
    """The detail as hashed and stored: JSON, sorted keys, no whitespace; identifiers refused."""
    if detail is None:
        return None
    if not isinstance(detail, Mapping):
        raise ValueError("audit detail must be a mapping (a JSON object)")
    _check_detail(detail, "")
    text = orjson.dumps(detail, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    if len(text) > _MAX_DETAIL:
        raise ValueError(f"audit detail is larger than {_MAX_DETAIL:,} bytes; record counts, not lists")
    return text


def _validated(ev: AuditEvent) -> tuple[AuditEvent, str | None]:
    if not _ACTION.match(ev.action or ""):
        raise ValueError(f"audit action {ev.action!r} is not a dotted lower-case name like read.patient")
    if not known_action(ev.action):
        raise ValueError(
            f"unknown audit action {ev.action!r}; use one of {', '.join(sorted(ACTIONS))} "
            "or add it to careloop.privacy.audit.ACTIONS"
        )
    _check_text(ev.actor, "actor", required=True)
    _check_text(ev.role, "role")
    _check_text(ev.target_kind, "target kind")
    _check_text(ev.target_id, "target id")
    _check_text(ev.purpose, "purpose")
    return ev, canonical_detail(ev.detail)


_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
#: DuckDB: the head each chain had after this process's last append (a guess, checked on use)
_HEADS: dict[tuple[str, ...], tuple[int, str]] = {}
_LOCKS_GUARD = threading.Lock()
_CONFLICT_RETRIES = 50
_INSERT_ROWS = 500


def _chain_key(backend: Backend, workspace: str) -> tuple[str, ...]:
    """Names a chain in this process: every Backend object on one DuckDB file shares it."""
    path = getattr(backend, "path", None)
    where = str(Path(path).resolve()) if path and path != ":memory:" else f"mem:{id(backend)}"
    return (backend.dialect.name, where, workspace)


def _chain_lock(key: tuple[str, ...]) -> threading.Lock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.Lock()
        return lock


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class AuditLog:
    """The audit chain of one workspace."""

    def __init__(
        self,
        store: WorkspaceStore,
        *,
        signer: ChainSigner | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.store = store
        self.backend = store.backend
        self.workspace = store.workspace
        self.checkpoint_every = checkpoint_every
        self._signer = signer
        self._pg = self.backend.dialect.name == "postgres"
        self._key = _chain_key(self.backend, self.workspace)

    @property
    def signer(self) -> ChainSigner:
        if self._signer is None:
            self._signer = ChainSigner.from_settings()
        return self._signer

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    # ---- appending ------------------------------------------------------------------------------
    def append(self, event: AuditEvent) -> AuditEntry:
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Append events in order, in one transaction; returns the stored entries."""
        prepared = [_validated(e) for e in events]
        if not prepared:
            return []
        result: list[AuditEntry] = self._serialised(lambda: self._append(prepared))
        return result

    def checkpoint(self) -> Checkpoint | None:
        """Sign the chain's current head now (None when the chain is empty); idempotent."""
        result: Checkpoint | None = self._serialised(self._checkpoint_head)
        return result

    def _serialised(self, fn: Callable[[], Any]) -> Any:
        # PostgreSQL: the head row's FOR UPDATE serialises processes (and the backend's one connection its
        # threads). DuckDB: a process lock (one process writes a DuckDB file); should a caller's own open
        # transaction race a concurrent append, DuckDB refuses the second head update as a conflict and the
        # append is tried again once the other has committed.
        lock: Any = _NoLock() if self._pg else _chain_lock(self._key)
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with lock, self.backend.transaction():
                    return fn()
            except StorageError as e:
                _HEADS.pop(self._key, None)
                if self._pg or "Conflict" not in str(e) or attempt == _CONFLICT_RETRIES - 1:
                    raise
                time.sleep(min(0.002 * 2**attempt, 0.2))
            except BaseException:
                _HEADS.pop(self._key, None)
                raise
        raise AssertionError("unreachable")

    def _head(self) -> tuple[int, str]:
        """The chain head (seq, hash), locked for this transaction; created on first use."""
        lock = " FOR UPDATE" if self._pg else ""
        select = f"SELECT seq, hash FROM audit_head WHERE workspace_id = ?{lock}"  # noqa: S608 - fixed fragments
        rows = self.backend.fetch_rows(self._sql(select), [self.workspace])
        if rows:
            return int(rows[0][0]), str(rows[0][1])
        # first append (or a head row that went missing): start from the last stored entry, if any
        last = self.backend.fetch_rows(
            self._sql("SELECT seq, hash FROM audit_entry WHERE workspace_id = ? ORDER BY seq DESC LIMIT 1"),
            [self.workspace],
        )
        seq, h = (int(last[0][0]), str(last[0][1])) if last else (0, GENESIS)
        conflict = " ON CONFLICT (workspace_id) DO NOTHING" if self._pg else ""
        self.backend.execute(
            self._sql(
                f"INSERT INTO audit_head (workspace_id, seq, hash, updated_at) VALUES (?, ?, ?, ?){conflict}"  # noqa: S608 - fixed fragments
            ),
            [self.workspace, seq, h, self.backend.clock.now()],
        )
        rows = self.backend.fetch_rows(self._sql(select), [self.workspace])
        return int(rows[0][0]), str(rows[0][1])

    def _chain(
        self, prepared: list[tuple[AuditEvent, str | None]], seq: int, prev: str, at: datetime
    ) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        for ev, detail in prepared:
            seq += 1
            h = entry_hash(
                self.workspace,
                seq,
                at,
                ev.actor,
                ev.role,
                ev.action,
                ev.target_kind,
                ev.target_id,
                ev.purpose,
                detail,
                prev,
            )
            out.append(
                AuditEntry(
                    self.workspace,
                    seq,
                    at,
                    ev.actor,
                    ev.role,
                    ev.action,
                    ev.target_kind,
                    ev.target_id,
                    ev.purpose,
                    detail,
                    prev,
                    h,
                )
            )
            prev = h
        return out

    def _append(self, prepared: list[tuple[AuditEvent, str | None]]) -> list[AuditEntry]:
        at = self.backend.clock.now()
        move = "UPDATE audit_head SET seq = ?, hash = ?, updated_at = ? WHERE workspace_id = ?"
        guess = None if self._pg else _HEADS.get(self._key)
        chained: list[AuditEntry] | None = None
        if guess is not None:
            # DuckDB fast path: move the head only if it is still where this process left it (one statement
            # instead of a read and a write); otherwise nothing was written yet and the head is read
            chained = self._chain(prepared, *guess, at)
            moved = self.backend.fetch_rows(
                move + " AND seq = ? AND hash = ? RETURNING seq",
                [chained[-1].seq, chained[-1].hash, at, self.workspace, *guess],
            )
            if not moved:
                chained = None
        if chained is None:
            chained = self._chain(prepared, *self._head(), at)
            self.backend.execute(self._sql(move), [chained[-1].seq, chained[-1].hash, at, self.workspace])
        cols = 'workspace_id, seq, "at", actor, role, action, target_kind, target_id, purpose, detail, prev_hash, hash'
        rows = [
            (
                self.workspace,
                e.seq,
                e.at,
                e.actor,
                e.role,
                e.action,
                e.target_kind,
                e.target_id,
                e.purpose,
                e.detail,
                e.prev_hash,
                e.hash,
            )
            for e in chained
        ]
        for start in range(0, len(rows), _INSERT_ROWS):
            chunk = rows[start : start + _INSERT_ROWS]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            self.backend.execute(
                self._sql(f"INSERT INTO audit_entry ({cols}) VALUES {values}"),  # noqa: S608 - placeholders only
                [v for r in chunk for v in r],
            )
        for e in chained:
            if e.seq % self.checkpoint_every == 0:
                self._sign(e.seq, e.hash, at)
        if not self._pg:
            _HEADS[self._key] = (chained[-1].seq, chained[-1].hash)
        return chained

    def _sign(self, seq: int, h: str, at: datetime) -> Checkpoint:
        cp = Checkpoint(
            self.workspace, seq, h, at, self.signer.key_id, self.signer.sign(self.workspace, seq, h, at)
        )
        self.backend.execute(
            self._sql(
                'INSERT INTO audit_checkpoint (workspace_id, seq, hash, "at", key_id, signature) '
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            [cp.workspace, cp.seq, cp.hash, cp.at, cp.key_id, cp.signature],
        )
        return cp

    def _checkpoint_head(self) -> Checkpoint | None:
        seq, h = self._head()
        if seq == 0:
            return None
        have = checkpoints(self.store, since_seq=seq)
        if have:
            return have[0]
        return self._sign(seq, h, self.backend.clock.now())


_LOGS: weakref.WeakKeyDictionary[Backend, dict[str, AuditLog]] = weakref.WeakKeyDictionary()
_LOGS_GUARD = threading.Lock()


def audit_log(store: WorkspaceStore) -> AuditLog:
    """The (cached) audit log of a store's workspace."""
    with _LOGS_GUARD:
        per = _LOGS.setdefault(store.backend, {})
        log = per.get(store.workspace)
        if log is None:
            log = per[store.workspace] = AuditLog(store)
        return log


def audit_event(
    store: WorkspaceStore,
    *,
    actor: str,
    action: str,
    target_kind: str | None,
    target_id: str | None,
    purpose: str | None = None,
    detail: Mapping[str, Any] | None = None,
    role: str | None = None,
) -> AuditEntry:
    """Append one entry to the workspace's audit chain (what other modules call)."""
    return audit_log(store).append(
        AuditEvent(
            actor=actor,
            action=action,
            target_kind=target_kind,
            target_id=target_id,
            purpose=purpose,
            detail=detail,
            role=role,
        )
    )


def audit_config_change(
    store: WorkspaceStore,
    action: str,
    target_kind: str,
    target_id: str,
    detail: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
    role: str | None = None,
) -> AuditEntry:
    """Record a change of configuration (a segment, journey or content version); the actor defaults to
    the command-line user, so library calls from commands need not name one."""
    return audit_event(
        store,
        actor=actor or cli_actor(),
        role=role,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        detail=detail,
    )


def audit_patient_read(
    store: WorkspaceStore,
    cipher: FieldCipher,
    ident: str,
    person_id: str | None,
    *,
    actor: str,
    via: str,
    viewer: str | None = None,
    role: str | None = None,
) -> AuditEntry:
    """Record that a patient 360 was shown (`via` cli or api; `viewer` the masking it was shown with)."""
    kind, target = patient_target(cipher, ident, person_id)
    return audit_event(
        store,
        actor=actor,
        role=role,
        action="read.patient",
        target_kind=kind,
        target_id=target,
        detail={"via": via, "viewer": viewer},
    )


def audit_lookup(
    store: WorkspaceStore,
    cipher: FieldCipher,
    found: Sequence[Mapping[str, Any]],
    *,
    by: str,
    actor: str,
    via: str,
    role: str | None = None,
) -> list[AuditEntry]:
    """Record a look-up (by phone, ID number, ...): one entry per person or record it returned (`found`:
    PatientView.find's summaries), or one entry saying it returned nothing. The value looked up is never
    recorded, only its kind."""
    detail = {"via": via, "by": by, "matches": len(found)}
    events = [
        AuditEvent(
            actor,
            "read.patients",
            *patient_target(cipher, f["show"], f["person_id"]),
            detail=detail,
            role=role,
        )
        for f in found
    ] or [AuditEvent(actor, "read.patients", "lookup", None, detail=detail, role=role)]
    return audit_log(store).append_many(events)


# ---- reading ------------------------------------------------------------------------------------

_ENTRY_COLUMNS = 'seq, "at", actor, role, action, target_kind, target_id, purpose, detail, prev_hash, hash'


def _entry(workspace: str, r: Sequence[Any]) -> AuditEntry:
    return AuditEntry(workspace, int(r[0]), r[1], *r[2:])


def entries(
    store: WorkspaceStore,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Entries newest first. `action` may end in ``*`` (``dsr.*``, ``read*``) to match a prefix."""
    where: list[str] = []
    params: dict[str, Any] = {"lim": int(limit)}
    if actor is not None:
        where.append("actor = :actor")
        params["actor"] = actor
    if action is not None:
        if action.endswith("*"):
            where.append("starts_with(action, :action)")
            params["action"] = action[:-1]
        else:
            where.append("action = :action")
            params["action"] = action
    if target is not None:
        where.append("target_id = :target")
        params["target"] = target
    if since is not None:
        where.append('"at" >= :since')
        params["since"] = since
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    rows = store.tuples(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_entry{cond} ORDER BY seq DESC LIMIT :lim",  # noqa: S608 - fixed fragments
        params,
    )
    return [_entry(store.workspace, r) for r in rows]


def checkpoints(store: WorkspaceStore, *, since_seq: int = 0) -> list[Checkpoint]:
    rows = store.tuples(
        'SELECT seq, hash, "at", key_id, signature FROM audit_checkpoint WHERE seq >= :s ORDER BY seq',
        {"s": since_seq},
    )
    return [Checkpoint(store.workspace, int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _scan(store: WorkspaceStore, page: int) -> Iterator[AuditEntry]:
    """Every entry in (seq, hash) order, a page at a time (duplicated seqs included)."""
    seq, h = -1, ""
    while True:
        rows = store.tuples(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entry WHERE seq > :s OR (seq = :s AND hash > :h) "  # noqa: S608 - fixed fragments
            "ORDER BY seq, hash LIMIT :lim",
            {"s": seq, "h": h, "lim": page},
        )
        for r in rows:
            yield _entry(store.workspace, r)
        if len(rows) < page:
            return
        seq, h = int(rows[-1][0]), str(rows[-1][10])


# ---- verifying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One break in the chain. `seq` is where (None: about the chain as a whole)."""

    seq: int | None
    kind: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class VerifyReport:
    workspace: str
    entries: int = 0
    last_seq: int = 0
    head_seq: int | None = None
    checkpoints: int = 0
    last_checkpoint: int | None = None
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    #: problems found beyond the first `MAX_PROBLEMS` (counted, not kept)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last checkpoint: protected by the chain only until the next checkpoint."""
        return self.last_seq - (self.last_checkpoint or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "ok": self.ok,
            "entries": self.entries,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "unsigned_tail": self.unsigned_tail,
            "first_problem": self.first.as_dict() if self.first else None,
            "problems": [p.as_dict() for p in self.problems[:100]],
            "problems_total": len(self.problems) + self.more_problems,
            "seconds": round(self.seconds, 3),
        }


#: problems a report keeps (the rest are counted); entries checked for having been moved from another seq
MAX_PROBLEMS = 10_000
_MOVED_CHECKS = 50


def _written_as(e: AuditEntry, window: int = 1000) -> int | None:
    """The seq an entry was written at, when its content hashes right at another seq (it was moved)."""
    for delta in range(1, window + 1):
        for s in (e.seq + delta, e.seq - delta):
            if s >= 1 and e.computed_hash(s) == e.hash:
                return s
    return None


def verify(store: WorkspaceStore, *, signer: ChainSigner | None = None, page: int = 50_000) -> VerifyReport:
    """Recompute the workspace's chain and checkpoint signatures; problems in seq order, first = first break."""
    started = time.perf_counter()
    signer = signer or ChainSigner.from_settings()
    ws = store.workspace
    report = VerifyReport(ws)
    found: list[tuple[int, int, Problem]] = []  # (seq or +inf, order, problem)

    moved_checks = 0

    def problem(seq: int | None, kind: str, message: str) -> None:
        if len(found) >= MAX_PROBLEMS:
            report.more_problems += 1
            return
        found.append((seq if seq is not None else 2**62, len(found), Problem(seq, kind, message)))

    cps = {cp.seq: cp for cp in checkpoints(store)}
    report.checkpoints = len(cps)
    report.last_checkpoint = max(cps) if cps else None
    for cp in cps.values():
        if cp.key_id != signer.key_id:
            problem(
                cp.seq,
                "checkpoint_key",
                f"checkpoint at {cp.seq:,}: signed with audit key {cp.key_id}, not this key ring's "
                f"{signer.key_id}; verify with the key file that signed it",
            )
        elif not signer.valid(cp):
            problem(
                cp.seq,
                "checkpoint_signature",
                f"checkpoint at {cp.seq:,}: signature invalid — the checkpoint was forged or altered",
            )
    head_rows = store.tuples("SELECT seq, hash FROM audit_head")
    head = (int(head_rows[0][0]), str(head_rows[0][1])) if head_rows else None
    report.head_seq = head[0] if head else None

    expected_seq, expected_prev = 1, GENESIS
    last_cp_ok = 0
    last: AuditEntry | None = None
    it = _scan(store, page)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        report.entries += 1
        n = cur.seq
        if n < expected_seq:
            problem(
                n,
                "duplicate",
                f"entry {n:,} appears more than once — an entry was inserted or copied",
            )
            cur = nxt
            continue
        if n > expected_seq:
            gap = (
                f"entry {expected_seq:,}" if n == expected_seq + 1 else f"entries {expected_seq:,}–{n - 1:,}"
            )
            problem(expected_seq, "missing", f"{gap} missing (seq gap) — deleted from the log")
            expected_prev = cur.prev_hash  # resynchronise: report the gap once
        computed = cur.computed_hash()
        expected_prev_for_next = cur.hash
        if computed != cur.hash:
            successor: str | None
            if nxt is not None and nxt.seq == n + 1:
                successor = nxt.prev_hash
            elif head is not None and head[0] == n:
                successor = head[1]
            else:
                successor = cps[n].hash if n in cps else None
            moved = None
            if successor != computed and moved_checks < _MOVED_CHECKS:  # bounded: each costs 2,000 hashes
                moved_checks += 1
                moved = _written_as(cur)
            if successor == computed:
                problem(
                    n, "hash_changed", f"entry {n:,}: its stored hash was changed (its content is intact)"
                )
                expected_prev_for_next = computed
            elif moved is not None:
                problem(
                    n,
                    "reordered",
                    f"entry {n:,}: holds what was written as entry {moved:,} — entries were reordered",
                )
            else:
                problem(n, "hash_mismatch", f"entry {n:,}: hash mismatch — its content was changed")
        elif cur.prev_hash != expected_prev:
            problem(
                n,
                "chain_break",
                f"entry {n:,}: does not chain to entry {n - 1:,} (prev_hash differs) — it was inserted, "
                "or the entry before it was replaced",
            )
        at_cp = cps.get(n)
        if at_cp is not None:
            if at_cp.hash != computed:
                problem(
                    n,
                    "checkpoint_mismatch",
                    f"checkpoint at {n:,}: entry {n:,} no longer has the signed hash — entries "
                    f"{last_cp_ok + 1:,}–{n:,} were rewritten",
                )
            else:
                last_cp_ok = n
        expected_seq, expected_prev = n + 1, expected_prev_for_next
        last = cur
        cur = nxt
    report.last_seq = last.seq if last else 0
    for seq in sorted(s for s in cps if s > report.last_seq):
        problem(
            seq,
            "truncated",
            f"checkpoint at {seq:,}: entry {seq:,} is missing — the log was cut after entry {report.last_seq:,}",
        )
        break
    if head is None:
        if last is not None:
            problem(None, "head_missing", "the chain head row is missing (it was deleted)")
    elif head[0] > report.last_seq:
        problem(
            report.last_seq + 1,
            "truncated",
            (
                f"entry {head[0]:,} missing"
                if head[0] == report.last_seq + 1
                else f"entries {report.last_seq + 1:,}–{head[0]:,} missing"
            )
            + f" at the end (the chain head says {head[0]:,}) — the log was cut",
        )
    elif head[0] < report.last_seq:
        problem(
            head[0] + 1,
            "appended_outside",
            (
                f"entry {report.last_seq:,} was"
                if head[0] + 1 == report.last_seq
                else f"entries {head[0] + 1:,}–{report.last_seq:,} were"
            )
            + f" added outside careloop (the chain head says {head[0]:,})",
        )
    elif last is not None and head[1] != last.hash:
        problem(None, "head_mismatch", f"the chain head's hash differs from entry {last.seq:,}'s")
    report.problems = [p for _, _, p in sorted(found, key=lambda x: (x[0], x[1]))]
    report.seconds = time.perf_counter() - started
    return report
