"""Every word is in both languages (no key shows through on any page); vendored scripts are served locally;
every dashboard page renders in well under a second of server time on the test store (the 100,000-patient
demo is timed in test_dashboard_timing.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from careloop.console import routes
from careloop.console.i18n import LABELS, MESSAGES
from tests.console.world import JOURNEY, World

TEMPLATES = Path(routes.__file__).parent / "templates"
KEY = re.compile(
    r"\b(?:kpi|chart|col|table|empty|note|section|intro|nav|builder|segments?|patients?|journey|assessment|"
    r"quarantine|level|period|export|frame|error|login|graph|edge|a11y)\.(?!(?:csv|xlsx|parquet|jsonl?|yaml)\b)[a-z_0-9]+\b"
)
DASHBOARDS = ("/console/executive", "/console/marketing", "/console/journey-analysis")


def test_every_message_has_both_languages() -> None:
    for key, (zh, en) in MESSAGES.items():
        assert zh.strip() and en.strip(), key
    for group, labels in LABELS.items():
        for code, (zh, en) in labels.items():
            assert zh.strip() and en.strip(), (group, code)


def test_template_keys_exist() -> None:
    for path in TEMPLATES.glob("*.html"):
        for key in re.findall(r"""t\(['"]([a-z0-9_.]+)['"]\)""", path.read_text(encoding="utf-8")):
            assert key in MESSAGES, f"{path.name}: {key}"


def _visible(html: str) -> str:
    html = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_no_key_shows_through(as_role: Callable[[str], TestClient], world: World, lang: str) -> None:
    client = as_role("admin")
    paths = [
        *DASHBOARDS,
        "/console/patients",
        f"/console/patients/{world.person}",
        "/console/segments",
        "/console/segments/new",
        f"/console/segments/{quote('老年')}",
        "/console/journeys",
        f"/console/journeys/{JOURNEY}",
        "/console/data-quality",
        "/console/assessment",
        "/console/login",
        "/console/journeys/does-not-exist",
    ]
    for path in paths:
        r = client.get(path, params={"lang": lang})
        leaked = KEY.findall(_visible(r.text))
        assert not leaked, (path, leaked[:5])
        if lang == "en" and path in (
            "/console/login",
            "/console/patients",
            "/console/journeys/does-not-exist",
        ):
            # pages without stored data: not one Chinese character but the language switch's
            assert not re.search(r"[\u4e00-\u9fff]", _visible(r.text).replace("中文", "")), path
    client.get("/console/assessment", params={"lang": "zh"})


def test_vendored_scripts_are_served_locally(app: FastAPI, admin: TestClient) -> None:
    html = admin.get("/console/executive").text
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and all(s.startswith("/static/") for s in scripts)
    client = TestClient(app)
    for path in (
        "/static/vendor/echarts/echarts.min.js",
        "/static/vendor/htmx/htmx.min.js",
        "/static/console.js",
        "/static/console.css",
    ):
        r = client.get(path)
        assert r.status_code == 200 and len(r.content) > 1000, path
    assert "Apache License" in client.get("/static/vendor/echarts/LICENSE").text
    assert "http" not in re.sub(r"http://www.apache.org[^\s\"]*", "", client.get("/static/console.js").text)


def _server_ms(client: TestClient, path: str) -> float:
    r = client.get(path)
    assert r.status_code == 200, path
    return float(r.headers["server-timing"].split("dur=")[1])


def test_dashboards_render_well_under_a_second(admin: TestClient) -> None:
    """Server time of every dashboard page (first request and best of three) on the ~1,200-patient store;
    the target at 100,000 patients is held by test_dashboard_timing.py."""
    for days in (90, 365):
        for path in DASHBOARDS:
            first = _server_ms(admin, f"{path}?days={days}")
            best = min(_server_ms(admin, f"{path}?days={days}") for _ in range(3))
            print(f"{path} days={days}: first {first:.0f} ms, best {best:.0f} ms")
            assert best < 1000, (path, days, best)
