"""Signing in and who may open what: every console route declares its guard; every role gets each view or a
403 as the roles table says; anonymous requests go to the sign-in page; sessions are HttpOnly cookies that
API keys cannot stand in for; cross-site form posts are refused."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from careloop.console import router
from careloop.console.access import VIEWS, ConsoleGuard, ConsolePublic
from careloop.privacy.auth import create_api_key
from careloop.privacy.roles import ROLES
from tests.console.world import JOURNEY, PASSWORD, World, user


def test_every_console_route_declares_a_guard() -> None:
    for route in router.routes:
        assert isinstance(route, APIRoute)
        guards = [
            d.call for d in route.dependant.dependencies if isinstance(d.call, ConsoleGuard | ConsolePublic)
        ]
        assert len(guards) == 1, f"{route.path} must declare exactly one ConsoleGuard or ConsolePublic"


def test_every_role_sees_exactly_its_views(as_role: Callable[[str], TestClient]) -> None:
    for name, role in ROLES.items():
        client = as_role(name)
        for view in VIEWS:
            r = client.get(view.path)
            expected = 200 if view.permission is None or role.allows(view.permission) else 403
            assert r.status_code == expected, (name, view.path, r.status_code)
            if expected == 403:
                assert "无权" in r.text
        nav = client.get("/console/assessment").text.split('<nav class="side"', 1)[1].split("</nav>", 1)[0]
        for view in VIEWS:
            shown = f'href="{view.path}"' in nav
            assert shown == (view.permission is None or role.allows(view.permission)), (name, view.name)


def test_finer_permissions(as_role: Callable[[str], TestClient], world: World) -> None:
    name = quote("老年")
    # an explanation is person-level: segments:members (analyst has it, medical_rep does not)
    assert (
        as_role("analyst").get(f"/console/segments/{name}", params={"person": world.person}).status_code
        == 200
    )
    rep = as_role("medical_rep")
    assert rep.get(f"/console/segments/{name}").status_code == 200
    assert rep.get(f"/console/segments/{name}", params={"person": world.person}).status_code == 403
    assert as_role("marketer").get(f"/console/journeys/{JOURNEY}").status_code == 200
    assert as_role("reviewer").get(f"/console/journeys/{JOURNEY}").status_code == 403


def test_anonymous_requests_go_to_sign_in(app: FastAPI) -> None:
    client = TestClient(app)
    r = client.get("/console/marketing?days=30", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Fmarketing%3Fdays%3D30"
    htmx = client.post("/console/segments/preview", data={}, headers={"HX-Request": "true"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"] == "/console/login"
    assert client.get("/console/login").status_code == 200
    assert client.get("/console/export/executive/monthly.csv", follow_redirects=False).status_code == 303


def test_sign_in_sets_an_httponly_cookie_and_goes_next(app: FastAPI) -> None:
    client = TestClient(app)
    r = client.post(
        "/console/login",
        data={"username": user("marketer"), "password": PASSWORD, "next": "/console/marketing"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/marketing"
    cookie = r.headers["set-cookie"].lower()
    assert "careloop_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/console/marketing").status_code == 200
    out = client.post("/console/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert client.get("/console/marketing", follow_redirects=False).status_code == 303


def test_next_never_leaves_the_console(app: FastAPI) -> None:
    for bad in ("https://evil.example/", "//evil.example/", "/v1/stats", "/console\\@evil"):
        r = TestClient(app).post(
            "/console/login",
            data={"username": user("admin"), "password": PASSWORD, "next": bad},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/console/", bad


def test_wrong_password_and_throttling(app: FastAPI, world: World) -> None:
    from careloop.privacy.auth import add_user

    add_user(world.store, "c-throttled", PASSWORD, "analyst")
    client = TestClient(app)
    for _ in range(5):
        r = client.post("/console/login", data={"username": "c-throttled", "password": "not the password"})
        assert r.status_code == 401 and "用户名或密码错误" in r.text
    locked = client.post("/console/login", data={"username": "c-throttled", "password": PASSWORD})
    assert locked.status_code == 429 and "Retry-After" in locked.headers and "锁定" in locked.text


def test_an_api_key_is_not_a_session(app: FastAPI, world: World) -> None:
    _, key = create_api_key(world.store, "console-key", "admin")
    client = TestClient(app)
    client.cookies.set("careloop_session", key)
    assert client.get("/console/executive", follow_redirects=False).status_code == 303
    client.cookies.set("careloop_session", "not-a-token")
    assert client.get("/console/executive", follow_redirects=False).status_code == 303


def test_cross_site_posts_are_refused(as_role: Callable[[str], TestClient]) -> None:
    client = as_role("admin")
    evil = {"Origin": "https://evil.example"}
    assert client.post("/console/assessment", data={"title": "x"}, headers=evil).status_code == 403
    assert client.post("/console/segments/new", data={}, headers=evil).status_code == 403
    ok = client.post("/console/segments/preview", data={}, headers={"Origin": "http://testserver"})
    assert ok.status_code == 200


def test_access_decisions_are_reported(as_role: Callable[[str], TestClient], monkeypatch: object) -> None:
    import careloop.console.access as access

    seen: list[object] = []
    original = access.on_access

    def spy(store: object, event: object) -> None:
        seen.append(event)
        original(store, event)  # type: ignore[arg-type]

    access.on_access = spy  # type: ignore[assignment]
    try:
        as_role("engineer").get("/console/executive")
    finally:
        access.on_access = original
    event = seen[-1]
    assert event.outcome == "denied" and event.route == "GET /console/executive"
    assert event.permission == "segments:read" and event.actor == "console:user:c-engineer"
