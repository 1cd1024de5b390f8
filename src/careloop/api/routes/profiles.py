"""Traits, tags and segments over HTTP: the same operations as `careloop traits | tags | segment`."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request

from careloop.api.deps import audit_actor, audit_read, audit_role, store
from careloop.api.security import requires
from careloop.errors import NotFoundError
from careloop.profiles import segments as seg
from careloop.profiles.tags import person_tags
from careloop.profiles.traits import person_traits
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["profiles"])

AsOf = Query(None, description="the day windows and relative dates count from (default: today)")
Definition = Body(
    ...,
    description="a segment definition (docs/segments.md)",
    examples=[{"trait": "age", "op": ">=", "value": 65}],
)


def _person(s: WorkspaceStore, person_id: str) -> None:
    if not s.scalar("SELECT count(*) FROM person WHERE person_id = :p", {"p": person_id}):
        raise NotFoundError(f"no person {person_id!r}; find one with GET /v1/patients?phone=...")


@router.get(
    "/patients/{person_id}/traits",
    summary="A person's trait values (as last computed)",
    dependencies=[Depends(requires("patients:read"))],
)
def traits_of(person_id: str, request: Request, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    _person(s, person_id)
    audit_read(request, s, "traits", person_id=person_id)
    return {"person_id": person_id, "traits": person_traits(s, person_id)}


@router.get(
    "/patients/{person_id}/tags",
    summary="A person's tags, each with its rule and the values behind it",
    dependencies=[Depends(requires("patients:read"))],
)
def tags_of(person_id: str, request: Request, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    _person(s, person_id)
    audit_read(request, s, "tags", person_id=person_id)
    return {"person_id": person_id, "tags": person_tags(s, person_id)}


@router.get(
    "/segments",
    summary="Segments with their version and stored member count",
    dependencies=[Depends(requires("segments:read"))],
)
def list_segments(s: WorkspaceStore = Depends(store)) -> list[dict[str, Any]]:
    return seg.list_segments(s)


@router.put(
    "/segments/{name}",
    summary="Create a segment, or a new version when the definition changed",
    dependencies=[Depends(requires("segments:write"))],
)
def put_segment(
    name: str,
    request: Request,
    definition: Any = Definition,
    description: str = Query(""),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    saved = seg.save_segment(
        s, name, definition, description, actor=audit_actor(request), role=audit_role(request)
    )
    return {"name": saved.name, "version": saved.version, "definition": saved.definition}


@router.post(
    "/segments/preview",
    summary="Count and sample a definition without saving it",
    dependencies=[Depends(requires("segments:members"))],
)
def preview(
    definition: Any = Definition, as_of: date | None = AsOf, s: WorkspaceStore = Depends(store)
) -> dict[str, Any]:
    found = seg.members(s, definition, as_of=as_of)
    return {"count": len(found), "sample": found[:10]}


@router.get(
    "/segments/{name}/count",
    summary="How many persons a segment holds for now",
    dependencies=[Depends(requires("segments:read"))],
)
def count(name: str, as_of: date | None = AsOf, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return {"segment": name, "count": seg.count(s, seg.get_segment(s, name).definition, as_of=as_of)}


@router.post(
    "/segments/{name}/refresh",
    summary="Re-evaluate and store the members (entries and exits)",
    dependencies=[Depends(requires("segments:write"))],
)
def refresh(name: str, as_of: date | None = AsOf, s: WorkspaceStore = Depends(store)) -> dict[str, Any]:
    return {"segment": name, **seg.refresh(s, name, as_of=as_of)}


@router.get(
    "/segments/{name}/members",
    summary="Stored members (as of the last refresh), paged",
    dependencies=[Depends(requires("segments:members"))],
)
def members(
    name: str,
    request: Request,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=10_000),
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    total, rows = seg.stored_members(s, name, limit=limit, offset=offset)
    audit_read(request, s, "members", target_kind="segment", target_id=name, rows=len(rows))
    return {"segment": name, "total": total, "items": rows}


@router.get(
    "/segments/{name}/explain/{person_id}",
    summary="Condition by condition, why a person is in or out",
    dependencies=[Depends(requires("segments:members"))],
)
def explain(
    name: str,
    person_id: str,
    request: Request,
    as_of: date | None = AsOf,
    s: WorkspaceStore = Depends(store),
) -> dict[str, Any]:
    _person(s, person_id)
    audit_read(request, s, f"explain:{name}", person_id=person_id)
    return seg.explain(s, seg.get_segment(s, name).definition, person_id, as_of=as_of)
