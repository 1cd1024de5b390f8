"""Who is calling: console users with passwords and short-lived tokens, API keys for machines.

- **Users** (`app_user`, per workspace) sign in with a password, stored as an argon2id hash (argon2-cffi
  defaults: 64 MiB, 3 passes, 4 lanes). Consecutive failed sign-ins for a user name — existing or not,
  so the answer never tells which names exist — lock it for `auth_lockout_seconds`, doubling with each
  further failure up to an hour (`login_throttle`); a success resets the count.
- **Tokens**: a successful sign-in gets an HS256 JWT valid `auth_token_minutes` (15). Its signing key
  comes from `CARELOOP_AUTH_JWT_SECRET` or is derived (HKDF-SHA256) from the field-encryption key
  ring's blind-index key — never from the database. Every request re-reads the user: a disabled user,
  a changed role or password takes effect at once (`tokens_after`). A token is refreshed by
  `POST /v1/auth/refresh` while it is still valid and the sign-in is younger than
  `auth_session_hours` (8); after that the user signs in again.
- **API keys** (`api_key`): ``cak_<key id>_<secret>``, shown once; careloop keeps the key id (for the
  look-up) and the SHA-256 of the whole key (the secret is 256 random bits: a slow hash adds nothing).
  A key has a role, optionally narrowed to some of its permissions (scopes), an optional expiry and
  can be revoked.

Passwords, tokens and keys are never logged. `on_access` sees every sign-in, refusal and access decision
(actor, role, route template, permission — never values): a log line each, and sign-ins go on the audit
chain (`login`, `login.failed`); `audit_admin` records user and key changes (`user.*`, `apikey.*`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, ClassVar, Literal

import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings
from careloop.errors import CareloopError, ConfigError, NotFoundError, PrivacyError
from careloop.patients.viewer import Viewer
from careloop.privacy.keys import load_keyring
from careloop.privacy.roles import Role, check_permission, expand, get_role
from careloop.storage.workspace import WorkspaceStore

log = logging.getLogger("careloop.access")

API_KEY_PREFIX = "cak_"
ISSUER = "careloop"
MIN_PASSWORD = 10
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")  # always used with fullmatch
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when a user name does not exist, so that a miss costs what a hit costs."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AuthenticationError(CareloopError):
    """No credentials, or credentials careloop does not accept (HTTP 401)."""

    http_status = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="careloop"'}


class PermissionDenied(CareloopError):
    """The caller is known but its role does not hold the permission (HTTP 403)."""

    http_status = 403


class LoginThrottled(CareloopError):
    """Too many failed sign-ins for this user name; retry after `retry_after` seconds (HTTP 429)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


