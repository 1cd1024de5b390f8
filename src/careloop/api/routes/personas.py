"""Personas and lookalikes over HTTP: the same operations as `careloop persona` and `careloop lookalike`."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from careloop.api.deps import audit_read, store
from careloop.api.security import requires
from careloop.profiles.lookalike import lookalike as rank_lookalikes
from careloop.profiles.personas import build_personas, get_run, person_persona, seed_personas
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["personas"])


@router.get(
    "/personas",
    summary="The latest persona run: criterion scores, clusters, descriptions (zh, en)",
    dependencies=[Depends(requires("personas:read"))],
)
def latest(
    run_id: str | None = Query(None, description="a run id (default: the latest)"),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    return get_run(s, run_id).as_dict()


@router.post(
    "/personas/build",
    summary="Cluster every person into personas and store the run",
    dependencies=[Depends(requires("models:fit"))],
)
def build(
    request: Request,
    k: int | None = Query(None, ge=2, description="use this many clusters instead of the criterion"),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    return build_personas(s, k=k, clock=request.app.state.clock).as_dict()


@router.post(
    "/personas/seed",
    summary="Save the seed personas (慢病管理, 母婴, 老年) as segments",
    dependencies=[Depends(requires("segments:write"))],
)
def seed(
    request: Request,
    refresh: bool = Query(False, description="also evaluate them and store their members"),
    as_of: date | None = Query(None, description="with refresh: the day to evaluate on (default: today)"),
    s: WorkspaceStore = Depends(store),
) -> list[dict[str, Any]]:
    return seed_personas(s, refresh=refresh, as_of=as_of, clock=request.app.state.clock)


@router.get(
    "/patients/{person_id}/persona",
    summary="A person's persona in the latest run",
    dependencies=[Depends(requires("patients:read"))],
)
def persona_of(person_id: str, request: Request, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    found = person_persona(s, person_id)
    audit_read(request, s, "persona", person_id=person_id)
    return found


@router.get(
    "/segments/{name}/lookalike",
    summary="Persons outside the segment ranked by similarity to its stored members",
    dependencies=[Depends(requires("segments:members"))],
)
def lookalike(
    request: Request,
    name: str,
    top: int = Query(50, ge=1, le=10_000),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    ranked = rank_lookalikes(s, name, top=top, clock=request.app.state.clock).as_dict()
    audit_read(request, s, "lookalike", target_kind="segment", target_id=name, rows=top)
    return ranked
