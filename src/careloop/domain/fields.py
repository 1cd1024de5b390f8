"""Field metadata shared by every entity: keys, references, personal data and data classification.

Each entity field carries a data class and a sensitivity level (Data Security Law Art 21) and, for
personal identifiers, a `pii` kind that tells storage to encrypt the value and keep a blind index.
Storage, ingestion and the privacy layer read this metadata; the domain itself does no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

from pydantic import Field


class DataClass(StrEnum):
    """What kind of information a field holds (数据分类)."""

    IDENTIFIER = "identifier"  # direct personal identifiers: name, phone, ID number, openid
    DEMOGRAPHIC = "demographic"  # birth date, sex, coarse location
    HEALTH = "health"  # diagnoses, medications, observations: sensitive under PIPL Art 28
    BEHAVIOUR = "behaviour"  # app / WeChat / web events, touches
    COMMERCIAL = "commercial"  # spend, campaigns, costs
    OPERATIONAL = "operational"  # keys, timestamps, statuses
    REFERENCE = "reference"  # organisations, departments, codes


#: sensitivity grades 1 (public) .. 4 (highly sensitive) (数据分级)
LEVEL_PUBLIC = 1
LEVEL_INTERNAL = 2
LEVEL_SENSITIVE = 3
LEVEL_HIGHLY_SENSITIVE = 4


class PiiKind(StrEnum):
    """Personal identifiers that are encrypted at rest; most also get a keyed blind index."""

    NAME = "name"
    PHONE = "phone"
    ID_NUMBER = "id_number"
    ADDRESS = "address"
    EMAIL = "email"
    OPENID = "openid"
    UNIONID = "unionid"
    APP_USER_ID = "app_user_id"
    HIS_NUMBER = "his_number"
    BANK_CARD = "bank_card"
    IDENTIFIER = "identifier"  # a value of unknown kind (patient_identifier.value)


#: kinds whose equality look-ups (matching, "find by phone") need a blind index
INDEXED_PII = frozenset(PiiKind) - {PiiKind.ADDRESS}

_DEFAULT_LEVEL = {
    DataClass.IDENTIFIER: LEVEL_HIGHLY_SENSITIVE,
    DataClass.HEALTH: LEVEL_SENSITIVE,
    DataClass.DEMOGRAPHIC: LEVEL_SENSITIVE,
    DataClass.BEHAVIOUR: LEVEL_INTERNAL,
    DataClass.COMMERCIAL: LEVEL_INTERNAL,
    DataClass.OPERATIONAL: LEVEL_INTERNAL,
    DataClass.REFERENCE: LEVEL_PUBLIC,
}


def meta(
    default: Any = None,
    *,
    data_class: DataClass = DataClass.OPERATIONAL,
    level: int | None = None,
    pii: PiiKind | None = None,
    key: bool = False,
    ref: str | None = None,
    required: bool = False,
    description: str = "",
    **kwargs: Any,
) -> Any:
    """A pydantic Field carrying careloop metadata.

    `key` marks the source-local primary key; `ref` names the entity a field points at;
    `required` marks fields ingestion must see (a missing one quarantines the row).
    """
    extra = {
        "data_class": str(data_class),
        "level": level if level is not None else _DEFAULT_LEVEL[data_class],
        "pii": str(pii) if pii else None,
        "key": key,
        "ref": ref,
        "required": required or key,
    }
    if key or required:
        return Field(..., description=description, json_schema_extra=cast(Any, extra), **kwargs)
    return Field(default, description=description, json_schema_extra=cast(Any, extra), **kwargs)


def key(description: str = "source-local primary key") -> Any:
    return meta(key=True, description=description)


def ref(entity: str, *, required: bool = False, description: str = "") -> Any:
    return meta(ref=entity, required=required, description=description or f"key of the {entity}")


def pii(kind: PiiKind, *, required: bool = False, description: str = "") -> Any:
    return meta(data_class=DataClass.IDENTIFIER, pii=kind, required=required, description=description)


def health(default: Any = None, *, required: bool = False, description: str = "") -> Any:
    return meta(default, data_class=DataClass.HEALTH, required=required, description=description)
