"""Journeys and the content library over HTTP: the same operations as `careloop journey | content`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request

from careloop.api.deps import audit_actor, audit_read, audit_role, store
from careloop.api.security import requires, requires_for
from careloop.clock import Clock
from careloop.errors import ConfigError
from careloop.journeys import engine
from careloop.journeys.stats import journey_stats
from careloop.messaging import content as library
from careloop.privacy.auth import Principal
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["journeys"])
JourneyBody = Body(..., description="a journey definition (docs/journeys.md)")
EntryBody = Body(..., examples=[{"persons": ["P0123"], "key": "order-42"}])
ContentBody = Body(..., examples=[{"kind": "sms", "body": {"zh": "您好"}, "purpose": "service"}])


def _clock(request: Request) -> Clock:
    c: Clock = request.app.state.clock
    return c


@router.get(
    "/journeys",
    summary="Journeys with version, status and entries by status",
    dependencies=[Depends(requires("journeys:read"))],
)
def list_journeys(s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, int]] = {}
    for j, status, n in s.tuples(
        "SELECT journey, status, count(*) FROM journey_entry GROUP BY journey, status"
    ):
        counts.setdefault(j, {})[status] = int(n)
    return [
        {"name": n, "version": int(v), "status": st, "updated_at": u, "entries": counts.get(n, {})}
        for n, v, st, u in s.tuples("SELECT name, version, status, updated_at FROM journey ORDER BY name")
    ]


@router.put(
    "/journeys/{name}",
    summary="Save a journey definition as a draft (a new version when it changed)",
    dependencies=[Depends(requires("journeys:write"))],
)
def put_journey(
    name: str,
    request: Request,
    definition: Any = JourneyBody,
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    if not isinstance(definition, dict) or definition.get("name", name) != name:
        raise ConfigError(f"the definition's `name` must be {name!r} (the URL's)")
    pub = engine.save_journey(
        s,
        {**definition, "name": name},
        clock=_clock(request),
        actor=audit_actor(request),
        role=audit_role(request),
    )
    return {"name": pub.name, "version": pub.version, "status": pub.status}


@router.post(
    "/journeys/{name}/entries",
    summary="Enter persons into a published journey (the API trigger)",
    dependencies=[Depends(requires("journeys:enter"))],
)
def enter_journey(
    name: str,
    request: Request,
    body: dict[str, Any] = EntryBody,
    s: WorkspaceStore = Depends(store),
) -> dict[str, int]:
    persons = body.get("persons")
    if not isinstance(persons, list) or not all(isinstance(p, str) for p in persons) or not persons:
        raise ConfigError("`persons` is a non-empty list of person ids")
    pub = engine.get_journey(s, name)
    if pub.status != "published":
        raise ConfigError(f"journey {name} is {pub.status}; publish it first")
    clock = _clock(request)
    key = str(body.get("key") or f"api:{clock.now().isoformat()}")
    return engine.enter(s, pub, persons, key, clock=clock)


@router.post(
    "/journeys/{name}/{action}",
    summary="publish, pause or archive a journey",
    dependencies=[Depends(requires("journeys:publish"))],
)
def journey_status(
    name: str, action: str, request: Request, s: WorkspaceStore = Depends(store)
) -> dict[str, Any]:
    status = {"publish": "published", "pause": "paused", "archive": "archived"}.get(action)
    if status is None:
        raise ConfigError("the action is publish, pause or archive")
    pub = engine.set_status(
        s, name, status, clock=_clock(request), actor=audit_actor(request), role=audit_role(request)
    )
    return {"name": pub.name, "version": pub.version, "status": pub.status}


@router.get(
    "/journeys/{name}/stats",
    summary="Entries per node, steps, sends and blocks, conversion vs holdout",
    dependencies=[Depends(requires("journeys:read"))],
)
def stats(name: str, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return journey_stats(s, name)


@router.get(
    "/content",
    summary="Every content version with status, approver and expiry",
    dependencies=[Depends(requires("content:read"))],
)
def list_content(s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    return [i.__dict__ for i in library.list_content(s)]


@router.post(
    "/content/{content_id}",
    summary="A new draft version of a content item",
    dependencies=[Depends(requires("content:write"))],
)
def create_content(
    content_id: str,
    request: Request,
    body: dict[str, Any] = ContentBody,
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    item = library.save_content(
        s,
        content_id,
        kind=str(body.get("kind", "")),
        body=body.get("body") or {},
        title=str(body.get("title", "")),
        purpose=str(body.get("purpose", "marketing")),
        template_code=body.get("template_code"),
        clock=_clock(request),
        actor=audit_actor(request),
        role=audit_role(request),
    )
    return item.__dict__


def _signer(principal: Principal, by: str | None) -> str:
    """Who a verdict is recorded as: a signed-in user signs as themself; an API key (e.g. an MLR system
    relaying its reviewers' verdicts) may name the person."""
    if by is None or by == principal.name:
        return principal.name
    if principal.kind == "user":
        raise ConfigError(f"a verdict is recorded as the signed-in user ({principal.name}); leave out `by`")
    return by


@router.post(
    "/content/{content_id}/{version}/{action}",
    summary="submit or retire (content:write), approve or reject (content:approve) a version",
)
def move_content(
    content_id: str,
    version: int,
    action: str,
    request: Request,
    by: str | None = Query(
        None, description="who (recorded with a verdict): the signed-in user; an API key may name the person"
    ),
    expires_at: datetime | None = Query(None, description="an approval's expiry (ISO date-time with zone)"),
    principal: Principal = Depends(
        requires_for("action", {"approve": "content:approve", "reject": "content:approve"}, "content:write")
    ),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    return library.move(
        s,
        content_id,
        version,
        action,
        by=_signer(principal, by),
        expires_at=expires_at,
        clock=_clock(request),
        actor=audit_actor(request),
        role=audit_role(request),
    ).__dict__


@router.get(
    "/tasks",
    summary="Staff tasks from journeys (open ones, oldest due first)",
    dependencies=[Depends(requires("tasks:read"))],
)
def tasks(
    request: Request,
    assignee: str | None = Query(None),
    status: str = Query("open", description="open | done | cancelled | all"),
    limit: int = Query(100, ge=1, le=1000),
    s: WorkspaceStore = Depends(store),
) -> list[dict[str, Any]]:
    from careloop.journeys.tasks import list_tasks

    found = list_tasks(s, assignee=assignee, status=None if status == "all" else status, limit=limit)
    audit_read(request, s, "tasks", target_kind="tasks", target_id=assignee, rows=len(found))
    return found


@router.post(
    "/tasks/{task_id}/done", summary="Record a task's outcome (emits task_completed for the patient)"
)
def task_done(
    task_id: str,
    request: Request,
    outcome: str = Query(..., description="what happened"),
    by: str | None = Query(None, description="who did it (default: the caller)"),
    cancel: bool = Query(False),
    principal: Principal = Depends(requires("tasks:write")),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    from careloop.journeys.tasks import complete_task

    return complete_task(
        s,
        task_id,
        outcome,
        by=by or principal.name,
        status="cancelled" if cancel else "done",
        clock=_clock(request),
    )
