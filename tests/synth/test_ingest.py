"""The generated network goes through the real ingestion pipeline without a single quarantined row."""

from __future__ import annotations

from pathlib import Path

import pytest

from careloop.ingest.pipeline import Ingestor
from careloop.storage import connect
from careloop.synth import generate_network


@pytest.mark.slow
def test_network_ingests_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "net"
    summary = generate_network(root, 400, seed=9)
    backend = connect(f"duckdb:///{tmp_path / 'c.duckdb'}")
    try:
        result = Ingestor(backend, "default").ingest(root, "parquet")
    finally:
        backend.close()
    assert result.status == "completed"
    assert result.quarantined == 0, {e: c for e, c in result.entities.items() if c.quarantined}
    assert result.rows == summary["total_rows"]
    assert all(c.duplicates == 0 for c in result.entities.values())
