"""A small synthetic network, ingested and linked from its planted truth, on each engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from careloop.bench.patient360_bench import link_from_truth
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend, WorkspaceStore
from careloop.synth import generate_network

WORKSPACE = "default"


@dataclass
class Linked:
    backend: Backend
    store: WorkspaceStore
    root: Path

    def truth(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a query over the network's truth files (views: identity, persons, households)."""
        con = duckdb.connect()
        try:
            for name in ("identity", "persons", "households"):
                con.execute(
                    f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{self.root / 'truth' / name}.parquet')"
                ).fetchall()
            rel = con.sql(sql)
            cols = rel.columns
            return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
        finally:
            con.close()

    def busiest_person(self) -> str:
        """The linked person with the most records (ties: the lowest id)."""
        row = self.store.rows(
            "SELECT person_id, count(*) AS n FROM identity_link GROUP BY person_id ORDER BY n DESC, person_id LIMIT 1"
        )
        return str(row[0]["person_id"])


def make_network(out: Path) -> Path:
    """A 120-person synthetic network (seconds to generate)."""
    generate_network(out, patients=120, seed=5, as_of=date(2026, 10, 31), chunk_size=100, quiet=True)
    return out


def make_linked(backend: Backend, network: Path, *, link: bool = True) -> Linked:
    """`network` ingested into `backend` and, with `link`, linked from its truth."""
    Ingestor(backend, WORKSPACE).ingest(network, "parquet")
    linked = Linked(backend, backend.workspace(WORKSPACE), network)
    if link:
        link_from_truth(linked.store, network, backend.clock)
    return linked


@pytest.fixture(scope="session")
def small_network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_network(tmp_path_factory.mktemp("p360-net") / "net")


@pytest.fixture
def ingested(backend: Backend, small_network: Path) -> Linked:
    """The network ingested into `backend`, identity tables still empty."""
    return make_linked(backend, small_network, link=False)


@pytest.fixture
def linked(backend: Backend, small_network: Path) -> Linked:
    """The network ingested and linked from its truth (identity_link, person, household_member, history)."""
    return make_linked(backend, small_network)
