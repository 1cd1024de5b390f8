"""Column mappings: how a file's columns become an entity's canonical fields (YAML).

One mapping file describes one file or many::

    source: his_h01                 # source system the rows come from (default for every file)
    timezone: Asia/Shanghai         # naive timestamps are local to this zone
    files:
      - path: patients*.csv         # glob, relative to the mapping file's folder (or the ingested PATH)
        entity: patient
        encoding: gb18030           # csv / jsonl only; default utf-8
        delimiter: ","
        columns:
          key: 病历号                         # plain: take the column as it is
          name: 姓名
          sex: {column: 性别, map: {男: male, 女: female}}
          birth_date: {column: 出生日期, format: "%Y/%m/%d"}
          phone: 手机号
          province: {constant: 浙江省}
          address: {columns: [省, 市, 详细地址], join: ""}
      - path: visits.parquet
        entity: encounter
        columns:
          key: {row_hash: true}               # no id in the file: hash of the row (stable on re-ingest)
          encounter_class: {column: 类型, map: {门诊: outpatient, 住院: inpatient}, default: outpatient}

A column spec is either a column name or an object with exactly one of `column`, `columns` (+ `join`),
`constant`, `row_hash`, `expr` (a DuckDB SQL expression over the file's quoted column names; the
escape hatch for what the others cannot say), optionally `map` (value -> value; unmapped values pass
through and are checked), `default` (used when the value is empty) and `format` (strptime format for
dates and times). An entry may carry `where:` (a DuckDB SQL condition over the file's columns) so that one
file can feed several entries, e.g. a patient file whose optional passport column also feeds
`patient_identifier` only where it is filled. Fields of the entity not mentioned are taken from a column of the same name when
the file has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from careloop.errors import MappingError


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    columns: list[str] | None = None
    join: str = " "
    constant: Any = None
    row_hash: bool = False
    expr: str | None = None
    map: dict[str, Any] | None = None
    default: Any = None
    format: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ColumnSpec:
        given = [
            n
            for n, v in (
                ("column", self.column),
                ("columns", self.columns),
                ("constant", self.constant),
                ("row_hash", self.row_hash or None),
                ("expr", self.expr),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a column spec needs exactly one of column, columns, constant, row_hash, expr"
                f" (got {', '.join(given) or 'none'})"
            )
        return self


class FileMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field("", description="glob relative to the mapping file's folder; empty: the PATH ingested")
    entity: str
    source: str | None = None
    format: str | None = Field(None, description="csv | parquet | jsonl; default from the extension")
    encoding: str = "utf-8"
    delimiter: str | None = None
    header: bool = True
    timezone: str | None = None
    where: str | None = Field(
        None, description="DuckDB SQL condition over the file's columns: only matching rows feed this entry"
    )
    columns: dict[str, str | ColumnSpec] = Field(default_factory=dict)

    def column_specs(self) -> dict[str, ColumnSpec]:
        return {
            name: spec if isinstance(spec, ColumnSpec) else ColumnSpec(column=spec)
            for name, spec in self.columns.items()
        }


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    timezone: str | None = None
    files: list[FileMapping]
    base_dir: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _single_file_form(cls, data: Any) -> Any:
        """Allow a mapping for one file without the `files:` list."""
        if isinstance(data, dict) and "files" not in data and "entity" in data:
            top = {k: data.pop(k) for k in ("source", "timezone") if k in data}
            return {**top, "files": [data]}
        return data


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping YAML file; errors name the file and the offending key."""
    if not path.exists():
        raise MappingError(f"mapping file {path} does not exist; pass --mapping with an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MappingError(f"mapping file {path} is not valid UTF-8 YAML: {e}") from e
    return parse_mapping(data, base_dir=path.parent, origin=str(path))


def parse_mapping(data: Any, *, base_dir: Path | None = None, origin: str = "mapping") -> Mapping:
    from careloop.domain import entities

    if not isinstance(data, dict):
        raise MappingError(f"{origin}: expected a YAML mapping with `files:` (see docs/ingestion.md)")
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise MappingError(f"{origin} is not a valid mapping: {problems}") from e
    known = entities()
    for f in mapping.files:
        if f.entity not in known:
            raise MappingError(
                f"{origin}: unknown entity {f.entity!r} for {f.path}; known: {', '.join(sorted(known))}"
            )
        fields = known[f.entity].model_fields
        unknown = [c for c in f.columns if c not in fields]
        if unknown:
            raise MappingError(
                f"{origin}: {f.entity} has no field(s) {', '.join(unknown)}; "
                f"fields are: {', '.join(fields)} (run `careloop schema {f.entity}`)"
            )
    mapping.base_dir = base_dir
    return mapping
