"""CSV / Parquet / JSONL connector: a column mapping applied in SQL on the staging DuckDB connection.

Large files never pass through Python: CSV and Parquet are read by DuckDB, rows the CSV reader cannot
parse (wrong column count, invalid UTF-8) come back from DuckDB's reject tables and are quarantined
with their line. Files in another encoding (e.g. GB18030 exports) are transcoded record by record, and
records that do not decode are quarantined. JSON Lines are parsed line by line so a broken line is
quarantined on its own.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from careloop.domain import entities
from careloop.errors import IngestError, MappingError
from careloop.ingest.batch import Rejection, StagedBatch
from careloop.ingest.mapping import ColumnSpec, FileMapping, Mapping
from careloop.ingest.rules import ident, lit

_ENTITY_ALIASES = {
    "patients": "patient",
    "careplans": "care_plan",
    "care_plans": "care_plan",
    "devices": "device_use",
    "supplies": "supply_use",
    "imaging_studies": "imaging_study",
    "medications": "prescription",
    "providers": "doctor",
    "organizations": "organization",
    "allergies": "allergy",
    "payer_transitions": "coverage",
    "events": "event",
    "identifiers": "patient_identifier",
}

EXTENSIONS = {
    "csv": (".csv", ".tsv", ".txt"),
    "parquet": (".parquet",),
    "jsonl": (".jsonl", ".ndjson", ".json"),
}


def infer_entity(path: Path) -> str:
    """Entity named by a file's stem: patient.csv, patients.parquet, care_plans.csv ..."""
    stem = path.name.split(".")[0].lower()
    known = entities()
    for candidate in (stem, _ENTITY_ALIASES.get(stem, ""), stem.rstrip("s")):
        if candidate in known:
            return candidate
    raise MappingError(
        f"cannot tell which entity {path.name} holds: name the file after an entity "
        f"({', '.join(sorted(known))}) or pass --mapping FILE"
    )


