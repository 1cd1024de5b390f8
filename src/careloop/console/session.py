"""Console sessions: a signed-in user's token in an HttpOnly cookie.

Signing in checks the password with `careloop.privacy.auth.verify_password` (argon2id, throttled) and
issues the same short-lived JWT the API hands out (`issue_token`); the console keeps it in an HttpOnly,
SameSite=Strict cookie (Secure when served over HTTPS), never in JavaScript's reach. Every request
re-checks it with `careloop.privacy.auth.authenticate` (a disabled user, a changed role or password takes
effect at once) and, when less than a third of its lifetime is left, refreshes it while the sign-in is
younger than the session limit (`auth_session_hours`); after that the user signs in again. API keys are
for machines: a cookie holding one is refused.

Forms change state only by POST; SameSite=Strict keeps other sites' pages from sending the cookie, and a
POST whose Origin names another host is refused as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from starlette.responses import Response

from careloop.errors import CareloopError, WorkspaceError
from careloop.privacy.auth import (
    API_KEY_PREFIX,
    AuthenticationError,
    AuthPolicy,
    Principal,
    Token,
    authenticate,
    issue_token,
    refresh_token,
    signing_key,
    verify_password,
)
from careloop.storage import Backend, WorkspaceStore

SESSION_COOKIE = "careloop_session"
WORKSPACE_COOKIE = "careloop_workspace"


class LoginRequired(CareloopError):
    """No valid console session: the user is sent to the sign-in page."""

    http_status = 401


@dataclass(frozen=True)
class Session:
    principal: Principal
    store: WorkspaceStore
    refreshed: Token | None = None  # a new token to set on the response


def token_key(request: Request) -> bytes:
    """The token signing key (settings or key ring), read once per app — the API's key too."""
    key: bytes | None = getattr(request.app.state, "token_key", None)
    if key is None:
        key = signing_key(request.app.state.settings)
        request.app.state.token_key = key
    return key


def policy(request: Request) -> AuthPolicy:
    p: AuthPolicy | None = getattr(request.app.state, "auth_policy", None)
    if p is None:
        p = AuthPolicy.from_settings(request.app.state.settings)
        request.app.state.auth_policy = p
    return p


def workspace_store(request: Request, workspace: str | None = None) -> WorkspaceStore:
    """The store of the workspace a console request acts in (cookie, else settings); never creates one."""
    b: Backend = request.app.state.backend
    name = workspace or request.cookies.get(WORKSPACE_COOKIE) or request.app.state.settings.workspace
    try:
        return b.workspace(name, create=False)
    except WorkspaceError:
        raise LoginRequired(f"workspace {name!r} does not exist; sign in to another one") from None


def authenticate_user(request: Request, store: WorkspaceStore, username: str, password: str) -> Principal:
    """The signed-in user, or AuthenticationError / LoginThrottled (messages never say whether the user
    name exists)."""
    return verify_password(store, username, password, policy=policy(request), clock=request.app.state.clock)


def sign_in(request: Request, workspace: str, username: str, password: str) -> Token:
    store = workspace_store(request, workspace)
    principal = authenticate_user(request, store, username, password)
    return issue_token(principal, token_key(request), policy=policy(request), clock=request.app.state.clock)


def current(request: Request) -> Session:
    """The request's session, or LoginRequired."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or token.startswith(API_KEY_PREFIX):
        raise LoginRequired("sign in")
    store = workspace_store(request)
    clock = request.app.state.clock
    try:
        principal = authenticate(store, token, token_key(request), clock=clock)
    except AuthenticationError as e:
        raise LoginRequired(str(e)) from None
    if principal.kind != "user":
        raise LoginRequired("sign in")
    refreshed = None
    p = policy(request)
    if principal.expires_at is not None and principal.expires_at - clock.now() < timedelta(
        minutes=p.token_minutes / 3
    ):
        try:
            refreshed = refresh_token(store, principal, token_key(request), policy=p, clock=clock)
        except AuthenticationError:
            refreshed = None  # the session limit is reached: the token runs out, then the user signs in
    return Session(principal, store, refreshed)


def set_session(request: Request, response: Response, token: Token, workspace: str) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE,
        token.access_token,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        WORKSPACE_COOKIE, workspace, httponly=True, samesite="strict", secure=secure, path="/"
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def same_origin(request: Request) -> bool:
    """A state-changing request from this console's own pages (Origin, when sent, names this host)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host
