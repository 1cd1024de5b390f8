"""The base of every stored entity and the registry of entities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from careloop.domain.fields import DataClass, PiiKind


class Record(BaseModel):
    """A record as one source system knows it.

    `source` names the system (e.g. ``his_h01``, ``wechat_oa``, ``synthea``) and `key` is the record's
    id there; references to other entities use the other entity's key in the same source. Identity
    resolution (a later layer) links records of one person across sources.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    entity: ClassVar[str]
    entity_description: ClassVar[str] = ""

    source: str
    key: str


@dataclass(frozen=True)
class FieldSpec:
    """What storage and ingestion need to know about one entity field."""

    name: str
    py_type: type
    nullable: bool
    data_class: DataClass
    level: int
    pii: PiiKind | None
    is_key: bool
    ref: str | None
    required: bool
    enum: tuple[str, ...] | None
    description: str
    default: Any = None  # applied by ingestion when the source leaves the field empty


_ENTITIES: dict[str, type[Record]] = {}


def entity(name: str, description: str = "") -> Any:
    """Class decorator registering a Record subclass under its entity name."""

    def register(cls: type[Record]) -> type[Record]:
        cls.entity = name
        cls.entity_description = description or (cls.__doc__ or "").strip().splitlines()[0]
        _ENTITIES[name] = cls
        return cls

    return register


def entities() -> dict[str, type[Record]]:
    """All registered entities, by name, in definition order."""
    return dict(_ENTITIES)


def entity_model(name: str) -> type[Record]:
    try:
        return _ENTITIES[name]
    except KeyError:
        known = ", ".join(sorted(_ENTITIES))
        raise KeyError(f"unknown entity {name!r}; known entities: {known}") from None


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


_SCALARS = (str, int, float, bool, date, datetime, Decimal, dict, list)


def field_specs(model: type[Record]) -> list[FieldSpec]:
    """Field specs of an entity in declaration order (source and key first)."""
    specs = []
    for name, info in model.model_fields.items():
        annotation, nullable = _unwrap(info.annotation)
        enum_values: tuple[str, ...] | None = None
        if isinstance(annotation, type) and issubclass(annotation, StrEnum):
            enum_values = tuple(m.value for m in annotation)
            py_type: type = str
        elif get_origin(annotation) in (dict, list):
            py_type = get_origin(annotation)
        elif annotation in _SCALARS:
            py_type = annotation
        else:
            raise TypeError(f"{model.__name__}.{name}: unsupported type {annotation!r}")
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        is_key = name == "key" or bool(extra.get("key"))
        specs.append(
            FieldSpec(
                name=name,
                py_type=py_type,
                nullable=nullable,
                data_class=DataClass(str(extra.get("data_class", DataClass.OPERATIONAL))),
                level=int(extra.get("level", 2)),  # type: ignore[arg-type]
                pii=PiiKind(str(extra["pii"])) if extra.get("pii") else None,
                is_key=is_key,
                ref=str(extra["ref"]) if extra.get("ref") else None,
                required=name in ("source", "key") or bool(extra.get("required")),
                enum=enum_values,
                description=info.description or "",
                default=None if info.is_required() else _plain(info.default),
            )
        )
    return specs
