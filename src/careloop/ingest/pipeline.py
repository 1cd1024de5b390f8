"""The ingestion pipeline: connector -> validate and normalise (SQL) -> protect -> merge / quarantine.

Every batch is validated in the staging DuckDB connection with the rules of `careloop.ingest.rules`.
Rows with a reason go to the `quarantine` table with source, file, line, field and reason, their
original values encrypted; the others are de-duplicated on (source, key), personal identifiers are
encrypted with blind indexes added, and the backend merges them: new keys are inserted, changed rows
updated, identical rows counted as duplicates. Nothing stops the batch and nothing is dropped:
rows read = accepted + updated + duplicates + quarantined, per entity.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings, get_settings
from careloop.domain import entities, field_specs
from careloop.domain.fields import INDEXED_PII
from careloop.errors import IngestError
from careloop.ingest.batch import Rejection, StagedBatch
from careloop.ingest.mapping import Mapping, load_mapping
from careloop.ingest.rules import field_rule, icd10_rule, id_number_checks, ident, lit, phone_value
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage.base import Backend
from careloop.storage.schema import entity_table

FORMATS = ("csv", "parquet", "jsonl", "fhir", "synthea")
#: entities whose rules span fields (see Ingestor._entity_checks): validated in a materialised table
_CROSS_FIELD_CHECKED = frozenset({"condition", "patient", "patient_identifier"})
MAPPING_FILE = "careloop-mapping.yaml"

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class EntityCounts:
    rows: int = 0
    accepted: int = 0  # new keys stored
    updated: int = 0  # known keys whose content changed
    duplicates: int = 0  # repeats of a stored row, or of a key earlier in the same batch
    quarantined: int = 0


@dataclass
class IngestSummary:
    run_id: str
    workspace: str
    path: str
    format: str
    status: str = "running"
    files: int = 0
    seconds: float = 0.0
    entities: dict[str, EntityCounts] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.entities.values())

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in self.entities.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = self.rows
        d["quarantined"] = self.quarantined
        d["rows_per_second"] = round(self.rows / self.seconds, 1) if self.seconds else None
        return d


class Ingestor:
    """Runs ingestion into one workspace of a backend."""

    def __init__(
        self,
        backend: Backend,
        workspace: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cipher: FieldCipher | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.backend = backend
        self.workspace = workspace or self.settings.workspace
        self.store = backend.workspace(self.workspace)
        self.clock = clock
        ring = load_keyring(self.settings.key_file, environment=self.settings.environment)
        self.cipher = cipher or FieldCipher(ring)
        self._hash_salt = hashlib.sha256(b"careloop-row-hash:" + ring.bidx_key).hexdigest()[:16]
        self.progress = progress
        self._q_seq = itertools.count(1)
        self._suppression: pa.Table | None = None  # erased persons' hashes (careloop.privacy.dsr)

    # ---- entry point -------------------------------------------------------------------------
    def ingest(
        self, path: Path, fmt: str, *, mapping: Path | None = None, source: str | None = None
    ) -> IngestSummary:
        """Ingest a file or folder. Raises IngestError only when the source cannot be read at all."""
        if fmt not in FORMATS:
            raise IngestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        if not path.exists():
            raise IngestError(f"{path} does not exist")
        started = time.perf_counter()
        run_id = f"r{self.clock.now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"
        summary = IngestSummary(run_id=run_id, workspace=self.workspace, path=str(path), format=fmt)
        self.store.insert(
            "ingest_run",
            [
                {
                    "run_id": run_id,
                    "source": source,
                    "path": str(path),
                    "format": fmt,
                    "mapping": str(mapping) if mapping else None,
                    "status": "running",
                    "started_at": self.clock.now(),
                }
            ],
        )
        con = self.backend.staging_connection()
        _register_udfs(con, self.cipher)
        self._suppression = _suppression_table(self.store)
        try:
            items = self._items(con, path, fmt, mapping, source)
            with self.backend.bulk_load():
                self._run(con, items, run_id, summary)
            summary.status = "completed"
        except Exception:
            summary.status = "failed"
            raise
        finally:
            summary.seconds = round(time.perf_counter() - started, 3)
            self.store.execute(
                "UPDATE ingest_run SET status = :status, finished_at = :at, summary = :summary "
                "WHERE run_id = :run",
                {
                    "status": summary.status,
                    "at": self.clock.now(),
                    "summary": orjson.dumps(summary.to_dict()).decode(),
                    "run": run_id,
                },
            )
            if not self.backend.stages_in_store:
                con.close()
        return summary

    def _items(
        self, con: duckdb.DuckDBPyConnection, path: Path, fmt: str, mapping: Path | None, source: str | None
    ) -> Iterable[StagedBatch | Rejection]:
        if fmt == "fhir":
            from careloop.ingest.fhir import read_fhir

            files = (
                sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson"))
                if path.is_dir()
                else [path]
            )
            if not files:
                raise IngestError(f"no .json / .ndjson FHIR files in {path}")
            return read_fhir(files, source=source or "fhir")
        from careloop.ingest.tabular import TabularReader, default_mapping

        m: Mapping
        if fmt == "synthea":
            from careloop.ingest.synthea import synthea_mapping

            if not path.is_dir():
                raise IngestError(
                    f"--format synthea expects the folder of a Synthea CSV export, not {path.name}"
                )
            m = synthea_mapping(path)
            if source:
                m.source = source
            reader = TabularReader(con, "csv")
        else:
            if mapping is None and path.is_dir() and (path / MAPPING_FILE).exists():
                mapping = path / MAPPING_FILE
            m = load_mapping(mapping) if mapping else default_mapping(path, fmt, source)
            if source:
                m.source = source
                for f in m.files:
                    f.source = None
            reader = TabularReader(con, fmt)
        return _closing(reader.read(m, path), reader.close)

    def _run(
        self,
        con: duckdb.DuckDBPyConnection,
        items: Iterable[StagedBatch | Rejection],
        run_id: str,
        summary: IngestSummary,
    ) -> None:
        pending: list[Rejection] = []
        done = 0
        for item in items:
            if isinstance(item, Rejection):
                pending.append(item)
                counts = summary.entities.setdefault(item.entity, EntityCounts())
                counts.rows += 1
                counts.quarantined += 1
                continue
            counts = summary.entities.setdefault(item.entity, EntityCounts())
            self._load(con, item, run_id, counts)
            summary.files += 1
            done += 1
            if self.progress:
                self.progress(f"{item.source}/{item.entity}", done, 0)
            if len(pending) >= 10_000:
                self._quarantine_rejections(pending, run_id)
                pending = []
        self._quarantine_rejections(pending, run_id)

    # ---- one batch ---------------------------------------------------------------------------
    def _load(
        self, con: duckdb.DuckDBPyConnection, batch: StagedBatch, run_id: str, counts: EntityCounts
    ) -> None:
        if batch.entity not in entities():
            raise IngestError(f"connector produced unknown entity {batch.entity!r}")
        table = entity_table(batch.entity)
        specs = field_specs(entities()[batch.entity])
        registered = None
        if batch.table is not None:
            registered = f"_batch_{secrets.token_hex(4)}"
            data = batch.table.append_column("_rid", pa.array(range(batch.table.num_rows), pa.int64()))
            con.register(registered, data)
            base = f"SELECT * FROM {registered}"
        else:
            assert batch.sql is not None
            base = f"SELECT *, _line AS _rid FROM ({batch.sql})"
        tz_changed = bool(batch.timezone and batch.timezone != self.settings.timezone)
        if tz_changed:
            con.execute(f"SET TimeZone = {lit(batch.timezone or '')}").fetchall()
        try:
            con.execute(f"CREATE OR REPLACE TEMP VIEW _in AS {base}").fetchall()
            # pragma_table_info keeps aliases as written (DESCRIBE may not: "START" AS start)
            types = {
                r[0]: r[1] for r in con.execute("SELECT name, type FROM pragma_table_info('_in')").fetchall()
            }
            self._validate(con, batch, specs, types)
            self._suppress_erased(con, batch, types)
            self._quarantine_invalid(con, batch, run_id, counts, [c for c in types if not c.startswith("_")])
            self._stage_valid(con, batch, specs, run_id, counts)
            result = self.backend.merge_staged(
                table, con, "_s", self.workspace, self.clock.now(), source=batch.source
            )
            counts.accepted += result.inserted
            counts.updated += result.updated
            counts.duplicates += result.unchanged
        finally:
            if tz_changed:
                con.execute(f"SET TimeZone = {lit(self.settings.timezone)}").fetchall()
            for name in ("_s", "_ok", "_ok_all", "_hit", "_bad", "_v", "_in"):
                kind = con.execute(
                    "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
                ).fetchall()
                if kind:
                    con.execute(f"DROP {'VIEW' if kind[0][0] == 'VIEW' else 'TABLE'} {name}").fetchall()
            if registered:
                con.unregister(registered)
            if self._suppression is not None:
                con.unregister("_sup")

    def _validate(
        self, con: duckdb.DuckDBPyConnection, batch: StagedBatch, specs: list[Any], types: dict[str, str]
    ) -> None:
        values, reasons, fields = [], [], []
        for spec in specs:
            if spec.name == "source":
                continue
            if spec.name in types:
                src, src_type = f"_in.{ident(spec.name)}", types[spec.name]
            else:
                src, src_type = "NULL", "VARCHAR"
            rule = field_rule(spec, src, src_type, batch.date_formats.get(spec.name))
            values.append(f"{rule.value} AS {ident(spec.name)}")
            if rule.reason:
                reasons.append(rule.reason)
                fields.append(f"CASE WHEN ({rule.reason}) IS NOT NULL THEN {lit(spec.name)} END")
        file_col = "_in._file" if "_file" in types else "NULL"
        reason = f"NULLIF(concat_ws('; ', {', '.join(reasons) or 'NULL'}), '')"
        field = f"coalesce({', '.join(fields) or 'NULL'})"
        if batch.entity in _CROSS_FIELD_CHECKED:
            # cross-field rules update values and reasons: materialise, check, then split
            con.execute(
                self._today(
                    f"CREATE OR REPLACE TEMP TABLE _v AS SELECT {', '.join(values)}, {reason} AS _reason, "
                    f"{field} AS _field, _in._line AS _line, {file_col} AS _file, _in._rid AS _rid FROM _in"
                )
            ).fetchall()
            self._entity_checks(con, batch.entity)
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _bad AS SELECT _rid, _line, _file, _reason, _field FROM _v "
                "WHERE _reason IS NOT NULL"
            ).fetchall()
            con.execute(
                "CREATE OR REPLACE TEMP VIEW _ok AS SELECT * FROM _v WHERE _reason IS NULL"
            ).fetchall()
            return
        # the bulk path: find the bad rows (narrow), and let the valid ones flow from the source
        # through a view straight into the store, so no batch is materialised in full
        any_bad = f"coalesce({', '.join(reasons)})" if reasons else "NULL"
        con.execute(
            self._today(
                f"CREATE OR REPLACE TEMP TABLE _bad AS SELECT _in._rid AS _rid, _in._line AS _line, "
                f"{file_col} AS _file, {reason} AS _reason, {field} AS _field FROM _in "
                f"WHERE {any_bad} IS NOT NULL"
            )
        ).fetchall()
        has_bad = con.execute("SELECT count(*) FROM _bad").fetchall()[0][0] > 0
        con.execute(
            self._today(
                f"CREATE OR REPLACE TEMP VIEW _ok AS SELECT {', '.join(values)}, _in._line AS _line, "
                f"_in._rid AS _rid FROM _in" + (" ANTI JOIN _bad ON _bad._rid = _in._rid" if has_bad else "")
            )
        ).fetchall()

    def _suppress_erased(
        self, con: duckdb.DuckDBPyConnection, batch: StagedBatch, types: dict[str, str]
    ) -> None:
        """Rows of persons erased by a data-subject request join the bad rows (quarantined with the request's
        id and without their values) instead of coming back (careloop.privacy.dsr, decisions/0022)."""
        from careloop.privacy.dsr import SUPPRESSED_PREFIX, ingest_checks

        if self._suppression is None:
            return
        ok_cols = {r[0] for r in con.execute("SELECT name FROM pragma_table_info('_ok')").fetchall()}
        checks = ingest_checks(batch.entity, ok_cols, batch.source)
        if not checks:
            return
        con.register("_sup", self._suppression)
        hits = " UNION ALL ".join(
            f"SELECT _ok._rid AS _rid, _ok._line AS _line, _sup.request_id AS request_id FROM _ok "
            f"JOIN _sup ON _sup.kind = {lit(kind)} AND _sup.value_hash = {expr}"
            for kind, expr in checks
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _hit AS SELECT _rid, min(_line) AS _line, min(request_id) AS request_id "
            f"FROM ({hits}) GROUP BY _rid"
        ).fetchall()
        if not con.execute("SELECT count(*) FROM _hit").fetchall()[0][0]:
            return
        file_col = "_in._file" if "_file" in types else "NULL"
        con.execute(
            "INSERT INTO _bad (_rid, _line, _file, _reason, _field) "
            f"SELECT h._rid, h._line, {file_col}, {lit(SUPPRESSED_PREFIX)} || h.request_id, 'key' "
            "FROM _hit h JOIN _in ON _in._rid = h._rid"
        ).fetchall()
        con.execute("ALTER VIEW _ok RENAME TO _ok_all").fetchall()
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _ok AS SELECT * FROM _ok_all WHERE _rid NOT IN (SELECT _rid FROM _hit)"
        ).fetchall()

    def _today(self, sql: str) -> str:
        """Rules compare with today: take it from the injected clock, not the database."""
        return sql.replace("current_date", f"DATE '{self.clock.now().date().isoformat()}'")

    def _entity_checks(self, con: duckdb.DuckDBPyConnection, entity: str) -> None:
        """Cross-field rules: ICD-10 codes, birth date plausibility, values derived from the ID number."""
        if entity == "condition":
            rule = icd10_rule("code", "code_system")
            con.execute(
                f"UPDATE _v SET code = {rule.value}, "
                f"_reason = coalesce(_reason || '; ' || ({rule.reason}), {rule.reason}, _reason), "
                f"_field = coalesce(_field, CASE WHEN ({rule.reason}) IS NOT NULL THEN 'code' END)"
            ).fetchall()
        if entity == "patient":
            con.execute(
                "UPDATE _v SET _reason = coalesce(_reason || '; ', '') || 'birth_date: in the future', "
                "_field = coalesce(_field, 'birth_date') WHERE birth_date > $today",
                {"today": self.clock.now().date()},
            ).fetchall()
            con.execute(
                "UPDATE _v SET _reason = coalesce(_reason || '; ', '') || 'death_date: before birth_date', "
                "_field = coalesce(_field, 'death_date') WHERE death_date < birth_date"
            ).fetchall()
            con.execute(
                "UPDATE _v SET "
                "birth_date = coalesce(birth_date, CAST(strptime(substr(id_number, 7, 8), '%Y%m%d') AS DATE)), "
                "sex = coalesce(sex, CASE WHEN CAST(substr(id_number, 17, 1) AS INTEGER) % 2 = 1 "
                "THEN 'male' ELSE 'female' END) "
                "WHERE _reason IS NULL AND id_number IS NOT NULL"
            ).fetchall()
        if entity == "patient_identifier":
            fmt_ok, birth_ok, check_ok = id_number_checks("upper(value)")
            con.execute(
                self._today(
                    f"UPDATE _v SET value = upper(value), _reason = CASE WHEN NOT ({fmt_ok} AND {birth_ok} AND {check_ok}) "
                    "THEN coalesce(_reason || '; ', '') || 'value: ID number fails format, birth date or check character' "
                    "ELSE _reason END, _field = coalesce(_field, CASE WHEN NOT "
                    f"({fmt_ok} AND {birth_ok} AND {check_ok}) THEN 'value' END) WHERE kind = 'id_number'"
                )
            ).fetchall()
            con.execute(f"UPDATE _v SET value = {phone_value('value')} WHERE kind = 'phone'").fetchall()

    def _quarantine_invalid(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: StagedBatch,
        run_id: str,
        counts: EntityCounts,
        raw_cols: list[str],
    ) -> None:
        total = int(con.execute("SELECT count(*) FROM _in").fetchall()[0][0])
        n_bad = int(con.execute("SELECT count(*) FROM _bad").fetchall()[0][0])
        counts.rows += total
        if n_bad == 0:
            return
        counts.quarantined += n_bad
        raw = "to_json(struct_pack(" + ", ".join(f"{ident(c)} := _in.{ident(c)}" for c in raw_cols) + "))"
        # rows of an erased person keep no values: only that they came, and which request suppressed them
        bad = con.sql(
            f"SELECT v._line, v._file, v._field, v._reason, CASE WHEN starts_with(v._reason, "
            f"'erased by data-subject request ') THEN NULL ELSE CAST({raw} AS VARCHAR) END AS _raw "
            "FROM _bad v JOIN _in ON _in._rid = v._rid ORDER BY v._line"
        ).to_arrow_table()
        self._write_quarantine(
            run_id,
            [
                (batch.entity, batch.source, r["_file"], r["_line"], r["_field"], r["_reason"], r["_raw"])
                for r in bad.to_pylist()
            ],
        )

    def _quarantine_rejections(self, rejections: list[Rejection], run_id: str) -> None:
        if rejections:
            self._write_quarantine(
                run_id,
                [
                    (r.entity, r.source, r.file, r.line, r.field, r.reason, _raw_text(r.raw))
                    for r in rejections
                ],
            )

    def _write_quarantine(self, run_id: str, rows: list[tuple[Any, ...]]) -> None:
        now = self.clock.now()
        raws = self.cipher.encrypt_many([r[6] for r in rows], "raw")
        self.store.insert(
            "quarantine",
            pa.table(
                {
                    "id": pa.array([f"{run_id}-{next(self._q_seq)}" for _ in rows], pa.string()),
                    "run_id": pa.array([run_id] * len(rows), pa.string()),
                    "entity": pa.array([r[0] for r in rows], pa.string()),
                    "source": pa.array([r[1] for r in rows], pa.string()),
                    "file": pa.array([r[2] for r in rows], pa.string()),
                    "line": pa.array([r[3] for r in rows], pa.int64()),
                    "field": pa.array([r[4] for r in rows], pa.string()),
                    "reason": pa.array([r[5] for r in rows], pa.string()),
                    "raw": pa.array(raws, pa.string()),
                    "created_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                }
            ),
        )

    def _stage_valid(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: StagedBatch,
        specs: list[Any],
        run_id: str,
        counts: EntityCounts,
    ) -> None:
        """`_s`: valid rows in stored form (identifiers encrypted, keyed row hash), one per key.

        A view when the batch has no repeated keys (the bulk path: nothing is materialised twice),
        else a table keeping the first occurrence of each key.
        """
        out = [f"{lit(batch.source)} AS source"]
        hashed = [lit(self._hash_salt)]
        for spec in specs:
            if spec.name == "source":
                continue
            col = ident(spec.name)
            hashed.append(col)
            if spec.pii:
                out.append(f"cl_encrypt({lit(spec.pii)}, CAST({col} AS VARCHAR)) AS {col}")
                if spec.pii in INDEXED_PII:
                    out.append(
                        f"cl_bidx({lit(spec.pii)}, CAST({col} AS VARCHAR)) AS {ident(spec.name + '_bidx')}"
                    )
            else:
                out.append(col)
        out.append(f"{lit(run_id)} AS _run_id")
        out.append(f"CAST(hash({', '.join(hashed)}) & 9223372036854775807 AS BIGINT) AS _row_hash")
        row = con.execute("SELECT count(*), count(DISTINCT key) FROM _ok").fetchall()[0]
        repeats = int(row[0]) - int(row[1])
        if repeats == 0:
            con.execute(f"CREATE OR REPLACE TEMP VIEW _s AS SELECT {', '.join(out)} FROM _ok").fetchall()
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _s AS SELECT {', '.join(out)} FROM _ok "
                "QUALIFY row_number() OVER (PARTITION BY key ORDER BY _line) = 1"
            ).fetchall()
        counts.duplicates += repeats


def _suppression_table(store: Any) -> pa.Table | None:
    """The suppression hashes of erased persons as an Arrow table, or None when nobody was erased."""
    from careloop.privacy.dsr import load_suppression

    rows = load_suppression(store)
    if not rows:
        return None
    return pa.table(
        {
            "kind": pa.array([r["kind"] for r in rows], pa.string()),
            "value_hash": pa.array([r["value_hash"] for r in rows], pa.string()),
            "request_id": pa.array([r["request_id"] for r in rows], pa.string()),
        }
    )


def _raw_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    if isinstance(raw, str):
        return raw
    return orjson.dumps(raw, default=str).decode()


def _closing(
    it: Iterable[StagedBatch | Rejection], close: Callable[[], None]
) -> Iterable[StagedBatch | Rejection]:
    try:
        yield from it
    finally:
        close()


def _register_udfs(con: duckdb.DuckDBPyConnection, cipher: FieldCipher, reuse_cap: int = 500_000) -> None:
    """Field protection on the staging connection.

    `cl_encrypt(kind, value)`: AES-GCM, a vectorised Arrow UDF (no SQL engine has AEAD built in).
    `cl_bidx(kind, value)`: HMAC-SHA256 as a SQL macro over DuckDB's sha256 — vectorised and parallel;
    the padded keys live in session variables, never in SQL text.
    """

    # Within one run a repeated look-up identifier (an openid on each of a person's events) reuses its
    # ciphertext: the blind index beside it already shows equal values are equal, so nothing new leaks,
    # and most AES calls are saved. Kinds without a blind index (addresses) always get a fresh nonce.
    # DuckDB calls the function from several threads at once: each call builds its answer from its own
    # dict and only reads and (under the lock) refills the shared cache.
    reuse: dict[tuple[str, str], str | None] = {}
    lock = threading.Lock()

    def encrypt(kinds: pa.Array, values: pa.Array) -> pa.Array:
        kind = kinds[0].as_py() if len(kinds) else "identifier"
        plain = values.to_pylist()
        if kind not in INDEXED_PII:
            return pa.array(cipher.encrypt_many(plain, kind), pa.string())
        tokens: dict[str, str | None] = {}
        missing: list[str] = []
        for v in {v for v in plain if v is not None}:
            token = reuse.get((kind, v))
            if token is None:
                missing.append(v)
            else:
                tokens[v] = token
        fresh = dict(zip(missing, cipher.encrypt_many(missing, kind), strict=True))
        tokens.update(fresh)
        with lock:
            if len(reuse) > reuse_cap:
                reuse.clear()
            reuse.update(((kind, v), t) for v, t in fresh.items())
        return pa.array([None if v is None else tokens[v] for v in plain], pa.string())

    with contextlib.suppress(duckdb.Error):
        con.remove_function("cl_encrypt")
    con.create_function(  # type: ignore[call-overload]
        "cl_encrypt", encrypt, ["VARCHAR", "VARCHAR"], "VARCHAR", type="arrow", side_effects=True
    )
    ipad, opad = cipher.hmac_pads()
    con.execute("SET VARIABLE cl_bidx_ipad = $ipad", {"ipad": ipad}).fetchall()
    con.execute("SET VARIABLE cl_bidx_opad = $opad", {"opad": opad}).fetchall()
    con.execute(
        "CREATE OR REPLACE TEMP MACRO cl_bidx(kind, v) AS left(sha256(getvariable('cl_bidx_opad') || "
        "unhex(sha256(getvariable('cl_bidx_ipad') || encode(kind || ':' || v)))), 32)"
    ).fetchall()
