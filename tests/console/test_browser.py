"""The console in a real browser: Debian's chromium driven by playwright against the app served by uvicorn
over the demo store. Signs in as two roles, opens every view, fails on any console error, uncaught page
error, failed request or HTTP error response, compares key numbers with the JSON API, checks that masking
differs by role, uses the segment builder's live count, downloads a chart as PNG and a table as CSV, and
saves screenshots to docs/screenshots/ (refreshed on every run)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from careloop.patients import PatientView, Viewer, Visibility
from tests.console.world import AS_OF, JOURNEY, PASSWORD, World, user

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="browser tests need the playwright package (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(world: World, console_home: Path) -> Iterator[str]:
    """The app served by uvicorn on a free port (in this process, over the world's open store)."""
    import uvicorn

    from careloop.api import create_app
    from careloop.config import Settings

    with pytest.MonkeyPatch.context() as mp:
        from tests.console.conftest import _env

        _env(mp, console_home)
        app = create_app(settings=Settings(journeys_worker=False), backend=world.backend, clock=world.clock)
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@dataclass
class Watched:
    """A signed-in browser page that records every problem the console must not have."""

    page: Any
    base: str
    problems: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path, wait_until="networkidle")
        assert response is not None and response.status == 200, (path, response.status if response else None)
        self.page.wait_for_function(
            "Array.from(document.querySelectorAll('div.chart')).every(el => el.dataset.ready === '1')",
            timeout=15000,
        )
        assert not self.problems, (path, self.problems)
        return response

    def shot(self, name: str, selector: str | None = None) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOTS / f"{name}.png"
        if selector:
            self.page.locator(selector).first.screenshot(path=str(target))
        else:
            self.page.screenshot(path=str(target))