def default_mapping(path: Path, fmt: str, source: str | None) -> Mapping:
    """One entry per file named after an entity, columns named like the entity's fields."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS[fmt]) if path.is_dir() else [path]
    )
    if not files:
        raise IngestError(f"no {fmt} files in {path}; pass the file itself or check --format")
    return Mapping(
        source=source or (path.name if path.is_dir() else path.stem),
        files=[FileMapping(path=str(f.resolve()), entity=infer_entity(f), format=fmt) for f in files],
    )


def resolve(mapping: Mapping, root: Path) -> list[tuple[FileMapping, Path]]:
    """Each file entry with the files its glob matches (relative to the mapping's folder or `root`)."""
    out: list[tuple[FileMapping, Path]] = []
    base = mapping.base_dir or (root if root.is_dir() else root.parent)
    for fm in mapping.files:
        if not fm.path:
            matches = (
                [root]
                if root.is_file()
                else sorted(
                    p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS.get(fm.format or "csv", ())
                )
            )
            out.extend((fm, m) for m in matches)
            continue
        pattern = fm.path if Path(fm.path).is_absolute() else str(base / fm.path)
        matches = sorted(Path(p) for p in glob.glob(pattern))
        if not matches:
            raise IngestError(f"mapping entry {fm.path!r} ({fm.entity}) matches no file under {base}")
        out.extend((fm, m) for m in matches)
    return out


class TabularReader:
    """Turns mapped files into StagedBatches and Rejections on one staging connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fmt: str | None = None) -> None:
        self.con = con
        self.fmt = fmt
        self._n = itertools.count()
        self._tmp = tempfile.TemporaryDirectory(prefix="careloop-ingest-")

    def close(self) -> None:
        self._tmp.cleanup()

    def read(self, mapping: Mapping, root: Path) -> Iterator[StagedBatch | Rejection]:
        for fm, path in resolve(mapping, root):
            source = fm.source or mapping.source or (root.name if root.is_dir() else root.stem)
            fmt = fm.format or self.fmt or _format_of(path)
            n = next(self._n)
            rejections: list[Rejection] = []
            if fmt == "parquet":
                relation = f"(SELECT *, file_row_number + 1 AS _line FROM read_parquet({lit(str(path))}, file_row_number = true))"
            elif fmt == "csv":
                relation = self._stage_csv(fm, path, n, source, rejections)
            elif fmt == "jsonl":
                relation = self._stage_jsonl(fm, path, n, source, rejections)
            else:
                raise IngestError(f"unsupported tabular format {fmt!r} for {path}; use csv, parquet or jsonl")
            yield from rejections
            columns = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
            select = self._select(fm, columns, path)
            yield StagedBatch(
                entity=fm.entity,
                source=source,
                sql=f"SELECT {select}, {lit(str(path))} AS _file FROM {relation} AS src"
                + (f" WHERE ({fm.where})" if fm.where else ""),
                timezone=fm.timezone or mapping.timezone,
                date_formats={k: v.format for k, v in fm.column_specs().items() if v.format},
            )

    # ---- column mapping ----------------------------------------------------------------------
    def _select(self, fm: FileMapping, columns: list[str], path: Path) -> str:
        data_cols = [c for c in columns if c not in ("_line", "file_row_number")]
        specs = fm.column_specs()
        fields = entities()[fm.entity].model_fields
        parts = []
        for name in fields:
            if name == "source":
                continue
            spec = specs.get(name)
            if spec is None:
                if name in data_cols:
                    parts.append(f"src.{ident(name)} AS {ident(name)}")
                continue
            parts.append(f"{self._expr(spec, data_cols, path, name)} AS {ident(name)}")
        parts.append("src._line AS _line")
        return ", ".join(parts)

    def _expr(self, spec: ColumnSpec, cols: list[str], path: Path, field: str) -> str:
        def col(c: str) -> str:
            if c not in cols:
                raise MappingError(
                    f"{path.name}: column {c!r} (for {field}) is not in the file; its columns are: "
                    f"{', '.join(cols)}"
                )
            return f"src.{ident(c)}"

        if spec.column is not None:
            e = col(spec.column)
        elif spec.columns is not None:
            parts = [f"NULLIF(trim(CAST({col(c)} AS VARCHAR)), '')" for c in spec.columns]
            e = f"NULLIF(concat_ws({lit(spec.join)}, {', '.join(parts)}), '')"
        elif spec.constant is not None:
            e = lit(str(spec.constant))
        elif spec.row_hash:
            row = ", ".join(f"coalesce(CAST(src.{ident(c)} AS VARCHAR), '\\N')" for c in cols)
            h = f"md5(concat_ws('\x1f', {row}))"
            e = f"{h} || '-' || CAST(row_number() OVER (PARTITION BY {h} ORDER BY src._line) AS VARCHAR)"
        else:
            assert spec.expr is not None
            e = f"({spec.expr})"
        if spec.map:
            cases = " ".join(f"WHEN {lit(str(k))} THEN {lit(str(v))}" for k, v in spec.map.items())
            e = f"(CASE trim(CAST({e} AS VARCHAR)) {cases} ELSE CAST({e} AS VARCHAR) END)"
        if spec.default is not None:
            e = f"coalesce(NULLIF(trim(CAST({e} AS VARCHAR)), ''), {lit(str(spec.default))})"
        return e

    # ---- readers -----------------------------------------------------------------------------
    def _stage_csv(
        self, fm: FileMapping, path: Path, n: int, source: str, rejections: list[Rejection]
    ) -> str:
        enc = codecs.lookup(fm.encoding).name
        opts = [f"header = {str(fm.header).lower()}", "all_varchar = true"]
        if fm.delimiter:
            opts.append(f"delim = {lit(fm.delimiter)}")
        if enc != "utf-8":
            path_to_read = self._transcode(fm, path, enc, source, rejections)
            table = f"_raw_{n}"
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * REPLACE (CAST(_line AS BIGINT) AS _line) "
                f"FROM read_csv({lit(str(path_to_read))}, header = true, all_varchar = true, "
                f"delim = ',', quote = '\"', escape = '\"')"
            ).fetchall()
            return table
        table = f"_raw_{n}"
        errors, scans = f"_rej_err_{n}", f"_rej_scan_{n}"
        try:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT *, row_number() OVER () AS _idx "
                f"FROM read_csv({lit(str(path))}, {', '.join(opts)}, store_rejects = true, "
                f"rejects_table = {lit(errors)}, rejects_scan = {lit(scans)})"
            ).fetchall()
        except duckdb.Error as e:
            raise IngestError(
                f"{path.name} cannot be read as CSV ({e}); check the delimiter and header in the mapping"
            ) from e
        rejected = self.con.execute(
            f"SELECT line, column_name, error_type, error_message FROM {errors} ORDER BY line"
        ).fetchall()
        self.con.execute(f"DROP TABLE IF EXISTS {errors}").fetchall()
        self.con.execute(f"DROP TABLE IF EXISTS {scans}").fetchall()
        bad_lines = sorted({int(r[0]) for r in rejected})
        raw_lines = _read_lines(path, bad_lines) if bad_lines else {}
        seen: set[int] = set()
        for line, column, etype, message in rejected:
            if line in seen:
                continue
            seen.add(int(line))
            hint = (
                "; the file is not UTF-8 — set encoding: gb18030 (or the right one) in the mapping"
                if "ENCODING" in str(etype).upper() or "unicode" in str(message).lower()
                else ""
            )
            rejections.append(
                Rejection(
                    entity=fm.entity,
                    source=source,
                    file=str(path),
                    line=int(line),
                    field=column,
                    reason=f"{str(etype).lower()}: {str(message).split('.')[0]}{hint}",
                    raw=raw_lines.get(int(line), b""),
                )
            )
        if not bad_lines:
            offset = 2 if fm.header else 1
            return f"(SELECT * EXCLUDE (_idx), _idx + {offset - 1} AS _line FROM {table})"
        # rows after a rejected line shift: map the k-th good row to the k-th line not rejected
        n_rows = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]  # type: ignore[index]
        first = 2 if fm.header else 1
        candidates = np.arange(first, first + n_rows + len(bad_lines), dtype=np.int64)
        good = np.setdiff1d(candidates, np.array(bad_lines, dtype=np.int64))[:n_rows]
        lines = pa.table({"_idx": np.arange(1, n_rows + 1, dtype=np.int64), "_line": good})
        lines_name = f"_lines_{n}"
        self.con.register(lines_name, lines)
        return f"(SELECT r.* EXCLUDE (_idx), l._line FROM {table} r JOIN {lines_name} l USING (_idx))"

    def _transcode(
        self, fm: FileMapping, path: Path, encoding: str, source: str, rejections: list[Rejection]
    ) -> Path:
        """Re-encode to UTF-8 with an explicit _line column; records that do not decode are rejected."""
        out = Path(self._tmp.name) / f"{path.stem}.utf8.csv"
        text = path.read_bytes().decode(encoding, errors="surrogateescape")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=fm.delimiter or ",")
        with out.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            header: list[str] | None = None
            line = 1
            for record in reader:
                start, line = line, reader.line_num + 1
                if header is None and fm.header:
                    header = record
                    writer.writerow([*record, "_line"])
                    continue
                if header is None:
                    header = [f"column{i}" for i in range(len(record))]
                    writer.writerow([*header, "_line"])
                joined = "\x1f".join(record)
                if any("\udc80" <= ch <= "\udcff" for ch in joined):
                    rejections.append(
                        Rejection(
                            fm.entity,
                            source,
                            str(path),
                            start,
                            None,
                            f"invalid encoding: bytes that are not {encoding}; check encoding: in the mapping",
                            joined.encode("utf-8", errors="surrogateescape"),
                        )
                    )
                    continue
                if len(record) != len(header):
                    rejections.append(
                        Rejection(
                            fm.entity,
                            source,
                            str(path),
                            start,
                            None,
                            f"wrong column count: expected {len(header)}, found {len(record)}",
                            joined,
                        )
                    )
                    continue
                writer.writerow([*record, start])
        return out

    def _stage_jsonl(
        self, fm: FileMapping, path: Path, n: int, source: str, rejections: list[Rejection]
    ) -> str:
        records: list[dict[str, Any]] = []
        lines: list[int] = []
        with path.open("rb") as f:
            for i, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    rejections.append(
                        Rejection(
                            fm.entity,
                            source,
                            str(path),
                            i,
                            None,
                            f"malformed JSON: {str(e).split(':')[0]}",
                            raw,
                        )
                    )
                    continue
                if not isinstance(obj, dict):
                    rejections.append(
                        Rejection(fm.entity, source, str(path), i, None, "line is not a JSON object", raw)
                    )
                    continue
                records.append(obj)
                lines.append(i)
        names = sorted({k for r in records for k in r})
        cols = {
            k: pa.array(
                [
                    None
                    if (v := r.get(k)) is None
                    else (orjson.dumps(v).decode() if isinstance(v, dict | list) else str(v))
                    for r in records
                ],
                pa.string(),
            )
            for k in names
        }
        cols["_line"] = pa.array(lines, pa.int64())
        name = f"_jsonl_{n}"
        self.con.register(name, pa.table(cols))
        return name


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    for fmt, exts in EXTENSIONS.items():
        if suffix in exts:
            return fmt
    raise IngestError(f"cannot tell the format of {path.name}; pass --format csv|parquet|jsonl")


def _read_lines(path: Path, wanted: list[int]) -> dict[int, bytes]:
    want, out = set(wanted), {}
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            if i in want:
                out[i] = raw.rstrip(b"\r\n")
                if len(out) == len(want):
                    break
    return out
