"""The output layout: which source system writes which entity, with which columns and Arrow types, and
the ingestion mapping (``careloop-mapping.yaml``) that reads it back.

Files are ``<source>/<entity>.parquet`` (or ``.csv``). Columns carry the canonical field names of
`careloop.domain`, without ``source`` (the mapping names it), except the HIS patient and encounter
exports, which look like real HIS exports: Chinese headers (病历号, 姓名, 性别 ...), sex and visit type
as Chinese words and bare 11-digit phone numbers; the mapping translates them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from careloop.domain import entities, field_specs
from careloop.synth.arrays import TS_TYPE
from careloop.synth.registry import HIS_SOURCES

OTHER_SOURCES = (
    "pharmacy",
    "dtp",
    "internet_hospital",
    "wechat_oa",
    "wechat_mp",
    "app",
    "call_centre",
    "crm",
)
PATIENT_SOURCES: tuple[str, ...] = HIS_SOURCES + OTHER_SOURCES
SOURCES: tuple[str, ...] = ("registry", *PATIENT_SOURCES)

_HIS_ENTITIES = (
    "patient", "patient_identifier", "coverage", "encounter", "condition", "prescription", "dispense",
    "observation", "appointment", "feedback", "care_plan", "immunization",
)  # fmt: skip
SOURCE_ENTITIES: dict[str, tuple[str, ...]] = {
    "registry": ("organization", "department", "doctor", "payer"),
    **{s: _HIS_ENTITIES for s in HIS_SOURCES},
    "pharmacy": ("patient", "dispense"),
    "dtp": ("patient", "dispense"),
    "internet_hospital": ("patient", "encounter", "consultation", "prescription", "dispense", "feedback"),
    "wechat_oa": ("patient", "patient_identifier", "event"),
    "wechat_mp": ("patient", "patient_identifier", "event"),
    "app": ("patient", "patient_identifier", "event", "observation", "device_use"),
    "call_centre": ("patient", "event", "feedback"),
    "crm": ("patient", "consent", "campaign", "message", "touch"),
}

HIS_PATIENT_HEADERS = {
    "key": "病历号", "name": "姓名", "sex": "性别", "birth_date": "出生日期", "id_number": "身份证号",
    "phone": "联系电话", "address": "住址", "province": "省份", "city": "城市", "district": "区县",
    "postal_code": "邮政编码", "ethnicity": "民族", "marital_status": "婚姻状况", "registered_at": "建档时间",
}  # fmt: skip
HIS_ENCOUNTER_HEADERS = {
    "key": "就诊流水号", "patient_key": "病历号", "encounter_class": "就诊类型", "start": "就诊时间",
    "end": "结束时间", "org_key": "机构编码", "department_key": "科室编码", "doctor_key": "医生工号",
    "payer_key": "费别编码", "code": "就诊类别代码", "description": "就诊类别", "reason_code": "诊断编码",
    "reason_description": "诊断名称", "cost": "总费用", "payer_coverage": "医保统筹支付",
}  # fmt: skip
SEX_CN = {"male": "男", "female": "女"}
MARITAL_CN = {"married": "已婚", "single": "未婚", "widowed": "丧偶", "divorced": "离婚"}
ENCOUNTER_CN = {
    "outpatient": "门诊",
    "inpatient": "住院",
    "emergency": "急诊",
    "follow_up": "随访",
    "wellness": "体检",
}


def arrow_type(py_type: type) -> pa.DataType:
    name = py_type.__name__
    return {
        "str": pa.string(),
        "int": pa.int32(),
        "float": pa.float64(),
        "Decimal": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "datetime": TS_TYPE,
        "dict": pa.string(),
        "list": pa.string(),
    }[name]


@dataclass(frozen=True)
class FileSpec:
    source: str
    entity: str
    columns: tuple[tuple[str, str], ...]  # (canonical field, column in the file)
    types: tuple[pa.DataType, ...]
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> canonical -> file value

    def path(self, fmt: str) -> str:
        return f"{self.source}/{self.entity}.{fmt}"

    @property
    def schema(self) -> pa.Schema:
        types = [
            pa.string() if f in self.value_maps else t
            for (f, _), t in zip(self.columns, self.types, strict=True)
        ]
        return pa.schema([pa.field(col, t) for (_, col), t in zip(self.columns, types, strict=True)])

    def mapping_entry(self, fmt: str) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for f, col in self.columns:
            if f in self.value_maps:
                columns[f] = {"column": col, "map": {v: k for k, v in self.value_maps[f].items()}}
            else:
                columns[f] = col
        entry: dict[str, Any] = {"path": self.path(fmt), "entity": self.entity, "source": self.source}
        if fmt == "csv":
            entry.update({"format": "csv", "encoding": "utf-8"})
        entry["columns"] = columns
        return entry


def _spec(source: str, entity: str) -> FileSpec:
    specs = [s for s in field_specs(entities()[entity]) if s.name != "source"]
    headers: dict[str, str] = {}
    maps: dict[str, dict[str, str]] = {}
    names = [s.name for s in specs]
    if source in HIS_SOURCES and entity == "patient":
        headers, names = HIS_PATIENT_HEADERS, list(HIS_PATIENT_HEADERS)
        maps = {"sex": SEX_CN, "marital_status": MARITAL_CN}
    elif source in HIS_SOURCES and entity == "encounter":
        headers, names = HIS_ENCOUNTER_HEADERS, list(HIS_ENCOUNTER_HEADERS)
        maps = {"encounter_class": ENCOUNTER_CN}
    by_name = {s.name: s for s in specs}
    return FileSpec(
        source=source,
        entity=entity,
        columns=tuple((n, headers.get(n, n)) for n in names),
        types=tuple(arrow_type(by_name[n].py_type) for n in names),
        value_maps=maps,
    )


FILES: dict[tuple[str, str], FileSpec] = {
    (source, entity): _spec(source, entity) for source, ents in SOURCE_ENTITIES.items() for entity in ents
}


def mapping_document(fmt: str) -> dict[str, Any]:
    """The ingestion mapping of every data file (truth files are not data and are left out)."""
    return {"timezone": "Asia/Shanghai", "files": [spec.mapping_entry(fmt) for spec in FILES.values()]}
