"""Fixtures of the console tests: one demo store for the session (tests/console/world.py), the app over it
and signed-in clients per role.

The store's personal data is encrypted with the session's key file, so this directory's
`_isolated_settings` (overriding the suite's per-test one) keeps one key file for the whole session."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.config import Settings, get_settings
from tests.console.world import PASSWORD, World, build_world, user


@pytest.fixture(scope="session")
def console_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-home")


def _env(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("CARELOOP_KEY_FILE", str(home / "keys.json"))
    mp.setenv("CARELOOP_DATABASE_URL", f"duckdb:///{home / 'default.duckdb'}")
    mp.setenv("CARELOOP_ENVIRONMENT", "test")
    mp.setenv("CARELOOP_JOURNEYS_WORKER", "false")
    mp.delenv("CARELOOP_KEYS", raising=False)
    mp.delenv("CARELOOP_WORKSPACE", raising=False)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_settings(console_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _env(monkeypatch, console_home)
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def world(console_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, console_home)
        w = build_world(tmp_path_factory.mktemp("console-world"))
    yield w
    w.backend.close()


@pytest.fixture(scope="session")
def app(world: World, console_home: Path) -> Iterator[FastAPI]:
    """The app over the world's store (journey worker off: nothing moves while pages are compared)."""
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, console_home)
        application = create_app(
            settings=Settings(journeys_worker=False), backend=world.backend, clock=world.clock
        )
        with TestClient(application):  # runs the lifespan once: app.state holds backend, settings, clock
            yield application


def sign_in(app: FastAPI, role: str, *, lang: str | None = None) -> TestClient:
    client = TestClient(app)
    r = client.post(
        "/console/login", data={"username": user(role), "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    if lang:
        client.get("/console/assessment", params={"lang": lang})
    return client


@pytest.fixture(scope="session")
def as_role(app: FastAPI) -> Callable[[str], TestClient]:
    """A signed-in client per role (cached for the session)."""
    clients: dict[str, TestClient] = {}

    def get(role: str) -> TestClient:
        if role not in clients:
            clients[role] = sign_in(app, role)
        return clients[role]

    return get


@pytest.fixture
def admin(as_role: Callable[[str], TestClient]) -> TestClient:
    return as_role("admin")


def api_headers(app: FastAPI, role: str) -> dict[str, str]:
    """Bearer headers of a console user for the JSON API (the API's own sign-in)."""
    r = TestClient(app).post("/v1/auth/login", json={"username": user(role), "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def values(html: str, attr: str) -> dict[str, str]:
    """data-<attr>="key" data-value="v" pairs of a page (KPI cards)."""
    return dict(re.findall(rf'data-{attr}="([^"]+)" data-value="([^"]*)"', html))


def table(html: str, table_id: str) -> list[dict[str, str]]:
    """A rendered table's rows: data-key -> data-value (numbers) or the cell's text."""
    m = re.search(rf'data-table="{re.escape(table_id)}".*?<tbody>(.*?)</tbody>', html, re.S)
    if not m:
        return []
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S):
        row = {}
        for key, value, text in re.findall(
            r'<td class="[^"]*" data-key="([^"]+)"(?: data-value="([^"]*)")?>(.*?)</td>', tr, re.S
        ):
            row[key] = value if value else re.sub(r"<[^>]+>", "", text).strip()
        rows.append(row)
    return rows
