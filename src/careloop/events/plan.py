"""Tracking plans: the events a source may send and the types of their properties.

A plan is YAML (or JSON)::

    allow_unplanned: false          # an event not listed is a violation (default: true, allowed)
    events:
      refill_reminder_clicked:
        properties:
          drug_class: {type: string, required: true}
          days_left: {type: integer}
      page_viewed: {}               # declared, properties free

Property types: string, number, integer, boolean, object, array, datetime (ISO-8601 string).
Violations are flagged on the stored event and counted per source; an event is never dropped for
breaking its plan (a plan is a contract to fix, not a filter that loses data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from careloop.errors import ConfigError

PROPERTY_TYPES = ("string", "number", "integer", "boolean", "object", "array", "datetime")


@dataclass(frozen=True)
class PropertySpec:
    type: str
    required: bool = False


@dataclass(frozen=True)
class TrackingPlan:
    events: dict[str, dict[str, PropertySpec]] = field(default_factory=dict)
    allow_unplanned: bool = True

    @property
    def empty(self) -> bool:
        return not self.events and self.allow_unplanned

    def check(self, event_type: str, name: str, properties: Any) -> list[str]:
        """The violations of one event (empty when it follows the plan). Only track, page and screen
        calls are named events; identify, group and alias are not checked."""
        if self.empty or event_type not in ("track", "page", "screen"):
            return []
        spec = self.events.get(name)
        if spec is None:
            return [] if self.allow_unplanned else [f"event {name!r} is not in the tracking plan"]
        props = properties if isinstance(properties, dict) else {}
        found = []
        for prop, ps in spec.items():
            if prop not in props or props[prop] is None:
                if ps.required:
                    found.append(f"property {prop!r} is required")
                continue
            if not _is(props[prop], ps.type):
                found.append(f"property {prop!r} should be {ps.type}, got {type(props[prop]).__name__}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "allow_unplanned": self.allow_unplanned,
            "events": {
                e: {"properties": {p: {"type": s.type, "required": s.required} for p, s in props.items()}}
                for e, props in self.events.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Any, *, origin: str = "tracking plan") -> TrackingPlan:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError(f"{origin}: expected a mapping with 'events' (see docs/events.md)")
        events: dict[str, dict[str, PropertySpec]] = {}
        for name, spec in (d.get("events") or {}).items():
            spec = spec or {}
            if not isinstance(spec, dict):
                raise ConfigError(f"{origin}: event {name!r} must map to {{properties: ...}} or {{}}")
            props: dict[str, PropertySpec] = {}
            for prop, ps in (spec.get("properties") or {}).items():
                ps = {"type": ps} if isinstance(ps, str) else (ps or {})
                typ = ps.get("type", "string")
                if typ not in PROPERTY_TYPES:
                    raise ConfigError(
                        f"{origin}: {name}.{prop} has type {typ!r}; use one of {', '.join(PROPERTY_TYPES)}"
                    )
                props[str(prop)] = PropertySpec(typ, bool(ps.get("required", False)))
            events[str(name)] = props
        return cls(events=events, allow_unplanned=bool(d.get("allow_unplanned", True)))

    @classmethod
    def load(cls, path: Path) -> TrackingPlan:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read tracking plan {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"tracking plan {path} is not valid YAML: {e}") from e
        return cls.from_dict(data, origin=str(path))


def _is(value: Any, typ: str) -> bool:
    if typ == "string":
        return isinstance(value, str)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ == "object":
        return isinstance(value, dict)
    if typ == "array":
        return isinstance(value, list)
    if isinstance(value, str):  # datetime
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return False
