"""Key rotation: a new data key, every ciphertext re-encrypted to it in batches, resumable, verified.

`KeyRotation.run` adds a key to the ring (the next ``k<n>``, made active; the key file is replaced
atomically, mode 0600, old keys kept for decryption), records the rotation in `key_rotation`, then for every
encrypted column of every table (the columns the schema marks ``pii``, in every workspace: the ring is the
installation's) re-encrypts the ciphertexts that are not under the new key, a batch at a time, each batch
in one transaction. What still needs doing is read from the data itself (ciphertexts whose key id is not
the target's), so a crash loses nothing: running it again continues where it stopped. At the end every
encrypted column is counted by key id; the rotation is ``done`` only when no ciphertext under another key
is left (a process still running with the old ring could have written some: restart it and run again).

`retire_key` removes an old key from the ring, and refuses while any ciphertext still uses it.
Blind indexes (``*_bidx``) are keyed HMACs under the separate blind-index key, which rotation leaves alone
(docs/privacy.md explains why and what rotating it would take).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from careloop.config import Settings, get_settings
from careloop.errors import NotFoundError, PrivacyError
from careloop.privacy.audit import AuditEvent, ChainSigner, audit_log
from careloop.privacy.fields import PREFIX, FieldCipher
from careloop.privacy.keys import KeyRing, load_keyring
from careloop.storage.base import Backend
from careloop.storage.schema import all_tables

DEFAULT_BATCH = 10_000
_KEY_ID = re.compile(r"^k(\d+)$")
_PG_LOCK = 0x6361_7265_6C6B  # pg_advisory_lock id of key-ring changes ("carelk")
_LOCAL_LOCK = threading.Lock()


@dataclass(frozen=True)
class EncryptedColumn:
    table: str
    column: str
    kind: str  # the PII kind: the ciphertext's associated data

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every column the schema stores encrypted."""
    return [EncryptedColumn(t.name, c.name, c.pii) for t in all_tables() for c in t.columns if c.pii]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _p(backend: Backend, sql: str) -> str:
    return sql.replace("?", "%s") if backend.dialect.name == "postgres" else sql


