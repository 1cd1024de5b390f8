"""The console's target: every dashboard page renders in < 1 s of server time on the 100,000-patient demo.

The test builds that demo the way a user does (`careloop demo --patients 100000 --no-serve`, about two and
a half minutes on 2 cores) into a temporary directory, signs in and times each dashboard for three period
lengths: the first request and the median of three more, read from the ``Server-Timing`` header the
console sets on every page (the time inside the app, not the test client's). It fails when a median is
1 s or more, or a first request 1.5 s or more (one noisy sample on a shared 2-core machine is tolerated,
a slow page is not). Set ``CARELOOP_CONSOLE_TIMING_STORE`` (with ``CARELOOP_KEY_FILE``) to time an
existing store instead.
"""

from __future__ import annotations

import statistics

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_100K_PATIENTS as PATIENTS
from tests.conftest import Demo100k

DASHBOARDS = ("/console/executive", "/console/marketing", "/console/journey-analysis")
USER, PASSWORD = "console-timing", "console timing password"

pytestmark = pytest.mark.slow


def _server_ms(client: TestClient, path: str) -> float:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code)
    return float(r.headers["server-timing"].split("dur=")[1])


def test_dashboards_under_a_second_on_the_100k_demo(
    demo_100k: Demo100k, monkeypatch: pytest.MonkeyPatch
) -> None:
    from careloop.api import create_app
    from careloop.config import Settings, get_settings
    from careloop.privacy.auth import add_user, list_users
    from careloop.storage import connect

    url, keys = demo_100k.url, demo_100k.key_file
    monkeypatch.setenv("CARELOOP_DATABASE_URL", url)
    if keys:
        monkeypatch.setenv("CARELOOP_KEY_FILE", keys)
    get_settings.cache_clear()
    backend = connect(url)
    try:
        store = backend.workspace("default", create=False)
        persons = store.count("person")
        assert persons >= PATIENTS, (
            f"the store holds {persons:,} persons; the target is for {PATIENTS:,} patients"
        )
        if USER not in {u["username"] for u in list_users(store)}:
            add_user(store, USER, PASSWORD, "admin")
        app = create_app(settings=Settings(journeys_worker=False, database_url=url), backend=backend)
        with TestClient(app) as client:
            r = client.post("/console/login", data={"username": USER, "password": PASSWORD})
            assert r.status_code == 200
            slow = []
            for days in (30, 90, 365):
                for path in DASHBOARDS:
                    first = _server_ms(client, f"{path}?days={days}")
                    median = statistics.median(_server_ms(client, f"{path}?days={days}") for _ in range(3))
                    print(
                        f"{persons:,} persons {path}?days={days}: first {first:.0f} ms, median {median:.0f} ms"
                    )
                    if median >= 1000 or first >= 1500:
                        slow.append((path, days, round(first), round(median)))
            assert not slow, f"dashboards over the 1 s target (path, days, first ms, median ms): {slow}"
    finally:
        backend.close()
        get_settings.cache_clear()
