"""Resolution rules: deterministic joins in priority order with limits, read from YAML.

The default file is `careloop/identity/resolution.yaml` (package data); `careloop identity resolve
--rules FILE` takes another. Three kinds of rule:

- ``field``: records with the same standardised value of a field (``id_number``, ``phone``, …) join,
  optionally only when their names agree (same name or same pinyin) and other fields are equal;
- ``identifier``: records carrying the same `patient_identifier` of a kind (unionid, insurance number,
  …) join, compared on the blind index; ``same_system`` limits it to one issuing system;
- ``attach``: after clustering, a record left on its own joins the only compatible person sharing
  its phone (or name), or the only adult it booked appointments for (``field: booking``, with the
  booking ``events`` and the ``channels`` mapping event sources to appointment channels).

``max_group_size`` (records carrying one value) and ``max_distinct_names`` (differently named people
carrying it) keep a hub value — a placeholder phone, a family phone — from chaining people together.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from careloop.errors import ConfigError

#: standardised columns a `field` rule may join on, and `also` may require to be equal
FIELD_COLUMNS: tuple[str, ...] = ("id_number", "phone", "name", "name_pinyin", "birth_str", "sex", "address")
#: fields an `attach` rule may look for candidates on
ATTACH_FIELDS: tuple[str, ...] = ("phone", "name", "booking")
DEFAULT_RULES_FILE = "resolution.yaml"


class Rule(BaseModel):
    """One deterministic rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["field", "identifier", "attach"]
    field: str | None = None
    identifier: str | None = None
    same_system: bool = False
    names_agree: bool = False
    name_match: Literal["exact", "pinyin"] = "exact"
    also: list[str] = Field(default_factory=list)
    max_group_size: int = Field(40, ge=2)
    max_distinct_names: int | None = Field(None, ge=1)
    events: list[str] = Field(default_factory=list)
    channels: dict[str, str] = Field(default_factory=dict)
    within_seconds: int = Field(2, ge=0, le=300)
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.kind == "field":
            if self.field not in FIELD_COLUMNS:
                raise ValueError(f"a field rule needs field: one of {', '.join(FIELD_COLUMNS)}")
        elif self.kind == "identifier":
            if not self.identifier:
                raise ValueError(
                    "an identifier rule needs identifier: a patient_identifier kind, e.g. unionid"
                )
        elif self.field not in ATTACH_FIELDS:
            raise ValueError(f"an attach rule needs field: one of {', '.join(ATTACH_FIELDS)}")
        elif self.field == "booking" and not (self.events and self.channels):
            raise ValueError(
                "a booking rule needs events (booking event names, e.g. [appointment_booked]) and "
                "channels (event source -> appointment channel, e.g. {wechat_oa: wechat})"
            )
        if (self.events or self.channels) and self.field != "booking":
            raise ValueError("events and channels belong to an attach rule with field: booking")
        bad = [c for c in self.also if c not in FIELD_COLUMNS]
        if bad:
            raise ValueError(f"also: unknown field(s) {', '.join(bad)}; use {', '.join(FIELD_COLUMNS)}")
        return self


class ResolutionRules(BaseModel):
    """A rules file: threshold, seed, whether to match probabilistically, and the rules in order."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.9, gt=0, lt=1)
    seed: int = 42
    probabilistic: bool = True
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ResolutionRules:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique: {', '.join(dup)} appear twice")
        reserved = {"probabilistic", "manual", "alone"} & set(names)
        if reserved:
            raise ValueError(f"rule names {', '.join(sorted(reserved))} are reserved; rename the rule")
        return self

    def joins(self) -> list[Rule]:
        """Enabled field and identifier rules, in priority order."""
        return [r for r in self.rules if r.enabled and r.kind != "attach"]

    def attaches(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled and r.kind == "attach"]

    def as_settings(self) -> dict[str, Any]:
        """The rules as stored with a run. A booking rule's `channels` become [source, channel] pairs:
        a mapping would come back from PostgreSQL (through Arrow) with every rule's keys merged in."""
        out = self.model_dump(mode="json")
        for rule in out["rules"]:
            rule["channels"] = sorted([k, v] for k, v in rule["channels"].items())
        return out


def parse_rules(data: Any, *, origin: str = "rules") -> ResolutionRules:
    """Validate a parsed rules document; errors name the origin, the rule and the bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a YAML mapping with threshold, seed, probabilistic and rules")
    try:
        return ResolutionRules.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = list(err["loc"])
            where = ".".join(map(str, loc))
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                rules = data.get("rules")
                name = (
                    rules[loc[1]].get("name")
                    if isinstance(rules, list) and isinstance(rules[loc[1]], dict)
                    else None
                )
                where = (
                    f"rules[{loc[1]}]" + (f" ({name})" if name else "") + "".join(f".{x}" for x in loc[2:])
                )
            msg = (
                "unknown key"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{where}: {msg}")
        raise ConfigError(
            f"{origin}: " + "; ".join(problems) + " (see docs/identity.md, 'Resolving the store')"
        ) from e


def load_rules(path: Path | None = None) -> ResolutionRules:
    """The rules in `path`, or the packaged defaults."""
    if path is None:
        text = resources.files("careloop.identity").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        origin = "default rules"
    else:
        if not path.is_file():
            raise ConfigError(
                f"rules file {path} does not exist; pass --rules with a YAML file (docs/identity.md)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"rules file {path} is not UTF-8: {e}") from e
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin} is not valid YAML: {e}") from e
    return parse_rules(data, origin=origin)
