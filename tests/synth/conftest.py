"""A small synthetic network shared by the synth tests (several chunks, to exercise chunking)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from careloop.synth import generate_network

PATIENTS = 1500
CHUNK = 600


@dataclass
class Net:
    root: Path
    summary: dict[str, Any]
    _tables: dict[str, pa.Table] = field(default_factory=dict)

    def table(self, rel: str) -> pa.Table:
        if rel not in self._tables:
            self._tables[rel] = pq.read_table(self.root / rel)
        return self._tables[rel]

    def truth(self, name: str) -> pa.Table:
        return self.table(f"truth/{name}.parquet")


@pytest.fixture(scope="session")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("synth") / "network"
    summary = generate_network(root, PATIENTS, seed=11, chunk_size=CHUNK)
    return Net(root, summary)