def _watch(browser: Any, base: str, role: str, *, lang: str = "zh") -> Watched:
    context = browser.new_context(
        viewport={"width": 1280, "height": 860},
        locale="zh-CN" if lang == "zh" else "en-US",
        accept_downloads=True,
    )
    page = context.new_page()
    w = Watched(page, base)
    page.on(
        "console", lambda m: w.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: w.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: w.problems.append(f"request failed: {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: w.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    page.goto(base + "/console/login", wait_until="networkidle")
    page.fill("input[name=username]", user(role))
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/console/login" not in page.url, page.content()[:500]
    return w


def _api(base: str, role: str) -> httpx.Client:
    token = httpx.post(f"{base}/v1/auth/login", json={"username": user(role), "password": PASSWORD}).json()
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['access_token']}"})


def _kpi(page: Any, key: str) -> str:
    return str(page.locator(f'[data-kpi="{key}"]').get_attribute("data-value"))


def test_every_view_as_the_dpo(browser: Any, base_url: str, world: World) -> None:
    w = _watch(browser, base_url, "dpo")
    api = _api(base_url, "dpo")
    page = w.page

    w.open("/console/executive")
    assert int(_kpi(page, "kpi.persons")) == world.store.count("person")
    assert page.locator("nav.side a[aria-current=page]").inner_text() == "管理层仪表盘"
    w.shot("executive")

    w.open("/console/marketing?end=2026-11-30&days=365")  # the journeys' sends and a year of campaigns
    stats = api.get(f"/v1/journeys/{JOURNEY}/stats").json()
    row = page.locator('[data-table="journeys"] tr', has_text=JOURNEY)
    assert row.locator('[data-key="entries"]').get_attribute("data-value") == str(stats["entries"])
    assert float(str(row.locator('[data-key="uplift"]').get_attribute("data-value"))) == pytest.approx(
        stats["conversion"]["uplift"]
    )
    assert page.locator('[data-table="campaigns"] tr').count() > 1
    w.shot("marketing")

    w.open("/console/journey-analysis?days=365")
    w.shot("journey-analysis")
    w.shot("cohort-retention", "#c-retention")
    w.open("/console/journey-analysis")  # 90 days: the demo's two 5A snapshots are compared
    drawn = page.evaluate(
        "window.careloopCharts.get('chart-flows_5a').getOption().series[0].links.reduce((a, l) => a + l.value, 0)"
    )
    assert drawn == world.store.count("person")
    assert page.locator('[data-table="flows_5a"] tbody tr').count() >= 6
    w.shot("stage-flows", "#c-flows_5a")

    w.open(f"/console/patients/{world.person}")
    doc = api.get(f"/v1/patients/{world.person}").json()
    assert str(doc["golden"]["record_count"]) in page.locator("main .kpis").inner_text()
    clear_phone = doc["golden"]["fields"]["phone"]["value"]
    assert clear_phone.removeprefix("+86") in page.content()  # the DPO's viewer is clear

    w.open("/console/segments")
    w.shot("segments")
    w.open(f"/console/segments/{quote('老年')}")
    count = api.get(f"/v1/segments/{quote('老年')}/count", params={"as_of": AS_OF.isoformat()}).json()[
        "count"
    ]
    assert _kpi(page, "segment.evaluated") == str(count)

    w.open("/console/segments/new")
    page.fill("input[name=c0_trait]", "age")
    page.select_option("select[name=c0_op]", ">=")
    page.fill("input[name=c0_value]", "65")
    page.locator("input[name=c0_value]").dispatch_event("change")
    page.wait_for_selector("[data-count]")
    preview = api.post(
        "/v1/segments/preview",
        params={"as_of": AS_OF.isoformat()},
        json={"trait": "age", "op": ">=", "value": 65},
    )
    assert page.locator("[data-count]").get_attribute("data-count") == str(preview.json()["count"])
    assert "的判定" in page.locator("#preview").inner_text()
    w.shot("segment-builder")

    w.open("/console/journeys")
    w.open(f"/console/journeys/{JOURNEY}")
    assert _kpi(page, "kpi.entries") == str(stats["entries"])
    w.shot("journey-graph", "#c-graph")
    with page.expect_download() as png:
        page.click("#c-graph button.png")
    assert png.value.suggested_filename.endswith(".png")
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    w.open("/console/data-quality")
    runs = api.get("/v1/ingest/runs", params={"limit": 50}).json()
    assert page.locator('[data-table="runs"] tbody tr').count() == len(runs)
    with page.expect_download() as csv:
        page.locator('[data-table="runs"] .exports a', has_text="CSV").click()
    assert len(Path(csv.value.path()).read_text(encoding="utf-8-sig").splitlines()) == len(runs) + 1
    w.shot("data-quality")
    page.locator('[data-table="quarantine"] tbody a').first.click()
    page.wait_for_load_state("networkidle")
    assert "139****5678" in page.content()

    w.open("/console/assessment")
    w.shot("assessment", "#c-radar")
    assert not w.problems, w.problems
    page.context.close()


def test_the_marketer_sees_masked_data_and_english(browser: Any, base_url: str, world: World) -> None:
    clear = PatientView(world.store, viewer=Viewer(default=Visibility.CLEAR)).show(world.person)
    phone = clear["golden"]["fields"]["phone"]["value"].removeprefix("+86")
    name = clear["golden"]["fields"]["name"]["value"]
    w = _watch(browser, base_url, "marketer")
    page = w.page
    nav = page.locator("nav.side").inner_text()
    assert "数据质量" not in nav and "营销绩效分析" in nav  # the marketer holds no ingest:read
    w.open(f"/console/patients/{world.person}")
    html = page.content()
    assert phone not in html and name not in html
    masked = _api(base_url, "marketer").get(f"/v1/patients/{world.person}").json()["golden"]["fields"]
    assert masked["phone"]["value"] in html and masked["name"]["value"] in html
    w.shot("patient-360-marketer")
    page.click("nav.lang a")
    page.wait_for_load_state("networkidle")
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Marketing performance" in page.locator("nav.side").inner_text()
    w.open("/console/executive")
    assert page.locator("h1").inner_text() == "Executive dashboard"
    w.shot("executive-en")
    w.open("/console/journey-analysis")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, charts resized
    page.wait_for_timeout(300)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, width
    w.shot("journey-analysis-phone")
    assert not w.problems, w.problems
    page.context.close()


def test_screenshots_are_small() -> None:
    shots = sorted(SCREENSHOTS.glob("*.png"))
    assert shots, "the browser tests above write them"
    for s in shots:
        assert s.stat().st_size < 600_000, s.name
        assert re.fullmatch(r"[a-z0-9-]+\.png", s.name)
