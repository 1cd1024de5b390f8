"""De-duplicate any person file (CSV or Parquet) with a small YAML mapping; see docs/identity.md.

The mapping names the input columns (any language)::

    id: 病历号                # optional; the row number otherwise
    name: 姓名                # or surname + given_name
    birth_date: 出生日期
    birth_date_format: "%Y/%m/%d"   # optional strptime format
    sex: 性别
    phone: 联系电话
    id_number: 身份证号
    address: 住址
    postcode: 邮编
    encoding: gb18030         # CSV only; default utf-8

The output holds every input row with all its columns, plus `cluster_id` (the id of the cluster's
first row) and `match_probability` (best probability linking the row to another member of its
cluster; empty for singletons).
"""

from __future__ import annotations

import codecs
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from careloop.errors import ConfigError, IngestError
from careloop.identity.matching import DEFAULT_SEED, DEFAULT_THRESHOLD, match
from careloop.identity.standardise import PERSON_FIELDS, STD_TABLE, standardise
from careloop.ingest.rules import ident, lit


class DedupeMapping(BaseModel):
    """Which input column holds which person field."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = None
    given_name: str | None = None
    surname: str | None = None
    birth_date: str | None = None
    birth_date_format: str | None = None
    sex: str | None = None
    phone: str | None = None
    id_number: str | None = None
    address: str | None = None
    postcode: str | None = None
    encoding: str = "utf-8"
    delimiter: str | None = None

    def fields(self) -> dict[str, str]:
        """Canonical field -> input column, for the mapped person fields."""
        return {f: v for f in PERSON_FIELDS if (v := getattr(self, f)) is not None}


_KEYS = ", ".join(DedupeMapping.model_fields)


def load_dedupe_mapping(path: Path) -> DedupeMapping:
    """Read a dedupe mapping; errors name the file and the bad key."""
    if not path.is_file():
        raise ConfigError(
            f"mapping file {path} does not exist; pass --config with a YAML file (keys: {_KEYS})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"mapping file {path} is not valid UTF-8 YAML: {e}") from e
    return parse_dedupe_mapping(data, origin=str(path))


def parse_dedupe_mapping(data: Any, *, origin: str = "mapping") -> DedupeMapping:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a YAML mapping of field: column (keys: {_KEYS})")
    try:
        return DedupeMapping.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()
        )
        raise ConfigError(f"{origin}: {problems}; allowed keys: {_KEYS}") from e


@dataclass
class DedupeSummary:
    rows: int
    clusters: int
    largest_cluster: int
    rows_in_clusters: int
    pairs_above_threshold: int
    threshold: float
    seconds: float
    trained_with: list[str]
    parameters: list[dict[str, Any]]
    output: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _utf8(path: Path, encoding: str, tmp_dir: Path) -> Path:
    """The file itself when it is UTF-8, else a UTF-8 copy in `tmp_dir` (streamed, 1 MB at a time)."""
    try:
        enc = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(
            f"unknown encoding {encoding!r} in the mapping; use e.g. utf-8 or gb18030"
        ) from None
    if enc in ("utf-8", "utf-8-sig"):
        return path
    out = tmp_dir / "input-utf8.csv"
    try:
        with path.open(encoding=enc, newline="") as src, out.open("w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except UnicodeDecodeError as e:
        raise IngestError(f"{path} is not {encoding}: {e.reason}; check encoding: in the mapping") from e
    return out


def _read(con: duckdb.DuckDBPyConnection, path: Path, mapping: DedupeMapping, tmp_dir: Path) -> None:
    """Create the view `input_rows` over the file (CSV as text, so values are written back unchanged)."""
    if not path.is_file():
        raise IngestError(f"input file {path} does not exist; pass a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            con.execute(f"CREATE TABLE input_rows AS SELECT * FROM read_parquet({lit(str(path))})")  # noqa: S608
        elif suffix in (".csv", ".tsv", ".txt"):
            path = _utf8(path, mapping.encoding, tmp_dir)
            opts = ["all_varchar = true", "header = true"]
            if mapping.delimiter:
                opts.append(f"delim = {lit(mapping.delimiter)}")
            elif suffix == ".tsv":
                opts.append("delim = '\t'")
            con.execute(
                f"CREATE TABLE input_rows AS SELECT * FROM read_csv({lit(str(path))}, {', '.join(opts)})"  # noqa: S608
            )
        else:
            raise IngestError(f"cannot read {path.name}: give a .csv, .tsv or .parquet file")
    except duckdb.Error as e:
        raise IngestError(
            f"cannot read {path}: {e}; check the file, and `encoding:` in the mapping (e.g. gb18030)"
        ) from e


def input_columns(path: Path, encoding: str = "utf-8") -> list[str]:
    """The column names of a person file (for error messages); empty when it cannot be read."""
    con = duckdb.connect()
    tmp = tempfile.TemporaryDirectory(prefix="careloop-dedupe-")
    try:
        _read(con, path, DedupeMapping(encoding=encoding), Path(tmp.name))
        return [str(r[0]) for r in con.execute("DESCRIBE input_rows").fetchall()]
    except (IngestError, ConfigError):
        return []
    finally:
        con.close()
        tmp.cleanup()


def dedupe_file(
    input_path: Path,
    mapping: DedupeMapping,
    output_path: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
) -> DedupeSummary:
    """Cluster the rows of `input_path` that are the same person and write them with cluster ids."""
    t0 = time.perf_counter()
    con = duckdb.connect()
    tmp = tempfile.TemporaryDirectory(prefix="careloop-dedupe-")
    try:
        _read(con, input_path, mapping, Path(tmp.name))
        columns = [r[0] for r in con.execute("DESCRIBE input_rows").fetchall()]
        wanted = {**mapping.fields(), **({"id": mapping.id} if mapping.id else {})}
        missing = {k: v for k, v in wanted.items() if v not in columns}
        if missing:
            bad = ", ".join(f"{k}: {v!r}" for k, v in missing.items())
            raise ConfigError(
                f"mapping names column(s) the input does not have ({bad}); the input's columns are: "
                + ", ".join(columns)
            )
        for reserved in ("cluster_id", "match_probability"):
            if reserved in columns:
                raise ConfigError(f"the input already has a column {reserved!r}; rename it before dedupe")
        # rowid of the freshly loaded table numbers the rows 0..n-1 in file order: the join key back
        std_cols = standardise(
            con, "input_rows", mapping.fields(), birth_date_format=mapping.birth_date_format, row_id="rowid"
        )
        result = match(con, STD_TABLE, std_cols, threshold=threshold, seed=seed)
        con.register("_clusters", result.clusters)
        id_expr = (
            f"first(i.{ident(mapping.id)} ORDER BY c.unique_id) OVER (PARTITION BY c.cluster_id)"
            if mapping.id
            else "c.cluster_id"
        )
        out_sql = (
            "SELECT i.*, " + id_expr + " AS cluster_id, c.match_probability "  # noqa: S608 - quoted names
            "FROM (SELECT *, rowid AS _careloop_row FROM input_rows) i "
            "JOIN _clusters c ON c.unique_id = i._careloop_row"
        )
        body = f"SELECT * EXCLUDE (_careloop_row) FROM ({out_sql}) ORDER BY _careloop_row"  # noqa: S608
        fmt = "parquet" if output_path.suffix.lower() == ".parquet" else "csv, header true"
        output_path.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY ({body}) TO {lit(str(output_path))} (format {fmt})")
        sizes = con.execute(
            "SELECT count(*), max(n), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
            "FROM (SELECT count(*) AS n FROM _clusters GROUP BY cluster_id)"
        ).fetchall()[0]
        rows = result.clusters.num_rows
        return DedupeSummary(
            rows=rows,
            clusters=int(sizes[0]),
            largest_cluster=int(sizes[1] or 0),
            rows_in_clusters=int(sizes[2]),
            pairs_above_threshold=result.pairs_above_threshold,
            threshold=threshold,
            seconds=round(time.perf_counter() - t0, 3),
            trained_with=result.trained_with,
            parameters=result.parameters,
            output=str(output_path),
        )
    finally:
        con.close()
        tmp.cleanup()
