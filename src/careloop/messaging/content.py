# ruff: noqa: S608  (fixed column lists and SET fragments; values are parameters)
"""The content library: versioned message content with an approval status and an expiry.

A content item (``content_id``) has versions; each version is ``draft`` -> ``in_review`` -> ``approved``
(or ``rejected``), and an approved version may be ``retired``. A journey's send node names a content id;
the send-time policy (`careloop.messaging.policy`) sends only the newest approved, unexpired version —
nothing else can be sent. Full medical-legal review (MLR) workflows build on these states later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, NotFoundError
from careloop.privacy.audit import audit_config_change
from careloop.storage import WorkspaceStore

KINDS = ("sms", "wechat", "app_push", "email", "outbox")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_MOVES = {
    "submit": ({"draft"}, "in_review"),
    "approve": ({"draft", "in_review"}, "approved"),
    "reject": ({"draft", "in_review"}, "rejected"),
    "retire": ({"approved"}, "retired"),
}


@dataclass(frozen=True)
class ContentItem:
    content_id: str
    version: int
    status: str
    kind: str
    purpose: str
    title: str
    body: dict[str, str]  # language -> text ("zh", "en"); email also "subject_zh" / "subject_en"
    template_code: str | None
    approved_by: str | None
    approved_at: datetime | None
    expires_at: datetime | None

    def usable(self, at: datetime) -> tuple[bool, str]:
        """Whether this version may be sent at `at`, and if not, why."""
        if self.status != "approved":
            return False, "content_not_approved"
        if self.expires_at is not None and self.expires_at <= at:
            return False, "content_expired"
        return True, "approved"


_COLUMNS = "content_id, version, status, kind, purpose, title, body, template_code, approved_by, approved_at, expires_at"


def _item(row: tuple[Any, ...]) -> ContentItem:
    body = row[6]
    return ContentItem(
        content_id=row[0],
        version=int(row[1]),
        status=row[2],
        kind=row[3],
        purpose=row[4] or "marketing",
        title=row[5] or "",
        body=orjson.loads(body) if isinstance(body, str | bytes) else dict(body or {}),
        template_code=row[7],
        approved_by=row[8],
        approved_at=row[9],
        expires_at=row[10],
    )


def save_content(
    store: WorkspaceStore,
    content_id: str,
    *,
    kind: str,
    body: dict[str, str],
    title: str = "",
    purpose: str = "marketing",
    template_code: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    actor: str | None = None,
    role: str | None = None,
) -> ContentItem:
    """A new draft version of the content (versions are never edited once written); recorded as
    `content.save` in the audit chain."""
    if not _ID.match(content_id):
        raise ConfigError(f"content id {content_id!r}: 1-64 letters, digits, '_' or '-'")
    if kind not in KINDS:
        raise ConfigError(f"content kind {kind!r}: one of {', '.join(KINDS)}")
    if not body or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in body.items()):
        raise ConfigError("content body: a mapping of language (zh, en) to non-empty text")
    if not ({"zh", "en"} & set(body)):
        raise ConfigError("content body: give at least a `zh` or an `en` text")
    latest = store.scalar("SELECT max(version) FROM content_item WHERE content_id = :c", {"c": content_id})
    version = int(latest or 0) + 1
    store.insert(
        "content_item",
        [
            {
                "content_id": content_id,
                "version": version,
                "status": "draft",
                "kind": kind,
                "purpose": purpose,
                "title": title,
                "body": orjson.dumps(body).decode(),
                "template_code": template_code,
                "created_at": clock.now(),
            }
        ],
    )
    audit_config_change(
        store, "content.save", "content", content_id, {"version": version}, actor=actor, role=role
    )
    return get_content(store, content_id, version)


def get_content(store: WorkspaceStore, content_id: str, version: int | None = None) -> ContentItem:
    """One version (default: the newest)."""
    sql = f"SELECT {_COLUMNS} FROM content_item WHERE content_id = :c"
    params: dict[str, Any] = {"c": content_id}
    if version is not None:
        sql += " AND version = :v"
        params["v"] = version
    rows = store.tuples(sql + " ORDER BY version DESC LIMIT 1", params)
    if not rows:
        raise NotFoundError(
            f"no content {content_id!r}{f' version {version}' if version else ''}; `careloop content list`"
        )
    return _item(rows[0])


def list_content(store: WorkspaceStore) -> list[ContentItem]:
    return [
        _item(r) for r in store.tuples(f"SELECT {_COLUMNS} FROM content_item ORDER BY content_id, version")
    ]


def move(
    store: WorkspaceStore,
    content_id: str,
    version: int,
    action: str,
    *,
    by: str,
    expires_at: datetime | None = None,
    clock: Clock = SYSTEM_CLOCK,
    actor: str | None = None,
    role: str | None = None,
) -> ContentItem:
    """submit / approve / reject / retire one version; approval records who and when, and the expiry.
    Recorded as `content.<action>` in the audit chain (`by` the signer, `actor` who made the call)."""
    if action not in _MOVES:
        raise ConfigError(f"content action {action!r}: one of {', '.join(_MOVES)}")
    item = get_content(store, content_id, version)
    allowed, to = _MOVES[action]
    if item.status not in allowed:
        raise ConfigError(
            f"content {content_id} v{version} is {item.status}; `{action}` applies to {' or '.join(sorted(allowed))}"
        )
    now = clock.now()
    if action == "approve" and expires_at is not None and expires_at <= now:
        raise ConfigError("an approval's expiry must be in the future")
    params: dict[str, Any] = {"c": content_id, "v": version, "s": to}
    sets = "status = :s"
    if action == "approve":
        sets += ", approved_by = :by, approved_at = :at, expires_at = :exp"
        params.update(by=by, at=now, exp=expires_at)
    store.execute(f"UPDATE content_item SET {sets} WHERE content_id = :c AND version = :v", params)
    audit_config_change(
        store,
        f"content.{action}",
        "content",
        content_id,
        {"version": version, "by": by},
        actor=actor,
        role=role,
    )
    return get_content(store, content_id, version)


def sendable(store: WorkspaceStore, content_ids: set[str], at: datetime) -> dict[str, ContentItem | str]:
    """content id -> the newest approved, unexpired version, or the reason none can be sent."""
    out: dict[str, ContentItem | str] = {}
    if not content_ids:
        return out
    rows = store.tuples(
        f"SELECT {_COLUMNS} FROM content_item WHERE content_id = ANY(:c) ORDER BY content_id, version DESC",
        {"c": sorted(content_ids)},
    )
    seen: dict[str, list[ContentItem]] = {}
    for r in rows:
        seen.setdefault(r[0], []).append(_item(r))
    for cid in content_ids:
        versions = seen.get(cid, [])
        usable = [v for v in versions if v.usable(at)[0]]
        if usable:
            out[cid] = usable[0]
        elif not versions:
            out[cid] = "content_missing"
        else:
            approved = [v for v in versions if v.status == "approved"]
            out[cid] = "content_expired" if approved else "content_not_approved"
    return out