def key_usage(backend: Backend) -> dict[str, dict[str, int]]:
    """Ciphertexts per key id for each encrypted column (all workspaces): {"patient.phone": {"k1": 9}}."""
    out: dict[str, dict[str, int]] = {}
    for col in encrypted_columns():
        if not backend.existing_columns(col.table):
            continue
        c = _q(col.column)
        rows = backend.fetch_rows(
            f"SELECT split_part({c}, ':', 2) AS kid, count(*) FROM {_q(col.table)} "  # noqa: S608 - schema names
            f"WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        out[col.name] = {str(r[0]): int(r[1]) for r in rows}
    return out


def totals_by_key(usage: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for per in usage.values():
        for kid, n in per.items():
            totals[kid] = totals.get(kid, 0) + n
    return dict(sorted(totals.items()))


# ---- the key ring on disk -------------------------------------------------------------------------


@dataclass(frozen=True)
class RingSource:
    ring: KeyRing
    path: Path | None  # None: the ring comes from CARELOOP_KEYS and careloop cannot change it

    @property
    def described(self) -> str:
        return str(self.path) if self.path is not None else "CARELOOP_KEYS"


def ring_source(settings: Settings | None = None) -> RingSource:
    s = settings or get_settings()
    ring = load_keyring(s.key_file, environment=s.environment)
    return RingSource(ring, None if os.environ.get("CARELOOP_KEYS") else s.key_file)


def write_keyring(path: Path, ring: KeyRing) -> None:
    """Replace the key file atomically (mode 0600): a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(ring.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _env_ring_error(what: str) -> PrivacyError:
    return PrivacyError(
        f"the key ring comes from CARELOOP_KEYS, which careloop cannot change. To {what}, edit the JSON "
        "you set CARELOOP_KEYS from (and its backup) yourself"
        + (
            ': add a new 32-byte base64 key under a new id to "keys", make it "active", restart careloop, '
            "then run `careloop keys rotate --reencrypt-only`"
            if what == "rotate"
            else ': remove the key from "keys" once `careloop keys status` shows no ciphertext under it'
        )
    )


def next_key_id(ring: KeyRing, used: list[str]) -> str:
    numbers = [int(m.group(1)) for k in [*ring.keys, *used] if (m := _KEY_ID.match(k))]
    candidate = f"k{max(numbers, default=0) + 1}"
    while candidate in ring.keys or candidate in used:  # ids are never reused
        candidate = f"k{int(candidate[1:]) + 1}"
    return candidate


# ---- rotating -------------------------------------------------------------------------------------


@dataclass
class RotationReport:
    rotation_id: str
    to_key: str
    from_keys: list[str]
    resumed: bool
    status: str = "running"
    ciphertexts: int = 0  # re-encrypted by this rotation (all runs of it)
    by_column: dict[str, int] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)  # key id -> ciphertexts not yet under to_key
    usage: dict[str, int] = field(default_factory=dict)  # key id -> ciphertexts, after the rotation
    key_file: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Progress = Callable[[EncryptedColumn, int, int], None]  # column, batch size, ciphertexts done in total


class _RingLock:
    """Only one process changes the key ring at a time: a PostgreSQL advisory lock (DuckDB files have one
    writing process) and a lock in this process."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.pg = backend.dialect.name == "postgres"

    def __enter__(self) -> None:
        if not _LOCAL_LOCK.acquire(blocking=False):
            raise PrivacyError("another key rotation or retirement is running in this process; wait for it")
        if self.pg:
            got = self.backend.fetch_rows("SELECT pg_try_advisory_lock(%s)", [_PG_LOCK])[0][0]
            if not got:
                _LOCAL_LOCK.release()
                raise PrivacyError(
                    "another careloop process is rotating or retiring keys on this database; wait for it "
                    "to finish, then run the command again"
                )

    def __exit__(self, *exc: object) -> None:
        try:
            if self.pg:
                self.backend.fetch_rows("SELECT pg_advisory_unlock(%s)", [_PG_LOCK])
        finally:
            _LOCAL_LOCK.release()


class KeyRotation:
    """Re-encrypts every ciphertext to a new (or the current active) data key."""

    def __init__(
        self,
        backend: Backend,
        *,
        settings: Settings | None = None,
        actor: str = "system",
        batch_size: int = DEFAULT_BATCH,
        progress: Progress | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.backend = backend
        self.settings = settings or get_settings()
        self.actor = actor
        self.batch_size = batch_size
        self.progress = progress

    def _sql(self, sql: str) -> str:
        return _p(self.backend, sql)

    def run(self, *, add_key: bool = True) -> RotationReport:
        """Rotate (or resume an unfinished rotation). `add_key=False` re-encrypts to the ring's active key
        without adding one (for rings from CARELOOP_KEYS, where the operator adds the key)."""
        started = time.perf_counter()
        with _RingLock(self.backend):
            report = self._start(add_key)
            source = ring_source(self.settings)
            cipher = FieldCipher(source.ring)
            self._reencrypt(cipher, report)
            self._finish(cipher, report)
        report.key_file = source.described
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    # ---- phases ---------------------------------------------------------------------------------
    def _unfinished(self) -> list[dict[str, Any]]:
        rows = self.backend.fetch_rows(
            "SELECT rotation_id, to_key, from_keys, progress, rows FROM key_rotation "
            "WHERE status = 'running' ORDER BY started_at DESC"
        )
        return [
            {
                "rotation_id": r[0],
                "to_key": r[1],
                "from_keys": _json(r[2]) or [],
                "progress": _json(r[3]) or {},
                "rows": int(r[4] or 0),
            }
            for r in rows
        ]

    def _start(self, add_key: bool) -> RotationReport:
        source = ring_source(self.settings)
        ring = source.ring
        now = self.backend.clock.now()
        for u in self._unfinished():
            if u["to_key"] == ring.active:
                report = RotationReport(u["rotation_id"], u["to_key"], list(u["from_keys"]), resumed=True)
                report.by_column = {k: int(v) for k, v in u["progress"].items()}
                report.ciphertexts = u["rows"]
                self._audit(report, "resumed")
                return report
            # the ring's active key changed since (a key file restored or edited): that rotation cannot
            # finish as planned; a new one re-encrypts everything not under today's active key
            self.backend.execute(
                self._sql(
                    "UPDATE key_rotation SET status = 'abandoned', finished_at = ? WHERE rotation_id = ?"
                ),
                [now, u["rotation_id"]],
            )
        if add_key:
            if source.path is None:
                raise _env_ring_error("rotate")
            used = [r[0] for r in self.backend.fetch_rows("SELECT to_key FROM key_rotation")]
            new_id = next_key_id(ring, used)
            ring = dataclasses.replace(ring, active=new_id, keys={**ring.keys, new_id: os.urandom(32)})
            write_keyring(source.path, ring)
        from_keys = sorted(k for k in ring.keys if k != ring.active)
        report = RotationReport(uuid.uuid4().hex[:16], ring.active, from_keys, resumed=False)
        self.backend.execute(
            self._sql(
                "INSERT INTO key_rotation (rotation_id, to_key, from_keys, status, actor, started_at, progress, rows) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, 0)"
            ),
            [report.rotation_id, report.to_key, orjson.dumps(from_keys).decode(), self.actor, now, "{}"],
        )
        self._audit(report, "started")
        return report

    def _reencrypt(self, cipher: FieldCipher, report: RotationReport) -> None:
        pg = self.backend.dialect.name == "postgres"
        target = f"{PREFIX}:{report.to_key}:"
        for col in encrypted_columns():
            t, c = _q(col.table), _q(col.column)
            pick = self._sql(
                f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL AND NOT starts_with({c}, ?) LIMIT ?"  # noqa: S608 - schema names
            )
            if pg:
                update = (
                    f"WITH u AS (UPDATE {t} SET {c} = m.new FROM unnest(%s::text[], %s::text[]) AS m(old, new) "  # noqa: S608 - schema names
                    f"WHERE {t}.{c} = m.old RETURNING 1) SELECT count(*) FROM u"
                )
            else:
                update = (
                    f"UPDATE {t} SET {c} = m.new FROM (SELECT unnest(?) AS old, unnest(?) AS new) m "  # noqa: S608 - schema names
                    f"WHERE {t}.{c} = m.old"
                )
            while True:
                olds = list(
                    dict.fromkeys(r[0] for r in self.backend.fetch_rows(pick, [target, self.batch_size]))
                )
                if not olds:
                    break
                try:
                    plain = [cipher.decrypt(o, col.kind) for o in olds]
                except PrivacyError as e:
                    raise PrivacyError(
                        f"key rotation stopped at {col.name}: a stored value there cannot be decrypted ({e}). "
                        "Nothing in that batch was changed; restore the key file that encrypted it, then run "
                        "`careloop keys rotate` again to continue"
                    ) from e
                news = cipher.encrypt_many(plain, col.kind)
                with self.backend.transaction():
                    n = int(self.backend.fetch_rows(update, [olds, news])[0][0])
                    report.by_column[col.name] = report.by_column.get(col.name, 0) + n
                    report.ciphertexts += n
                    self.backend.execute(
                        self._sql("UPDATE key_rotation SET progress = ?, rows = ? WHERE rotation_id = ?"),
                        [orjson.dumps(report.by_column).decode(), report.ciphertexts, report.rotation_id],
                    )
                if self.progress is not None:
                    self.progress(col, n, report.ciphertexts)

    def _finish(self, cipher: FieldCipher, report: RotationReport) -> None:
        usage = key_usage(self.backend)
        totals = totals_by_key(usage)
        report.usage = totals
        report.remaining = {k: n for k, n in totals.items() if k != report.to_key}
        self._spot_check(cipher, report.to_key)
        if report.remaining:
            return  # still 'running': run again (see the CLI's message)
        report.status = "done"
        self.backend.execute(
            self._sql("UPDATE key_rotation SET status = 'done', finished_at = ? WHERE rotation_id = ?"),
            [self.backend.clock.now(), report.rotation_id],
        )
        self._audit(report, "finished")

    def _spot_check(self, cipher: FieldCipher, key_id: str, per_column: int = 50) -> None:
        """Decrypt a few ciphertexts of each column under the new key: the key file and the data agree."""
        for col in encrypted_columns():
            c = _q(col.column)
            rows = self.backend.fetch_rows(
                self._sql(f"SELECT {c} FROM {_q(col.table)} WHERE starts_with({c}, ?) LIMIT ?"),  # noqa: S608 - schema names
                [f"{PREFIX}:{key_id}:", per_column],
            )
            for (token,) in rows:
                try:
                    cipher.decrypt(token, col.kind)
                except PrivacyError as e:
                    raise PrivacyError(
                        f"after re-encryption a value in {col.name} does not decrypt with key {key_id}: {e}. "
                        "Keep every key file backup and report this"
                    ) from e

    def _audit(self, report: RotationReport, phase: str) -> None:
        detail = {
            "phase": phase,
            "rotation": report.rotation_id,
            "from_keys": report.from_keys,
            "ciphertexts": report.ciphertexts,
        }
        for ws in self.backend.workspaces():
            audit_log(self.backend.workspace(ws, create=False)).append(
                AuditEvent(
                    actor=self.actor,
                    action="key.rotate",
                    target_kind="key",
                    target_id=report.to_key,
                    detail=detail,
                )
            )


def _json(value: Any) -> Any:
    if value is None:
        return None
    return orjson.loads(value) if isinstance(value, str | bytes) else value


# ---- retiring and status --------------------------------------------------------------------------


def retire_key(
    backend: Backend, key_id: str, *, settings: Settings | None = None, actor: str = "system"
) -> dict[str, Any]:
    """Remove an old key from the ring; refuses while any ciphertext uses it, and the active key."""
    settings = settings or get_settings()
    with _RingLock(backend):
        source = ring_source(settings)
        ring = source.ring
        if key_id not in ring.keys:
            raise NotFoundError(f"no key {key_id!r} in the key ring ({', '.join(sorted(ring.keys))})")
        if key_id == ring.active:
            raise PrivacyError(
                f"{key_id} is the active key; run `careloop keys rotate` first, then retire it once nothing uses it"
            )
        usage = key_usage(backend)
        left = {name: per[key_id] for name, per in usage.items() if per.get(key_id)}
        if left:
            total = sum(left.values())
            where = ", ".join(f"{name} {n:,}" for name, n in sorted(left.items()))
            raise PrivacyError(
                f"{total:,} ciphertext(s) still use key {key_id} ({where}); run `careloop keys rotate` "
                f"(it re-encrypts them to {ring.active}) before retiring {key_id}"
            )
        if source.path is None:
            raise _env_ring_error("retire a key")
        kept = {k: v for k, v in ring.keys.items() if k != key_id}
        write_keyring(source.path, dataclasses.replace(ring, keys=kept))
        for ws in backend.workspaces():
            audit_log(backend.workspace(ws, create=False)).append(
                AuditEvent(actor=actor, action="key.retire", target_kind="key", target_id=key_id)
            )
    return {"retired": key_id, "keys": sorted(kept), "active": ring.active, "key_file": source.described}


def key_status(backend: Backend, settings: Settings | None = None) -> dict[str, Any]:
    """Key ids, the active one, ciphertexts per key id (and per column), the audit key, recent rotations."""
    source = ring_source(settings)
    ring = source.ring
    usage = key_usage(backend)
    totals = totals_by_key(usage)
    rotations = backend.fetch_rows(
        "SELECT rotation_id, to_key, from_keys, status, actor, started_at, finished_at, rows FROM key_rotation "
        "ORDER BY started_at DESC LIMIT 10"
    )
    return {
        "key_ring": source.described,
        "active": ring.active,
        "keys": [
            {"id": k, "active": k == ring.active, "ciphertexts": totals.get(k, 0)} for k in sorted(ring.keys)
        ],
        "unknown_key_ids": {k: n for k, n in totals.items() if k not in ring.keys},
        "by_column": usage,
        "audit_key": "stored" if ring.audit_key is not None else "derived from the blind-index key",
        "audit_key_id": ChainSigner(ring.audit_signing_key).key_id,
        "rotations": [
            {
                "rotation_id": r[0],
                "to_key": r[1],
                "from_keys": _json(r[2]),
                "status": r[3],
                "actor": r[4],
                "started_at": r[5],
                "finished_at": r[6],
                "ciphertexts": r[7],
            }
            for r in rotations
        ],
    }
