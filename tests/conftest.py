"""Shared fixtures: isolated settings and keys, and a backend per engine.

`backend` runs every test that uses it on DuckDB and on PostgreSQL. PostgreSQL tests need
CARELOOP_TEST_POSTGRES_URL (CI sets it); each test session creates a fresh database on that server
and drops it at the end. Without the variable they are skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.storage import Backend, connect

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ENV = "CARELOOP_TEST_POSTGRES_URL"
DEMO_100K_PATIENTS = 100_000
#: an existing 100,000-patient demo store to use instead of building one (with CARELOOP_KEY_FILE)
DEMO_100K_STORE_ENV = "CARELOOP_CONSOLE_TIMING_STORE"


@dataclass(frozen=True)
class Demo100k:
    url: str
    key_file: str
    data_dir: Path | None  # the generated files (with truth/); None for a store named by the environment


@pytest.fixture(scope="session")
def demo_100k(tmp_path_factory: pytest.TempPathFactory) -> Demo100k:
    """The 100,000-patient demo, built once per session the way a user builds it (`careloop demo
    --patients 100000 --no-serve`, about four minutes on 2 cores), or the store named by
    CARELOOP_CONSOLE_TIMING_STORE (its generated files in CARELOOP_DEMO_100K_DATA, if any)."""
    given = os.environ.get(DEMO_100K_STORE_ENV)
    if given:
        data = os.environ.get("CARELOOP_DEMO_100K_DATA")
        return Demo100k(given, os.environ.get("CARELOOP_KEY_FILE", ""), Path(data) if data else None)
    home = tmp_path_factory.mktemp("demo100k")
    url, keys = f"duckdb:///{home / 'careloop.duckdb'}", str(home / "keys.json")
    env = {
        **os.environ,
        "CARELOOP_DATABASE_URL": url,
        "CARELOOP_KEY_FILE": keys,
        "CARELOOP_MODELS_DIR": str(home / "models"),
        "CARELOOP_ENVIRONMENT": "test",
    }
    env.pop("CARELOOP_WORKSPACE", None)
    demo = (sys.executable, "-m", "careloop.cli", "demo", "--no-serve", "--json")
    done = subprocess.run(
        [*demo, "--patients", str(DEMO_100K_PATIENTS), "--data-dir", str(home / "data")],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return Demo100k(url, keys, home / "data")


@pytest.fixture(autouse=True)
def _isolated_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test gets its own key file and default database; nothing touches the working tree."""
    home = tmp_path_factory.mktemp("careloop-home")
    monkeypatch.setenv("CARELOOP_KEY_FILE", str(home / "keys.json"))
    monkeypatch.setenv("CARELOOP_DATABASE_URL", f"duckdb:///{home / 'careloop.duckdb'}")
    monkeypatch.setenv("CARELOOP_ENVIRONMENT", "test")
    monkeypatch.delenv("CARELOOP_KEYS", raising=False)
    monkeypatch.delenv("CARELOOP_WORKSPACE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 1, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql://user@host:port/db (CI sets it)")
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need the [postgres] extra")
    name = f"careloop_test_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:  # the variable is set, so PostgreSQL tests must run: fail
        pytest.fail(f"{PG_ENV} is set but PostgreSQL at {url.split('@')[-1]} is not reachable: {e}")
    base, _, _ = url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP SCHEMA public CASCADE")
        con.execute("CREATE SCHEMA public")


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> Iterator[Backend]:
    """An empty, migrated store on each engine."""
    if request.param == "duckdb":
        b = connect(f"duckdb:///{tmp_path / 'test.duckdb'}", clock=clock)
    else:
        url = request.getfixturevalue("postgres_server_url")
        _reset_postgres(url)
        b = connect(url, clock=clock)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(
            f"{SHARED_DATA} is not present: the shared data sets live beside the repo in ../shared/data"
        )
    return SHARED_DATA
