"""Users, passwords, sign-in throttling, tokens and API keys, on both engines, with an injectable clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from careloop.api import create_app
from careloop.clock import FixedClock
from careloop.config import get_settings
from careloop.errors import ConfigError, NotFoundError
from careloop.privacy.auth import (
    AuthenticationError,
    AuthPolicy,
    LoginThrottled,
    add_user,
    create_api_key,
    list_api_keys,
    list_users,
    revoke_api_key,
    set_disabled,
    set_password,
    set_role,
    signing_key,
    verify_password,
)
from careloop.storage import Backend, WorkspaceStore

PASSWORD = "correct horse battery"


@pytest.fixture
def store(backend: Backend) -> WorkspaceStore:
    return backend.workspace("default")


@pytest.fixture
def client(backend: Backend, clock: FixedClock) -> Iterator[TestClient]:
    with TestClient(create_app(backend=backend, clock=clock)) as c:
        yield c


def _login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_users_are_stored_with_argon2_hashes_and_managed(store: WorkspaceStore, clock: FixedClock) -> None:
    add_user(store, "alice", PASSWORD, "marketer", clock=clock)
    stored = store.scalar("SELECT password_hash FROM app_user WHERE username = 'alice'")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert [u["username"] for u in list_users(store)] == ["alice"]
    assert "password_hash" not in list_users(store)[0]
    with pytest.raises(ConfigError, match="exists already"):
        add_user(store, "alice", PASSWORD, "marketer", clock=clock)
    with pytest.raises(ConfigError, match="unknown role"):
        add_user(store, "bob", PASSWORD, "intern", clock=clock)
    with pytest.raises(ConfigError, match="at least 10"):
        add_user(store, "bob", "short", "analyst", clock=clock)
    with pytest.raises(ConfigError, match="not valid"):
        add_user(store, "Bob Smith", PASSWORD, "analyst", clock=clock)
    with pytest.raises(NotFoundError):
        set_role(store, "nobody", "dpo", clock=clock)
    principal = verify_password(store, "alice", PASSWORD, clock=clock)
    assert principal.role.name == "marketer" and principal.viewer.role == "marketer"
    set_password(store, "alice", "another long password", clock=clock)
    with pytest.raises(AuthenticationError):
        verify_password(store, "alice", PASSWORD, clock=clock)
    set_disabled(store, "alice", True, clock=clock)
    with pytest.raises(AuthenticationError, match="disabled"):
        verify_password(store, "alice", "another long password", clock=clock)


def test_failed_sign_ins_lock_a_name_whether_it_exists_or_not(
    store: WorkspaceStore, clock: FixedClock
) -> None:
    add_user(store, "alice", PASSWORD, "analyst", clock=clock)
    policy = AuthPolicy(max_failures=3, lockout_seconds=60)
    for name in ("alice", "mallory"):  # mallory does not exist: the answers are the same
        for _ in range(3):
            with pytest.raises(AuthenticationError, match="wrong user name or password"):
                verify_password(store, name, "guess guess guess", policy=policy, clock=clock)
        with pytest.raises(LoginThrottled) as locked:
            verify_password(store, name, PASSWORD, policy=policy, clock=clock)  # even the right password
        assert locked.value.retry_after == 60
    clock.advance(timedelta(seconds=61))
    # one more failure after the lock doubles it
    with pytest.raises(AuthenticationError):
        verify_password(store, "alice", "guess guess guess", policy=policy, clock=clock)
    with pytest.raises(LoginThrottled) as locked:
        verify_password(store, "alice", PASSWORD, policy=policy, clock=clock)
    assert locked.value.retry_after == 120
    clock.advance(timedelta(seconds=121))
    assert verify_password(store, "alice", PASSWORD, policy=policy, clock=clock).name == "alice"
    # a success resets the count
    with pytest.raises(AuthenticationError):
        verify_password(store, "alice", "guess guess guess", policy=policy, clock=clock)
    assert verify_password(store, "alice", PASSWORD, policy=policy, clock=clock).name == "alice"


def test_login_throttling_over_http(client: TestClient, store: WorkspaceStore, clock: FixedClock) -> None:
    add_user(store, "alice", PASSWORD, "analyst", clock=clock)
    statuses = [
        client.post("/v1/auth/login", json={"username": "alice", "password": "nope nope nope"}).status_code
        for _ in range(get_settings().auth_max_failures)
    ]
    assert statuses == [401] * get_settings().auth_max_failures
    r = client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.headers["content-type"] == "application/problem+json"
    clock.advance(timedelta(seconds=60))
    assert client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_tokens_expire_refresh_and_follow_the_user(
    client: TestClient, store: WorkspaceStore, clock: FixedClock
) -> None:
    add_user(store, "alice", PASSWORD, "analyst", clock=clock)
    headers = _login(client, "alice")
    assert client.get("/v1/segments", headers=headers).status_code == 200
    clock.advance(timedelta(minutes=14, seconds=59))
    assert client.get("/v1/segments", headers=headers).status_code == 200
    refreshed = client.post("/v1/auth/refresh", headers=headers)
    assert refreshed.status_code == 200
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    clock.advance(timedelta(minutes=14))
    assert client.get("/v1/segments", headers=headers).status_code == 200
    clock.advance(timedelta(minutes=2))  # 16 minutes after the refresh
    r = client.get("/v1/segments", headers=headers)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert client.post("/v1/auth/refresh", headers=headers).status_code == 401
    # a session can be refreshed for auth_session_hours (8) after the password was checked, not longer
    headers = _login(client, "alice")
    for _ in range(34):  # 34 × 14 min = 7 h 56 min
        clock.advance(timedelta(minutes=14))
        r = client.post("/v1/auth/refresh", headers=headers)
        assert r.status_code == 200
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    clock.advance(timedelta(minutes=14))
    r = client.post("/v1/auth/refresh", headers=headers)
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]
    # disabling a user or changing its role stops its tokens at once
    headers = _login(client, "alice")
    assert client.get("/v1/auth/me", headers=headers).json()["role"] == "analyst"
    clock.advance(timedelta(seconds=1))
    set_role(store, "alice", "engineer", clock=clock)
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    clock.advance(timedelta(seconds=1))
    headers = _login(client, "alice")
    me = client.get("/v1/auth/me", headers=headers).json()
    assert me["role"] == "engineer" and me["viewer"]["sections"] == []
    assert client.get("/v1/segments", headers=headers).status_code == 403
    clock.advance(timedelta(seconds=1))
    set_disabled(store, "alice", True, clock=clock)
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    r = client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401 and "disabled" in r.json()["detail"]


def test_forged_and_foreign_tokens_are_refused(
    client: TestClient, backend: Backend, store: WorkspaceStore, clock: FixedClock
) -> None:
    add_user(store, "alice", PASSWORD, "admin", clock=clock)
    token = _login(client, "alice")["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (
        claims["exp"] - claims["iat"] == 15 * 60 and claims["ws"] == "default" and claims["iss"] == "careloop"
    )
    forged = jwt.encode({**claims, "role": "dpo"}, b"x" * 32, algorithm="HS256")
    unsigned = jwt.encode({**claims}, None, algorithm="none")
    for bad in (forged, unsigned, token[:-2], "garbage"):
        r = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    # the same user name in another workspace is another user: a token names its workspace
    backend.ensure_workspace("other")
    add_user(backend.workspace("other"), "alice", PASSWORD, "admin", clock=clock)
    r = client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {token}", "X-Careloop-Workspace": "other"}
    )
    assert r.status_code == 401 and "another workspace" in r.json()["detail"]
    # the signing key is derived from the key ring (never stored) unless set explicitly
    key = signing_key(get_settings())
    assert (
        len(key) == 32
        and jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False})["sub"] == "alice"
    )
    assert not any(key.hex() in str(v) for r in store.rows("SELECT * FROM app_user") for v in r.values())


def test_api_keys_expire_are_revoked_and_scoped(
    client: TestClient, store: WorkspaceStore, clock: FixedClock
) -> None:
    listing, key = create_api_key(
        store, "ingest-bot", "engineer", expires_at=clock.now() + timedelta(days=1), clock=clock
    )
    assert key.startswith("cak_" + listing["key_id"] + "_") and len(key) > 50
    stored = store.rows("SELECT * FROM api_key")[0]
    assert key not in str(stored) and stored["secret_hash"] != key
    headers = {"Authorization": f"Bearer {key}"}
    me = client.get("/v1/auth/me", headers=headers).json()
    assert me["kind"] == "api_key" and me["role"] == "engineer" and me["name"] == "ingest-bot"
    assert client.get("/v1/stats", headers=headers).status_code == 200
    assert client.get("/v1/segments", headers=headers).status_code == 403
    assert list_api_keys(store)[0]["last_used_at"] is not None
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert client.get("/v1/stats", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    clock.advance(timedelta(days=1))
    r = client.get("/v1/stats", headers=headers)
    assert r.status_code == 401 and "expired" in r.json()["detail"]

    _, key2 = create_api_key(store, "journey-trigger", "marketer", scopes=["journeys:enter"], clock=clock)
    scoped = {"Authorization": f"Bearer {key2}"}
    assert client.get("/v1/auth/me", headers=scoped).json()["permissions"] == ["journeys:enter"]
    r = client.get("/v1/segments", headers=scoped)
    assert r.status_code == 403 and "scopes" in r.json()["detail"]
    with pytest.raises(ConfigError, match="does not hold"):
        create_api_key(store, "too-much", "marketer", scopes=["audit:read"], clock=clock)
    with pytest.raises(ConfigError, match="unknown permission"):
        create_api_key(store, "typo", "marketer", scopes=["journeys:entr"], clock=clock)
    with pytest.raises(ConfigError, match="exists already"):
        create_api_key(store, "journey-trigger", "marketer", clock=clock)
    assert revoke_api_key(store, "journey-trigger", clock=clock) == [list_api_keys(store)[1]["key_id"]]
    r = client.get("/v1/auth/me", headers=scoped)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    with pytest.raises(NotFoundError):
        revoke_api_key(store, "journey-trigger", clock=clock)
    # a revoked name can be used again; API keys are not refreshed
    _, key3 = create_api_key(store, "journey-trigger", "marketer", clock=clock)
    r = client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {key3}"})
    assert r.status_code == 400


def test_no_password_token_or_key_is_logged(
    client: TestClient, store: WorkspaceStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_user(store, "alice", PASSWORD, "marketer", clock=clock)
    _, key = create_api_key(store, "bot", "admin", clock=clock)
    token = _login(client, "alice")["Authorization"]
    client.post("/v1/auth/login", json={"username": "alice", "password": "wrong password 1"})
    client.post(
        "/v1/auth/login", json={"username": PASSWORD, "password": "x"}
    )  # a password typed as the name
    client.get("/v1/segments", headers={"Authorization": token})
    client.get("/v1/stats", headers={"Authorization": token})  # denied
    client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})
    client.get("/v1/stats", headers={"Authorization": f"Bearer {key}x"})
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "login allowed" in caplog.text and "request denied" in caplog.text
    for secret in (PASSWORD, "wrong password 1", key, token.removeprefix("Bearer ")):
        assert secret not in text


def test_sign_ins_and_user_changes_are_on_the_audit_chain(
    client: TestClient, store: WorkspaceStore, clock: FixedClock
) -> None:
    from careloop.privacy.audit import entries, verify

    add_user(store, "alice", PASSWORD, "dpo", clock=clock)
    _login(client, "alice")
    client.post("/v1/auth/login", json={"username": "alice", "password": "wrong password 1"})
    client.post("/v1/auth/login", json={"username": "nobody", "password": "wrong password 1"})
    ok = entries(store, action="login")
    assert [(e.actor, e.role, e.target_id) for e in ok] == [("api:user:alice", "dpo", "alice")]
    failed = entries(store, action="login.failed")
    assert {(e.actor, e.target_id) for e in failed} == {("api:user:alice", "alice"), ("api:anonymous", None)}
    assert all("wrong password" not in str(e.detail) for e in failed)
    assert verify(store).ok


def test_cli_user_and_key_changes_are_audited() -> None:
    from typer.testing import CliRunner

    from careloop.cli import app
    from careloop.privacy.audit import entries
    from careloop.storage import connect

    runner = CliRunner()
    assert (
        runner.invoke(
            app, ["user", "add", "bob", "-r", "analyst", "--password-stdin"], input=PASSWORD
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["user", "set-role", "bob", "engineer"]).exit_code == 0
    assert runner.invoke(app, ["apikey", "create", "bot", "--role", "engineer"]).exit_code == 0
    assert runner.invoke(app, ["apikey", "revoke", "bot"]).exit_code == 0
    with connect() as backend:
        actions = [e.action for e in reversed(entries(backend.workspace("default"), limit=10))]
    assert actions == ["user.add", "user.set_role", "apikey.create", "apikey.revoke"]
