"""Synthea CSV exports: the built-in column mapping (``ingest/mappings/synthea.yaml``) fitted to a folder."""

from __future__ import annotations

import glob
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from careloop.errors import IngestError
from careloop.ingest.mapping import Mapping, parse_mapping

MAPPING_RESOURCE = "synthea.yaml"


def synthea_mapping_data() -> dict[str, Any]:
    """The packaged Synthea mapping as parsed YAML (every entry, present files or not)."""
    text = resources.files("careloop").joinpath("ingest", "mappings", MAPPING_RESOURCE).read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def synthea_mapping(directory: Path) -> Mapping:
    """The Synthea mapping for the export in `directory`, without the entries whose file is absent.

    Raises IngestError when the folder holds none of the Synthea files.
    """
    data = synthea_mapping_data()
    entries = data["files"]
    data["files"] = [f for f in entries if glob.glob(str(directory / f["path"]))]
    if not data["files"]:
        expected = ", ".join(sorted({f["path"] for f in entries}))
        raise IngestError(f"{directory} holds no Synthea CSV file; expected some of: {expected}")
    return parse_mapping(data, base_dir=directory, origin=f"built-in mapping {MAPPING_RESOURCE}")
