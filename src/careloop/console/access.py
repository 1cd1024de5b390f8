"""Who may open which console view: one permission per view, from the roles table
(`careloop.privacy.roles`); nothing else in the console decides.

| view | permission | why |
| --- | --- | --- |
| executive dashboard, journey analysis, segment list and counts | ``segments:read`` | aggregates over persons |
| marketing performance, journeys | ``journeys:read`` | sends and journey statistics |
| patient 360 | ``patients:read`` (look-up by phone: ``patients:find``) | person-level, masked by the role's viewer |
| segment explanation for a person | ``segments:members`` | person-level |
| saving a segment | ``segments:write`` | |
| data quality | ``ingest:read`` (quarantined rows: ``quarantine:read``) | |
| capability self-assessment | any signed-in user | organisational answers, no person data |
| exports | ``export:aggregate`` (person-level tables: ``export:person_level``) | |

Every decision is reported to `careloop.privacy.auth.on_access` (actor, role, route template, permission —
never values), as the API's are.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from careloop.console.session import Session, current
from careloop.privacy.auth import AccessEvent, PermissionDenied, Principal, on_access
from careloop.privacy.roles import check_permission


@dataclass(frozen=True)
class View:
    name: str
    path: str
    title: str  # i18n key
    permission: str | None  # None: any signed-in user


VIEWS: tuple[View, ...] = (
    View("executive", "/console/executive", "nav.executive", "segments:read"),
    View("marketing", "/console/marketing", "nav.marketing", "journeys:read"),
    View("journey_analysis", "/console/journey-analysis", "nav.journey_analysis", "segments:read"),
    View("patients", "/console/patients", "nav.patients", "patients:read"),
    View("segments", "/console/segments", "nav.segments", "segments:read"),
    View("journeys", "/console/journeys", "nav.journeys", "journeys:read"),
    View("data_quality", "/console/data-quality", "nav.data_quality", "ingest:read"),
    View("assessment", "/console/assessment", "nav.assessment", None),
)
VIEW = {v.name: v for v in VIEWS}

for _v in VIEWS:
    if _v.permission is not None:
        check_permission(_v.permission)


def allowed(principal: Principal, permission: str | None) -> bool:
    return permission is None or principal.allows(permission)


def views_for(principal: Principal) -> list[View]:
    return [v for v in VIEWS if allowed(principal, v.permission)]


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '?')}"


def decide(request: Request, session: Session, permission: str | None) -> None:
    """Report the decision; PermissionDenied when the role lacks the permission."""
    p = session.principal
    ok = allowed(p, permission)
    on_access(
        session.store,
        AccessEvent(
            request.app.state.clock.now(),
            p.workspace,
            "request",
            "allowed" if ok else "denied",
            actor=f"console:{p.actor}",
            role=p.role.name,
            route=_route(request),
            permission=permission,
        ),
    )
    if not ok:
        raise PermissionDenied(f"role {p.role.name} does not hold the permission {permission}")


class ConsoleGuard:
    """A console route's dependency: the signed-in session, whose role must hold `permission` (None: any
    signed-in user). Routes without one declare `ConsolePublic` with the reason."""

    def __init__(self, permission: str | None) -> None:
        self.permission = check_permission(permission) if permission is not None else None

    def __call__(self, request: Request) -> Session:
        session = current(request)
        request.state.console_session = session
        decide(request, session, self.permission)
        return session


class ConsolePublic:
    """A console route that needs no session (sign-in page, static files), with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self) -> None:
        return None


#: the guard of each view, of any signed-in user, and of the finer permissions some routes need
GUARDS: dict[str, ConsoleGuard] = {v.name: ConsoleGuard(v.permission) for v in VIEWS}
SIGNED_IN = ConsoleGuard(None)
NEEDS: dict[str, ConsoleGuard] = {p: ConsoleGuard(p) for p in ("patients:find", "quarantine:read")}
