"""Every console page renders (200) on the demo store, its numbers are the library's and the API's, and an
empty workspace shows empty states instead of numbers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from careloop.console import executive as ex
from careloop.console import journey_analysis as ja
from careloop.console import marketing as mk
from careloop.console.period import DEFAULT_DAYS, Period, data_date
from careloop.journeys.stats import journey_stats
from careloop.privacy.auth import add_user
from careloop.profiles import segments as seg
from careloop.storage import WorkspaceStore
from careloop.storage.queries import ingest_runs
from tests.console.conftest import api_headers, sign_in, table, values
from tests.console.world import AS_OF, JOURNEY, PASSWORD, SNAPSHOT_FLOWS, World, insert_snapshots, user

PAGES = (
    "/console/executive",
    "/console/marketing",
    "/console/journey-analysis",
    "/console/patients",
    "/console/segments",
    "/console/segments/new",
    "/console/journeys",
    "/console/data-quality",
    "/console/assessment",
)


def _period(world: World, days: int = DEFAULT_DAYS) -> Period:
    from zoneinfo import ZoneInfo

    return Period(AS_OF, days, ZoneInfo("Asia/Shanghai"))


def _num(text: str) -> float:
    return float(text)


def test_every_page_renders_with_security_headers(admin: TestClient, world: World) -> None:
    extra = (
        f"/console/patients/{world.person}",
        f"/console/segments/{quote('老年')}",
        f"/console/journeys/{JOURNEY}",
        "/console/executive?days=365&end=2026-06-30",
    )
    for path in (*PAGES, *extra):
        r = admin.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["server-timing"].startswith("app;dur=")
        assert "<script>" not in r.text and " on" + "click=" not in r.text  # no inline script
        assert 'lang="zh-CN"' in r.text


def test_home_and_root_redirect(admin: TestClient) -> None:
    assert admin.get("/", follow_redirects=False).headers["location"] == "/console/"
    assert admin.get("/console/", follow_redirects=False).headers["location"] == "/console/executive"


def test_data_date_is_the_traits_day(world: World) -> None:
    from zoneinfo import ZoneInfo

    assert data_date(world.store, ZoneInfo("Asia/Shanghai"), world.clock) == AS_OF


def test_executive_numbers_are_the_librarys(admin: TestClient, world: World) -> None:
    p = _period(world)
    pat, fu, adh = ex.patients(world.store, p), ex.follow_up(world.store, p), ex.adherence(world.store)
    cli, sat, roi = (
        ex.clinical(world.store, p),
        ex.satisfaction(world.store, p),
        ex.campaign_roi(world.store, p),
    )
    rev = ex.revenue(world.store, p)
    html = admin.get("/console/executive").text
    kpi = values(html, "kpi")
    assert int(kpi["kpi.persons"]) == pat["persons"] == world.store.count("person")
    assert int(kpi["kpi.active"]) == pat["active"] > 0
    assert int(kpi["kpi.new"]) == pat["new"]
    assert int(kpi["kpi.lapsing"]) == pat["lapsing"]
    assert _num(kpi["kpi.revenue"]) == pytest.approx(rev["total"])
    assert _num(kpi["kpi.adherence"]) == pytest.approx(adh["adherent"] / adh["pairs"])
    assert _num(kpi["kpi.bp"]) == pytest.approx(cli["bp_controlled"] / cli["bp_measured"])
    assert _num(kpi["kpi.satisfaction"]) == pytest.approx(sat["mean_share"])
    assert kpi["kpi.nps"] == ""  # the demo's feedback is on a 5-point scale: an empty state, not 0
    assert "NPS 需要 0–10 分评价" in html
    if roi["roi"] is None:
        assert kpi["kpi.roi"] == ""
    else:
        assert _num(kpi["kpi.roi"]) == pytest.approx(roi["roi"])
    # staff tasks were created on 3 November, after the default period (which ends on the data date)
    assert kpi["kpi.follow_up_tasks"] == "" and fu["tasks"] == 0
    monthly = table(html, "monthly")
    assert [int(r["active"]) for r in monthly] == pat["active_by_month"]
    by_class = table(html, "adherence_by_class")
    assert [(r["drug_class"], int(r["measured"])) for r in by_class] == [
        (c["drug_class"], c["measured"]) for c in adh["by_class"]
    ]


def test_executive_counts_are_set_definitions(world: World) -> None:
    """Active / lapsing from the activity mask agree with the plain union of activity rows."""
    from careloop.console import sql

    p = _period(world)
    pat = ex.patients(world.store, p)
    union = (
        "SELECT l.person_id AS pid, r.{c} AS at FROM {t} r JOIN identity_link l "
        "ON l.source = r.source AND l.patient_key = r.patient_key"
    )
    parts = [
        union.format(t=t, c=c)
        for t, c in (("encounter", '"start"'), ("dispense", "dispensed_at"), ("consultation", "started_at"))
    ]
    parts.append(union.format(t="appointment", c="booked_at"))
    parts.append(
        "SELECT l.person_id AS pid, v.occurred_at AS at FROM event v JOIN identity_link l ON l.source = v.source "
        "AND l.patient_key = v.patient_key WHERE v.person_id IS NULL "
        "AND v.name NOT IN ('message_delivered', 'message_failed') "
        "UNION ALL SELECT v.person_id, v.occurred_at FROM event v WHERE v.person_id IS NOT NULL "
        "AND v.name NOT IN ('message_delivered', 'message_failed')"
    )
    plain = " UNION ALL ".join(parts)

    def active(q: Period) -> set[str]:
        return {
            r[0]
            for r in world.store.tuples(
                f"SELECT DISTINCT pid FROM ({plain}) x WHERE at >= :lo AND at < :hi", {"lo": q.lo, "hi": q.hi}
            )
        }

    now, before = active(p), active(p.previous)
    assert pat["active"] == len(now) and pat["active_prev"] == len(before)
    assert pat["lapsing"] == len(before - now)
    assert pat["lapsing_prev"] == len(active(p.shifted(2)) - before)
    assert sql.ratio(1, 0) is None


def test_follow_up_tasks_in_a_later_period(admin: TestClient, world: World) -> None:
    end = (world.clock.now() + timedelta(days=1)).date().isoformat()
    html = admin.get("/console/executive", params={"end": end, "days": 30}).text
    kpi = values(html, "kpi")
    done = world.store.scalar("SELECT count(*) FROM staff_task WHERE status = 'done'")
    total = world.store.scalar("SELECT count(*) FROM staff_task")
    assert total > 0 and _num(kpi["kpi.follow_up_tasks"]) == pytest.approx(done / total)


def test_marketing_matches_journey_stats_and_the_api(app: FastAPI, admin: TestClient, world: World) -> None:
    html = admin.get("/console/marketing", params={"end": "2026-11-30", "days": 30}).text
    stats = journey_stats(world.store, JOURNEY)
    api = TestClient(app).get(f"/v1/journeys/{JOURNEY}/stats", headers=api_headers(app, "marketer")).json()
    assert api["conversion"] == stats["conversion"]
    rows = {r["journey"]: r for r in table(html, "journeys")}
    mine = rows[JOURNEY]
    conv = stats["conversion"]
    assert int(mine["entries"]) == stats["entries"] == api["entries"]
    assert int(mine["treated"]) == conv["treated"] and int(mine["holdout"]) == conv["holdout"]
    assert int(mine["treated_converted"]) == conv["treated_converted"]
    assert _num(mine["uplift"]) == pytest.approx(conv["uplift"])
    assert [_num(mine["ci_low"]), _num(mine["ci_high"])] == pytest.approx(conv["ci95"])
    sent = sum(s["count"] for s in stats["sends"] if s["status"] == "sent")
    assert int(mine["sent"]) == sent > 0
    delivered = world.store.scalar("SELECT count(*) FROM event WHERE name = 'message_delivered'")
    assert int(mine["delivered"]) == delivered > 0
    blocks = {r["reason"]: int(r["count"]) for r in table(html, "journey_blocks")}
    assert sum(blocks.values()) == world.store.scalar(
        "SELECT count(*) FROM message_send WHERE status = 'blocked'"
    )
    assert "无授权同意" in html  # no_consent, labelled


def test_marketing_campaigns(admin: TestClient, world: World) -> None:
    html = admin.get("/console/marketing", params={"days": 365}).text
    p = _period(world, 365)
    camps = mk.campaigns(world.store, p.lo, p.hi)
    rows = table(html, "campaigns")
    assert [r["campaign"] for r in rows] == [c["campaign"] for c in camps] and camps
    for r, c in zip(rows, camps, strict=True):
        assert int(r["treated"]) == c["treated"] and int(r["converted"]) == c["converted"]
        if c["uplift"] is not None:
            assert _num(r["uplift"]) == pytest.approx(c["uplift"])
        assert int(r["acquired"]) == c["acquired"]
    acquired = sum(c["acquired"] for c in camps)
    assert acquired > 0
    cac = sum(c["cost"] or 0.0 for c in camps) / acquired
    assert _num(values(html, "kpi")["kpi.cac"]) == pytest.approx(cac)
    messages = world.store.scalar(
        "SELECT count(*) FROM message WHERE NOT is_holdout AND created_at >= :lo AND created_at < :hi",
        {"lo": p.lo, "hi": p.hi},
    )
    assert sum(int(r["treated"]) for r in table(html, "crm_channels")) == messages


def test_journey_analysis(admin: TestClient, world: World) -> None:
    p = _period(world)
    html = admin.get("/console/journey-analysis").text
    funnel = ja.funnel(world.store, p)
    rows = table(html, "funnel")
    assert [int(r["persons"]) for r in rows] == [f["persons"] for f in funnel]
    counts = [f["persons"] for f in funnel]
    assert counts == sorted(counts, reverse=True)
    assert funnel[0]["persons"] > funnel[-1]["persons"] > 0
    five = table(html, "stages_5a")
    stored = dict(
        world.store.tuples("SELECT value_text, count(*) FROM trait_value WHERE trait = 'stage_5a' GROUP BY 1")
    )
    assert {r["stage"]: int(r["persons"]) for r in five if int(r["persons"])} == {
        _stage_label(k): int(v) for k, v in stored.items()
    }
    coh = ja.cohorts(world.store, p)
    shown = table(html, "cohorts")
    assert [int(r["size"]) for r in shown] == [c["size"] for c in coh["cohorts"]]
    assert 'id="chart-retention"' in html and 'id="chart-funnel"' in html
    # 5A flows: the world has the demo's snapshot 90 days back (08-02) and the as-of day's (10-31)
    assert _matrix(html) == _direct_flows(world.store, p) and _matrix(html)
    assert 'id="chart-flows_5a"' in html and '"type":"sankey"' in html
    assert "比较 2026-08-02 与 2026-10-31 的快照" in html
    moves = {r["move"]: int(r["persons"]) for r in table(html, "moves_5a")}
    assert sum(moves.values()) == world.store.count("person")


def _stage_label(stage: str) -> str:
    from careloop.console.i18n import label_for

    return label_for("zh", "stage5a", stage)


def _matrix(html: str) -> dict[tuple[str, str], int]:
    """The transition matrix shown: (from stage, to stage) -> persons, zero cells left out."""
    from careloop.console.i18n import LABELS

    code = {pair[0]: c for c, pair in LABELS["stage5a"].items()}
    out = {}
    for r in table(html, "flows_5a"):
        for k, v in r.items():
            if k.startswith("to_") and int(v):
                out[(code[r["from"]], k[3:])] = int(v)
        assert int(r["total"]) == sum(int(v) for k, v in r.items() if k.startswith("to_"))
    return out


def _direct_flows(store: WorkspaceStore, p: Period) -> dict[tuple[str, str], int]:
    """The flows by a direct statement written apart from the console's: each person's latest snapshot
    day on or before the first day and on or before the last, joined back to their values."""
    h = "trait_history {a} ON {a}.person_id = s.person_id AND {a}.trait = 'stage_5a' AND {a}.key = ''"
    return {
        (f, t): int(n)
        for f, t, n in store.tuples(
            "WITH s AS (SELECT person_id, max(CASE WHEN as_of <= :a THEN as_of END) AS fd, max(as_of) AS td "
            "FROM trait_history WHERE trait = 'stage_5a' AND key = '' AND as_of <= :b GROUP BY person_id) "
            f"SELECT f.value_text, t.value_text, count(*) FROM s JOIN {h.format(a='f')} AND f.as_of = s.fd "
            f"JOIN {h.format(a='t')} AND t.as_of = s.td WHERE s.td > s.fd GROUP BY 1, 2",
            {"a": p.start, "b": p.end},
        )
    }


def _workspace_admin(app: FastAPI, world: World, workspace: str) -> TestClient:
    world.backend.ensure_workspace(workspace)
    add_user(world.backend.workspace(workspace), f"{workspace}-admin", PASSWORD, "admin")
    client = TestClient(app)
    r = client.post(
        "/console/login",
        data={"username": f"{workspace}-admin", "password": PASSWORD, "workspace": workspace},
        follow_redirects=False,
    )
    assert r.status_code == 303
    return client


def test_5a_flows_of_a_constructed_store(app: FastAPI, world: World) -> None:
    client = _workspace_admin(app, world, "flows")
    store = world.backend.workspace("flows")
    insert_snapshots(store)
    html = client.get("/console/journey-analysis", params={"end": AS_OF.isoformat(), "days": 90}).text
    p = _period(world, 90)
    assert _matrix(html) == _direct_flows(store, p) == SNAPSHOT_FLOWS
    moves = {r["move"]: (int(r["persons"]), float(r["share"])) for r in table(html, "moves_5a")}
    assert moves == {"上升": (2, 0.5), "不变": (1, 0.25), "下降": (1, 0.25)}
    assert "比较 2026-07-15 – 2026-08-01 与 2026-10-01 – 2026-10-30 的快照：4 名患者。" in html
    assert "另有 1 名患者首日时尚无快照" in html
    csv = client.get(
        "/console/export/journey_analysis/flows_5a.csv", params={"end": "2026-10-31", "days": 90}
    )
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert csv.status_code == 200 and lines[0].startswith("期初阶段,O 潜在,了解 Aware") and len(lines) == 7
    en = client.get("/console/journey-analysis", params={"end": "2026-10-31", "lang": "en"}).text
    assert "Comparing the snapshots of 2026-07-15 – 2026-08-01 and 2026-10-01 – 2026-10-30: 4 patients." in en
    assert {r["move"]: int(r["persons"]) for r in table(en, "moves_5a")} == {
        "moved up": 2,
        "stayed": 1,
        "moved down": 1,
    }
    # a period with no snapshot on or before its first day (2026-05-03): the empty state says what to run
    old = client.get("/console/journey-analysis", params={"end": "2026-07-31", "days": 90, "lang": "zh"}).text
    assert table(old, "flows_5a") == [] and 'id="chart-flows_5a"' not in old
    assert "没有可比较的 5A 历史快照" in old
    assert "careloop traits compute --as-of 2026-05-03 --history-only" in old
    assert "已保存的快照日：2026-11-05, 2026-10-30" in old


def test_patient_360_is_the_viewers(as_role: Callable[[str], TestClient], app: FastAPI, world: World) -> None:
    from careloop.patients import PatientView, Viewer, Visibility

    clear = PatientView(world.store, viewer=Viewer(default=Visibility.CLEAR)).show(world.person)
    phone = clear["golden"]["fields"]["phone"]["value"]
    name = clear["golden"]["fields"]["name"]["value"]
    assert phone and name
    dpo = as_role("dpo").get(f"/console/patients/{world.person}")
    marketer = as_role("marketer").get(f"/console/patients/{world.person}")
    analyst = as_role("analyst").get(f"/console/patients/{world.person}")
    assert dpo.status_code == marketer.status_code == analyst.status_code == 200
    local = phone.removeprefix("+86")
    assert local in dpo.text and name in dpo.text
    assert local not in marketer.text and name not in marketer.text
    masked = PatientView(world.store, viewer=Viewer(role="marketer")).show(world.person)
    assert masked["golden"]["fields"]["phone"]["value"] in marketer.text
    assert local not in analyst.text and name not in analyst.text
    assert 'data-table="identifiers"' in dpo.text and 'data-table="identifiers"' not in analyst.text
    api = TestClient(app).get(f"/v1/patients/{world.person}", headers=api_headers(app, "marketer")).json()
    assert api["golden"]["record_count"] == masked["golden"]["record_count"]
    # every view is audited
    reads = world.store.scalar(
        "SELECT count(*) FROM audit_entry WHERE action = 'read.patient' AND actor LIKE 'console:%'"
    )
    assert reads >= 3
    assert as_role("engineer").get(f"/console/patients/{world.person}").status_code == 403
    missing = as_role("dpo").get("/console/patients/P_does_not_exist")
    assert missing.status_code == 404 and "找不到" in missing.text


def test_patient_search_redirects_and_phone_lookup(
    as_role: Callable[[str], TestClient], world: World
) -> None:
    from careloop.patients import PatientView, Viewer, Visibility

    dpo = as_role("dpo")
    r = dpo.get("/console/patients", params={"id": world.person}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/console/patients/{world.person}"
    phone = PatientView(world.store, viewer=Viewer(default=Visibility.CLEAR)).show(world.person)["golden"][
        "fields"
    ]["phone"]["value"]
    found = dpo.post("/console/patients/find", data={"phone": phone.removeprefix("+86")})
    assert found.status_code == 200 and world.person in found.text
    assert dpo.post("/console/patients/find", data={}).status_code == 400
    assert as_role("analyst").post("/console/patients/find", data={"phone": "13800000000"}).status_code == 403


def test_segments_pages_match_the_library(admin: TestClient, app: FastAPI, world: World) -> None:
    html = admin.get("/console/segments").text
    listed = {r["name"]: int(r["members"]) for r in table(html, "segments")}
    assert listed == {s["name"]: s["members"] for s in seg.list_segments(world.store)}
    one = admin.get(f"/console/segments/{quote('老年')}").text
    kpi = values(one, "kpi")
    definition = seg.get_segment(world.store, "老年").definition
    assert int(kpi["segment.evaluated"]) == seg.count(world.store, definition, as_of=AS_OF)
    api = TestClient(app).get(
        f"/v1/segments/{quote('老年')}/count",
        params={"as_of": AS_OF.isoformat()},
        headers=api_headers(app, "admin"),
    )
    assert api.status_code == 200 and int(kpi["segment.evaluated"]) == api.json()["count"]
    assert int(kpi["segment.members"]) == listed["老年"]
    explained = admin.get(f"/console/segments/{quote('老年')}", params={"person": world.person})
    assert explained.status_code == 200
    entries = world.store.tuples(
        "SELECT action, target_id, role FROM audit_entry WHERE detail LIKE '%explain:老年%' AND role = 'admin'"
    )
    assert ("read.patient", world.person, "admin") in entries


def test_journey_viewer(admin: TestClient, world: World) -> None:
    html = admin.get(f"/console/journeys/{JOURNEY}").text
    stats = journey_stats(world.store, JOURNEY)
    kpi = values(html, "kpi")
    assert int(kpi["kpi.entries"]) == stats["entries"]
    assert int(kpi["kpi.holdout"]) == stats["conversion"]["holdout"]
    assert _num(kpi["kpi.uplift"]) == pytest.approx(stats["conversion"]["uplift"])
    assert 'id="chart-graph"' in html and '"type":"graph"' in html
    for node in ("sms", "wait", "call"):
        assert f'"id":"{node}"' in html
    listed = {r["name"]: int(r["entries"]) for r in table(admin.get("/console/journeys").text, "journeys")}
    assert listed[JOURNEY] == stats["entries"]
    assert admin.get("/console/journeys/nope").status_code == 404


def test_data_quality(as_role: Callable[[str], TestClient], app: FastAPI, world: World) -> None:
    admin = as_role("admin")
    html = admin.get("/console/data-quality").text
    runs = table(html, "runs")
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in ingest_runs(world.store, 50)]
    api = (
        TestClient(app).get("/v1/ingest/runs", params={"limit": 50}, headers=api_headers(app, "admin")).json()
    )
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in api]
    reasons = table(html, "reasons")
    assert sum(int(r["rows"]) for r in reasons) == world.store.count("quarantine") == 1
    qid = world.store.scalar("SELECT min(id) FROM quarantine")
    row = admin.get(f"/console/data-quality/quarantine/{qid}")
    assert row.status_code == 200 and "13912345678" not in row.text and "139****5678" in row.text
    engineer = as_role("engineer").get(f"/console/data-quality/quarantine/{qid}")
    assert (
        engineer.status_code == 200 and "139****5678" not in engineer.text and "不显示原始值" in engineer.text
    )
    shown = world.store.tuples(
        "SELECT role, target_id FROM audit_entry WHERE action = 'read.list' AND target_kind = 'quarantine'"
    )
    assert ("admin", str(qid)) in shown  # (other tests' sign-ins may add theirs)
    assert all(
        role != "engineer" for role, _ in shown
    )  # the engineer saw no original values: nothing recorded
    analyst = as_role("analyst").get("/console/data-quality")
    assert analyst.status_code == 200 and 'data-table="quarantine"' not in analyst.text  # no quarantine:read


def test_empty_workspace_shows_empty_states(app: FastAPI, world: World) -> None:
    world.backend.ensure_workspace("empty")
    empty = world.backend.workspace("empty")
    add_user(empty, "empty-admin", PASSWORD, "admin")
    client = TestClient(app)
    r = client.post(
        "/console/login",
        data={"username": "empty-admin", "password": PASSWORD, "workspace": "empty"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    html = client.get("/console/executive").text
    kpi = values(html, "kpi")
    assert kpi["kpi.persons"] == "0"
    for key in (
        "kpi.revenue",
        "kpi.adherence",
        "kpi.bp",
        "kpi.glucose",
        "kpi.satisfaction",
        "kpi.nps",
        "kpi.roi",
    ):
        assert kpi[key] == "", key
    assert "没有 PDC 数据" in html and "本期没有满意度评价" in html
    for path, text in (
        ("/console/marketing", "本期旅程没有发送记录"),
        ("/console/journey-analysis", "没有 5A 阶段数据"),
        (
            "/console/journey-analysis",
            "没有可比较的 5A 历史快照：运行 careloop traits compute --as-of DAY --history-only",
        ),
        ("/console/segments", "还没有人群分组"),
        ("/console/journeys", "还没有旅程"),
        ("/console/data-quality", "还没有导入批次"),
        ("/console/assessment", "还没有自评记录"),
    ):
        page = client.get(path)
        assert page.status_code == 200 and text in page.text, path
    assert 'data-value="0.0"' not in html  # no fake zero percentages


def test_english(app: FastAPI) -> None:
    client = sign_in(app, "admin")
    r = client.get("/console/executive", params={"lang": "en"})
    assert r.status_code == 200 and 'lang="en"' in r.text and "Executive dashboard" in r.text
    assert "careloop_lang=en" in r.headers["set-cookie"]
    assert "Active patients" in client.get("/console/executive").text  # the cookie keeps it
    assert "管理层仪表盘" in client.get("/console/executive", params={"lang": "zh"}).text


def test_user_of_another_workspace_is_not_let_in(app: FastAPI) -> None:
    client = TestClient(app)
    r = client.post(
        "/console/login",
        data={"username": user("admin"), "password": PASSWORD, "workspace": "nowhere"},
        follow_redirects=False,
    )
    assert r.status_code == 401
