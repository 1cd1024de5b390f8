"""Event sources and their write keys.

A source is one sender (an app, a mini-program, a website, a call-centre system). Its write key is
shown once, at creation; the store keeps only its SHA-256 (keys are 32 random bytes, so a plain hash
is enough, as for API tokens). A source also says what its senders' ``userId`` is — an app user id, a
HIS number, a WeChat openid of one app, a phone, careloop's own person id — so events can be tied to
the unified patient, and carries the tracking plan its events are checked against.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.domain.enums import EventChannel
from careloop.errors import ConfigError, NotFoundError
from careloop.events.plan import TrackingPlan
from careloop.storage import Backend, WorkspaceStore

#: what a source's userId can be; all but `user_id` (the sender's own ids) are looked up in patient data
USER_ID_KINDS = (
    "user_id",
    "app_user_id",
    "his_number",
    "openid",
    "unionid",
    "phone",
    "id_number",
    "person_id",
)
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class Source:
    workspace: str
    name: str
    channel: str
    user_id_kind: str
    user_id_system: str | None
    plan: TrackingPlan

    @property
    def user_namespace(self) -> str:
        """Which ids a userId is unique among: the sender's own ids are shared by a workspace's sources
        (as in Segment); patient identifiers are scoped by their kind and issuer."""
        if self.user_id_kind == "user_id":
            return "user_id"
        return f"{self.user_id_kind}:{self.user_id_system or ''}"


def hash_key(write_key: str) -> str:
    return hashlib.sha256(write_key.encode()).hexdigest()


def create_source(
    store: WorkspaceStore,
    name: str,
    *,
    channel: str = "app",
    user_id_kind: str = "user_id",
    user_id_system: str | None = None,
    plan: TrackingPlan | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[Source, str]:
    """Register a source; returns it with its write key (shown only now)."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise ConfigError(
            f"source name {name!r} is not valid: use 1-64 lowercase letters, digits, '_' or '-'"
        )
    if channel not in {c.value for c in EventChannel}:
        raise ConfigError(
            f"channel {channel!r} is not known; use one of {', '.join(c.value for c in EventChannel)}"
        )
    if user_id_kind not in USER_ID_KINDS:
        raise ConfigError(
            f"--user-id-kind {user_id_kind!r} is not known; use one of {', '.join(USER_ID_KINDS)}"
        )
    if store.scalar("SELECT count(*) FROM event_source WHERE name = :n", {"n": name}):
        raise ConfigError(f"source {name!r} exists already; pick another name or use it")
    write_key = "clk_" + secrets.token_urlsafe(32)
    plan = plan or TrackingPlan()
    store.insert(
        "event_source",
        [
            {
                "name": name,
                "write_key_hash": hash_key(write_key),
                "key_hint": write_key[-4:],
                "channel": channel,
                "user_id_kind": user_id_kind,
                "user_id_system": user_id_system,
                "plan": orjson.dumps(plan.to_dict()).decode(),
                "created_at": clock.now(),
                "active": True,
            }
        ],
    )
    return Source(store.workspace, name, channel, user_id_kind, user_id_system, plan), write_key


def rotate_key(store: WorkspaceStore, name: str) -> str:
    """Give a source a new write key; the old one stops working (servers forget it within 30 s)."""
    get_source(store, name)
    write_key = "clk_" + secrets.token_urlsafe(32)
    store.execute(
        "UPDATE event_source SET write_key_hash = :h, key_hint = :hint WHERE name = :n",
        {"h": hash_key(write_key), "hint": write_key[-4:], "n": name},
    )
    return write_key


def set_active(store: WorkspaceStore, name: str, active: bool) -> None:
    """Disable (requests get 401) or re-enable a source; its stored events stay."""
    get_source(store, name)
    store.execute("UPDATE event_source SET active = :a WHERE name = :n", {"a": active, "n": name})


def set_plan(store: WorkspaceStore, name: str, plan: TrackingPlan) -> None:
    get_source(store, name)
    store.execute(
        "UPDATE event_source SET plan = :p WHERE name = :n",
        {"p": orjson.dumps(plan.to_dict()).decode(), "n": name},
    )


_LIST_COLS = ("name", "channel", "user_id_kind", "user_id_system", "key_hint", "created_at", "active", "plan")
_SOURCE_COLS = ("name", "channel", "user_id_kind", "user_id_system", "plan")


def _rows(
    store: WorkspaceStore, cols: tuple[str, ...], where: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows as dicts without Arrow, which would give every plan the JSON keys of all the others."""
    sql = f"SELECT {', '.join(cols)} FROM event_source {where}"  # noqa: S608 - fixed names
    return [dict(zip(cols, r, strict=True)) for r in store.tuples(sql, params)]


def list_sources(store: WorkspaceStore) -> list[dict[str, Any]]:
    rows = _rows(store, _LIST_COLS, "ORDER BY name", {})
    for r in rows:
        r["plan"] = orjson.loads(r["plan"]) if isinstance(r["plan"], str) else r["plan"]
    return rows


def get_source(store: WorkspaceStore, name: str) -> Source:
    rows = _rows(store, _SOURCE_COLS, "WHERE name = :n", {"n": name})
    if not rows:
        raise NotFoundError(f"no event source {name!r}; create one with `careloop source create {name}`")
    return _source(store.workspace, rows[0])


def _source(workspace: str, r: dict[str, Any]) -> Source:
    plan = r["plan"]
    plan = orjson.loads(plan) if isinstance(plan, str) else plan
    return Source(
        workspace,
        r["name"],
        r["channel"],
        r["user_id_kind"],
        r["user_id_system"],
        TrackingPlan.from_dict(plan),
    )


class KeyRegistry:
    """Write key -> source, cached in memory. A key not in the cache is looked up in every workspace
    (a new source works at once); unknown keys are remembered for a few seconds so that a flood of bad
    keys does not become a flood of queries."""

    def __init__(self, backend: Backend, *, ttl_seconds: float = 30.0) -> None:
        self.backend = backend
        self.ttl = ttl_seconds
        self._known: dict[str, tuple[Source, float]] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, write_key: str) -> Source | None:
        digest = hash_key(write_key)
        now = time.monotonic()
        with self._lock:
            hit = self._known.get(digest)
            if hit and now - hit[1] < self.ttl:
                return hit[0]
            if now - self._unknown.get(digest, -1e9) < 5.0:
                return None
        found = self._lookup(digest)
        with self._lock:
            if found is None:
                self._unknown[digest] = now
                if len(self._unknown) > 10_000:
                    self._unknown.clear()
            else:
                self._known[digest] = (found, now)
        return found

    def _lookup(self, digest: str) -> Source | None:
        for ws in self.backend.workspaces():
            rows = _rows(
                self.backend.workspace(ws, create=False),
                _SOURCE_COLS,
                "WHERE write_key_hash = :h AND active",
                {"h": digest},
            )
            if rows:
                return _source(ws, rows[0])
        return None
