"""Reading a YAML definitions file, or the one careloop ships, with errors that name the file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from careloop.errors import ConfigError


def read_definitions(path: Path | None, shipped: str, what: str) -> tuple[str, dict[str, Any]]:
    """(origin, mapping) of `path`, or of careloop.profiles/`shipped` when no path is given."""
    origin = str(path or shipped)
    try:
        text = (
            path.read_text(encoding="utf-8")
            if path
            else resources.files("careloop.profiles").joinpath(shipped).read_text(encoding="utf-8")
        )
        data = yaml.safe_load(text) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} are not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a YAML mapping (see docs/{shipped.split('.')[0]}.md)")
    return origin, data