# ---- who is calling ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user (signed in with a token) or an API key."""

    kind: Literal["user", "api_key"]
    name: str
    workspace: str
    role: Role
    scopes: frozenset[str] | None = None
    key_id: str | None = None
    auth_time: int | None = None  # users: when the password was checked (epoch seconds)
    expires_at: datetime | None = None

    @property
    def permissions(self) -> frozenset[str]:
        return self.role.permissions if self.scopes is None else self.role.permissions & self.scopes

    def allows(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def viewer(self) -> Viewer:
        """What this caller sees of a patient: its role's field-level masking."""
        return self.role.viewer

    @property
    def actor(self) -> str:
        return f"user:{self.name}" if self.kind == "user" else f"key:{self.name}:{self.key_id}"


@dataclass(frozen=True)
class AccessEvent:
    """One sign-in or access decision, for the audit trail (no values, no credentials)."""

    at: datetime
    workspace: str
    action: Literal["login", "refresh", "request"]
    outcome: Literal["allowed", "denied", "failed", "throttled"]
    actor: str | None = None
    role: str | None = None
    route: str | None = None  # "GET /v1/patients/{ident}": the template, never the path or query
    permission: str | None = None
    reason: str | None = None


def on_access(store: WorkspaceStore, event: AccessEvent) -> None:
    """Every sign-in, refused sign-in and access decision (of `store`'s workspace) passes here: a structured
    log line without personal data for each, and an audit-chain entry (`careloop.privacy.audit`) for each
    sign-in (``login``) and refused sign-in (``login.failed``). Person-level reads are audited by the
    routes that make them (``read.patient``, ``read.patients``), with what they returned."""
    if event.action == "login":
        _audit_login(store, event)
    log.info(
        f"{event.action} {event.outcome}",
        extra={
            "workspace": event.workspace,
            "actor": event.actor,
            "role": event.role,
            "route": event.route,
            "permission": event.permission,
            "outcome": event.outcome,
            "reason": event.reason,
        },
    )


def _audit_login(store: WorkspaceStore, event: AccessEvent) -> None:
    from careloop.privacy.audit import audit_event

    user = event.actor.removeprefix("user:") if event.actor else None
    fields: dict[str, Any] = {
        "actor": f"api:{event.actor}" if event.actor else "api:anonymous",
        "role": event.role,
        "action": "login" if event.outcome == "allowed" else "login.failed",
        "detail": {"outcome": event.outcome, "reason": event.reason} if event.outcome != "allowed" else None,
    }
    try:
        audit_event(store, target_kind="user", target_id=user, **fields)
    except PrivacyError:  # a user name the chain refuses as a target (it looks like a phone number)
        audit_event(store, target_kind="user", target_id=None, **fields)


def audit_admin(
    store: WorkspaceStore, action: str, *, actor: str, target_kind: str, target_id: str, **detail: Any
) -> None:
    """An audit-chain entry for a change to users or API keys (``user.*``, ``apikey.*``)."""
    from careloop.privacy.audit import audit_event

    audit_event(
        store, actor=actor, action=action, target_kind=target_kind, target_id=target_id, detail=detail or None
    )


# ---- users ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthPolicy:
    """Token lifetime, session limit and sign-in throttling (from settings)."""

    token_minutes: int = 15
    session_hours: int = 8
    max_failures: int = 5
    lockout_seconds: int = 60

    @classmethod
    def from_settings(cls, s: Settings) -> AuthPolicy:
        return cls(s.auth_token_minutes, s.auth_session_hours, s.auth_max_failures, s.auth_lockout_seconds)


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(
            f"{what} {name!r} is not valid: 1-64 characters, lowercase letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ConfigError("a password may have at most 1024 characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(_check_password(password))


def _user_row(store: WorkspaceStore, username: str) -> dict[str, Any] | None:
    rows = store.rows(
        "SELECT username, password_hash, role, disabled, tokens_after, last_login_at, created_at "
        "FROM app_user WHERE username = :u",
        {"u": username},
    )
    return rows[0] if rows else None


def add_user(
    store: WorkspaceStore, username: str, password: str, role: str, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """A new user of this workspace; returns its listing (never the hash)."""
    _check_name(username, "user name")
    get_role(role)
    if _user_row(store, username) is not None:
        raise ConfigError(f"user {username!r} exists already in workspace {store.workspace!r}")
    now = clock.now()
    store.insert(
        "app_user",
        [
            {
                "username": username,
                "password_hash": hash_password(password),
                "role": role,
                "disabled": False,
                "created_at": now,
                "updated_at": now,
                "password_changed_at": now,
            }
        ],
    )
    return {"username": username, "role": role, "disabled": False, "created_at": now}


def list_users(store: WorkspaceStore) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT username, role, disabled, created_at, updated_at, last_login_at FROM app_user ORDER BY username"
    )


def _require_user(store: WorkspaceStore, username: str) -> dict[str, Any]:
    row = _user_row(store, username)
    if row is None:
        raise NotFoundError(
            f"no user {username!r} in workspace {store.workspace!r}; list them with `careloop user list`"
        )
    return row


def _update_user(store: WorkspaceStore, username: str, sets: dict[str, Any], clock: Clock) -> None:
    """Change a user; outstanding tokens stop working (they must be issued after the change)."""
    now = clock.now()
    values = {**sets, "updated_at": now, "tokens_after": now}
    assignments = ", ".join(f"{c} = :{c}" for c in values)
    store.execute(f"UPDATE app_user SET {assignments} WHERE username = :_user", {**values, "_user": username})  # noqa: S608 - fixed column names, values are parameters


def set_disabled(
    store: WorkspaceStore, username: str, disabled: bool, *, clock: Clock = SYSTEM_CLOCK
) -> None:
    _require_user(store, username)
    _update_user(store, username, {"disabled": disabled}, clock)


def set_role(store: WorkspaceStore, username: str, role: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
    get_role(role)
    _require_user(store, username)
    _update_user(store, username, {"role": role}, clock)


def set_password(store: WorkspaceStore, username: str, password: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
    _require_user(store, username)
    now = clock.now()
    _update_user(
        store, username, {"password_hash": hash_password(password), "password_changed_at": now}, clock
    )


def _epoch(t: datetime | None) -> int:
    return int(t.timestamp()) if t is not None else 0


def _aware(t: Any) -> datetime | None:
    """A stored timestamp as an aware datetime (DuckDB and PostgreSQL return them zoned already)."""
    return t if isinstance(t, datetime) else None


def verify_password(
    store: WorkspaceStore,
    username: str,
    password: str,
    *,
    policy: AuthPolicy = AuthPolicy(),
    clock: Clock = SYSTEM_CLOCK,
) -> Principal:
    """Check a user's password (throttled); the signed-in principal or an error that never says whether
    the user name exists."""
    now = clock.now()
    # a name that cannot exist (bad characters, a NUL, a password typed as the name) is never looked up,
    # counted or locked: it costs one dummy hash check and gets the same answer
    valid = _NAME.fullmatch(username or "") is not None
    lock = (
        store.rows("SELECT failures, locked_until FROM login_throttle WHERE username = :u", {"u": username})
        if valid
        else []
    )
    locked_until = _aware(lock[0]["locked_until"]) if lock else None
    if locked_until is not None and locked_until > now:
        wait = max(1, int((locked_until - now).total_seconds() + 0.999))
        _emit(store, "login", "throttled", reason="locked", clock=clock)
        raise LoginThrottled(f"too many failed sign-ins for this user name; retry in {wait} s", wait)
    row = _user_row(store, username) if valid else None
    try:
        _hasher.verify(row["password_hash"] if row else _dummy_hash(), password)
        ok = row is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        if valid:
            _failed(store, username, policy, clock)
        # an unknown name is not echoed anywhere: people type their password into the name field
        who = f"user:{username}" if row is not None else None
        _emit(store, "login", "failed", actor=who, reason="credentials", clock=clock)
        raise AuthenticationError("wrong user name or password")
    if row["disabled"]:
        _emit(
            store,
            "login",
            "denied",
            actor=f"user:{username}",
            role=row["role"],
            reason="disabled",
            clock=clock,
        )
        raise AuthenticationError("this user is disabled; ask an administrator")
    role = get_role(row["role"])
    if lock:
        store.execute("DELETE FROM login_throttle WHERE username = :u", {"u": username})
    sets: dict[str, Any] = {"n": now, "u": username}
    if _hasher.check_needs_rehash(row["password_hash"]):
        sets["h"] = _hasher.hash(password)
        store.execute("UPDATE app_user SET last_login_at = :n, password_hash = :h WHERE username = :u", sets)
    else:
        store.execute("UPDATE app_user SET last_login_at = :n WHERE username = :u", sets)
    _emit(store, "login", "allowed", actor=f"user:{username}", role=role.name, clock=clock)
    return Principal("user", username, store.workspace, role, auth_time=_epoch(now))


def _failed(store: WorkspaceStore, username: str, policy: AuthPolicy, clock: Clock) -> None:
    """Count a failed sign-in (atomically) and lock the name once `max_failures` are reached; counters
    of names with no failure for a day and no lock are dropped."""
    now = clock.now()
    store.execute(
        "DELETE FROM login_throttle WHERE last_failure_at < :d AND (locked_until IS NULL OR locked_until < :n)",
        {"d": now - timedelta(days=1), "n": now},
    )
    store.merge(
        "login_throttle",
        [{"username": username, "failures": 1, "last_failure_at": now, "locked_until": None}],
        ("username",),
        {"failures": "{t}.failures + 1", "last_failure_at": "{s}.last_failure_at"},
    )
    failures = int(
        store.scalar("SELECT failures FROM login_throttle WHERE username = :u", {"u": username}) or 0
    )
    if failures >= policy.max_failures:
        seconds = min(3600, policy.lockout_seconds * 2 ** min(failures - policy.max_failures, 12))
        store.execute(
            "UPDATE login_throttle SET locked_until = :l WHERE username = :u",
            {"l": now + timedelta(seconds=seconds), "u": username},
        )


def _emit(
    store: WorkspaceStore,
    action: Literal["login", "refresh", "request"],
    outcome: Literal["allowed", "denied", "failed", "throttled"],
    *,
    clock: Clock,
    actor: str | None = None,
    role: str | None = None,
    reason: str | None = None,
) -> None:
    on_access(store, AccessEvent(clock.now(), store.workspace, action, outcome, actor, role, reason=reason))


# ---- tokens -----------------------------------------------------------------------------------
def signing_key(settings: Settings) -> bytes:
    """The HS256 key of console tokens: CARELOOP_AUTH_JWT_SECRET, or derived from the key ring."""
    if settings.auth_jwt_secret is not None:
        secret = settings.auth_jwt_secret.get_secret_value().encode()
        if len(secret) < 32:
            raise ConfigError("CARELOOP_AUTH_JWT_SECRET needs at least 32 characters")
        return secret
    ring = load_keyring(settings.key_file, environment=settings.environment)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"careloop auth jwt v1").derive(
        ring.bidx_key
    )


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_in: int  # seconds
    expires_at: datetime
    principal: Principal

    def as_dict(self) -> dict[str, Any]:
        p = self.principal
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "expires_at": self.expires_at,
            "workspace": p.workspace,
            "username": p.name,
            "role": p.role.name,
            "permissions": sorted(p.permissions),
        }


def issue_token(
    principal: Principal, key: bytes, *, policy: AuthPolicy = AuthPolicy(), clock: Clock = SYSTEM_CLOCK
) -> Token:
    """A short-lived access token for a signed-in user (`auth_time`: when its password was checked)."""
    if principal.kind != "user":
        raise ConfigError("tokens are for signed-in users; machines use API keys")
    now = clock.now()
    iat = _epoch(now)
    lifetime = policy.token_minutes * 60
    auth_time = principal.auth_time or iat
    claims = {
        "iss": ISSUER,
        "sub": principal.name,
        "ws": principal.workspace,
        "role": principal.role.name,
        "iat": iat,
        "exp": iat + lifetime,
        "auth_time": auth_time,
        "jti": secrets.token_hex(8),
    }
    expires = datetime.fromtimestamp(iat + lifetime, now.tzinfo)
    signed = jwt.encode(claims, key, algorithm="HS256")
    holder = Principal(
        "user", principal.name, principal.workspace, principal.role, auth_time=auth_time, expires_at=expires
    )
    return Token(signed, lifetime, expires, holder)


def refresh_token(
    store: WorkspaceStore,
    principal: Principal,
    key: bytes,
    *,
    policy: AuthPolicy = AuthPolicy(),
    clock: Clock = SYSTEM_CLOCK,
) -> Token:
    """A fresh token for a user whose token is still valid, while the sign-in is younger than the
    session limit; after that the user signs in again."""
    if principal.kind != "user" or principal.auth_time is None:
        raise ConfigError("only console tokens are refreshed; an API key stays valid until it expires")
    age = _epoch(clock.now()) - principal.auth_time
    if age >= policy.session_hours * 3600:
        _emit(
            store,
            "refresh",
            "denied",
            actor=principal.actor,
            role=principal.role.name,
            reason="session",
            clock=clock,
        )
        raise AuthenticationError(f"the session is older than {policy.session_hours} h; sign in again")
    _emit(store, "refresh", "allowed", actor=principal.actor, role=principal.role.name, clock=clock)
    return issue_token(principal, key, policy=policy, clock=clock)


def _token_principal(store: WorkspaceStore, token: str, key: bytes, clock: Clock) -> Principal:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={
                "require": ["exp", "iat", "sub", "ws", "auth_time"],
                "verify_exp": False,  # checked against careloop's clock below
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        raise AuthenticationError("the token is not valid; sign in again (POST /v1/auth/login)") from None
    now = _epoch(clock.now())
    if not isinstance(claims["exp"], int) or claims["exp"] <= now:
        raise AuthenticationError("the token has expired; refresh it or sign in again")
    if claims["ws"] != store.workspace:
        raise AuthenticationError(
            f"the token is for another workspace than {store.workspace!r}; sign in to this one"
        )
    row = _user_row(store, str(claims["sub"]))
    if row is None or row["disabled"]:
        raise AuthenticationError("this user no longer exists or is disabled")
    if claims["iat"] < _epoch(_aware(row["tokens_after"])):
        raise AuthenticationError(
            "the user changed (role, password or status) since this token; sign in again"
        )
    expires = datetime.fromtimestamp(claims["exp"], clock.now().tzinfo)
    return Principal(
        "user",
        row["username"],
        store.workspace,
        get_role(row["role"]),
        auth_time=int(claims["auth_time"]),
        expires_at=expires,
    )


# ---- API keys ---------------------------------------------------------------------------------
def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    store: WorkspaceStore,
    name: str,
    role: str,
    *,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    created_by: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[dict[str, Any], str]:
    """A new API key; returns its listing and the key itself (shown only now)."""
    _check_name(name, "key name")
    r = get_role(role)
    narrowed: list[str] | None = None
    if scopes is not None:
        narrowed = sorted(expand([check_permission(s, allow_wildcard=True) for s in scopes]))
        beyond = set(narrowed) - r.permissions
        if beyond:
            raise ConfigError(
                f"role {role} does not hold {', '.join(sorted(beyond))}: a key's scopes narrow its role"
            )
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise ConfigError("the expiry is in the past")
    if store.scalar("SELECT count(*) FROM api_key WHERE name = :n AND revoked_at IS NULL", {"n": name}):
        raise ConfigError(f"an active API key {name!r} exists already; revoke it or pick another name")
    key_id = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = {
        "key_id": key_id,
        "name": name,
        "secret_hash": _key_hash(key),
        "role": role,
        "scopes": orjson.dumps(narrowed).decode() if narrowed is not None else None,
        "created_at": now,
        "created_by": created_by,
        "expires_at": expires_at,
    }
    store.insert("api_key", [row])
    listing: dict[str, Any] = {k: v for k, v in row.items() if k != "secret_hash"}
    listing["scopes"] = narrowed
    return listing, key


def _scopes(value: Any) -> list[str] | None:
    if value is None:
        return None
    parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
    return [str(s) for s in parsed]


def list_api_keys(store: WorkspaceStore) -> list[dict[str, Any]]:
    rows = store.rows(
        "SELECT key_id, name, role, scopes, created_at, created_by, expires_at, revoked_at, last_used_at "
        "FROM api_key ORDER BY created_at, key_id"
    )
    for r in rows:
        r["scopes"] = _scopes(r["scopes"])
    return rows


def revoke_api_key(store: WorkspaceStore, name_or_id: str, *, clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Revoke the active key(s) named so, or the key with that id; returns the key ids revoked."""
    ids = [
        r[0]
        for r in store.tuples(
            "SELECT key_id FROM api_key WHERE (name = :k OR key_id = :k) AND revoked_at IS NULL",
            {"k": name_or_id},
        )
    ]
    if not ids:
        raise NotFoundError(
            f"no active API key named {name_or_id!r} (or with that id); see `careloop apikey list`"
        )
    store.execute(
        "UPDATE api_key SET revoked_at = :t WHERE (name = :k OR key_id = :k) AND revoked_at IS NULL",
        {"t": clock.now(), "k": name_or_id},
    )
    return ids


def _key_principal(store: WorkspaceStore, key: str, clock: Clock) -> Principal:
    _, _, rest = key.partition(API_KEY_PREFIX)
    key_id, sep, _ = rest.partition("_")
    rows = (
        store.rows(
            "SELECT key_id, name, secret_hash, role, scopes, expires_at, revoked_at, last_used_at "
            "FROM api_key WHERE key_id = :k",
            {"k": key_id},
        )
        if sep and _KEY_ID.fullmatch(key_id)
        else []
    )
    row = rows[0] if rows else None
    if row is None or not hmac.compare_digest(row["secret_hash"] or "", _key_hash(key)):
        raise AuthenticationError("this API key is not known in this workspace")
    now = clock.now()
    if row["revoked_at"] is not None:
        raise AuthenticationError("this API key has been revoked")
    expires = _aware(row["expires_at"])
    if expires is not None and expires <= now:
        raise AuthenticationError("this API key has expired; create a new one (careloop apikey create)")
    used = _aware(row["last_used_at"])
    if used is None or now - used > timedelta(minutes=1):  # at most one write per key and minute
        store.execute(
            "UPDATE api_key SET last_used_at = :t WHERE key_id = :k", {"t": now, "k": row["key_id"]}
        )
    scopes = _scopes(row["scopes"])
    return Principal(
        "api_key",
        row["name"],
        store.workspace,
        get_role(row["role"]),
        scopes=frozenset(scopes) if scopes is not None else None,
        key_id=row["key_id"],
        expires_at=expires,
    )


def authenticate(
    store: WorkspaceStore, credential: str, key: bytes, *, clock: Clock = SYSTEM_CLOCK
) -> Principal:
    """The principal behind a bearer credential: an API key (``cak_…``) or a console token."""
    if credential.startswith(API_KEY_PREFIX):
        return _key_principal(store, credential, clock)
    return _token_principal(store, credential, key, clock)
